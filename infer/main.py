"""Portrait + speech -> talking video (h264 mp4 with the speech muxed in), through `infer.stream`.

  python -m infer.main --image portrait.jpg --audio speech.wav --out out.mp4 [--checkpoint runs/]
      [--mode upper|head] [--amplitude X] [--pose-range X] [--reference ref.mp4] [--no-refine]
      [--no-lip] [--steps N] [--guidance G] [--seed S]

--checkpoint is a directory of `python -m train.main` workdirs: motion_face/, motion_body/ (mode
upper), render/ (an upper512x768- or head512-family renderer), optionally render_head/ (mode head),
face_refine/ and motion_lip/ (the mouth from a lip regressor; --no-lip: the face model's own); by
default the trained models bundled in infer/assets/checkpoint/ (MODEL_CARD.md there).
--random-weights runs the whole pipeline with random tiny networks instead: a smoke test of the
installation, its output is meaningless. The audio may be any format / rate / channel count (it is
decoded to 16 kHz mono) and is fed to the generator in chunks, as a live stream would be.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from chatanyone_jax.stream_spec import MODES
from data.media import MediaError, read_audio
from infer.avatar import load_portrait
from infer.media import write_video
from infer.models import default_checkpoint
from infer.options import LOW_LATENCY, WHOLE_WINDOWS, StreamOptions, Style
from infer.streaming import FPS, SAMPLE_RATE, audio_chunks, num_output_frames, stream

DEFAULTS, STYLE_DEFAULTS = StreamOptions(), Style()  # the flags' defaults are infer.stream's
NO_CHECKPOINT = ("no trained checkpoint given and none bundled (infer/assets/checkpoint/): train with "
                 "python -m train.main (motion_face, motion_body, render workdirs under one directory) or "
                 "pass --checkpoint DIR; --random-weights runs a "
                 "smoke test with random networks (meaningless output)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m infer.main", description=__doc__.split("\n\n")[0],
                              epilog=__doc__.split("\n\n", 2)[2],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--image", required=True, help="portrait image (PNG / JPEG)")
  p.add_argument("--audio", required=True, help="speech: any audio file or a video's audio track")
  p.add_argument("--out", required=True, help="output .mp4")
  p.add_argument("--checkpoint", help="directory of training workdirs (see above; default: the bundled "
                                      "models)")
  p.add_argument("--mode", choices=MODES, default=DEFAULTS.mode,
                 help="upper: upper body with hands (default); head: head renderer on the head crop")
  p.add_argument("--amplitude", type=float, default=STYLE_DEFAULTS.amplitude,
                 help="expression amplitude (1 = typical, 0 = still)")
  p.add_argument("--pose-range", type=float, default=STYLE_DEFAULTS.pose_range,
                 help="head-pose range (1 = typical, 0 = still)")
  p.add_argument("--reference", help="reference video whose expressions set the speaking style")
  p.add_argument("--no-refine", action="store_true", help="skip the face-refine pass")
  p.add_argument("--no-lip", action="store_true",
                 help="the face model's own mouth instead of the checkpoint's lip regressor (motion_lip/)")
  p.add_argument("--steps", type=int, default=DEFAULTS.num_steps, help="DDIM steps of the motion samplers")
  p.add_argument("--guidance", type=float, default=DEFAULTS.guidance_scale,
                 help="classifier-free guidance of the face motion (1 = off; default "
                      f"{DEFAULTS.guidance_scale:g}: clearer style controls and reference transfer, one "
                      "extra batched model call per step)")
  p.add_argument("--seed", type=int, default=DEFAULTS.seed)
  p.add_argument("--seam-frames", type=int,
                 help="frames over which each motion window is joined to the frames before it (0 = off; "
                      f"default {DEFAULTS.seam_frames}, {LOW_LATENCY['seam_frames']} with --latency low)")
  p.add_argument("--latency", choices=("window", "low"), default="window",
                 help="window (default): one 1.33 s motion window per step; low: a step every "
                      f"{LOW_LATENCY['hop']} frames with {LOW_LATENCY['lookahead']} frames of audio "
                      "look-ahead "
                      "(infer.options.LOW_LATENCY; --hop / --lookahead set them directly)")
  p.add_argument("--hop", type=int, help="video frames per step (1 .. T; overrides --latency)")
  p.add_argument("--lookahead", type=int, help="frames of audio look-ahead per step (overrides --latency)")
  p.add_argument("--bf16", action="store_true",
                 help="run the per-frame renderer networks in bfloat16 (the fast path on GPUs)")
  p.add_argument("--chunk-seconds", type=float, default=1.0, help="audio fed to the stream per chunk")
  p.add_argument("--random-weights", action="store_true",
                 help="smoke test: random tiny networks instead of a checkpoint (output is meaningless)")
  return p.parse_args(argv)


def stream_options(args: argparse.Namespace) -> StreamOptions:
  """The `StreamOptions` of the command line: --latency's preset (`LOW_LATENCY` or `WHOLE_WINDOWS`), then
  --hop, --lookahead and --seam-frames over it."""
  if args.steps < 1:
    raise ValueError(f"--steps must be >= 1, got {args.steps}")
  if args.guidance < 0:
    raise ValueError(f"--guidance must be >= 0 (1 = no guidance), got {args.guidance}")
  if args.seam_frames is not None and args.seam_frames < 0:
    raise ValueError(f"--seam-frames must be >= 0, got {args.seam_frames}")
  latency = dict(LOW_LATENCY if args.latency == "low" else WHOLE_WINDOWS)
  for key in ("hop", "lookahead", "seam_frames"):
    if getattr(args, key) is not None:
      latency[key] = getattr(args, key)
  return StreamOptions(mode=args.mode, refine=not args.no_refine, lip=not args.no_lip, seed=args.seed,
                       num_steps=args.steps,
                       guidance_scale=args.guidance, render_dtype="bfloat16" if args.bf16 else "float32",
                       **latency)


def run(args: argparse.Namespace) -> int:
  """Writes the video; returns the number of frames."""
  from tqdm import tqdm

  if args.checkpoint is None and not args.random_weights:
    args.checkpoint = default_checkpoint()
    if args.checkpoint is None:
      raise ValueError(NO_CHECKPOINT)
  options = stream_options(args)
  style = Style(amplitude=args.amplitude, pose_range=args.pose_range, reference_video=args.reference)
  audio = read_audio(args.audio, SAMPLE_RATE)
  total = num_output_frames(audio.size)
  if total == 0:
    raise MediaError(f"{args.audio} is shorter than one video frame ({1 / FPS:.3f} s)")
  portrait = load_portrait(args.image)  # a bad or faceless portrait fails here, before any model is built
  params = configs = None
  if args.checkpoint is None:
    from infer.smoke import random_params  # the training stack loads only for --random-weights

    logging.warning("--random-weights: random networks, the video is a smoke test and shows noise")
    params, configs = random_params(args.mode, refine=not args.no_refine, seed=args.seed)
  frames = stream(portrait, audio_chunks(audio, max(1, int(args.chunk_seconds * SAMPLE_RATE))),
                  checkpoint=args.checkpoint, options=options, style=style, params=params, configs=configs)
  bar = tqdm(frames, total=total, desc="frames", unit="frame")
  n = write_video(args.out, bar, FPS, audio=audio, sample_rate=SAMPLE_RATE)
  bar.close()
  return n


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  try:
    n = run(args)
  except (MediaError, ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  logging.info("wrote %s (%d frames at %d fps)", args.out, n, FPS)
  return 0


if __name__ == "__main__":
  sys.exit(main())
