"""Pure, jit-able array functions used across the renderer and motion models.

Layouts are channels-last: (N, H, W, C) and (N, D, H, W, C).
"""

from chatanyone_jax.ops.embedding import sinusoidal_positions, timestep_embedding
from chatanyone_jax.ops.grid_sample import grid_sample
from chatanyone_jax.ops.heatmaps import kp2gaussian, make_coordinate_grid
from chatanyone_jax.ops.motion import keypoint_flow
from chatanyone_jax.ops.norm import (
  adain,
  adain_from_style,
  channel_stats,
  grn,
  instance_norm,
  layer_norm_channels,
  modulate,
)
from chatanyone_jax.ops.pose import headpose_from_bins, rotation_matrix, transform_keypoints
from chatanyone_jax.ops.resample import (
  icnr,
  icnr_project,
  pixel_shuffle,
  pixel_unshuffle,
  resize_bilinear,
  resize_nearest,
  upsample_nearest,
)

__all__ = [
    "adain", "adain_from_style", "channel_stats", "grid_sample", "grn", "headpose_from_bins",
    "icnr", "icnr_project", "instance_norm", "keypoint_flow", "kp2gaussian", "layer_norm_channels",
    "make_coordinate_grid", "modulate",
    "pixel_shuffle", "pixel_unshuffle", "resize_bilinear", "resize_nearest", "rotation_matrix",
    "sinusoidal_positions", "timestep_embedding", "transform_keypoints", "upsample_nearest",
]
