"""Data preprocessing throughput (`data.preprocess`) and template-fit cost, on real shared clips.

  python -m benchmarks.preprocess_bench [--write] [--max-seconds 3] [--fit-frames 64 256 1024]

Four measurements on this machine's CPU, on two real clips (the first `--max-seconds` of each):
1. `preprocess.run(workers=1)` end to end with the default crops, cold (including JIT compiles,
   MediaPipe setup and `records.build`);
2. the same with `workers=2` (spawned processes, also cold);
3. a warm per-stage breakdown of `process_video` (decode, MediaPipe, template fit, hands, crops,
   encoding, masks, `np.savez`), timed by wrapping the functions it calls; nothing in `data/` is edited;
4. the template fit (`Annotator.fit`, one jitted call) on (T, 478, 3) points for each `--fit-frames` T.

Rows: "median ms" is wall milliseconds per output frame (30 fps) for the preprocessing rows, and per call
for the fit rows (ms per frame in the throughput column); "n" is frames.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import pathlib
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

from benchmarks import harness

CLIPS = (
    "V-Express__scripts_prepare_dataset_RD_Radio10_0_clip_0.mp4",  # 512 x 512, 29.97 fps
    "LivePortrait__assets_examples_source_s18.mp4",  # 1280 x 720, 30 fps (about 2 s long)
)
FIT_FRAMES = (64, 256, 1024)
log = logging.getLogger(__name__)


def media_videos() -> pathlib.Path:
  env = os.environ.get("CHATANYONE_MEDIA_DIR")
  root = pathlib.Path(env) if env else harness.RESULTS.parent.parent.parent / "shared" / "data" / "media"
  return root / "videos"


def cores() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _copy_videos(dst: pathlib.Path, names: Sequence[str]) -> pathlib.Path:
  src = media_videos()
  dst.mkdir(parents=True, exist_ok=True)
  for n in names:
    if not (src / n).is_file():
      raise FileNotFoundError(f"{src / n} not found; set CHATANYONE_MEDIA_DIR to the shared media folder")
    shutil.copy(src / n, dst / n)
  return dst


# ---------------------------------------------------------------- stage timing


class StageTimes:
  """Accumulated seconds (and call counts) per stage name."""

  def __init__(self):
    self.seconds: dict[str, float] = collections.defaultdict(float)
    self.calls: dict[str, int] = collections.defaultdict(int)

  def add(self, name: str, seconds: float) -> None:
    self.seconds[name] += seconds
    self.calls[name] += 1

  def wrap(self, name: str | Callable[..., str], fn: Callable, block: bool = False) -> Callable:
    def timed(*args, **kwargs):
      t = time.perf_counter()
      out = fn(*args, **kwargs)
      if block:
        out = jax.block_until_ready(out)
      self.add(name(*args, **kwargs) if callable(name) else name, time.perf_counter() - t)
      return out
    return timed


def _encode_stage(*args, fmt: str = "JPEG", **kwargs) -> str:
  return "PNG encode (masks)" if fmt == "PNG" else "JPEG encode (body, head, hand)"


class _TimedGraph:
  def __init__(self, graph, times: StageTimes, name: str):
    self._graph, self._times, self._name = graph, times, name

  def process(self, image):
    t = time.perf_counter()
    out = self._graph.process(image)
    self._times.add(self._name, time.perf_counter() - t)
    return out


@contextlib.contextmanager
def instrument(times: StageTimes, annotator):
  """Patches the functions `process_video` calls with timing wrappers (restored on exit)."""
  from data import annotate, landmarks, preprocess

  orig_graphs = landmarks.mediapipe_graphs

  @contextlib.contextmanager
  def timed_graphs(*args, **kwargs):
    t = time.perf_counter()
    with orig_graphs(*args, **kwargs) as graphs:
      times.add("mediapipe graph setup", time.perf_counter() - t)
      yield {k: _TimedGraph(g, times, f"mediapipe {k}") for k, g in graphs.items()}

  orig_iter = preprocess.iter_frames

  def timed_iter(*args, **kwargs):
    it = orig_iter(*args, **kwargs)
    while True:
      t = time.perf_counter()
      try:
        frame = next(it)
      except StopIteration:
        times.add("decode video (PyAV, resample to 30 fps)", time.perf_counter() - t)
        return
      times.add("decode video (PyAV, resample to 30 fps)", time.perf_counter() - t)
      yield frame

  patches = [
      (landmarks, "mediapipe_graphs", timed_graphs),
      (landmarks, "extract_landmarks", times.wrap("landmarks total (extract_landmarks)",
                                                  landmarks.extract_landmarks)),
      (preprocess, "iter_frames", timed_iter),
      (preprocess, "probe_video", times.wrap("probe + decode audio", preprocess.probe_video)),
      (preprocess, "load_audio", times.wrap("probe + decode audio", preprocess.load_audio)),
      (preprocess, "annotate_clip", times.wrap("annotate total (annotate_clip)", preprocess.annotate_clip)),
      (annotate, "crop", times.wrap("crop + resize (PIL)", annotate.crop)),
      (annotate, "encode_image", times.wrap(_encode_stage, annotate.encode_image)),
      (annotate, "face_mask", times.wrap("face mask (convex hull)", annotate.face_mask)),
      (np, "savez", times.wrap("np.savez (clip file)", np.savez)),
      (annotator, "fit", times.wrap("template fit (jitted fit_clip)", annotator.fit)),
      (annotator, "encode_program", times.wrap("hand encode (jitted)", annotator.encode_program, block=True)),
      (annotator, "render_program", times.wrap("hand render (jitted)", annotator.render_program, block=True)),
  ]
  saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
  try:
    for obj, name, fn in patches:
      setattr(obj, name, fn)
    yield times
  finally:
    for obj, name, fn in reversed(saved):
      setattr(obj, name, fn)


STAGE_ORDER = (
    "probe + decode audio", "decode video (PyAV, resample to 30 fps)", "mediapipe graph setup",
    "mediapipe face", "mediapipe pose", "mediapipe hands", "mediapipe segmentation",
    "landmarks other (tracking, copies)", "template fit (jitted fit_clip)", "hand encode (jitted)",
    "hand render (jitted)", "crop + resize (PIL)", "JPEG encode (body, head, hand)", "PNG encode (masks)",
    "face mask (convex hull)", "annotate other (coordinates, numpy)", "np.savez (clip file)",
    "process_video other", "records.build (TFDS ArrayRecord, clips + frames)",
)


def derived_stages(times: StageTimes, process_s: float) -> dict[str, float]:
  """Leaf stages that add up to `process_s` (+ records.build); "other" rows are the remainders."""
  s = dict(times.seconds)
  mp = sum(v for k, v in s.items() if k.startswith("mediapipe "))
  s["landmarks other (tracking, copies)"] = s.pop("landmarks total (extract_landmarks)", 0.0) - mp
  inner = ("template fit (jitted fit_clip)", "hand encode (jitted)", "hand render (jitted)",
           "crop + resize (PIL)", "JPEG encode (body, head, hand)", "PNG encode (masks)",
           "face mask (convex hull)")
  s["annotate other (coordinates, numpy)"] = (s.pop("annotate total (annotate_clip)", 0.0)
                                              - sum(s.get(k, 0.0) for k in inner))
  top = [k for k in s if k != "records.build (TFDS ArrayRecord, clips + frames)"]
  s["process_video other"] = process_s - sum(s[k] for k in top)
  return {k: s[k] for k in STAGE_ORDER if k in s}


# ---------------------------------------------------------------- runs


def run_end_to_end(videos: pathlib.Path, out: pathlib.Path, config, workers: int) -> dict:
  from data import preprocess

  t = time.perf_counter()
  summary = preprocess.run(videos, out, config, workers=workers, progress=False)
  wall = time.perf_counter() - t
  if summary["done"] != len(list(videos.iterdir())):
    raise RuntimeError(f"preprocessing failed: {summary['failed']}")
  per_video = {}
  for d in sorted((out / "work").iterdir()):
    st = json.loads((d / "status.json").read_text())
    per_video[d.name] = {"frames": st["frames"], "seconds": st["seconds"]}
  return {"wall_s": wall, "frames": summary["frames"], "workers": workers, "per_video": per_video,
          "annotate_s": summary["this_run"]["seconds"]}


def run_breakdown(videos: pathlib.Path, out: pathlib.Path, config, annotator) -> dict:
  """Warm `process_video` per video with stage timers, then `records.build`; returns seconds per stage."""
  from data import landmarks, preprocess, records

  times = StageTimes()
  faces = {}
  (out / "work").mkdir(parents=True, exist_ok=True)
  (out / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
  process_s, frames = 0.0, 0
  orig_extract = landmarks.extract_landmarks
  for path in sorted(videos.iterdir()):
    def capture(*args, _name=path.stem, **kwargs):
      lm = orig_extract(*args, **kwargs)
      faces.setdefault(_name, lm.face[lm.face_valid])
      return lm

    landmarks.extract_landmarks = capture
    try:
      with instrument(times, annotator):
        t = time.perf_counter()
        status = preprocess.process_video(path, out / "work", config, annotator)
        process_s += time.perf_counter() - t
    finally:
      landmarks.extract_landmarks = orig_extract
    frames += status["frames"]
  t = time.perf_counter()
  records.build(out)
  times.add("records.build (TFDS ArrayRecord, clips + frames)", time.perf_counter() - t)
  stages = derived_stages(times, process_s)
  return {"stages": stages, "process_s": process_s, "frames": frames, "faces": faces,
          "total_s": process_s + stages["records.build (TFDS ArrayRecord, clips + frames)"]}


def tile_frames(points: np.ndarray, t: int) -> np.ndarray:
  """(N, 478, 3) -> (t, 478, 3) by playing the sequence forwards and backwards (no jumps)."""
  pingpong = np.concatenate([points, points[::-1]])
  reps = -(-t // pingpong.shape[0])
  return np.ascontiguousarray(np.tile(pingpong, (reps, 1, 1))[:t])


def time_fit(annotator, face_points: np.ndarray, frames: Sequence[int] = FIT_FRAMES,
             iters: int = 3) -> list[harness.Timing]:
  """`annotator.fit` on (T, 478, 3) real face points per T: compile (first call) apart, then `iters` calls."""
  timings = []
  for t in frames:
    pts = tile_frames(face_points, t)
    timing = harness.time_jitted(annotator.fit, (pts,), name="template fit",
                                 config=f"Annotator.fit (fit_clip + projection + error + keypoints), "
                                 f"T={t} real face-mesh frames (478 points)", warmup=0, iters=iters)
    per_frame = timing.median_ms / t
    timing.throughput = f"{per_frame:.3f} ms/frame ({1e3 / per_frame:,.0f} frames/s)"
    log.info("fit T=%d: compile %.2f s, median %.1f ms (%.3f ms/frame)", t, timing.compile_s,
             timing.median_ms, per_frame)
    timings.append(timing)
  return timings


def face_points_from_video(name: str = CLIPS[0], num_frames: int = 32) -> np.ndarray:
  """(N, 478, 3) face-mesh points of the first frames of a shared clip (MediaPipe face graph only)."""
  from data.landmarks import extract_landmarks
  from data.preprocess import iter_frames

  frames = np.stack(list(iter_frames(media_videos() / name, max_frames=num_frames)))
  lm = extract_landmarks(frames, pose=False, hands=False)
  return lm.face[lm.face_valid]


# ---------------------------------------------------------------- rows


def _row(name: str, config: str, compile_s: str, median: str, p10: str, p90: str, n: str, thr: str) -> str:
  date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
  return (f"| {date} | {harness.git_commit()} | {harness.device_name()} | {jax.__version__} | {name} "
          f"| {config} | {compile_s} | {median} | {p10} | {p90} | {n} | {thr} |\n")


def _videos_label(max_seconds: float, frames: int) -> str:
  return (f"2 real clips (V-Express 512² 29.97 fps, LivePortrait s18 1280x720 30 fps), "
          f"first {max_seconds:g} s -> {frames} frames at 30 fps, body 768x512, head 512")


def bench(max_seconds: float = 3.0, fit_frames: Sequence[int] = FIT_FRAMES, workers2: bool = True,
          tmp: pathlib.Path | None = None) -> tuple[list[str], list[harness.Timing], dict]:
  from data import preprocess

  config = preprocess.PreprocessConfig(max_seconds=max_seconds)
  ncores = cores()
  tmp = pathlib.Path(tmp or tempfile.mkdtemp(prefix="preprocess_bench_"))
  videos = _copy_videos(tmp / "videos", CLIPS)
  rows, report = [], {}

  cold = run_end_to_end(videos, tmp / "out_w1", config, workers=1)
  report["cold_w1"] = cold
  log.info("workers=1 cold: %s", cold)
  fps = cold["frames"] / cold["wall_s"]
  pv = ", ".join(f"{k.split('__')[0]} {v['frames']} fr {v['seconds']:.1f} s"
                 for k, v in cold["per_video"].items())
  rows.append(_row("preprocess e2e", f"preprocess.run workers=1, cold (JIT compiles, MediaPipe setup, "
                   f"records.build included); {_videos_label(max_seconds, cold['frames'])}; per video: {pv}",
                   "-", f"{1e3 / fps:.1f}", "-", "-", str(cold["frames"]),
                   f"{fps:.2f} frames/s, {fps / ncores:.2f} frames/s/core ({ncores} cores)"))

  if workers2:
    w2 = run_end_to_end(videos, tmp / "out_w2", config, workers=2)
    report["cold_w2"] = w2
    log.info("workers=2 cold: %s", w2)
    fps2 = w2["frames"] / w2["wall_s"]
    rows.append(_row("preprocess e2e", f"preprocess.run workers=2 (spawn), cold (process start + imports, "
                     f"JIT compiles per process, records.build included); "
                     f"{_videos_label(max_seconds, w2['frames'])}", "-", f"{1e3 / fps2:.1f}", "-", "-",
                     str(w2["frames"]), f"{fps2:.2f} frames/s, {fps2 / ncores:.2f} frames/s/core ({ncores} "
                     f"cores); x{fps2 / fps:.2f} vs workers=1 cold"))

  annotator = preprocess.worker_annotator(config)  # compiled by the in-process workers=1 run above
  warm = run_breakdown(videos, tmp / "out_warm", config, annotator)
  report["warm_breakdown"] = {k: v for k, v in warm.items() if k != "faces"}
  fpsw = warm["frames"] / warm["total_s"]
  rows.append(_row("preprocess e2e", f"process_video x2 + records.build, workers=1, warm (annotator already "
                   f"compiled for these clip lengths); {_videos_label(max_seconds, warm['frames'])}", "-",
                   f"{1e3 / fpsw:.1f}", "-", "-", str(warm["frames"]),
                   f"{fpsw:.2f} frames/s, {fpsw / ncores:.2f} frames/s/core ({ncores} cores)"))
  for stage, s in warm["stages"].items():
    rows.append(_row("preprocess stage", f"{stage}; warm run above", "-", f"{1e3 * s / warm['frames']:.2f}",
                     "-", "-", str(warm["frames"]), f"{100 * s / warm['total_s']:.1f}% of the warm total"))

  faces = warm["faces"][pathlib.Path(CLIPS[0]).stem]
  fits = time_fit(annotator, faces, fit_frames)
  report["fit"] = {t.config: {"compile_s": t.compile_s, "median_ms": t.median_ms} for t in fits}
  shutil.rmtree(tmp, ignore_errors=True)
  return rows, fits, report


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--max-seconds", type=float, default=3.0)
  p.add_argument("--fit-frames", type=int, nargs="+", default=list(FIT_FRAMES))
  p.add_argument("--no-workers2", action="store_true", help="skip the workers=2 run")
  p.add_argument("--write", action="store_true", help="append rows to benchmarks/RESULTS.md")
  p.add_argument("--results", type=pathlib.Path, default=harness.RESULTS, help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  rows, fits, report = bench(a.max_seconds, a.fit_frames, workers2=not a.no_workers2)
  print(json.dumps(report, indent=1, default=float))
  if a.write:
    harness.append_rows([], a.results)  # creates the file with its header when missing
    with a.results.open("a") as f:
      f.writelines(rows)
    rows += harness.append_rows(fits, a.results)
  else:
    rows += [harness.format_row(t) for t in fits]
  print("".join(rows), end="")


if __name__ == "__main__":
  main()
