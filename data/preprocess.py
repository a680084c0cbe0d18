"""Raw talking videos -> annotated clips -> TFDS ArrayRecord records (ARCHITECTURE.md §2, §6).

  python -m data.preprocess --videos DIR --out DIR [--workers N] [--body-size 768x512] [--head-size 512]
                            [--max-seconds S] [--val-fraction F] [--retry-failed] [--face-only]
                            [--runner DirectRunner|DataflowRunner|FlinkRunner|SparkRunner [BEAM OPTIONS]]

Two resumable stages. 1. Per video (`process_video`, in `--workers` processes): decode at 30 fps and
16 kHz (`data.decode`), MediaPipe landmarks (`data.landmarks`); every run of at least `min_frames`
consecutive face frames becomes a clip annotated by `data.annotate` into `OUT/work/<video stem>/`, with a
`status.json`. A finished video (or a failed one, unless `--retry-failed`) is skipped when the command
runs again; a bad video is reported in `OUT/summary.json` and never stops the run. 2. `data.records`
writes the ``clips`` and ``frames`` ArrayRecord configs under `OUT/records/` when the clips changed.

Scaling out: with `--runner`, both stages run as Apache Beam pipelines (`annotate_with_beam`: one element
per video, each worker process keeping one annotator; then TFDS's Beam writer for the records), on the
DirectRunner's worker processes on one machine (`--workers N`) or on a Dataflow / Flink / Spark cluster
(options after the known ones go to Beam's `PipelineOptions`). `--out` must then be storage that every
worker reads and writes at the same path (NFS, a bucket mounted with gcsfuse). The records, bad-video
report and resumption are the same as without Beam.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import os
import pathlib
import sys
import time
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from data import landmarks, records
from data.annotate import Annotator, annotate_clip, face_runs
from data.decode import VideoFailure, audio_span, iter_frames, load_audio, probe_video, stream_start_offset
from data.preprocess_config import PreprocessConfig
from data.records import STATUS_FILE

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")


def process_video(path: str | os.PathLike, work_dir: str | os.PathLike, config: PreprocessConfig,
                  annotator: Annotator | None = None) -> dict:
  """Annotates one video into `work_dir/<stem>/clip_*.npz`; returns its status dict (also written).

  Raises:
    VideoFailure: the video cannot be used (the status file records the reason too).
  """
  path = pathlib.Path(path)
  out = pathlib.Path(work_dir) / path.stem
  out.mkdir(parents=True, exist_ok=True)
  for old in out.glob("clip_*.npz"):
    old.unlink()
  t_start = time.perf_counter()
  status = {"video": str(path), "status": "failed", "clips": [], "frames": 0, "frames_kept": 0,
            "frames_dropped_no_face": 0, "frames_dropped_short": 0}
  try:
    if annotator is None:
      annotator = Annotator(config)
    probe_video(path)
    audio = load_audio(path, config)
    # Frame 0 is the first video frame: drop (or pad) audio so that sample 0 plays with it.
    shift = int(round(stream_start_offset(path) * config.sample_rate))
    audio = audio[shift:] if shift >= 0 else np.concatenate([np.zeros(-shift, np.float32), audio])
    if audio.size == 0 or float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) < config.min_audio_rms:
      raise VideoFailure("silent_audio", f"{path}: the audio track is silent (RMS < {config.min_audio_rms}); "
                         "training needs speech")
    spf = config.samples_per_frame()
    max_frames = None if config.max_seconds is None else int(round(config.max_seconds * config.fps))
    # Never more frames than the audio covers (a trailing half frame of audio is padded).
    audio_frames = int(np.floor(audio.size / spf + 0.5))
    max_frames = audio_frames if max_frames is None else min(max_frames, audio_frames)
    total = 0
    segment: list[np.ndarray] = []

    def flush(seg_index: int, frames: list[np.ndarray], first: int) -> None:
      arr = np.stack(frames)
      try:
        body = not config.face_only
        lm = landmarks.extract_landmarks(arr, fps=config.fps, pose=body, hands=body, segmentation=body,
                                         name=f"{path.name}[{seg_index}]")
      except landmarks.LandmarkError:
        status["frames_dropped_no_face"] += len(frames)
        return
      status["frames_dropped_no_face"] += int(lm.num_dropped)
      runs = face_runs(lm.face_valid, config.min_frames)
      kept = sum(r.size for r in runs)
      status["frames_dropped_short"] += int(lm.face_valid.sum()) - kept
      for r_i, sel in enumerate(runs):
        a, b = audio_span(first + int(sel[0]), sel.size, spf)
        clip_audio = np.zeros(b - a, np.float32)
        avail = audio[a:b]
        clip_audio[:avail.size] = avail
        name = f"{path.stem}__{seg_index:03d}_{r_i:02d}"
        arrays = annotate_clip(arr, lm, sel, clip_audio, name, annotator)
        np.savez(out / f"clip_{seg_index:03d}_{r_i:02d}.npz", **arrays)
        status["clips"].append({"name": name, "frames": int(sel.size),
                                "fit_error_px": float(arrays["fit_error_px"])})
        status["frames_kept"] += int(sel.size)

    seg_index = 0
    for frame in iter_frames(path, config.fps, config.max_side, max_frames):
      segment.append(frame)
      total += 1
      if len(segment) == config.segment_frames:
        flush(seg_index, segment, total - len(segment))
        seg_index, segment = seg_index + 1, []
    if segment:
      flush(seg_index, segment, total - len(segment))
    status["frames"] = total
    if not status["clips"]:
      if status["frames_dropped_no_face"] == total:
        raise VideoFailure("no_face", f"{path}: no face found in any of its {total} frames; give videos "
                           "where one face is clearly visible")
      raise VideoFailure("too_short", f"{path}: no run of {config.min_frames} consecutive frames "
                         f"({config.min_frames / config.fps:.2f} s) with a visible face among {total} frames")
    status["status"] = "done"
  except VideoFailure as e:
    status["reason"], status["message"] = e.reason, str(e)
    raise
  finally:
    status["seconds"] = round(time.perf_counter() - t_start, 2)
    (out / STATUS_FILE).write_text(json.dumps(status, indent=1))
  return status


def read_status(work_dir: str | os.PathLike, stem: str) -> dict | None:
  p = pathlib.Path(work_dir) / stem / STATUS_FILE
  return json.loads(p.read_text()) if p.is_file() else None


def list_videos(videos: str | os.PathLike) -> list[pathlib.Path]:
  root = pathlib.Path(videos)
  if root.is_file():
    return [root]
  if not root.is_dir():
    raise FileNotFoundError(f"--videos {root} is neither a folder nor a video file")
  found = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
  stems = [p.stem for p in found]
  dup = {s for s in stems if stems.count(s) > 1}
  if dup:
    raise ValueError(f"video names must be unique (they name the clips); duplicates: {sorted(dup)[:5]}")
  return found


# ---------------------------------------------------------------- the run

_WORKER_ANNOTATOR: Annotator | None = None


def worker_annotator(config: PreprocessConfig) -> Annotator:
  """This process's annotator for `config` (built, and its programs compiled, once per process)."""
  global _WORKER_ANNOTATOR
  if _WORKER_ANNOTATOR is None or _WORKER_ANNOTATOR.config != config:
    _WORKER_ANNOTATOR = Annotator(config)
  return _WORKER_ANNOTATOR


