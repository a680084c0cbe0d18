"""Image / sequence similarity metrics in JAX (paper §4): PSNR and SSIM; a checkerboard index and a count
of isolated off-colour pixels.

`ssim` follows Wang et al. 2004 as scikit-image's `structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=R)` computes it: local means, variances and covariance
under an 11-tap Gaussian window (truncated at 3.5 sigma, normalised), C1 = (0.01 R)², C2 = (0.03 R)², the
SSIM map averaged over the positions where the whole window fits ("valid"), and over channels. Works on
images (..., H, W, C) and on coefficient sequences seen as one-channel images (T, D) -> (T, D, 1), which
is how the style-transfer table (paper Table 4) compares generated and ground-truth expressions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def psnr(x: jax.Array, y: jax.Array, data_range: float = 1.0) -> jax.Array:
  """Peak signal-to-noise ratio in dB over all but the leading axis: (B, ...) -> (B,)."""
  axes = tuple(range(1, x.ndim))
  mse = jnp.mean(jnp.square(x.astype(jnp.float32) - y.astype(jnp.float32)), axis=axes)
  return 10.0 * jnp.log10(data_range ** 2 / jnp.maximum(mse, 1e-20))


def alternation(x: jax.Array) -> jax.Array:
  """A period-2 (checkerboard / stripe) index of images (B, H, W, C) -> (B,): per spatial axis the mean
  absolute second difference of the luminance (channel mean) over its mean absolute central difference,
  the larger of the two axes. A pattern alternating every pixel maximises the second difference against
  the first. Real 256² head crops measure 0.47-0.51, about the same along both axes; a sub-pixel conv head
  whose four sub-kernels disagree (stripes along edges) raises one axis well above the other (0.9-1.1;
  benchmarks/RESULTS.md); a nearest-upsampled image measures about 1."""
  y = jnp.mean(x.astype(jnp.float32), axis=-1)
  out = []
  for axis in (1, 2):
    a, b, c = (jax.lax.slice_in_dim(y, i, y.shape[axis] - 2 + i, axis=axis) for i in range(3))
    second = jnp.mean(jnp.abs(a - 2 * b + c), axis=(1, 2))
    first = jnp.mean(jnp.abs(c - a), axis=(1, 2))
    out.append(second / jnp.maximum(first, 1e-6))
  return jnp.maximum(*out)


SPECK_THRESHOLD = 0.25  # `specks`: a pixel's deviation from its 3x3 neighbourhood's median, in [0, 1] units


def specks(x: jax.Array, threshold: float = SPECK_THRESHOLD) -> jax.Array:
  """Isolated-pixel outliers of images (B, H, W, C) in [0, 1] -> (B,) per 10,000 pixels: pixels where some
  channel is more than `threshold` away from the median of its 3x3 neighbourhood (edges repeated). An edge
  keeps its neighbourhood's median; single off-colour pixels, as an untrained generator image showing
  through a partial blend, count one each, and so do the pixels of a one-pixel line of strong contrast
  (the real frames' own count is the reference: `train.render_eval` reports it; benchmarks/RESULTS.md)."""
  x = x.astype(jnp.float32)
  h, w = x.shape[1:3]
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  shifted = jnp.stack([padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)])
  median = jnp.sort(shifted, axis=0)[4]
  outlier = jnp.max(jnp.abs(x - median), axis=-1) > threshold
  return 1e4 * jnp.mean(outlier.astype(jnp.float32), axis=(1, 2))


def _gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> np.ndarray:
  radius = int(truncate * sigma + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  w = np.exp(-0.5 * (x / sigma) ** 2)
  return (w / w.sum()).astype(np.float32)


def _filter(img: jax.Array, w: jax.Array) -> jax.Array:
  """Separable 'valid' filtering of (B, H, W, C) along H then W."""
  k = w.shape[0]
  h = sum(w[i] * img[:, i:img.shape[1] - k + 1 + i] for i in range(k))
  return sum(w[i] * h[:, :, i:h.shape[2] - k + 1 + i] for i in range(k))


def ssim(x: jax.Array, y: jax.Array, data_range: float, *, sigma: float = 1.5) -> jax.Array:
  """Mean SSIM per example: x, y (B, H, W, C) (H, W >= the 11-tap window) -> (B,)."""
  x, y = x.astype(jnp.float32), y.astype(jnp.float32)
  w = jnp.asarray(_gaussian_window(sigma))
  if x.shape[1] < w.shape[0] or x.shape[2] < w.shape[0]:
    raise ValueError(f"ssim needs H, W >= {w.shape[0]}, got {x.shape[1:3]}")
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  mx, my = _filter(x, w), _filter(y, w)
  vx = _filter(x * x, w) - mx * mx
  vy = _filter(y * y, w) - my * my
  cxy = _filter(x * y, w) - mx * my
  s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
  return jnp.mean(s, axis=(1, 2, 3))


def sequence_ssim(x: jax.Array, y: jax.Array, data_range: float | None = None) -> jax.Array:
  """SSIM of coefficient sequences (B, T, D) seen as one-channel images; data_range default: y's range."""
  if data_range is None:
    data_range = float(jnp.max(y) - jnp.min(y))
  return ssim(x[..., None], y[..., None], data_range)
