"""Table 1, self-driven reenactment: the renderer (render/, or render_head/ in mode head) driven by each
clip's own frames.

Each clip's first frame is the source and its frames drive it; the renderer output is scored against the
frames: PSNR, SSIM (JAX, `chatanyone_jax.metrics`), LPIPS, FID, FVD, CSIM (of the source frame and each
generated frame), MouthCorr (MediaPipe's mouth opening on the generated frames against the driving ones,
`infer.evaluation.mouth`: does the renderer show the mouth it is driven with) and MouthScale (the ratio of
the two openings' standard deviations per clip: does it show it as wide), HKC (MediaPipe hand
confidence on frames whose ground truth has hands; upper-body renderers) and frames/s of the renderer on
this device at its output resolution. A "copy source" row (the first frame repeated) is the do-nothing
baseline. PSNR, SSIM and LPIPS score the driving frames after the source (frame 0 is the source itself:
copying it is exact there, a 200-dB PSNR that lifted the baseline's mean by several dB over a 1-s clip).

With `source_offsets` a head renderer is driven as the stream drives it: each driving frame gives its
head-template keypoints (from its fitted coefficients) while the implicit offsets ΔX stay the source
frame's (`reconstruct`), so the rendered face moves only as far as the explicit keypoints move it.
"""

from __future__ import annotations

import functools
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax import metrics, xla_options
from chatanyone_jax.eval.hands import hand_keypoint_confidence
from chatanyone_jax.render import presets
from chatanyone_jax.render.train_step import reconstruct
from data import encoding, pipelines
from infer.evaluation.backends import NA_WEIGHTS, Backends
from infer.evaluation.mouth import curve_correlation, curve_scale, frame_mouth_opening
from infer.evaluation.scoring import (
  FVD_SEGMENT,
  Accumulator,
  add_features,
  add_identity,
  clip_indices,
  frechet,
  open_split,
  segments,
  to_uint8,
)
from infer.models import render_dir
from train import checkpoint as ckpt
from train.export import load_weights


def load_renderer(checkpoint: pathlib.Path, mode: str | None = None):
  """(training config, RendererConfig, {"params", "batch_stats", ...}) of the renderer workdir of `mode`
  (`infer.models.render_dir`; None: render/)."""
  workdir = checkpoint / "render" if mode is None else render_dir(checkpoint, mode)
  if not workdir.is_dir():
    raise FileNotFoundError(f"{workdir} is missing: Table 1 needs the renderer workdir (train it with "
                            f"`python -m train.main --workdir {workdir} --config train/configs/render_*.py`)")
  config = ckpt.load_config(workdir)
  if config.get("task") != "render":
    raise ValueError(f"{workdir} holds a {config.get('task')!r} run, not a renderer")
  renderer = presets.get(config.model.preset)
  loaded = load_weights(workdir)
  return config, renderer, loaded


def _pair_inputs(renderer, pair: dict, injection: bool) -> dict:
  out = {"source": pair["source"], "driving": pair["driving"]}
  if renderer.num_kp_head:
    out["kp_head"] = (pair["kp_head_source"], pair["kp_head_driving"])
  if injection:
    out["hand_image"] = pair["hand_image"]
  return out


@functools.lru_cache(maxsize=4)
def _render_fn(renderer, source_offsets: bool):
  """The jitted reconstruction of `renderer` (a RendererConfig): one trace and compile per renderer in a
  process, however many evaluations run it."""

  def render(params, stats, inputs):
    return jnp.clip(reconstruct(renderer, params, stats, inputs["source"], inputs["driving"],
                                inputs.get("hand_image"), inputs.get("kp_head"), source_offsets), 0.0, 1.0)

  return jax.jit(render, compiler_options=xla_options.cpu_options())


@jax.jit
def _score(x, y):
  return metrics.psnr(x, y), metrics.ssim(x, y, 1.0)


