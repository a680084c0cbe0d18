"""Table 4, style transfer: the face-motion workdir (motion_face/) on every window of a split's clips.

MAE and SSIM of DDIM-sampled expression coefficients against the ground truth, with a reference sequence
(another window of the same clip) and without one; each given the window's ground-truth history (its
frames before the window) and, in the "no history" rows, without it (as the first window of a stream,
where the reference matters most).
"""

from __future__ import annotations

import functools
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax import metrics
from chatanyone_jax import template as tp
from chatanyone_jax.motion.face_motion_dit import style_controls
from chatanyone_jax.motion.sampling import CLIP_X0, GUIDANCE_SCALE, FaceConditions, sample_window
from data import pipelines
from infer.evaluation.scoring import load_motion_face, open_split


def motion_windows(config, task, data: str | os.PathLike, split: str) -> dict:
  """Every non-overlapping window (with its history and a same-clip reference) of a split, adapted by the
  motion task; plus clip_index."""
  loader = pipelines.motion_windows(data, batch_size=1, split=split, shuffle=False, num_epochs=1,
                                    config=pipelines.MotionWindowConfig(window=config.window,
                                                                        history=config.history,
                                                                        stride=config.window))
  rows = [task.adapt(b) | {"clip_index": b["clip_index"]} for b in loader]
  if not rows:
    raise ValueError(f"{data} split {split!r} has no motion window of {config.history + config.window} "
                     "frames: use longer clips")
  return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def expression_scores(generated: jax.Array, target: jax.Array) -> tuple[float, float]:
  """Table 4's (MAE, SSIM) of generated vs ground-truth expression windows (B, T, n_exp); SSIM's data
  range is the ground truth's."""
  data_range = float(target.max() - target.min())
  return (float(jnp.mean(jnp.abs(generated - target))),
          float(jnp.mean(metrics.sequence_ssim(generated, target, data_range))))


def style_transfer(checkpoint: str | os.PathLike, data: str | os.PathLike, split: str, *, num_steps: int = 10,
                   seed: int = 0, clip_x0: float | None = CLIP_X0, max_windows: int | None = None,
                   guidance_scale: float = GUIDANCE_SCALE) -> dict:
  """Table 4 (module docstring): MAE / SSIM of generated vs ground-truth expression coefficients."""
  open_split(data, split)  # a clear error for a missing split
  workdir = pathlib.Path(checkpoint) / "motion_face"
  if not workdir.is_dir():
    raise FileNotFoundError(f"{workdir} is missing: Table 4 needs the FaceMotionDiT workdir")
  config, task, params, norm = load_motion_face(workdir)
  w = motion_windows(config, task, data, split)
  if max_windows is not None:
    w = {k: v[:max_windows] for k, v in w.items()}
  n = w["motion"].shape[0]
  h = config.history
  mean, std = np.asarray(norm["motion_mean"]), np.asarray(norm["motion_std"])
  motion = (w["motion"] - mean) / std
  target, history = motion[:, h:], motion[:, :h]
  reference = (w["ref_motion"] - mean) / std
  dit = task.models.dit
  # The windows' own audio; a Whisper front end's left context is silence here (windows cut out of clips).
  audio = np.pad(np.asarray(w["audio"], np.float32), ((0, 0), (task.speech_context, 0)))
  tokens = jax.jit(task.window_tokens)(params, task.speech_params(), jnp.asarray(audio))
  style = style_controls(jnp.asarray(target))

  # Without a reference video, a model with the reference input uses its learned null reference.
  has_ref = "ref_proj" in params["face"]
  ref = jnp.asarray(reference[..., :dit.config.ref_dim]) if has_ref else None

  @functools.partial(jax.jit, static_argnums=(0, 1))
  def generate(with_ref: bool, with_history: bool, key):
    cond = FaceConditions(tokens, jnp.asarray(history), style, ref, jnp.full((n,), with_history),
                          jnp.full((n,), with_ref) if has_ref else None)
    return sample_window(dit, params["face"], cond, key, schedule=task.schedule, num_steps=num_steps,
                         guidance_scale=guidance_scale, clip_x0=clip_x0)

  exp_gt = jnp.asarray(target[..., :tp.NUM_EXP])
  key = jax.random.key(seed)
  rows = {}
  variants = ([("with reference", True)] if has_ref else []) + [("without reference", False)]
  for suffix, with_history in (("", True), (", no history", False)):
    for name, with_ref in variants:
      mae, ssim = expression_scores(generate(with_ref, with_history, key)[..., :tp.NUM_EXP], exp_gt)
      rows[name + suffix] = {"MAE": mae, "SSIM": ssim}
  if not has_ref:
    for suffix in ("", ", no history"):
      rows["without reference" + suffix]["note"] = ("model has no reference input (trained with "
                                                    "use_reference=False)")
  return {"rows": rows, "windows": int(n), "clips": int(len(set(np.asarray(w["clip_index"]).tolist()))),
          "units": "normalised expression coefficients", "num_steps": num_steps,
          "guidance_scale": guidance_scale}
