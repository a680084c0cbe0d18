"""Held-out evaluation of a renderer inside training (`config.evals`, as big_vision's evaluators).

Every `evals.every` steps and at the end, the EMA generator reconstructs fixed pairs of each split in
`evals.splits` and is scored against the copy-the-source baseline on the same frames: L1, PSNR and SSIM
(`chatanyone_jax.metrics`), and L1 inside the driving frame's face and hand masks (face_l1, hand_l1, over
the frames that show the region: the measures of the face-refine and hand-injection ablations). Pairs:
"heldout_frames" (the last share of each training clip, records built with `--heldout-tail`): source = the
clip's first training frame, driving = its held-out frames; "validation" (people not in training,
`data/splits/people.tsv`): source = the clip's first frame, driving = its later frames. Up to
`evals.max_clips` clips per split (evenly spread over the split) and `evals.frames_per_clip` driving frames
per clip (evenly spread). The trainer writes the scores as `eval/<split>/<metric>` scalars (TensorBoard,
metrics.jsonl) and a contact sheet per split: source | target | generated | copy-source, one row per clip.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from chatanyone_jax import metrics, xla_options
from chatanyone_jax.render import face_refine, train_step
from chatanyone_jax.stream_spec import StreamSpec
from data import pipelines, records

log = logging.getLogger(__name__)


def _spread(n: int, k: int, start: int = 0) -> list[int]:
  """Up to k indices evenly spread over [start, n)."""
  if n <= start:
    return []
  return sorted({int(round(x)) for x in np.linspace(start, n - 1, min(k, n - start))})


def eval_pairs(data_dir: str, split: str, max_clips: int, frames_per_clip: int
               ) -> list[tuple[dict, dict, int]]:
  """(source record, driving record, clip number) of the split's pairs (module docstring)."""
  meta = records.read_meta(data_dir)
  if split not in meta["splits"]["frames"]:
    return []
  frames = records.data_source(data_dir, "frames", split)
  lengths = meta["clip_frames"][split]
  offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int)
  train_starts = {}
  if split == "heldout_frames":  # the clip's first training frame is the source
    train_frames = records.data_source(data_dir, "frames", "train")
    t_offsets = np.concatenate([[0], np.cumsum(meta["clip_frames"]["train"])[:-1]]).astype(int)
    for off in t_offsets:
      train_starts[str(train_frames[int(off)]["clip_name"])] = (train_frames, int(off))
  pairs = []
  for c in _spread(len(lengths), max_clips):
    first = frames[int(offsets[c])]
    if split == "heldout_frames":
      source_table, index = train_starts[str(first["clip_name"])]
      source, start = source_table[index], 0
    else:
      source, start = first, 1
    for f in _spread(lengths[c], frames_per_clip, start):
      pairs.append((source, frames[int(offsets[c]) + f], c))
  return pairs


REGIONS = ("face", "hand", "mouth")  # region errors (face_l1, hand_l1, mouth_l1): the face-refine and
# hand-injection ablations, and the mouth the whole-frame scores hardly see
MIN_REGION_PIXELS = 16  # a frame's region counts when its mask covers at least this many output pixels