def self_reenactment(checkpoint: str | os.PathLike, data: str | os.PathLike, split: str, b: Backends, *,
                     max_clips: int | None = None, max_frames: int | None = None, batch_size: int = 8,
                     mode: str | None = None, source_offsets: bool = False) -> dict:
  """Table 1 (module docstring) -> {"rows": {"ours": {...}, "copy source": {...}}, "counts", ...}; `mode`
  picks the renderer of a two-mode checkpoint (`load_renderer`)."""
  config, renderer, loaded = load_renderer(pathlib.Path(checkpoint), mode)
  layout = presets.keypoint_layout(renderer)
  if source_offsets and layout != "head_offset":
    raise ValueError(f"--source-offsets needs a head renderer (keypoint layout 'head_offset'); "
                     f"{config.model.preset} has {layout!r}: add --mode head")
  crop = config.get("crop", "body")
  meta, clips, frames_src = open_split(data, split)
  if crop == "body" and not meta.get("body_size"):
    raise ValueError(f"the upper-body renderer of {checkpoint} works on body crops but {data} has none "
                     "(evaluate --mode head for head-only records)")
  stored = pipelines.crop_size(meta, crop)
  decode = pipelines.DecodePair(pipelines.RenderPairConfig(crop=crop, input_size=renderer.image_size,
                                                          output_size=renderer.output_size),
                                stored)
  injection = bool(renderer.spade_generator.hand_injection)
  params = jax.device_put(loaded["params"])
  stats = jax.device_put(loaded["batch_stats"])

  render = _render_fn(renderer, source_offsets)
  ours, copy = Accumulator(), Accumulator()
  real_inception, real_i3d = [], []
  render_time, render_frames, skipped = 0.0, 0, {}
  for c in clip_indices(clips, max_clips):
    clip = clips[c]
    start, length = int(clip["frame_offset"]), int(clip["num_frames"])
    length = length if max_frames is None else min(length, max_frames)
    first = frames_src[start]
    gen, tgt, hands_present, source_target = [], [], [], None
    for i0 in range(0, length, batch_size):
      pairs = [decode.map({"source": first, "driving": frames_src[start + i]})
               for i in range(i0, min(length, i0 + batch_size))]
      n = len(pairs)
      pairs += [pairs[-1]] * (batch_size - n)  # fixed batch: one compile
      batch = {k: np.stack([p[k] for p in pairs]) for k in pairs[0]}
      inputs = jax.tree.map(jnp.asarray, _pair_inputs(renderer, batch, injection))
      t0 = time.perf_counter()
      out = jax.block_until_ready(render(params, stats, inputs))
      if i0 > 0 or c > 0:  # the first call compiles
        render_time += time.perf_counter() - t0
        render_frames += batch_size
      target = jnp.asarray(batch["driving_target"])
      if source_target is None:  # driving frame 0 is the source frame, at the output size
        source_target = jnp.broadcast_to(target[:1], target.shape)
      scored = np.arange(i0, i0 + n) > 0  # not the source frame itself (module docstring)
      for acc, x in ((ours, out), (copy, source_target)):
        p, s = _score(x, target)
        acc.add("PSNR", np.asarray(p)[:n][scored])
        acc.add("SSIM", np.asarray(s)[:n][scored])
      gen.append(to_uint8(np.asarray(out)[:n]))
      tgt.append(to_uint8(np.asarray(target)[:n]))
      if "hand_present" in batch:
        hands_present.append(np.asarray(batch["hand_present"])[:n])
    gen_frames, tgt_frames = np.concatenate(gen), np.concatenate(tgt)
    source = tgt_frames[0]
    # Faces are found at the stored crop size (landmarks are normalised, descriptors size-free): the
    # tiny presets' outputs are too small for dlib's detector.
    source_full = encoding.decode_image(first["body_jpeg" if crop == "body" else "head_jpeg"])
    if b.lpips is not None and len(tgt_frames) > 1:
      ours.add("LPIPS", b.lpips(gen_frames[1:], tgt_frames[1:]))
      copy.add("LPIPS", b.lpips(np.broadcast_to(source, tgt_frames[1:].shape), tgt_frames[1:]))
    add_features(b, ours, gen_frames)
    if b.inception is not None:
      real_inception.append(np.asarray(b.inception(tgt_frames)))
    if b.i3d is not None and len(tgt_frames) >= FVD_SEGMENT:
      real_i3d.append(np.asarray(b.i3d(segments(tgt_frames))))
    add_identity(b, ours, source_full, gen_frames)
    gen_mouth, tgt_mouth = frame_mouth_opening(gen_frames), frame_mouth_opening(tgt_frames)
    corr = curve_correlation(gen_mouth, tgt_mouth)
    if corr is not None:  # does the renderer show the driving frame's mouth? (MediaPipe on both)
      ours.add("MouthCorr", corr, count=1)
      ours.add("MouthScale", curve_scale(gen_mouth, tgt_mouth), count=1)
    if b.hands is not None and hands_present:
      present = np.concatenate(hands_present)
      value, n_hand = hand_keypoint_confidence(b.hands, gen_frames, present)
      if n_hand:
        ours.add("HKC", [value] * n_hand, count=n_hand)
      else:
        skipped["clips_without_hands"] = skipped.get("clips_without_hands", 0) + 1
  fps = render_frames / render_time if render_time > 0 else None
  h, w = renderer.output_size
  rows = {}
  for name, acc in (("ours", ours), ("copy source", copy)):
    rows[name] = {"PSNR": acc.mean("PSNR"), "SSIM": acc.mean("SSIM"),
                  "LPIPS": acc.mean("LPIPS") if b.lpips is not None else NA_WEIGHTS}
  rows["ours"].update(
      CSIM=ours.mean("CSIM"), MouthCorr=ours.mean("MouthCorr"), MouthScale=ours.mean("MouthScale"),
      FID=frechet(real_inception, ours.inception, b.inception, "FID"),
      FVD=frechet(real_i3d, ours.i3d, b.i3d, "FVD"),
      HKC=ours.mean("HKC") if layout == "hybrid_body" else "n/a (head renderer)",
      FPS=fps, resolution=f"{w}x{h}")
  return {"rows": rows, "counts": {**ours.counts, **skipped}, "clips": len(clip_indices(clips, max_clips)),
          "preset": config.model.preset, "source_offsets": source_offsets,
          "device": jax.devices()[0].device_kind,
          "fps_note": f"renderer W + G + M per frame, batch {batch_size}, float32, after compilation"}
