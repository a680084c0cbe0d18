"""`make demo`: the bundled portrait speaks the bundled speech, with the bundled trained models.

  python -m infer.demo --out outputs/demo [--image P] [--audio A] [--checkpoint DIR] [--steps N]
  python -m infer.demo --train [--steps-render N] [--steps-motion N] [--clip V] [--clip-seconds S] ...

Animates the portrait with the speech fed in 1-s chunks through `infer.stream`, once per mode the
checkpoint serves (the bundled one, infer/assets/checkpoint/ and its MODEL_CARD.md: upper body and
head), writing OUT/demo.mp4 (and demo_head.mp4), side_by_side.mp4, contact_sheet.png, preview.webp (the
README's animation) and summary.json. --train instead builds its own checkpoint first, tiny and briefly
trained (the pipeline working, not a model): preprocess --clip (default infer/assets/talking.mp4) into
OUT/data, train the tiny configs of motion_face, motion_body, render and face_refine into OUT/runs (a
rerun resumes). JAX's compilation cache is kept in OUT/xla_cache unless JAX_COMPILATION_CACHE_DIR is set.
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
from PIL import Image

from data import preprocess
from data.media import MediaError, read_audio, read_image
from data.preprocess_config import PreprocessConfig
from infer.media import write_animation, write_image, write_video
from infer.models import BUNDLED_CHECKPOINT, checkpoint_modes, default_checkpoint
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
PREVIEW_SECONDS, PREVIEW_HEIGHT = 3.0, 160  # the README's animated preview
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


def resize_height(frame: np.ndarray, height: int) -> np.ndarray:
  """`frame` scaled to `height` rows (aspect kept, width rounded to even)."""
  h, w = frame.shape[:2]
  if h == height:
    return np.asarray(frame)
  width = max(2, round(w * height / h / 2) * 2)
  return np.asarray(Image.fromarray(np.asarray(frame, np.uint8)).resize((width, height), Image.BILINEAR))


def side_by_side(*videos: Sequence[np.ndarray]) -> list[np.ndarray]:
  """Frame-wise concatenation of equally long videos, each scaled to the first one's height."""
  height = videos[0][0].shape[0]
  return [np.concatenate([resize_height(f, height) for f in frames], axis=1)
          for frames in zip(*videos, strict=True)]


def preview(frames: Sequence[np.ndarray], seconds: float = PREVIEW_SECONDS,
            height: int = PREVIEW_HEIGHT) -> list[np.ndarray]:
  """The README's animation: the first `seconds` at half the frame rate, `height` rows high."""
  return [resize_height(f, height) for f in frames[:round(seconds * FPS):2]]