def region_l1(x: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """Per image mean |x - target| inside `mask` (B, H, W, 1); NaN where the mask covers fewer than
  MIN_REGION_PIXELS pixels (a frame without the region)."""
  area = 3.0 * jnp.sum(mask, axis=(1, 2, 3))
  inside = jnp.sum(mask * jnp.abs(x - target), axis=(1, 2, 3)) / jnp.maximum(area, 1.0)
  return jnp.where(area >= 3.0 * MIN_REGION_PIXELS, inside, jnp.nan)


# Artefact indices of a generated image alone, each reported for the real frames too (`target_<name>`).
IMAGE_INDICES = {"alternation": metrics.alternation, "specks": metrics.specks}


@functools.lru_cache(maxsize=4)
def _scorer(r) -> Callable:
  """The jitted scoring of RenderEvaluator for renderer config `r` (one per config in a process: an
  evaluator built again, e.g. by a resumed run or `train.evaluate`, reuses its traced and compiled
  program)."""

  def score(params, batch_stats, batch):
    head = (batch["kp_head_source"], batch["kp_head_driving"]) if r.num_kp_head else None
    pred = jnp.clip(train_step.reconstruct(r, params, batch_stats, batch["source"], batch["driving"],
                                           batch.get("hand_image"), head), 0.0, 1.0)
    target = batch["driving_target"]
    copy = jax.image.resize(batch["source"], target.shape, "bilinear")
    def per(x):
      err = jnp.abs(x - target)
      out = {"l1": jnp.mean(err, axis=(1, 2, 3)), "psnr": metrics.psnr(x, target),
             "ssim": metrics.ssim(x, target, 1.0), **{k: f(x) for k, f in IMAGE_INDICES.items()}}
      for region in REGIONS:
        if f"eval_{region}_mask" in batch:
          out[f"{region}_l1"] = region_l1(x, target, batch[f"eval_{region}_mask"])
      return out

    return per(pred), per(copy), pred, copy

  return jax.jit(score, compiler_options=xla_options.cpu_options())


class RenderEvaluator:
  """Scores the EMA generator of a `train.render_task.RenderTask` state on fixed held-out pairs."""

  def __init__(self, task, config: ml_collections.ConfigDict):
    self.task, self.renderer = task, task.renderer
    ev = config.evals
    self.batch_size = ev.batch_size
    self.sheet_rows = ev.sheet_rows
    meta = records.read_meta(config.data_dir)
    decode = pipelines.DecodePair(
        pipelines.RenderPairConfig(crop=config.crop, input_size=self.renderer.image_size,
                                   output_size=self.renderer.output_size),
        pipelines.crop_size(meta, config.crop))
    self.batches: dict[str, tuple[dict, np.ndarray]] = {}
    self.target_indices: dict[str, dict[str, float]] = {}
    for split in ev.splits:
      pairs = eval_pairs(config.data_dir, split, ev.max_clips, ev.frames_per_clip)
      if not pairs:
        log.warning("evals: split %r has no clips in %s; skipped", split, config.data_dir)
        continue
      decoded = [decode.map({"source": s, "driving": d}) for s, d, _ in pairs]
      batch = task.adapt({k: np.stack([p[k] for p in decoded]) for k in decoded[0]})
      for region in REGIONS:  # the driving frame's region masks, for the region errors
        if f"{region}_mask" in decoded[0]:
          batch[f"eval_{region}_mask"] = np.stack([p[f"{region}_mask"] for p in decoded]).astype(np.float32)
      self.batches[split] = (batch, np.array([c for _, _, c in pairs]))
      # The real frames' own indices: what a generator without checkerboard or specks comes near.
      self.target_indices[split] = {k: float(np.mean(f(batch["driving_target"])))
                                    for k, f in IMAGE_INDICES.items()}
      log.info("evals: %d pairs of %d clips in %r", len(pairs), len(set(c for *_, c in pairs)), split)
    self._score = _scorer(self.renderer)

  @property
  def splits(self) -> list[str]:
    return list(self.batches)

  def run(self, state: dict) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """({"eval/<split>/<metric>": value}, {"eval/<split>/source_target_generated_copy": sheet})."""
    params, stats = state["ema"], state["gen"]["batch_stats"]
    scalars, images = {}, {}
    for split, (batch, clip_ids) in self.batches.items():
      n = len(clip_ids)
      gen, copy, preds, copies = {}, {}, [], []
      for i in range(0, n, self.batch_size):
        part = {k: v[i:i + self.batch_size] for k, v in batch.items()}
        g, c, p, cp = jax.device_get(self._score(params, stats, part))
        for k in g:
          gen.setdefault(k, []).append(g[k])
          copy.setdefault(k, []).append(c[k])
        preds.append(p)
        copies.append(cp)
      for k in gen:
        ours, base = np.concatenate(gen[k]), np.concatenate(copy[k])
        if not np.isfinite(ours).any():  # a region no frame of the split shows
          continue
        scalars[f"eval/{split}/{k}"] = float(np.nanmean(ours))
        scalars[f"eval/{split}/copy_source_{k}"] = float(np.nanmean(base))
      prefix = f"eval/{split}/"
      scalars[prefix + "psnr_gain_db"] = scalars[prefix + "psnr"] - scalars[prefix + "copy_source_psnr"]
      for k, v in self.target_indices[split].items():
        scalars[prefix + f"target_{k}"] = v
      pred, cp = np.concatenate(preds), np.concatenate(copies)
      clips = sorted(set(clip_ids.tolist()))[:self.sheet_rows]
      rows = [int(np.flatnonzero(clip_ids == c)[-1]) for c in clips]  # each clip's last (latest) pair
      sheet = [np.concatenate([cp[j], batch["driving_target"][j], pred[j], cp[j]], axis=1) for j in rows]
      images[f"eval/{split}/source_target_generated_copy"] = np.concatenate(sheet, axis=0)
    return scalars, images


def _head_box_in_body(driving: dict, output_size: tuple[int, int]) -> np.ndarray:
  """The driving frame's head crop as (x0, y0, x1, y1) pixels of its body crop at `output_size` (H, W)."""
  hb, bb = np.asarray(driving["head_box"], np.float32), np.asarray(driving["body_box"], np.float32)
  h, w = output_size
  scale = np.array([w / (bb[2] - bb[0]), h / (bb[3] - bb[1])] * 2, np.float32)
  return (hb - bb[[0, 1, 0, 1]]) * scale


@functools.lru_cache(maxsize=4)
def _ablation_scorer(body, refine, feather: float) -> Callable:
  """RefineAblation's jitted scoring for a body renderer and a face-refine config (one per pair in a
  process, as `_scorer`)."""
  hr, wr = refine.image_size

  def score(bp, bs, rp, rs, b):
    g = lambda p: {k[len(p):]: v for k, v in b.items() if k.startswith(p)}
    bb, hb = g("body/"), g("head/")
    head = (bb["kp_head_source"], bb["kp_head_driving"]) if body.num_kp_head else None
    frame = jnp.clip(train_step.reconstruct(body, bp, bs, bb["source"], bb["driving"],
                                            bb.get("hand_image"), head), 0.0, 1.0)
    face_in = jax.image.resize(hb["face_mask"], (hb["face_mask"].shape[0], hr, wr, 1), "linear")
    background = face_refine.mask_face(face_refine.crop_frames(frame, b["box"], (hr, wr)), face_in)
    refined = jnp.clip(train_step.reconstruct(refine, rp, rs, hb["source"], hb["driving"], background,
                                              (hb["kp_head_source"], hb["kp_head_driving"])), 0.0, 1.0)
    pasted = face_refine.paste_back(frame, refined, b["box"], feather)
    target = bb["driving_target"]
    out = {}
    for name, x in (("no_refine", frame), ("refine", pasted)):
      out[f"{name}/face_l1"] = region_l1(x, target, bb["face_mask"])
      out[f"{name}/l1"] = jnp.mean(jnp.abs(x - target), axis=(1, 2, 3))
      out[f"{name}/psnr"] = metrics.psnr(x, target)
    head_region = face_refine.crop_frames(frame, b["box"], refine.output_size)
    out["no_refine/head_face_l1"] = region_l1(head_region, hb["driving_target"], hb["face_mask"])
    out["refine/head_face_l1"] = region_l1(refined, hb["driving_target"], hb["face_mask"])
    sheet = jnp.concatenate([hb["driving_target"], head_region, refined], axis=2)
    return out, sheet

  return jax.jit(score, compiler_options=xla_options.cpu_options())


class RefineAblation:
  """The face-refine ablation: the body renderer's frames with and without the face refine pasted back.

  On the same held-out pairs as `RenderEvaluator` (records with body and head crops), the body renderer
  reconstructs the driving body crop; the face refine network then reconstructs the driving head crop from
  the source head crop, the head keypoints and, as its injection image, the head crop of the *generated*
  frame with the face masked out (what `stream_step` feeds it), and its output is pasted back
  (`face_refine.paste_back`, feather as `StreamSpec.refine_feather`). Scores (face_l1 over the frames
  that show a face, as `RenderEvaluator`): in the body frame, face_l1 / l1 / psnr without and with the
  refine; in the head crop at the refine's output size, face_l1 of the body renderer's head region
  (resampled) against the refine's output.
  """

  def __init__(self, body_task, refine_task, data_dir: str, splits: Sequence[str], max_clips: int,
               frames_per_clip: int, batch_size: int = 8, feather: float = StreamSpec.refine_feather,
               sheet_rows: int = 6):
    body, refine = body_task.renderer, refine_task.renderer
    if body_task.config.crop != "body" or not refine_task.config.face_refine:
      raise ValueError("the refine ablation takes a body renderer (crop='body') and a face-refine network "
                       f"(face_refine=True); got crop={body_task.config.crop!r} and face_refine="
                       f"{refine_task.config.face_refine}")
    meta = records.read_meta(data_dir)
    if not meta.get("body_size"):
      raise ValueError(f"records at {data_dir} have no body crops (meta.json body_size)")
    decoders = {
        name: pipelines.DecodePair(pipelines.RenderPairConfig(crop=crop, input_size=r.image_size,
                                                              output_size=r.output_size),
                                   pipelines.crop_size(meta, crop))
        for name, crop, r in (("body", "body", body), ("head", "head", refine))}
    self.batch_size, self.sheet_rows = batch_size, sheet_rows
    self.batches: dict[str, dict] = {}
    for split in splits:
      pairs = eval_pairs(data_dir, split, max_clips, frames_per_clip)
      if not pairs:
        log.warning("refine ablation: split %r has no clips in %s; skipped", split, data_dir)
        continue
      batch = {}
      for name, task in (("body", body_task), ("head", refine_task)):
        decoded = [decoders[name].map({"source": s, "driving": d}) for s, d, _ in pairs]
        adapted = task.adapt({k: np.stack([p[k] for p in decoded]) for k in decoded[0]})
        batch.update({f"{name}/{k}": v for k, v in adapted.items()})
        batch[f"{name}/face_mask"] = np.stack([p["face_mask"] for p in decoded]).astype(np.float32)
      batch["box"] = np.stack([_head_box_in_body(d, body.output_size) for _, d, _ in pairs])
      self.batches[split] = batch
    self._score = _ablation_scorer(body, refine, feather)

  def run(self, body_weights: dict, refine_weights: dict) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """({"refine_ablation/<split>/{no_refine,refine}/<metric>": value}, {tag: target | body | refined
    head crops}) for `train.export.load_weights` dicts of the two networks."""
    args = (body_weights["params"], body_weights.get("batch_stats", {}),
            refine_weights["params"], refine_weights.get("batch_stats", {}))
    scalars, images = {}, {}
    for split, batch in self.batches.items():
      n = len(batch["box"])
      parts, sheets = {}, []
      for i in range(0, n, self.batch_size):
        part = {k: v[i:i + self.batch_size] for k, v in batch.items()}
        out, sheet = jax.device_get(self._score(*args, part))
        for k, v in out.items():
          parts.setdefault(k, []).append(v)
        sheets.append(sheet)
      for k, v in parts.items():
        v = np.concatenate(v)
        if np.isfinite(v).any():
          scalars[f"refine_ablation/{split}/{k}"] = float(np.nanmean(v))
      rows = np.linspace(0, n - 1, min(self.sheet_rows, n)).round().astype(int)
      images[f"refine_ablation/{split}/target_body_refined"] = np.concatenate(np.concatenate(sheets)[rows], 0)
    return scalars, images
