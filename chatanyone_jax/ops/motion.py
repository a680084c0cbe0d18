"""Keypoint-driven dense motion without learned weights.

LivePortrait's dense-motion network composes per-keypoint translations
(sparse motions) with a learned softmax mask. `keypoint_flow` composes the
same sparse motions with Gaussian heatmap weights of the driving keypoints
instead; it is the non-learned baseline warp (and the `make demo` path until
the trained renderer exists).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from chatanyone_jax.ops.heatmaps import kp2gaussian, make_coordinate_grid


def keypoint_flow(kp_source: jax.Array, kp_driving: jax.Array, spatial_size, *,
                  kp_variance: float = 0.03, background: float = 0.05) -> jax.Array:
  """Backward-warp grid moving the source keypoints onto the driving ones.

  Args:
    kp_source, kp_driving: (B, K, n) keypoints in [-1, 1], (x, y[, z]).
    spatial_size: (H, W) or (D, H, W) of the output grid.
    kp_variance: Gaussian variance of each keypoint's region of influence.
    background: weight of the identity (static background) component.

  Returns:
    (B, *spatial_size, n) sampling grid for `grid_sample`: output pixel p
    samples the source at p - kp_driving_k + kp_source_k, blended over k.
  """
  grid = make_coordinate_grid(spatial_size, kp_source.dtype)  # (*S, n)
  heat = kp2gaussian(kp_driving, spatial_size, kp_variance)  # (B, *S, K)
  bg = jnp.full(heat.shape[:-1] + (1,), background, heat.dtype)
  weights = jnp.concatenate([bg, heat], axis=-1)
  weights = weights / jnp.sum(weights, axis=-1, keepdims=True)  # (B, *S, K+1)
  shift = kp_source - kp_driving  # (B, K, n)
  disp = jnp.einsum("b...k,bkn->b...n", weights[..., 1:], shift)
  return grid[None] + disp
