"""Face refine network (paper §3.4, Fig. 4) and the soft paste-back of its output.

A lighter copy of the renderer's F / W / G (`presets.face_refine`) working on
the head crop: F encodes the source head crop, W warps it with the explicit
head keypoints (template keypoints + implicit offsets, Eq. 2) and G decodes
it. G's AdaIN injection branch (the one that carries I_hand in the body
renderer, Eq. 5) receives the head crop of the generated frame with the face
masked out, so the refined face blends with its surroundings. The refined
crop is pasted back into the full frame with a feathered mask. `crop_frames`
cuts the head crop out of generated frames and `polygon_mask` fills the face
oval that `mask_face` blanks (the streaming step and the held-out evaluation).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from chatanyone_jax.ops.grid_sample import grid_sample
from chatanyone_jax.render.appearance_feature_extractor import AppearanceFeatureExtractor
from chatanyone_jax.render.presets import RendererConfig
from chatanyone_jax.render.spade_generator import SPADEDecoder
from chatanyone_jax.render.warping_network import WarpingNetwork


def mask_face(head_crop: jax.Array, face_mask: jax.Array) -> jax.Array:
  """G's AdaIN input: the head crop (B, H, W, 3) with the face (mask (B, H, W, 1), 1 = face) zeroed."""
  return head_crop * (1 - face_mask.astype(head_crop.dtype))


class FaceRefineNetwork(nn.Module):
  """Source head crop + head keypoints + masked generated crop -> refined crop (B, H', W', 3) in (0, 1).

  config.spade_generator.hand_injection must be on (the injection branch takes the masked crop).
  """
  config: RendererConfig
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, source_crop: jax.Array, kp_source: jax.Array, kp_driving: jax.Array,
               background_crop: jax.Array, *, train: bool = False) -> jax.Array:
    """source_crop (B, H, W, 3); kp_source, kp_driving (B, K_head, 3); background_crop (B, Hb, Wb, 3)
    = `mask_face(generated head crop, face mask)`."""
    cfg = self.config
    if not cfg.spade_generator.hand_injection:
      raise ValueError("the face-refine generator needs spade_generator.hand_injection=True")
    volume = AppearanceFeatureExtractor(cfg.appearance_feature_extractor, name="appearance_feature_extractor",
                                        dtype=self.dtype)(source_crop, train=train)
    warped = WarpingNetwork(cfg.warping_network, name="warping_network", dtype=self.dtype)(
        volume, kp_driving, kp_source, train=train)
    return SPADEDecoder(cfg.spade_generator, name="spade_generator", dtype=self.dtype)(
        warped["out"], background_crop, train=train)


def _ramp(u: jax.Array, feather: float) -> jax.Array:
  """1 inside |u| <= 1 - feather, linear down to 0 at |u| = 1, 0 outside."""
  return jnp.clip((1 - jnp.abs(u)) / feather, 0.0, 1.0)


def crop_coordinates(frame_size: tuple[int, int], box: jax.Array) -> jax.Array:
  """Each frame pixel's position in the crop's [-1, 1] frame (align_corners=False convention).

  box: (B, 4) = (x0, y0, x1, y1) in frame pixels (edges; the crop covers x0 <= x < x1).
  Returns (B, Hf, Wf, 2), (x, y).
  """
  hf, wf = frame_size
  box = box.astype(jnp.float32)
  xs = jnp.arange(wf, dtype=jnp.float32) + 0.5
  ys = jnp.arange(hf, dtype=jnp.float32) + 0.5
  x0, y0, x1, y1 = (box[:, i, None] for i in range(4))
  u = 2 * (xs[None] - x0) / (x1 - x0) - 1  # (B, Wf)
  v = 2 * (ys[None] - y0) / (y1 - y0) - 1  # (B, Hf)
  return jnp.stack(jnp.broadcast_arrays(u[:, None, :], v[:, :, None]), axis=-1)


def paste_mask(frame_size: tuple[int, int], box: jax.Array, feather: float = 0.1,
               crop_mask: jax.Array | None = None) -> jax.Array:
  """Soft paste mask (B, Hf, Wf, 1) for `paste_back`.

  1 well inside the box, feathered linearly over the outer `feather` fraction of each half-extent, 0
  outside; times `crop_mask` (B, h, w, 1) (e.g. a soft face mask) sampled into the frame.
  """
  coords = crop_coordinates(frame_size, box)
  m = (_ramp(coords[..., 0], feather) * _ramp(coords[..., 1], feather))[..., None]
  if crop_mask is not None:
    m = m * grid_sample(crop_mask.astype(jnp.float32), coords)
  return m


def paste_back(frame: jax.Array, face: jax.Array, box: jax.Array, feather: float = 0.1,
               crop_mask: jax.Array | None = None) -> jax.Array:
  """Blends the refined crop into the frame: frame * (1 - m) + resample(face) * m (Fig. 4).

  frame (B, Hf, Wf, C); face (B, h, w, C) covering `box` (B, 4) = (x0, y0, x1, y1) in frame pixels;
  m = `paste_mask(...)`. Bilinear resampling, differentiable in frame, face, box and crop_mask.
  """
  coords = crop_coordinates(frame.shape[1:3], box)
  resampled = grid_sample(face, coords.astype(face.dtype))
  m = paste_mask(frame.shape[1:3], box, feather, crop_mask).astype(frame.dtype)
  return frame * (1 - m) + resampled * m


def polygon_mask(points: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Even-odd fill of closed polygons: points (B, V, 2) pixels -> (B, H, W, 1) float32 {0, 1} mask.

  Pixel (i, j) is tested at its centre (j + 0.5, i + 0.5) (the `crop_coordinates` convention).
  """
  h, w = size
  x0, y0 = points[..., 0], points[..., 1]  # (B, V)
  x1, y1 = jnp.roll(x0, -1, axis=-1), jnp.roll(y0, -1, axis=-1)
  px = (jnp.arange(w, dtype=jnp.float32) + 0.5)[None, None, :, None]  # (1, 1, W, 1)
  py = (jnp.arange(h, dtype=jnp.float32) + 0.5)[None, :, None, None]  # (1, H, 1, 1)
  e = lambda a: a[:, None, None, :]  # (B, 1, 1, V)
  straddles = (e(y0) > py) != (e(y1) > py)  # (B, H, 1, V)
  dy = e(y1) - e(y0)
  x_cross = e(x0) + (py - e(y0)) * (e(x1) - e(x0)) / jnp.where(dy == 0, 1.0, dy)
  crossings = jnp.sum(straddles & (px < x_cross), axis=-1)  # (B, H, W)
  return (crossings % 2 == 1).astype(jnp.float32)[..., None]


def crop_frames(frames: jax.Array, box: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Bilinear crop of `box` (B, 4) = (x0, y0, x1, y1) frame pixels of frames (B, Hf, Wf, C), at (h, w)."""
  hf, wf = frames.shape[1:3]
  h, w = size
  u = (jnp.arange(w, dtype=jnp.float32) + 0.5) / w  # (w,) in (0, 1) across the crop
  v = (jnp.arange(h, dtype=jnp.float32) + 0.5) / h
  x0, y0, x1, y1 = (box[:, k, None] for k in range(4))
  gx = 2 * (x0 + u[None] * (x1 - x0)) / wf - 1  # (B, w) frame grid units
  gy = 2 * (y0 + v[None] * (y1 - y0)) / hf - 1  # (B, h)
  grid = jnp.stack(jnp.broadcast_arrays(gx[:, None, :], gy[:, :, None]), axis=-1)  # (B, h, w, 2)
  return grid_sample(frames, grid)
