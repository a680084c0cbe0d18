"""F: LivePortrait's appearance feature extractor, image -> 3D feature volume.

first (SameBlock2d) -> DownBlock2d x n -> 1x1 conv to max_features -> view as
(reshape_channel, reshape_depth) -> ResBlock3d x m. Channels-last throughout.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from chatanyone_jax.layers.blocks import DownBlock2d, ResBlock3d, SameBlock2d, conv
from chatanyone_jax.render.presets import AppearanceFeatureExtractorConfig


def channels_to_volume(x: jax.Array, depth: int) -> jax.Array:
  """(B, H, W, C*D) -> (B, D, H, W, C) with PyTorch's view order: channel = c * D + d."""
  b, h, w, cd = x.shape
  if cd % depth:
    raise ValueError(f"{cd} channels cannot be viewed as depth {depth}")
  return x.reshape(b, h, w, cd // depth, depth).transpose(0, 4, 1, 2, 3)


def volume_to_channels(x: jax.Array) -> jax.Array:
  """(B, D, H, W, C) -> (B, H, W, C*D), channel = c * D + d (inverse of `channels_to_volume`)."""
  b, d, h, w, c = x.shape
  return x.transpose(0, 2, 3, 4, 1).reshape(b, h, w, c * d)


class AppearanceFeatureExtractor(nn.Module):
  """Image (B, H, W, 3) in [0, 1] -> appearance volume (B, D, H/2^n, W/2^n, C).

  With LivePortrait's config: (B, 256, 256, 3) -> (B, 16, 64, 64, 32).
  """
  config: AppearanceFeatureExtractorConfig = AppearanceFeatureExtractorConfig()
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, source_image: jax.Array, *, train: bool = False) -> jax.Array:
    cfg = self.config
    if cfg.reshape_channel * cfg.reshape_depth != cfg.max_features:
      raise ValueError(f"reshape_channel * reshape_depth = {cfg.reshape_channel * cfg.reshape_depth} "
                       f"must equal max_features = {cfg.max_features}")
    out = SameBlock2d(cfg.block_expansion, name="first", dtype=self.dtype)(source_image, train=train)
    for i in range(cfg.num_down_blocks):
      feats = min(cfg.max_features, cfg.block_expansion * 2 ** (i + 1))
      out = DownBlock2d(feats, name=f"down_blocks_{i}", dtype=self.dtype)(out, train=train)
    out = conv(cfg.max_features, 2, 1, name="second", dtype=self.dtype)(out)  # (B, H, W, C*D)
    self.sow("intermediates", "second_out", out)
    f_s = channels_to_volume(out, cfg.reshape_depth)  # (B, D, H, W, C)
    for i in range(cfg.num_resblocks):
      f_s = ResBlock3d(name=f"resblocks_3d_{i}", dtype=self.dtype)(f_s, train=train)
    return f_s
