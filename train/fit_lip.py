"""`python -m train.fit_lip`: the linear lip regressor (task "motion_lip") fitted in closed form.

  python -m train.fit_lip --out DIR --config train/configs/motion_lip.py[:small] --config.data_dir=RECORDS

A LipRegressor without a hidden layer is a linear map of 2 · context + 1 frames of standardised speech
features, so its least-squares fit is ridge regression, solved exactly instead of by gradient steps: on
the CPU's data a few thousand Adam steps of `python -m train.main` stopped well short of it (held-out mouth
correlation 0.39 against 0.47, benchmarks/RESULTS.md "A lip regressor"). One pass over the task's training
windows (its loader: the cached Whisper features, silence and look-ahead augmentation, unheard and padded
frames left out, as `MotionLip.loss`) accumulates the moments of the context-stacked features and the
normalised expression per fold of people (`data.splits` file, config.lip_folds folds), every training
frame weighted once however many overlapping windows hold it (`frame_weights`); the penalty is picked
from config.lip_penalties (per training frame) by the held-out folds' unexplained variance of the mouth
keypoints (`MOUTH_KEYPOINTS`, what the stream takes from the regressor) after removing each window's mean
and rescaling each coordinate's prediction at best (the motion within a window, scale-free, as a per-clip
correlation scores it; plain squared error rewards shrinking towards the mean), then the map is solved on
all windows and (config.lip_match_variance) scaled about the mean so that its mouth moves as much as the
training clips' ("gain" in the report). With a speech gate (config.model.lip.gate) a second ridge fit on
the same features (same penalty) gives one more output, 1 on speech frames and 0 inside silence spans
(`data.pipelines` "silence"), the expression is fitted on the speech frames alone (each frame weighted by 1
- silence), and the gate's rest expression is the mean target wholly inside the spans (the clips' closed
mouths); config.lip_gate_sharpness steepens the fitted gate about 1/2 (a least-squares fit of a 0/1 target
stays between them where it should decide). The normalisation statistics are `MotionLip.norm_stats` of the
first config.stats_batches batches, as training's. Writes DIR as an export (`train.export`: config.json,
params.msgpack, export.json with the cross-validation table under "fit") that `infer.models` reads as
motion_lip/.
"""

from __future__ import annotations

import logging
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from chatanyone_jax.motion.lip_regressor import MOUTH_KEYPOINTS
from chatanyone_jax.template import KEYPOINT_NAMES, load_head_template
from data import pipelines, records
from data.splits import SPLIT_FILE, read_rows
from train import export, tasks

log = logging.getLogger(__name__)

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "train/configs/motion_lip.py[:variant]", lock_config=False)
flags.DEFINE_string("out", None, "the export folder written (e.g. RUNS/motion_lip)")
flags.DEFINE_string("split_file", str(SPLIT_FILE), "people of the clips (folds of the penalty's CV)")
flags.mark_flags_as_required(["config", "out"])


def stack_context(x: jax.Array, context: int) -> jax.Array:
  """(B, T, D) -> (B, T, (2 · context + 1) · D): frame t's features at t - context .. t + context (zeros
  outside the window), the input a kernel-(2 · context + 1) SAME convolution reads, in its tap order."""
  t = x.shape[1]
  padded = jnp.pad(x, ((0, 0), (context, context), (0, 0)))
  return jnp.concatenate([padded[:, j:j + t] for j in range(2 * context + 1)], axis=-1)


def person_folds(data_dir: str, split: str, folds: int, split_file: str | None) -> np.ndarray:
  """(num_clips,) fold of each clip of the split: its person (the split file's "person" column; the video
  name for a video the file lacks) in `folds` groups, people dealt round-robin in sorted order."""
  person = {r["video"]: r["person"] for r in read_rows(split_file)} if split_file else {}
  clips = records.data_source(data_dir, "clips", split)
  names = []
  for i in range(len(clips)):
    v = clips[i]["video"]
    v = v.decode() if isinstance(v, bytes) else str(v)
    names.append(person.get(v, v))
  order = {p: k % folds for k, p in enumerate(sorted(set(names)))}
  return np.asarray([order[p] for p in names], np.int32)


def frame_weights(clip_frames, index: pipelines.WindowIndex, history: int, window: int) -> list[np.ndarray]:
  """1 / (windows of `index` whose T generated frames hold the frame), per frame of each clip, padded with
  `history` zeros on both sides (a short clip's padded window starts at -history): weighted so, every
  training frame counts once in the fit, however many overlapping windows hold it (a long clip's frames
  are in T / stride windows, a word clip's in one)."""
  cover = [np.zeros(n + 2 * history + window) for n in clip_frames]
  for c, s in index.rows:
    cover[c][s + 2 * history:s + 2 * history + window] += 1
  return [np.where(k > 0, 1.0 / np.maximum(k, 1), 0.0) for k in cover]


