"""Parameter-free normalisation and modulation functions, channels-last.

The modules in `chatanyone_jax.layers` wrap these with learned projections.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def instance_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Per-sample, per-channel normalisation over the spatial axes.

  Matches `nn.InstanceNorm{2,3}d(affine=False, track_running_stats=False)`:
  biased variance, statistics from the sample itself in train and eval.

  Args:
    x: (N, *spatial, C).
  """
  axes = tuple(range(1, x.ndim - 1))
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean = jnp.mean(xf, axis=axes, keepdims=True)
  var = jnp.mean(jnp.square(xf - mean), axis=axes, keepdims=True)
  return ((xf - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def channel_stats(x: jax.Array, eps: float = 1e-5) -> tuple[jax.Array, jax.Array]:
  """Per-channel mean and std over spatial axes: (N, *spatial, C) -> 2 x (N, C)."""
  axes = tuple(range(1, x.ndim - 1))
  mean = jnp.mean(x, axis=axes)
  std = jnp.sqrt(jnp.var(x, axis=axes) + eps)
  return mean, std


def adain(content: jax.Array, scale: jax.Array, shift: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Adaptive instance normalisation: IN(content) * scale + shift.

  Args:
    content: (N, *spatial, C) features.
    scale, shift: (N, C) per-sample, per-channel style statistics.
  """
  expand = (slice(None),) + (None,) * (content.ndim - 2) + (slice(None),)
  return instance_norm(content, eps) * scale[expand] + shift[expand]


def adain_from_style(content: jax.Array, style: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Huang & Belongie AdaIN: re-colour `content` with `style`'s channel statistics."""
  mean, std = channel_stats(style, eps)
  return adain(content, std, mean, eps)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
  """DiT / AdaLN modulation x * (1 + scale) + shift.

  Args:
    x: (B, T, D) tokens.
    shift, scale: (B, D) (broadcast over T) or (B, T, D).
  """
  if shift.ndim == x.ndim - 1:
    shift, scale = shift[:, None], scale[:, None]
  return x * (1 + scale) + shift


def layer_norm_channels(x: jax.Array, weight: jax.Array, bias: jax.Array, eps: float = 1e-6) -> jax.Array:
  """LayerNorm over the last (channel) axis with biased variance (ConvNeXt)."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps) * weight + bias


def grn(x: jax.Array, gamma: jax.Array, beta: jax.Array, eps: float = 1e-6) -> jax.Array:
  """ConvNeXt-V2 global response normalisation on (N, H, W, C)."""
  gx = jnp.sqrt(jnp.sum(jnp.square(x), axis=(1, 2), keepdims=True))  # (N, 1, 1, C)
  nx = gx / (jnp.mean(gx, axis=-1, keepdims=True) + eps)
  return gamma * (x * nx) + beta + x
