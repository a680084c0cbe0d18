"""Multi-scale patch discriminator for the renderer's GAN loss (paper Eq. 6, L_GAN).

FOMM / face-vid2vid style: one PatchGAN per scale (the image, then 2x
average-pooled copies), each a stack of conv3x3 -> LeakyReLU(0.2) -> 2x2
average pool blocks and a 1x1 conv to one logit per patch. The convs use
PyTorch-exact spectral normalisation (`SpectralConv`, u / v in `batch_stats`,
one power iteration per `train=True` call) unless `spectral_norm=False`.
Every block's output is returned for the feature-matching loss.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from chatanyone_jax.layers.blocks import avg_pool
from chatanyone_jax.render.presets import DiscriminatorConfig
from chatanyone_jax.render.spade_generator import maybe_spectral_conv


class PatchDiscriminator(nn.Module):
  """Image (B, H, W, C) -> {"logits": (B, H / 2^n, W / 2^n, 1), "features": [n x (B, h_i, w_i, C_i)]}."""
  config: DiscriminatorConfig = DiscriminatorConfig()
  dtype: jnp.dtype | None = None

  def _conv(self, features: int, kernel: int, name: str):
    return maybe_spectral_conv(self.config.spectral_norm, features, kernel, name, dtype=self.dtype)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> dict:
    cfg = self.config
    feats = []
    for i in range(cfg.num_blocks):
      f = min(cfg.max_features, cfg.block_expansion * 2 ** i)
      x = self._conv(f, 3, f"down_{i}")(x, train=train)
      x = avg_pool(nn.leaky_relu(x, 0.2), (2, 2))
      feats.append(x)
    logits = self._conv(1, 1, "logits")(x, train=train)
    return {"logits": logits.astype(jnp.float32), "features": feats}


class MultiScaleDiscriminator(nn.Module):
  """Image (B, H, W, C) in [0, 1] -> one `PatchDiscriminator` output per scale, finest first.

  Scale s sees the image average-pooled by 2^s; H and W must be divisible by
  2^(num_scales - 1 + num_blocks). Variables: `params`, and with spectral norm
  `batch_stats` (pass `mutable=["batch_stats"]` with `train=True`).
  """
  config: DiscriminatorConfig = DiscriminatorConfig()
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, image: jax.Array, *, train: bool = False) -> list[dict]:
    cfg = self.config
    div = 2 ** (cfg.num_scales - 1 + cfg.num_blocks)
    if image.shape[1] % div or image.shape[2] % div:
      raise ValueError(f"image size {image.shape[1:3]} must be divisible by {div}")
    outs = []
    x = image
    for s in range(cfg.num_scales):
      if s:
        x = avg_pool(x, (2, 2))
      outs.append(PatchDiscriminator(cfg, name=f"scale_{s}", dtype=self.dtype)(x, train=train))
    return outs