def _die_with_parent() -> None:
  """Worker initializer: on Linux the worker gets SIGTERM when the run that started it dies (a killed
  run left its workers annotating on, in the same work folder as the next run)."""
  if sys.platform.startswith("linux"):
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _worker(args: tuple[str, str, PreprocessConfig]) -> dict:
  path, work, config = args
  try:
    return process_video(path, work, config, worker_annotator(config))
  except VideoFailure:
    return read_status(work, pathlib.Path(path).stem) or {"video": path, "status": "failed"}
  except Exception as e:  # a bug or an unexpected file must not end a long run: report it
    log.exception("unexpected error on %s", path)
    status = {"video": path, "status": "failed", "reason": "error", "message": f"{type(e).__name__}: {e}"}
    d = pathlib.Path(work) / pathlib.Path(path).stem
    d.mkdir(parents=True, exist_ok=True)
    (d / STATUS_FILE).write_text(json.dumps(status, indent=1))
    return status


def beam_pipeline_options(runner: str, options: Sequence[str] = (), workers: int = 1):
  """Beam `PipelineOptions` from command-line style `options`; the DirectRunner gets `workers` worker
  processes (its multi_processing mode) unless `options` say otherwise."""
  from apache_beam.options.pipeline_options import PipelineOptions

  options = list(options)
  if runner in ("DirectRunner", "direct") and workers > 1:
    if not any(o.startswith("--direct_num_workers") for o in options):
      options.append(f"--direct_num_workers={workers}")
    if not any(o.startswith("--direct_running_mode") for o in options):
      options.append("--direct_running_mode=multi_processing")
  return PipelineOptions(options)


