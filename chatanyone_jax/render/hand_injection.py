"""Hand injection into the generator (paper Eq. 5: f <- f + AdaIN(I_hand)).

The rendered hand image I_hand (pixel-aligned with the frame, at the
renderer's input size) is encoded into a small feature pyramid, one level per
injection scale of G (the SPADE decoder's 1x, 2x and 4x feature resolutions).
At each scale the generator feature f receives a gated, spatially-adaptive
AdaIN residual (per pixel, as SPADE, since the hand image is pixel-aligned):

  f <- f + gate * SPADE(f, h) = f + gate * (IN(f) * (1 + gamma(h)) + beta(h)),

with `gate` a per-channel vector initialised to zero, so a generator with the
hand branch starts numerically identical to the plain one. The face-refine
generator reuses the same branch with the head crop with the face masked out
(`chatanyone_jax.render.face_refine`).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from chatanyone_jax.layers.blocks import avg_pool, conv
from chatanyone_jax.layers.norm import SPADE
from chatanyone_jax.ops.resample import resize_bilinear


class HandEncoder(nn.Module):
  """I_hand (B, H, W, C) -> features at len(scales) resolutions, finest first.

  The image is resized to the finest target resolution, then each level is
  conv3x3 -> LeakyReLU(0.2), followed by a 2x2 average pool to the next
  (coarser) level. Target sizes must halve from one level to the next.

  Attributes:
    block_expansion: channels of the finest level; doubled per level, capped at `max_features`.
  """
  block_expansion: int = 32
  max_features: int = 128
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, image: jax.Array, sizes: Sequence[tuple[int, int]]) -> list[jax.Array]:
    """sizes: (H_i, W_i) per level, finest first, each half the previous. Returns [(B, H_i, W_i, C_i)]."""
    for fine, coarse in zip(sizes[:-1], sizes[1:], strict=True):
      if (fine[0] != 2 * coarse[0]) or (fine[1] != 2 * coarse[1]):
        raise ValueError(f"hand feature sizes must halve per level, got {list(sizes)}")
    x = resize_bilinear(image.astype(self.dtype or image.dtype), sizes[0])
    feats = []
    for i in range(len(sizes)):
      if i:
        x = avg_pool(x, (2, 2))
      feats_i = min(self.max_features, self.block_expansion * 2 ** i)
      x = nn.leaky_relu(conv(feats_i, 2, 3, name=f"conv_{i}", dtype=self.dtype)(x), 0.2)
      feats.append(x)
    return feats


class HandInjection(nn.Module):
  """Gated SPADE residual: f + gate * SPADE(f, h) = f + gate * (IN(f) * (1 + gamma(h)) + beta(h)).

  f: (B, H, W, C); h: (B, H, W, Ch) hand feature at the same resolution.
  `gate` (C,) starts at zero, so the module starts as the identity on f (AdaLN-Zero's trick); the
  hand encoder receives gradients once a gate leaves zero. gamma, beta are 3x3 convs of h (`layers.SPADE`).
  """
  hidden: int = 64
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, f: jax.Array, h: jax.Array) -> jax.Array:
    if h.shape[1:3] != f.shape[1:3]:
      raise ValueError(f"hand feature {h.shape} and generator feature {f.shape} differ in resolution")
    inject = SPADE(hidden=self.hidden, dtype=self.dtype, name="spade")(f, h)
    gate = self.param("gate", nn.initializers.zeros, (f.shape[-1],), jnp.float32)
    return f + gate.astype(f.dtype) * inject
