"""Resizing and pixel shuffle, channels-last.

Both follow PyTorch exactly so that LivePortrait weights convert one to one:
`F.interpolate(mode="nearest")` uses the legacy rule src = floor(dst * in / out)
and `nn.PixelShuffle(r)` reads channel c * r^2 + i * r + j for output pixel
(r h + i, r w + j).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _nearest_index(in_size: int, out_size: int) -> np.ndarray:
  scale = np.float32(in_size) / np.float32(out_size)
  idx = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int32)
  return np.minimum(idx, in_size - 1)


def resize_nearest(x: jax.Array, size: Sequence[int]) -> jax.Array:
  """Resizes the spatial axes of (N, *spatial, C) to `size` (legacy nearest)."""
  spatial = x.shape[1:-1]
  if len(size) != len(spatial):
    raise ValueError(f"size {tuple(size)} does not match the {len(spatial)} spatial axes of {x.shape}")
  for axis, (n_in, n_out) in enumerate(zip(spatial, size, strict=True), start=1):
    if n_in == n_out:
      continue
    if n_out % n_in == 0:  # integer upscaling: plain repetition, cheaper than a gather
      x = jnp.repeat(x, n_out // n_in, axis=axis)
    else:
      x = jnp.take(x, _nearest_index(n_in, n_out), axis=axis)
  return x


def resize_bilinear(x: jax.Array, size: Sequence[int]) -> jax.Array:
  """(B, H, W, C) -> (B, *size, C), bilinear with antialiasing when shrinking; identity at equal size."""
  if tuple(x.shape[1:3]) == tuple(size):
    return x
  return jax.image.resize(x, (x.shape[0], *size, x.shape[-1]), "linear", antialias=True)


@functools.lru_cache(maxsize=32)
def torch_bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out_size, in_size) float32 matrix of torch's 1-D bilinear resize (align_corners=False, no antialias).

  As ATen's upsample_bilinear2d (area_pixel_compute_source_index), in float32 like its `opmath_t`:
  scale = in / out, src = max(scale * (dst + 0.5) - 0.5, 0), i0 = floor(src), i1 = min(i0 + 1, in - 1),
  weights (1 - frac, frac). PyTorch's build contracts `scale * (dst + 0.5) - 0.5` into one fused
  multiply-add (a single rounding); it is exact in float64 here, then rounded once, which reproduces
  torch's weights to the bit (checked for 64, 256, 512, 1080 -> 299).
  """
  f32 = np.float32
  scale = np.float64(f32(in_size) / f32(out_size))
  src = (scale * (np.arange(out_size, dtype=np.float64) + 0.5) - 0.5).astype(f32)
  src = np.maximum(src, f32(0))
  i0 = np.minimum(src.astype(np.int64), in_size - 1)
  i1 = np.minimum(i0 + 1, in_size - 1)
  frac = np.clip(src - i0.astype(f32), f32(0), f32(1))
  m = np.zeros((out_size, in_size), f32)
  rows = np.arange(out_size)
  np.add.at(m, (rows, i0), f32(1) - frac)
  np.add.at(m, (rows, i1), frac)
  return m


def resize_bilinear_torch(images: jax.Array, size: tuple[int, int]) -> jax.Array:
  """(N, H, W, C) -> (N, size[0], size[1], C) as `F.interpolate(mode="bilinear", align_corners=False)`
  (no antialiasing, unlike `resize_bilinear`): the resize the FID / FVD feature networks were used with.

  Separable: two small matmuls with exact float32 weights (HIGHEST precision, so no TF32 on GPUs).
  """
  h, w = images.shape[1:3]
  mh, mw = jnp.asarray(torch_bilinear_matrix(h, size[0])), jnp.asarray(torch_bilinear_matrix(w, size[1]))
  x = images.astype(jnp.float32)
  hp = jax.lax.Precision.HIGHEST
  x = jnp.einsum("ph,nhwc->npwc", mh, x, precision=hp)
  return jnp.einsum("qw,npwc->npqc", mw, x, precision=hp)


def upsample_nearest(x: jax.Array, scale: int | Sequence[int]) -> jax.Array:
  """Nearest upsampling of (N, *spatial, C) by integer factors per axis."""
  spatial = x.shape[1:-1]
  if isinstance(scale, int):
    scale = (scale,) * len(spatial)
  return resize_nearest(x, [s * f for s, f in zip(spatial, scale, strict=True)])


def pixel_shuffle(x: jax.Array, r: int) -> jax.Array:
  """(N, H, W, C r^2) -> (N, H r, W r, C), with PyTorch's channel order."""
  n, h, w, c = x.shape
  if c % (r * r):
    raise ValueError(f"channels {c} not divisible by r^2 = {r * r}")
  co = c // (r * r)
  x = x.reshape(n, h, w, co, r, r)  # channel = co * r^2 + i * r + j
  x = x.transpose(0, 1, 4, 2, 5, 3)  # (n, h, i, w, j, co)
  return x.reshape(n, h * r, w * r, co)


def icnr(base_init: Callable, r: int) -> Callable:
  """A kernel initializer for a conv feeding `pixel_shuffle(., r)`: ICNR (Aitken et al. 2017, "Checkerboard
  artifact free sub-pixel convolution"). `base_init` draws a kernel for the C output channels; each is
  repeated for its r^2 sub-pixel positions, so the shuffled output starts as the nearest upsampling of
  one conv's output: no checkerboard at initialisation, and none left by sub-kernels that training never
  brings into agreement (independently drawn ones leave period-r stripes along edges)."""

  def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    *taps, cin, cout = shape
    if cout % (r * r):
      raise ValueError(f"ICNR: {cout} output channels not divisible by r^2 = {r * r}")
    return jnp.repeat(base_init(key, (*taps, cin, cout // (r * r)), dtype), r * r, axis=-1)

  return init


def icnr_project(kernel: np.ndarray, bias: np.ndarray | None, r: int) -> tuple[np.ndarray, np.ndarray | None]:
  """A trained sub-pixel conv (kernel (..., Cin, C r^2), bias (C r^2,), `pixel_shuffle`'s channel order)
  projected onto ICNR's subspace: each output channel's r^2 sub-kernels (and biases) replaced by their
  mean, so the shuffled output becomes the nearest upsampling of the mean conv. Starts a fine-tune that
  removes the checkerboard of a generator trained from independent sub-kernels. Host arrays in, float32
  out."""
  kernel = np.asarray(kernel, np.float32)
  *lead, cout = kernel.shape
  if cout % (r * r):
    raise ValueError(f"ICNR: {cout} output channels not divisible by r^2 = {r * r}")
  mean = lambda a: np.repeat(a.reshape(*a.shape[:-1], -1, r * r).mean(-1), r * r, axis=-1)
  return mean(kernel), None if bias is None else mean(np.asarray(bias, np.float32))


def pixel_unshuffle(x: jax.Array, r: int) -> jax.Array:
  """Inverse of `pixel_shuffle`: (N, H r, W r, C) -> (N, H, W, C r^2)."""
  n, hr, wr, c = x.shape
  if hr % r or wr % r:
    raise ValueError(f"spatial size {(hr, wr)} not divisible by {r}")
  h, w = hr // r, wr // r
  x = x.reshape(n, h, r, w, r, c).transpose(0, 1, 3, 5, 2, 4)  # (n, h, w, c, i, j)
  return x.reshape(n, h, w, c * r * r)
