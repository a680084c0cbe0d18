"""Coordinate grids and Gaussian keypoint heatmaps (LivePortrait conventions).

Keypoints live in the normalised frame used by `grid_sample`: (x, y, z) in
[-1, 1], x to the right (W), y down (H), z inward (D).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def make_coordinate_grid(spatial_size: Sequence[int], dtype=jnp.float32) -> jax.Array:
  """Identity sampling grid with the endpoints -1 and 1 included.

  Args:
    spatial_size: (H, W) or (D, H, W).

  Returns:
    (H, W, 2) or (D, H, W, 3) with the last axis ordered (x, y[, z]), i.e.
    `grid[..., 0] = 2 w / (W - 1) - 1` and so on.
  """
  axes = [jnp.linspace(-1.0, 1.0, s, dtype=dtype) if s > 1 else jnp.zeros((1,), dtype)
          for s in spatial_size]
  mesh = jnp.meshgrid(*axes, indexing="ij")  # each (D, H, W) / (H, W)
  return jnp.stack(mesh[::-1], axis=-1)  # (x, y[, z]) last


def kp2gaussian(
    kp: jax.Array,
    spatial_size: Sequence[int],
    kp_variance: float = 0.01,
) -> jax.Array:
  """Unnormalised Gaussian heatmaps of keypoints on a 2-D or 3-D grid.

  heat = exp(-0.5 * ||grid - kp||^2 / kp_variance), as the warping field
  estimator's heatmap representation uses (no normalisation constant).

  Args:
    kp: (B, K, n) keypoints, n = len(spatial_size), ordered (x, y[, z]).
    spatial_size: (H, W) or (D, H, W).
    kp_variance: variance of the isotropic Gaussian in normalised units.

  Returns:
    (B, [D,] H, W, K): channels-last, one channel per keypoint.
  """
  if kp.shape[-1] != len(spatial_size):
    raise ValueError(
        f"keypoints have {kp.shape[-1]} coordinates but the grid is {len(spatial_size)}-D")
  grid = make_coordinate_grid(spatial_size, dtype=kp.dtype)  # ([D,] H, W, n)
  b, k, n = kp.shape
  kp_b = kp.reshape((b,) + (1,) * len(spatial_size) + (k, n))  # (B, 1.., K, n)
  diff = grid[None, ..., None, :] - kp_b  # (B, [D,] H, W, K, n)
  return jnp.exp(-0.5 * jnp.sum(diff * diff, axis=-1) / kp_variance)
