"""`python -m train.evaluate`: a checkpoint's held-out evaluation (`config.evals`) outside training.

The evaluator the training loop runs every `evals.every` steps (`train.render_eval` for the renderers),
on the EMA weights of a workdir's latest checkpoint or of an export (`python -m train.export`), with the
pair counts given here instead of the run's: the loop scores a few pairs to stay cheap, a final number
wants more. Prints the scores and writes them (and the contact sheets as PNG) to --out.

  python -m train.evaluate --workdir ~/runs/head_skip --max-clips 58 --frames-per-clip 8 --out DIR
  python -m train.evaluate --workdir infer/assets/checkpoint/render_head --data-dir ~/data/camp

With --refine (a face-refine workdir or export) and a body renderer as --workdir it also runs the face-refine
ablation (`train.render_eval.RefineAblation`): the body renderer's frames with and without the refine pasted
back, on the same pairs.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence

import numpy as np

from chatanyone_jax.stream_step import to_uint8
from train import checkpoint, export, render_eval, tasks


def _eval_config(workdir: str | pathlib.Path, data_dir: str | None, splits: Sequence[str] | None,
                 max_clips: int | None, frames_per_clip: int | None):
  """The config of `workdir` with its evaluation on (`config.evals`) and the given overrides (None keeps
  the config's value); raises when it has none or its records are missing."""
  config = checkpoint.load_config(workdir)
  with config.unlocked():
    if data_dir is not None:
      config.data_dir = str(data_dir)
    if config.get("evals") is None:
      raise ValueError(f"{workdir}: task {config.task!r} has no held-out evaluation (config.evals)")
    config.evals.every = max(1, config.evals.every)  # make_evaluator builds none for a run with evals off
    for key, value in (("splits", tuple(splits) if splits else None), ("max_clips", max_clips),
                       ("frames_per_clip", frames_per_clip)):
      if value is not None:
        config.evals[key] = value
  if not config.get("data_dir") or not pathlib.Path(config.data_dir).exists():
    raise FileNotFoundError(f"records {config.get('data_dir')!r} of {workdir} not found: pass --data-dir "
                            "(the `python -m data.preprocess` output the model was trained on)")
  return config


def evaluate(workdir: str | pathlib.Path, *, data_dir: str | None = None, splits: Sequence[str] | None = None,
             max_clips: int | None = None, frames_per_clip: int | None = None
             ) -> tuple[dict[str, float], dict[str, np.ndarray], int]:
  """(scalars, contact sheets, step) of the weights in `workdir` (a workdir or an export) on the held-out
  splits of its config's records (or of `data_dir`); None keeps the config's value."""
  config = _eval_config(workdir, data_dir, splits, max_clips, frames_per_clip)
  task = tasks.get_task(config)
  evaluator = task.make_evaluator()
  if evaluator is None:
    raise ValueError(f"{workdir}: task {config.task!r} has no held-out evaluator")
  weights = export.load_weights(workdir)
  state = {"ema": weights["params"], "gen": {"batch_stats": weights.get("batch_stats", {})}}
  scalars, images = evaluator.run(state)
  return scalars, images, int(weights["step"])


def refine_ablation(workdir: str | pathlib.Path, refine: str | pathlib.Path, *, data_dir: str | None = None,
                    splits: Sequence[str] | None = None, max_clips: int | None = None,
                    frames_per_clip: int | None = None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """`render_eval.RefineAblation` of the body renderer in `workdir` with the face refine in `refine` (each a
  workdir or an export) on the pairs `evaluate` scores (same arguments)."""
  config = _eval_config(workdir, data_dir, splits, max_clips, frames_per_clip)
  ev = config.evals
  refine_task = tasks.get_task(checkpoint.load_config(refine))
  ablation = render_eval.RefineAblation(tasks.get_task(config), refine_task, config.data_dir, ev.splits,
                                        ev.max_clips, ev.frames_per_clip)
  return ablation.run(export.load_weights(workdir), export.load_weights(refine))


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True, help="a `python -m train.main` workdir or a train.export folder")
  p.add_argument("--data-dir", help="records to evaluate on (default: the config's data_dir)")
  p.add_argument("--splits", help="comma-separated records splits (default: the config's evals.splits)")
  p.add_argument("--max-clips", type=int, help="clips per split (default: the config's)")
  p.add_argument("--frames-per-clip", type=int, help="driving frames per clip (default: the config's)")
  p.add_argument("--refine", help="a face-refine workdir or export: also run the face-refine ablation")
  p.add_argument("--out", help="writes eval.json and the contact sheets (PNG) here")
  args = p.parse_args(argv)
  try:
    scalars, images, step = evaluate(args.workdir, data_dir=args.data_dir,
                                     splits=args.splits.split(",") if args.splits else None,
                                     max_clips=args.max_clips, frames_per_clip=args.frames_per_clip)
    if args.refine:
      more, sheets = refine_ablation(args.workdir, args.refine, data_dir=args.data_dir,
                                     splits=args.splits.split(",") if args.splits else None,
                                     max_clips=args.max_clips, frames_per_clip=args.frames_per_clip)
      scalars, images = {**scalars, **more}, {**images, **sheets}
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"step {step}")
  for key, value in sorted(scalars.items()):
    print(f"  {key}: {value:.4f}")
  if args.out:
    from PIL import Image

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = {"workdir": str(args.workdir), "step": step}
    if args.refine:
      info["refine"] = str(args.refine)
    (out / "eval.json").write_text(json.dumps({**info, **scalars}, indent=1))
    for tag, sheet in images.items():
      Image.fromarray(np.asarray(to_uint8(sheet))).save(out / (tag.replace("/", "_") + ".png"))
    print(f"wrote {out / 'eval.json'}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