def fit(config: ml_collections.ConfigDict, split_file: str | None = str(SPLIT_FILE)) -> tuple[dict, dict]:
  """({"params", "norm"} of the fitted LipRegressor, the fit's report) for a motion_lip config."""
  task = tasks.get_task(config)
  if not isinstance(task, tasks.MotionLip):
    raise ValueError(f"config.task is {config.task!r}: train.fit_lip fits the 'motion_lip' task")
  model = task.model
  if model.hidden:
    raise ValueError("the closed-form fit is of the linear regressor (config.model.lip.hidden 0); train one "
                     "with a hidden layer by `python -m train.main`")
  c = config
  meta = records.read_meta(c.data_dir)
  index = pipelines.WindowIndex(meta["clip_frames"][c.split], task.window_config())
  num_windows = len(index)
  num_batches = math.ceil(num_windows / c.batch_size)
  weight_of = frame_weights(meta["clip_frames"][c.split], index, c.history, c.window)
  fold_of = person_folds(c.data_dir, c.split, c.lip_folds, split_file)
  loader = iter(task.loader(c.batch_size, seed=c.seed))
  raw = [next(loader) for _ in range(min(c.stats_batches, num_batches))]
  norm = task.norm_stats([task.adapt(b) for b in raw])
  h, k, e = c.history, model.context, tasks.NUM_EXP
  if model.gate and not c.get("silence_prob", 0.0) > 0:
    raise ValueError("the speech gate (config.model.lip.gate) is fitted on silence augmentation's spans: set "
                     "config.silence_prob > 0")

  @jax.jit
  def rows(batch):
    x = stack_context(jnp.asarray(task.frame_inputs(batch["speech"], norm)), k)
    x = jnp.concatenate([x, jnp.ones(x.shape[:2] + (1,), x.dtype)], axis=-1)  # the bias
    y = (batch["motion"][:, h:, :e] - norm["exp_mean"]) / norm["exp_std"]
    return x, y, (batch["valid"][:, h:] > 0.5) & (batch["audio_valid"] > 0.5), batch["silence"][:, h:]

  d = (2 * k + 1) * task.speech_encoder.width + 1
  xtx = np.zeros((c.lip_folds, d, d))
  xty = np.zeros((c.lip_folds, d, e))
  yty = np.zeros((c.lip_folds, e, e))
  count = np.zeros(c.lip_folds)
  # The gate (one fit, no folds): the moments of every frame with its target 1 - silence (1 on speech, 0
  # inside a silence span); the expression is then fitted on the speech frames alone (weights 1 - silence).
  gxx, gxy, g_count = np.zeros((d, d)), np.zeros(d), 0.0
  rest, rest_count = np.zeros(e), 0.0  # the gate's rest expression: the mean target inside silence spans
  # The same moments of each window's weighted mean: the cross-validation scores the error after removing
  # each window's mean (the motion within a window, what a per-clip correlation sees), not its level.
  bxx, bxy, byy = np.zeros_like(xtx), np.zeros_like(xty), np.zeros_like(yty)
  for i in range(num_batches):
    loaded = raw[i] if i < len(raw) else next(loader)
    x, y, mask, quiet = (np.asarray(a, np.float64) for a in rows(task.adapt(loaded)))
    clip, start = np.asarray(loaded["clip_index"]), np.asarray(loaded["start"])
    first = start + 2 * c.history  # the window's first generated frame in `frame_weights`' padded frames
    weight = np.stack([weight_of[cl][f:f + c.window] for cl, f in zip(clip, first, strict=True)])  # (B, T)
    fold = fold_of[clip]
    if model.gate:
      sel = mask > 0.5
      xs, ws = x[sel], weight[sel]
      gxx += xs.T @ (ws[:, None] * xs)
      gxy += xs.T @ (ws * (1.0 - quiet[sel]))
      g_count += ws.sum()
      inside = sel & (quiet > 1.0 - 1e-3)  # wholly inside a span (the ramps left out)
      rest += np.einsum("bt,bte->e", weight * inside, y)
      rest_count += float((weight * inside).sum())
      weight = weight * (1.0 - quiet)  # the expression: speech frames only
    for f in np.unique(fold):
      sel = (fold == f)[:, None] & (mask > 0.5)
      xs, ys, ws = x[sel], y[sel], weight[sel][:, None]
      xtx[f] += xs.T @ (ws * xs)
      xty[f] += xs.T @ (ws * ys)
      yty[f] += ys.T @ (ws * ys)
      count[f] += ws.sum()
      wm = np.where(sel, weight, 0.0)[fold == f]  # (b, T) the fold's windows
      total = np.maximum(wm.sum(1, keepdims=True), 1e-12)
      sx, sy = np.einsum("bt,btd->bd", wm, x[fold == f]), np.einsum("bt,btd->bd", wm, y[fold == f])
      bxx[f] += sx.T @ (sx / total)
      bxy[f] += sx.T @ (sy / total)
      byy[f] += sy.T @ (sy / total)
  if count.sum() == 0:
    raise ValueError(f"no trainable frames in {c.data_dir} split {c.split!r}")
  # The mouth keypoints (`blend_mouth` takes them from the regressor) of a normalised expression: (52, 45).
  template = load_head_template()
  names = [n for n, _ in KEYPOINT_NAMES]
  at = np.asarray([int(template.keypoint_indices[names.index(n)]) for n in MOUTH_KEYPOINTS])
  basis = np.asarray(template.exp_basis, np.float64)[:, at].reshape(tasks.NUM_EXP, -1)
  mouth = np.asarray(norm["exp_std"], np.float64)[:, None] * basis
  penalty = np.ones(d)
  penalty[-1] = 0.0  # the bias is not shrunk

  def solve(a, b, n, p):
    return np.linalg.solve(a + p * n * np.diag(penalty), b)

  table = []
  scored = [f for f in range(c.lip_folds) if 0 < count[f] < count.sum()]
  for p in c.lip_penalties if len(scored) > 1 else ():
    pred_pred, pred_true, true_true = (np.zeros(mouth.shape[1]) for _ in range(3))
    for f in scored:
      w = solve(xtx.sum(0) - xtx[f], xty.sum(0) - xty[f], count.sum() - count[f], p) @ mouth
      pred_pred += np.einsum("ia,ij,ja->a", w, xtx[f] - bxx[f], w)
      pred_true += np.einsum("ia,ia->a", w, (xty[f] - bxy[f]) @ mouth)
      true_true += np.einsum("ia,ij,ja->a", mouth, yty[f] - byy[f], mouth)
    # 1 - R² of each mouth keypoint coordinate's held-out prediction after its best rescaling (scale-free,
    # as a correlation), averaged with the weights of each coordinate's variance within windows.
    residual = true_true - pred_true ** 2 / np.maximum(pred_pred, 1e-12)
    table.append({"penalty": float(p), "cv_unexplained": float(residual.sum() / true_true.sum())})
    log.info("penalty %g: cross-validated unexplained variance within windows %.4f", p,
             table[-1]["cv_unexplained"])
  if table:
    best = min(table, key=lambda r: r["cv_unexplained"])["penalty"]
  else:  # the people of the split are in one fold: nothing to cross-validate on
    best = sorted(c.lip_penalties)[len(c.lip_penalties) // 2]
    log.warning("the training frames are all in one fold of people: no cross-validation, penalty %g", best)
  a, b, n = xtx.sum(0), xty.sum(0), count.sum()
  w = solve(a, b, n, best)  # (d, e)
  train_mse = (np.trace(w.T @ a @ w) - 2 * np.trace(w.T @ b) + np.trace(yty.sum(0))) / (n * e)
  # A least-squares fit shrinks towards the mean where the speech says little: on held-out clips its mouth
  # moved 0.4 as far as the real one, too little for the renderer to show (benchmarks/RESULTS.md). With
  # config.lip_match_variance the prediction is scaled about the training mean so that the mouth
  # keypoints move as much within a window as in the training clips (the correlation is unchanged).
  pred_var = np.trace(mouth.T @ w.T @ (a - bxx.sum(0)) @ w @ mouth)
  true_var = np.trace(mouth.T @ (yty.sum(0) - byy.sum(0)) @ mouth)
  gain = float(np.sqrt(true_var / max(pred_var, 1e-12))) if c.get("lip_match_variance", True) else 1.0
  y_mean = b[-1] / n  # the bias column's moments are the target's weighted sum
  w = w * gain
  w[-1] += (1.0 - gain) * y_mean
  if model.gate:  # its column after the expression's, with the same penalty, steepened about 1/2
    sharp = float(c.get("lip_gate_sharpness", 1.0))
    g = solve(gxx, gxy[:, None], g_count, best) * sharp
    g[-1] += 0.5 * (1.0 - sharp)
    w = np.concatenate([w, g], axis=1)
  width = task.speech_encoder.width
  params = {"conv": {"kernel": w[:-1].reshape(2 * k + 1, width, w.shape[1]).astype(np.float32),
                     "bias": w[-1].astype(np.float32)}}
  report = {"penalty": best, "cv": table, "train_mse": float(train_mse), "gain": gain,
            "frames": int(count.sum()),
            "windows": num_windows, "folds": int(c.lip_folds)}
  if model.gate:
    if rest_count == 0:
      raise ValueError("no training frame lies inside a silence span: the gate's rest expression needs "
                       "silence augmentation (config.silence_prob) on enough windows")
    params["rest"] = (rest / rest_count).astype(np.float32)
    report["rest_frames"] = rest_count
  return {"params": params, "norm": jax.device_get(norm)}, report


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  config = FLAGS.config
  try:
    weights, report = fit(config, FLAGS.split_file or None)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  export.check_arrays(config, {"params": weights["params"]}, FLAGS.out)
  info = export.write_export(FLAGS.out, config, weights, step=0, source=str(pathlib.Path(config.data_dir)),
                             fit=report)
  print(f"wrote {FLAGS.out}: penalty {report['penalty']:g}, {report['frames']} frames, "
        f"{info['bytes']} bytes")
  return 0


if __name__ == "__main__":
  app.run(main)
