"""Sinusoidal embeddings for diffusion timesteps and positions."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """DiT / ADM sinusoidal timestep embedding.

  emb = [cos(t * f_0), ..., cos(t * f_{h-1}), sin(t * f_0), ..., sin(t * f_{h-1})]
  with f_i = max_period^(-i / h), h = dim // 2; an odd `dim` gets a zero column.

  Args:
    t: (B,) timesteps, integer or fractional.
    dim: output width.

  Returns:
    (B, dim) float32.
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
  return emb


def sinusoidal_positions(length: int, dim: int, max_period: float = 10000.0) -> jax.Array:
  """(length, dim) fixed positional table, the timestep embedding of 0..length-1."""
  return timestep_embedding(jnp.arange(length), dim, max_period)
