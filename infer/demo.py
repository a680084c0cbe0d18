"""`make demo`: the whole pipeline end to end on bundled data, in a few minutes on a laptop CPU.

  python -m infer.demo --out outputs/demo [--image P] [--audio A] [--checkpoint DIR]
                       [--steps-render N] [--steps-motion N] [--clip V] [--clip-seconds S] [--steps N]

With a trained checkpoint (`--checkpoint DIR`, else `infer/assets/checkpoint/` when it exists; the
`infer.models.load_checkpoint` layout) the demo only animates the portrait. Without one it builds its
own, tiny and briefly trained: 1. preprocess the bundled clip (`infer/assets/talking.mp4`) into OUT/data;
2. train the tiny configs of motion_face, motion_body, render and face_refine into OUT/runs (a rerun
resumes); 3. animate the bundled portrait with the bundled speech through `infer.stream`, fed in 1-s
chunks, writing OUT/demo.mp4, OUT/contact_sheet.png and OUT/summary.json. JAX's compilation cache is
kept in OUT/xla_cache unless JAX_COMPILATION_CACHE_DIR is set. The tiny networks show the pipeline
working, not the paper's quality, which needs the full configs (`python -m train.main`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import pathlib
import sys
import time
from collections.abc import Sequence

import jax
import numpy as np

from data import preprocess
from data.media import MediaError, read_audio, read_image
from data.preprocess_config import PreprocessConfig
from infer.media import write_image, write_video
from infer.options import StreamOptions
from infer.streaming import (
  ASSETS,
  ASSETS_PORTRAIT,
  ASSETS_SPEECH,
  FPS,
  SAMPLE_RATE,
  audio_chunks,
  num_output_frames,
  stream,
)
from train import trainer

log = logging.getLogger(__name__)

ASSETS_CLIP = ASSETS / "talking.mp4"  # real talking clip the demo trains on (assets/NOTICE.md)
BUNDLED_CHECKPOINT = ASSETS / "checkpoint"  # a trained checkpoint shipped with the code, if any
# Workdir (the name `load_checkpoint` reads) -> training config module (train/configs/<module>.py:tiny).
RUNS = {"motion_face": "motion_face", "motion_body": "motion_body", "render": "render_upper512x768",
        "face_refine": "face_refine"}
MOTION_RUNS = ("motion_face", "motion_body")
# Defaults sized for a 2-core CPU, cold (nothing compiled): per renderer ~40 s compile + ~0.9 s / step,
# per motion model ~13 s compile + ~0.1 s / step (data loading included); measured on 2 cores shared with
# another job (2-3x slower steps) 60 / 300 steps took 9.2 min in all, hence these.
STEPS_RENDER = 30
STEPS_MOTION = 200
CHUNK_SECONDS = 1.0
SHEET_FRAMES = 8
DEFAULTS = StreamOptions()  # infer.stream's defaults (sampling steps, seed)


def preprocess_config(clip_seconds: float | None):
  """Preprocessing of the training clip: crops small enough for the tiny renderers (48x32 in, 96x64 out
  for upper; 64x64 face refine), 30 fps, 16 kHz."""
  return PreprocessConfig(body_size=(192, 128), head_size=128, max_seconds=clip_seconds, min_frames=50)


def train_config(workdir_name: str, data_dir: pathlib.Path, num_steps: int):
  """The tiny config of one workdir, trained for `num_steps` steps on `data_dir`.

  Checkpoints only at the end (plus the tiny configs' every-4-steps would cost more than the steps),
  TensorBoard images off, one log row every tenth of the run.
  """
  c = importlib.import_module(f"train.configs.{RUNS[workdir_name]}").get_config("tiny")
  c.data_dir = str(data_dir)
  c.num_steps = num_steps
  c.checkpoint_every = max(num_steps, 1)
  c.image_every = 0
  c.log_every = max(1, num_steps // 10)
  c.progress = True
  return c


def final_losses(workdir: pathlib.Path) -> dict[str, float]:
  """The loss terms of the last row of workdir/metrics.jsonl ({} when nothing was logged)."""
  path = workdir / "metrics.jsonl"
  if not path.is_file():
    return {}
  lines = [line for line in path.read_text().splitlines() if line.strip()]
  if not lines:
    return {}
  row = json.loads(lines[-1])
  return {k: round(float(v), 5) for k, v in row.items() if k == "step" or "loss" in k}


def contact_sheet(frames: Sequence[np.ndarray], n: int = SHEET_FRAMES) -> np.ndarray:
  """(H, n W, 3): n frames evenly spaced over the clip, first and last included, side by side."""
  if not len(frames):
    raise ValueError("no frames for the contact sheet")
  idx = np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int)
  return np.concatenate([np.asarray(frames[i]) for i in idx], axis=1)


def _check_inputs(image: pathlib.Path, audio: pathlib.Path) -> np.ndarray:
  """Reads the inputs before any training, so that a bad file fails in seconds; returns the audio."""
  read_image(image)  # MediaError: missing / unreadable
  samples = read_audio(audio, SAMPLE_RATE)
  if num_output_frames(samples.size) == 0:
    raise MediaError(f"{audio} is shorter than one video frame ({1 / FPS:.3f} s)")
  return samples


def build_checkpoint(out: pathlib.Path, *, clip: pathlib.Path, clip_seconds: float | None, steps_render: int,
                     steps_motion: int, timings: dict[str, float]) -> tuple[pathlib.Path, dict]:
  """Stages 1 and 2 (module docstring): OUT/data and OUT/runs; returns (OUT/runs, {workdir: info})."""
  if not clip.is_file():
    raise FileNotFoundError(f"training clip not found: {clip}")
  t0 = time.perf_counter()
  data_dir = out / "data"
  summary = preprocess.run(clip, data_dir, preprocess_config(clip_seconds), progress=False)
  if summary["clips"] < 1:
    raise ValueError(f"preprocessing {clip} gave no training clip ({summary['failed']}); give a clip of at "
                     "least 2 s in which one face is visible throughout")
  timings["preprocess"] = time.perf_counter() - t0
  log.info("preprocessed %s -> %s (%d clip(s), %d frames) in %.1f s", clip, data_dir, summary["clips"],
           summary["frames_kept"], timings["preprocess"])

  runs = out / "runs"
  trained = {}
  for name in RUNS:
    steps = steps_motion if name in MOTION_RUNS else steps_render
    t0 = time.perf_counter()
    state = trainer.train_and_evaluate(train_config(name, data_dir, steps), runs / name)
    step = int(jax.device_get(state["step"]))
    timings[f"train_{name}"] = time.perf_counter() - t0
    trained[name] = {"config": f"train/configs/{RUNS[name]}.py:tiny", "steps": step,
                     "final": final_losses(runs / name)}
    log.info("trained %s: %d steps in %.1f s, final %s", runs / name, step, timings[f"train_{name}"],
             trained[name]["final"])
  return runs, trained


def run(out: str | pathlib.Path, *, image: str | pathlib.Path = ASSETS_PORTRAIT,
        audio: str | pathlib.Path = ASSETS_SPEECH, checkpoint: str | pathlib.Path | None = None,
        steps_render: int = STEPS_RENDER, steps_motion: int = STEPS_MOTION,
        clip: str | pathlib.Path = ASSETS_CLIP, clip_seconds: float | None = None,
        num_steps: int = DEFAULTS.num_steps, seed: int = DEFAULTS.seed) -> dict:
  """The demo (module docstring); returns the summary it writes to OUT/summary.json.

  Raises:
    MediaError: a missing or unusable image / audio / clip (also a portrait without a face).
    FileNotFoundError / ValueError: a bad checkpoint directory or argument.
  """
  if steps_render < 1 or steps_motion < 1:
    raise ValueError(f"--steps-render and --steps-motion must be >= 1, got {steps_render}, {steps_motion}")
  if num_steps < 1:
    raise ValueError(f"--steps must be >= 1, got {num_steps}")
  start = time.perf_counter()
  out, image, audio = pathlib.Path(out), pathlib.Path(image), pathlib.Path(audio)
  samples = _check_inputs(image, audio)
  out.mkdir(parents=True, exist_ok=True)
  timings: dict[str, float] = {}
  trained: dict = {}
  if checkpoint is None and (BUNDLED_CHECKPOINT / "render").is_dir():
    checkpoint = BUNDLED_CHECKPOINT
  if checkpoint is not None:
    source, clip_x0 = f"given checkpoint {checkpoint}", "auto"
  else:
    checkpoint, trained = build_checkpoint(out, clip=pathlib.Path(clip), clip_seconds=clip_seconds,
                                           steps_render=steps_render, steps_motion=steps_motion,
                                           timings=timings)
    # Clip x̂0 at 3 std, as for random weights: a few hundred steps leave ε uncalibrated.
    source, clip_x0 = f"tiny models trained here on {clip}", 3.0

  t0 = time.perf_counter()
  options = StreamOptions(mode="upper", seed=seed, num_steps=num_steps, clip_x0=clip_x0)
  frames_iter = stream(image, audio_chunks(samples, int(CHUNK_SECONDS * SAMPLE_RATE)), checkpoint=checkpoint,
                       options=options)
  timings["prepare_avatar"] = time.perf_counter() - t0  # models loaded, portrait annotated, state built
  t0 = time.perf_counter()
  frames = []
  first_frame_s = None
  for frame in frames_iter:
    if first_frame_s is None:
      first_frame_s = time.perf_counter() - t0
    frames.append(frame)
  timings["animate"] = time.perf_counter() - t0  # first window includes the step's compilation
  t0 = time.perf_counter()
  video = out / "demo.mp4"
  write_video(video, frames, FPS, audio=samples, sample_rate=SAMPLE_RATE)
  sheet = out / "contact_sheet.png"
  write_image(sheet, contact_sheet(frames))
  timings["write"] = time.perf_counter() - t0
  timings["total"] = time.perf_counter() - start

  h, w = frames[0].shape[:2]
  summary = {
      "what": "portrait + speech -> upper-body talking video through infer.stream (mode upper, refine)",
      "models": source, "checkpoint": str(checkpoint), "image": str(image), "audio": str(audio),
      "audio_seconds": round(samples.size / SAMPLE_RATE, 3), "frames": len(frames), "fps": FPS,
      "size": [h, w], "sampling_steps": num_steps, "trained": trained,
      "seconds": {k: round(v, 2) for k, v in timings.items()},
      "first_frame_seconds_incl_compile": round(first_frame_s, 2),
      "outputs": {"video": str(video), "contact_sheet": str(sheet), "summary": str(out / "summary.json")},
      "device": str(jax.devices()[0]),
  }
  (out / "summary.json").write_text(json.dumps(summary, indent=2))
  return summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m infer.demo", description=__doc__.split("\n\n")[0],
                              epilog=__doc__.split("\n\n", 2)[2],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
  p.add_argument("--image", default=str(ASSETS_PORTRAIT), help="portrait (default: the bundled one)")
  p.add_argument("--audio", default=str(ASSETS_SPEECH), help="speech, any audio file (default: bundled)")
  p.add_argument("--checkpoint", help="directory of trained workdirs: use it instead of training (default: "
                                      f"{BUNDLED_CHECKPOINT} if it exists)")
  p.add_argument("--steps-render", type=int, default=STEPS_RENDER,
                 help=f"training steps of each renderer (render, face_refine; default {STEPS_RENDER})")
  p.add_argument("--steps-motion", type=int, default=STEPS_MOTION,
                 help=f"training steps of each motion model (default {STEPS_MOTION})")
  p.add_argument("--clip", default=str(ASSETS_CLIP), help="talking clip to train on (default: bundled)")
  p.add_argument("--clip-seconds", type=float, default=None,
                 help="preprocess only the first S seconds of the clip (default: all of it)")
  p.add_argument("--steps", type=int, default=DEFAULTS.num_steps,
                 help=f"DDIM steps of the motion samplers (default {DEFAULTS.num_steps})")
  p.add_argument("--seed", type=int, default=DEFAULTS.seed)
  return p.parse_args(argv)


def _compilation_cache(path: pathlib.Path) -> None:
  """JAX's persistent compilation cache in OUT (unless JAX_COMPILATION_CACHE_DIR chose one): a rerun loads
  the compiled stream step (and the train steps, when it trains further) instead of compiling again."""
  import os

  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def main(argv: Sequence[str] | None = None) -> int:
  a = parse_args(argv)
  _compilation_cache(pathlib.Path(a.out) / "xla_cache")
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's per-checkpoint chatter
  try:
    s = run(a.out, image=a.image, audio=a.audio, checkpoint=a.checkpoint, steps_render=a.steps_render,
            steps_motion=a.steps_motion, clip=a.clip, clip_seconds=a.clip_seconds, num_steps=a.steps,
            seed=a.seed)
  except (MediaError, ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  h, w = s["size"]
  print(f"models:        {s['models']} ({s['checkpoint']})")
  for name, info in s["trained"].items():
    print(f"  {name:12s} {info['steps']} steps, final {info['final']}")
  print(f"video:         {s['outputs']['video']} ({s['frames']} frames at {s['fps']} fps, {w}x{h}, "
        f"{s['audio_seconds']} s of speech)")
  print(f"contact sheet: {s['outputs']['contact_sheet']}")
  print(f"summary:       {s['outputs']['summary']}")
  print("seconds:       " + ", ".join(f"{k} {v}" for k, v in s["seconds"].items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