def animate(image: pathlib.Path, samples: np.ndarray, checkpoint: pathlib.Path, options: StreamOptions,
            timings: dict[str, float]) -> list[np.ndarray]:
  """All frames of `infer.stream` on the speech fed in 1-s chunks; timings gain prepare_MODE (models
  loaded, portrait annotated, state built), animate_MODE (the first window includes compiling the step)
  and first_frame_MODE."""
  mode = options.mode
  t0 = time.perf_counter()
  frames_iter = stream(image, audio_chunks(samples, int(CHUNK_SECONDS * SAMPLE_RATE)), checkpoint=checkpoint,
                       options=options)
  timings[f"prepare_{mode}"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  frames = []
  for frame in frames_iter:
    if not frames:
      timings[f"first_frame_{mode}"] = time.perf_counter() - t0
    frames.append(frame)
  timings[f"animate_{mode}"] = time.perf_counter() - t0
  log.info("mode %s: %d frames in %.1f s", mode, len(frames), timings[f"animate_{mode}"])
  return frames


def run(out: str | pathlib.Path, *, image: str | pathlib.Path = ASSETS_PORTRAIT,
        audio: str | pathlib.Path = ASSETS_SPEECH, checkpoint: str | pathlib.Path | None = None,
        train: bool = False, steps_render: int = STEPS_RENDER, steps_motion: int = STEPS_MOTION,
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
  if train and checkpoint is not None:
    raise ValueError("--train builds its own checkpoint: drop --checkpoint, or drop --train to use it")
  start = time.perf_counter()
  out, image, audio = pathlib.Path(out), pathlib.Path(image), pathlib.Path(audio)
  samples = _check_inputs(image, audio)
  out.mkdir(parents=True, exist_ok=True)
  timings: dict[str, float] = {}
  trained: dict = {}
  if train:
    checkpoint, trained = build_checkpoint(out, clip=pathlib.Path(clip), clip_seconds=clip_seconds,
                                           steps_render=steps_render, steps_motion=steps_motion,
                                           timings=timings)
    # Clip x̂0 at 3 std, as for random weights: a few steps leave ε uncalibrated.
    source, clip_x0 = f"tiny models trained here on {clip}", 3.0
  else:
    checkpoint = checkpoint if checkpoint is not None else default_checkpoint()
    if checkpoint is None:
      raise FileNotFoundError(f"no bundled checkpoint in {BUNDLED_CHECKPOINT}: pass --checkpoint DIR, or "
                              "--train to train tiny models here")
    checkpoint = pathlib.Path(checkpoint)
    if not checkpoint.is_dir():
      raise FileNotFoundError(f"checkpoint directory {checkpoint} does not exist")
    source = "bundled trained models" if checkpoint == BUNDLED_CHECKPOINT else f"checkpoint {checkpoint}"
    clip_x0 = "auto"
  modes = checkpoint_modes(checkpoint)
  if not modes:
    raise FileNotFoundError(f"{checkpoint} holds no streamable models (want motion_face/, render/ and for "
                            "mode upper motion_body/: infer.models)")
  videos = {}
  for mode in modes:
    options = StreamOptions(mode=mode, seed=seed, num_steps=num_steps, clip_x0=clip_x0)
    videos[mode] = animate(image, samples, checkpoint, options, timings)

  t0 = time.perf_counter()
  paths = {mode: out / ("demo.mp4" if i == 0 else f"demo_{mode}.mp4") for i, mode in enumerate(modes)}
  for mode, frames in videos.items():
    write_video(paths[mode], frames, FPS, audio=samples, sample_rate=SAMPLE_RATE)
  both = side_by_side(*videos.values())
  outputs = {"video": str(paths[modes[0]]), "videos": {m: str(p) for m, p in paths.items()}}
  if len(modes) > 1:
    write_video(out / "side_by_side.mp4", both, FPS, audio=samples, sample_rate=SAMPLE_RATE)
    outputs["side_by_side"] = str(out / "side_by_side.mp4")
  write_image(out / "contact_sheet.png", contact_sheet(both))
  write_animation(out / "preview.webp", preview(both), FPS / 2)
  outputs.update(contact_sheet=str(out / "contact_sheet.png"), preview=str(out / "preview.webp"),
                 summary=str(out / "summary.json"))
  timings["write"] = time.perf_counter() - t0
  timings["total"] = time.perf_counter() - start

  summary = {
      "what": "portrait + speech -> talking video through infer.stream, mode " + " and ".join(modes),
      "models": source, "checkpoint": str(checkpoint), "image": str(image), "audio": str(audio),
      "audio_seconds": round(samples.size / SAMPLE_RATE, 3), "modes": list(modes),
      "frames": len(videos[modes[0]]), "fps": FPS,
      "size": {m: list(v[0].shape[:2]) for m, v in videos.items()}, "sampling_steps": num_steps,
      "trained": trained, "seconds": {k: round(v, 2) for k, v in timings.items()},
      "outputs": outputs, "device": str(jax.devices()[0]),
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
  p.add_argument("--checkpoint", help=f"directory of trained workdirs (default: the bundled models, "
                                      f"{BUNDLED_CHECKPOINT})")
  p.add_argument("--train", action="store_true",
                 help="train tiny models here on --clip first and animate with them (minutes; noise-like "
                      "output: it shows the training pipeline working)")
  p.add_argument("--steps-render", type=int, default=STEPS_RENDER,
                 help=f"--train: training steps of each renderer (render, face_refine; default "
                      f"{STEPS_RENDER})")
  p.add_argument("--steps-motion", type=int, default=STEPS_MOTION,
                 help=f"--train: training steps of each motion model (default {STEPS_MOTION})")
  p.add_argument("--clip", default=str(ASSETS_CLIP),
                 help="--train: talking clip to train on (default: bundled)")
  p.add_argument("--clip-seconds", type=float, default=None,
                 help="--train: preprocess only the first S seconds of the clip (default: all of it)")
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
    s = run(a.out, image=a.image, audio=a.audio, checkpoint=a.checkpoint, train=a.train,
            steps_render=a.steps_render,
            steps_motion=a.steps_motion, clip=a.clip, clip_seconds=a.clip_seconds, num_steps=a.steps,
            seed=a.seed)
  except (MediaError, ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"models:        {s['models']} ({s['checkpoint']})")
  for name, info in s["trained"].items():
    print(f"  {name:12s} {info['steps']} steps, final {info['final']}")
  for mode, path in s["outputs"]["videos"].items():
    h, w = s["size"][mode]
    print(f"video ({mode}): {path} ({s['frames']} frames at {s['fps']} fps, {w}x{h}, "
          f"{s['audio_seconds']} s of speech)")
  for name in ("side_by_side", "contact_sheet", "preview", "summary"):
    if name in s["outputs"]:
      print(f"{name + ':':15s}{s['outputs'][name]}")
  print("seconds:       " + ", ".join(f"{k} {v}" for k, v in s["seconds"].items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
