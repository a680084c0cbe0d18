"""Conditional normalisation modules: SPADE, AdaIN and AdaLN-Zero."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from chatanyone_jax.layers.blocks import conv
from chatanyone_jax.ops.norm import adain, instance_norm, modulate
from chatanyone_jax.ops.resample import resize_nearest


class SPADE(nn.Module):
  """Spatially-adaptive normalisation (Park et al. 2019), LivePortrait's variant.

  SPADE(x, seg) = IN(x) * (1 + gamma(seg)) + beta(seg) with
  h = ReLU(conv3x3(resize_nearest(seg))), gamma = conv3x3(h), beta = conv3x3(h).

  Attributes:
    hidden: width of the shared conv (128 in LivePortrait).
  """
  hidden: int = 128
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, segmap: jax.Array) -> jax.Array:
    """x: (N, H, W, C); segmap: (N, H', W', S) resized to (H, W). Returns (N, H, W, C)."""
    c = x.shape[-1]
    normalized = instance_norm(x)
    seg = resize_nearest(segmap, x.shape[1:-1])
    h = nn.relu(conv(self.hidden, 2, 3, name="mlp_shared", dtype=self.dtype)(seg))
    gamma = conv(c, 2, 3, name="mlp_gamma", dtype=self.dtype)(h)
    beta = conv(c, 2, 3, name="mlp_beta", dtype=self.dtype)(h)
    return normalized * (1 + gamma) + beta


class AdaIN(nn.Module):
  """AdaIN conditioned on a style vector: IN(x) * (1 + gamma(s)) + beta(s).

  Used for hand injection (paper Eq. 5) and the face-refine network. With
  `zero_init=True` the projection starts at zero, so the module starts as a
  plain instance norm and a gated residual user starts as the identity.
  """
  zero_init: bool = False
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, style: jax.Array) -> jax.Array:
    """x: (N, *spatial, C); style: (N, S). Returns the shape of x."""
    c = x.shape[-1]
    init = nn.initializers.zeros if self.zero_init else nn.initializers.lecun_normal()
    gb = nn.Dense(2 * c, kernel_init=init, bias_init=nn.initializers.zeros, name="proj",
                  dtype=self.dtype)(style)
    gamma, beta = jnp.split(gb, 2, axis=-1)
    return adain(x, 1 + gamma, beta)


class AdaLNZero(nn.Module):
  """AdaLN-Zero conditioning projection (DiT): c -> SiLU -> Dense(n * D), zero-initialised.

  Returns `num_chunks` arrays of shape (B, D) (e.g. shift, scale, gate for
  attention and for the MLP: 6). Because the projection starts at zero, every
  gate is 0 at init and a residual block built on it is the identity.
  """
  features: int
  num_chunks: int = 6
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, c: jax.Array) -> tuple[jax.Array, ...]:
    """c: (B, Dc) conditioning vector."""
    out = nn.Dense(self.num_chunks * self.features, kernel_init=nn.initializers.zeros,
                   bias_init=nn.initializers.zeros, name="proj", dtype=self.dtype)(nn.silu(c))
    return tuple(jnp.split(out, self.num_chunks, axis=-1))


class AdaLNZeroFinal(nn.Module):
  """DiT final layer: LN -> modulate(shift, scale from c) -> zero-initialised Dense."""
  out_features: int
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
    """x: (B, T, D); c: (B, Dc) -> (B, T, out_features)."""
    shift, scale = AdaLNZero(x.shape[-1], 2, dtype=self.dtype, name="ada")(c)
    h = modulate(nn.LayerNorm(use_scale=False, use_bias=False, epsilon=1e-6, name="norm")(x),
                 shift, scale)
    return nn.Dense(self.out_features, kernel_init=nn.initializers.zeros, name="linear",
                    dtype=self.dtype)(h)
