"""M: LivePortrait's motion extractor, a ConvNeXt-V2 with pose / keypoint heads.

Backbone (Woo et al. 2023): stem conv k4 s4 + LayerNorm, then 4 stages of
ConvNeXt-V2 blocks with LN + conv k2 s2 downsampling between stages; global
average pool, LayerNorm and seven linear heads. Channels-last (NHWC), so
PyTorch's "channels_first" LayerNorm is a LayerNorm over the last axis.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from chatanyone_jax.layers.blocks import DepthwiseConv2d, conv
from chatanyone_jax.ops.norm import grn
from chatanyone_jax.render.presets import MotionExtractorConfig

LN_EPS = 1e-6


def layer_norm(name: str, dtype=None) -> nn.LayerNorm:
  """ConvNeXt's LayerNorm: eps 1e-6, biased variance computed as E[(x - mean)^2]."""
  return nn.LayerNorm(epsilon=LN_EPS, use_fast_variance=False, name=name, dtype=dtype)


class GRN(nn.Module):
  """Global response normalisation on (N, H, W, C); gamma = beta = 0 is the identity."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    gamma = self.param("gamma", nn.initializers.zeros, (c,), jnp.float32)
    beta = self.param("beta", nn.initializers.zeros, (c,), jnp.float32)
    return grn(x, gamma.astype(x.dtype), beta.astype(x.dtype))


class ConvNeXtV2Block(nn.Module):
  """dwconv k x k (7 in ConvNeXt-V2) -> LN -> Linear C->4C -> GELU (exact) -> GRN -> Linear 4C->C, + x.
  (N, H, W, C)."""
  kernel_size: int = 7
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    k = self.kernel_size  # nn.Conv's parameters, faster on CPU
    h = DepthwiseConv2d(k, k // 2, name="dwconv", dtype=self.dtype)(x)
    h = layer_norm("norm", self.dtype)(h)
    h = nn.Dense(4 * c, name="pwconv1", dtype=self.dtype)(h)
    h = jax.nn.gelu(h, approximate=False)
    h = GRN(name="grn")(h)
    h = nn.Dense(c, name="pwconv2", dtype=self.dtype)(h)
    return x + h  # DropPath is the identity (rate 0)


class MotionExtractor(nn.Module):
  """Image (B, H, W, 3) in [0, 1] -> canonical keypoints, pose bins, expression, scale, translation.

  Returns a dict (LivePortrait's order): pitch, yaw, roll (B, num_bins) logits,
  t (B, 3), exp (B, 3K), scale (B, 1), kp (B, 3K). H and W must be multiples of 32.
  """
  config: MotionExtractorConfig = MotionExtractorConfig()
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    cfg = self.config
    if len(cfg.depths) != 4 or len(cfg.dims) != 4:
      raise ValueError(f"ConvNeXt-V2 needs 4 stages, got depths {cfg.depths} and dims {cfg.dims}")
    if cfg.dwconv_kernel < 1 or cfg.dwconv_kernel % 2 == 0:
      raise ValueError(f"dwconv_kernel must be odd (same-size padding k // 2), got {cfg.dwconv_kernel}")
    for i, (depth, dim) in enumerate(zip(cfg.depths, cfg.dims, strict=True)):
      if i == 0:  # stem: conv k4 s4 -> LN
        x = conv(dim, 2, 4, stride=4, padding=0, name="stem_conv", dtype=self.dtype)(x)
        x = layer_norm("stem_norm", self.dtype)(x)
      else:  # LN -> conv k2 s2
        x = layer_norm(f"downsample_{i}_norm", self.dtype)(x)
        x = conv(dim, 2, 2, stride=2, padding=0, name=f"downsample_{i}_conv", dtype=self.dtype)(x)
      self.sow("intermediates", f"downsample_layers_{i}", x)
      for j in range(depth):
        x = ConvNeXtV2Block(cfg.dwconv_kernel, name=f"stages_{i}_{j}", dtype=self.dtype)(x)
      self.sow("intermediates", f"stages_{i}", x)
    feat = layer_norm("norm", self.dtype)(jnp.mean(x, axis=(1, 2)))  # (B, C)
    self.sow("intermediates", "norm_out", feat)

    def head(n, name):
      return nn.Dense(n, name=name, dtype=self.dtype)(feat)

    k3 = 3 * cfg.num_kp
    kp, scale = head(k3, "fc_kp"), head(1, "fc_scale")
    pitch, yaw, roll = (head(cfg.num_bins, f"fc_{a}") for a in ("pitch", "yaw", "roll"))
    t, exp = head(3, "fc_t"), head(k3, "fc_exp")
    return {"pitch": pitch, "yaw": yaw, "roll": roll, "t": t, "exp": exp, "scale": scale, "kp": kp}