def annotate_with_beam(jobs: Sequence[tuple[str, str, PreprocessConfig]], runner: str, options) -> None:
  """Stage 1 as a Beam pipeline: one element per video job, spread over the workers (`Reshuffle`), each
  annotated by `_worker` (which writes the video's clips and status file and never raises, as in the
  process pool); `options`: Beam `PipelineOptions`."""
  import apache_beam as beam

  with beam.Pipeline(runner=runner, options=options) as pipeline:
    _ = (pipeline | "Videos" >> beam.Create(list(jobs)) | "Spread" >> beam.Reshuffle()
         | "Annotate" >> beam.Map(_worker))


def run(videos: str | os.PathLike, out: str | os.PathLike, config: PreprocessConfig | None = None,
        *, workers: int = 1, retry_failed: bool = False, val_fraction: float = 0.0,
        split_file: str | os.PathLike | None = None, heldout_tail: float = 0.0,
        build_records: bool = True, progress: bool = True, beam_runner: str | None = None,
        beam_options: Sequence[str] = ()) -> dict:
  """Preprocesses every video under `videos` into `out` (resumable); returns the summary (also written).

  `config` defaults to `PreprocessConfig()`. val_fraction, split_file, heldout_tail: how the records are
  split (`data.records.build`). beam_runner (e.g. "DirectRunner", "DataflowRunner"; needs
  `pip install -e ".[beam]"`): both stages run as Beam pipelines with `beam_options` (command-line style
  Beam flags; `beam_pipeline_options`) instead of `workers` local processes.
  """
  config = PreprocessConfig() if config is None else config
  out = pathlib.Path(out)
  work = out / "work"
  work.mkdir(parents=True, exist_ok=True)
  (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=1))
  paths = list_videos(videos)
  todo, skipped = [], 0
  for p in paths:
    st = read_status(work, p.stem)
    if st is not None and (st.get("status") == "done" or (st.get("status") == "failed" and not retry_failed)):
      skipped += 1
      continue
    todo.append(p)
  log.info("%d videos: %d to do, %d already processed", len(paths), len(todo), skipped)
  t0 = time.perf_counter()
  jobs = [(str(p), str(work), config) for p in todo]
  bar = tqdm(total=len(jobs), desc="videos", unit="video", disable=not progress)
  if beam_runner is not None:
    options = beam_pipeline_options(beam_runner, beam_options, workers)
    if jobs:
      annotate_with_beam(jobs, beam_runner, options)
    bar.update(len(jobs))
  elif workers <= 1:
    for job in jobs:
      _worker(job)
      bar.update()
  else:
    ctx = multiprocessing.get_context("spawn")  # JAX and MediaPipe do not survive fork
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx,
                                                initializer=_die_with_parent) as pool:
      for _ in pool.map(_worker, jobs):
        bar.update()
  bar.close()
  elapsed = time.perf_counter() - t0

  statuses = [read_status(work, p.stem) or {"video": str(p), "status": "missing"} for p in paths]
  done = [s for s in statuses if s.get("status") == "done"]
  failed = [{"video": s["video"], "reason": s.get("reason", "?"), "message": s.get("message", "")}
            for s in statuses if s.get("status") != "done"]
  new_frames = sum(s.get("frames", 0) for s in statuses if s["video"] in {str(p) for p in todo})
  summary = {
      "videos": len(paths), "done": len(done), "failed": failed, "skipped_already_processed": skipped,
      "clips": sum(len(s["clips"]) for s in done),
      "frames": sum(s["frames"] for s in done), "frames_kept": sum(s["frames_kept"] for s in done),
      "frames_dropped_no_face": sum(s["frames_dropped_no_face"] for s in done),
      "frames_dropped_short": sum(s["frames_dropped_short"] for s in done),
      "mean_fit_error_px": (float(np.mean([c["fit_error_px"] for s in done for c in s["clips"]]))
                            if done else None),
      "this_run": {"videos": len(todo), "seconds": round(elapsed, 2), "frames": new_frames,
                   "workers": workers, "engine": f"beam:{beam_runner}" if beam_runner else "processes"},
  }
  if build_records and done:
    beam = {} if beam_runner is None else {"beam_runner": beam_runner, "beam_options": options}
    summary["records"] = records.build(out, val_fraction=val_fraction, split_file=split_file,
                                       heldout_tail=heldout_tail, **beam)
  (out / "summary.json").write_text(json.dumps(summary, indent=1))
  for f in failed:
    log.warning("skipped %s: %s", f["video"], f["message"] or f["reason"])
  return summary


