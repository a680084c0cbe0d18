"""Stage-1b behaviour of an UpperBodyMotion trained on real data: is the body motion it samples smooth,
and does it move as much as real bodies do?

  python -m benchmarks.body_motion --data DATA --workdir W [--workdir W2 ...] [--split validation]
      [--max-windows N] [--num-steps 10] [--seed 0]

For every non-overlapping window of the records' split, each workdir's (or export's) EMA model samples the
window as the streaming step does (DDIM `--num-steps`, x̂0 clipped at `sampling.CLIP_X0`, the model's own
prediction type), conditioned on the window's true head keypoints, audio and identity. Scores, on the
body keypoints' motion relative to the first frame of each sequence, s·δ + t in body units (1 = half
the body crop's width; what moves X_body in the renderer):
  * frame_change: mean |x_f - x_{f-1}| over keypoints and frames, generated and true (their ratio is the
    jitter: about 1 for a model that moves as real bodies do; the ε-trained bundled small model jumped
    every frame);
  * motion_std: std over each window's frames, mean over keypoints, generated and true;
  * mae: mean |generated - true| (a sample, not the conditional mean: not expected to be 0).
Prints one JSON line per model and a Markdown table (the rows of RESULTS.md's body-motion section).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax.motion.diffusion import ddim_sample
from chatanyone_jax.motion.sampling import CLIP_X0
from infer.evaluation.scoring import open_split
from infer.evaluation.style_transfer import motion_windows
from train import checkpoint as ckpt
from train import tasks
from train.export import load_weights


def body_relative(task, target_raw: np.ndarray) -> np.ndarray:
  """(B, T, layout.dim) raw packed targets -> (B, T, K_b, 3) body keypoints minus s·x_c: s·δ + t."""
  parts = task.body_config.layout.unpack(jnp.asarray(target_raw))
  return np.asarray(parts["scale"][..., None] * parts["body_delta"] + parts["translation"][..., None, :])


def motion_scores(generated: np.ndarray, true: np.ndarray) -> dict:
  """Scores of (B, T, K, 3) generated vs true relative body keypoints (module docstring)."""
  change = lambda x: float(np.mean(np.linalg.norm(np.diff(x, axis=1), axis=-1)))
  spread = lambda x: float(np.mean(np.std(x, axis=1)))
  out = {"frame_change": change(generated), "frame_change_true": change(true),
         "motion_std": spread(generated), "motion_std_true": spread(true),
         "mae": float(np.mean(np.linalg.norm(generated - true, axis=-1)))}
  out["jitter_ratio"] = out["frame_change"] / max(out["frame_change_true"], 1e-9)
  return out


def evaluate(workdir: str | os.PathLike, data: str | os.PathLike, split: str = "validation", *,
             num_steps: int = 10, seed: int = 0, max_windows: int | None = None) -> dict:
  """Samples WORKDIR's body model on the split's windows and scores it (module docstring)."""
  workdir = pathlib.Path(workdir)
  config = ckpt.load_config(workdir)
  if config.get("task") != "motion_body":
    raise ValueError(f"{workdir} holds a {config.get('task')!r} run, not motion_body")
  open_split(data, split)
  task = tasks.get_task(config)
  loaded = load_weights(workdir)
  params, norm = jax.tree.map(jnp.asarray, loaded["params"]), jax.tree.map(jnp.asarray, loaded["norm"])
  w = motion_windows(config, task, data, split)
  if max_windows is not None:
    w = {k: v[:max_windows] for k, v in w.items()}
  mb = task.model_batch(params, {k: jnp.asarray(w[k]) for k in ("target", "head_kp", "audio", "identity")},
                         norm)

  @jax.jit
  def sample(key):
    eps_fn = lambda x, t: task.model.apply({"params": params["body"]}, x, t, mb["head_kp"], mb["audio"],
                                           mb["appearance"])
    x = ddim_sample(eps_fn, task.schedule, mb["target"].shape, key, num_steps=num_steps, clip_x0=CLIP_X0,
                    prediction=task.body_config.prediction)
    return x * norm["target_std"] + norm["target_mean"]

  generated = np.asarray(sample(jax.random.key(seed)))
  out = motion_scores(body_relative(task, generated), body_relative(task, w["target"]))
  out.update(windows=int(generated.shape[0]), clips=int(len(set(np.asarray(w["clip_index"]).tolist()))),
             step=int(loaded["step"]), prediction=task.body_config.prediction, num_steps=num_steps,
             split=split)
  return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m benchmarks.body_motion", description=__doc__.split("\n")[0])
  p.add_argument("--data", required=True, help="preprocessed records (python -m data.preprocess)")
  p.add_argument("--workdir", action="append", required=True,
                 help="a motion_body workdir or export (repeat to compare several)")
  p.add_argument("--split", default="validation")
  p.add_argument("--max-windows", type=int, default=None)
  p.add_argument("--num-steps", type=int, default=10, help="DDIM steps (the stream's default)")
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  logging.basicConfig(level=logging.INFO)
  a = parse_args(argv)
  rows = []
  for workdir in a.workdir:
    r = evaluate(workdir, a.data, a.split, num_steps=a.num_steps, seed=a.seed, max_windows=a.max_windows)
    print(json.dumps({"workdir": workdir, **r}))
    rows.append(f"| {workdir} | {r['prediction']} | {r['step']} | {r['windows']} ({r['clips']} clips) | "
                f"{r['frame_change']:.4f} / {r['frame_change_true']:.4f} ({r['jitter_ratio']:.2f}x) | "
                f"{r['motion_std']:.4f} / {r['motion_std_true']:.4f} | {r['mae']:.4f} |")
  print("| model | prediction | step | windows | frame change generated / true (jitter) | motion std "
        "generated / true | MAE |\n|---|---|---|---|---|---|---|")
  print("\n".join(rows))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