def _size(text: str) -> tuple[int, int]:
  h, _, w = text.lower().partition("x")
  return int(h), int(w)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m data.preprocess", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--videos", required=True, help="folder of videos (searched recursively) or one video")
  parser.add_argument("--out", required=True, help="output folder (work/, records/, summary.json)")
  parser.add_argument("--workers", type=int, default=1, help="processes annotating videos in parallel")
  parser.add_argument("--body-size", type=_size, default=PreprocessConfig.body_size,
                      help="HxW of the upper-body crop, 2:3 (default 768x512)")
  parser.add_argument("--head-size", type=int, default=PreprocessConfig.head_size)
  parser.add_argument("--min-frames", type=int, default=PreprocessConfig.min_frames)
  parser.add_argument("--max-seconds", type=float, default=None,
                      help="use only the first seconds of each video")
  parser.add_argument("--val-fraction", type=float, default=0.0,
                      help="share of videos (by a stable hash of the name) in the validation split")
  parser.add_argument("--split-file", default=None,
                      help="split by person instead (data.splits; e.g. data/splits/people.tsv): its held-out "
                           "people are the validation split")
  parser.add_argument("--heldout-tail", type=float, default=0.0,
                      help="with --split-file: share of each training clip's last frames kept out of "
                           "training (split heldout_frames)")
  parser.add_argument("--face-only", action="store_true",
                      help="face mesh only (no pose, hands, segmentation): about 3x faster, for head-only "
                           "footage; its clips have no body keypoints or hands")
  parser.add_argument("--retry-failed", action="store_true", help="process videos that failed before again")
  parser.add_argument("--no-records", action="store_true", help="stop after the per-video annotation")
  parser.add_argument("--runner", default=None,
                      help="run both stages as Apache Beam pipelines on this runner (DirectRunner with "
                           "--workers N processes, DataflowRunner, FlinkRunner, SparkRunner); any further "
                           "--flags are Beam pipeline options (docs/DATA.md)")
  args, beam_options = parser.parse_known_args(argv)
  if beam_options and args.runner is None:
    parser.error(f"unrecognized arguments: {' '.join(beam_options)} (Beam options need --runner)")
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  try:
    config = PreprocessConfig(body_size=args.body_size, head_size=args.head_size, min_frames=args.min_frames,
                              max_seconds=args.max_seconds, face_only=args.face_only)
    summary = run(args.videos, args.out, config, workers=args.workers, retry_failed=args.retry_failed,
                  val_fraction=args.val_fraction, split_file=args.split_file, heldout_tail=args.heldout_tail,
                  build_records=not args.no_records, beam_runner=args.runner, beam_options=beam_options)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps({k: v for k, v in summary.items() if k != "failed"}, indent=1))
  for f in summary["failed"]:
    print(f"skipped {f['video']}: {f['reason']}: {f['message']}", file=sys.stderr)
  return 0 if summary["done"] else 1


if __name__ == "__main__":
  sys.exit(main())
