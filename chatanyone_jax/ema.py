"""Exponential moving average of the parameters, the one update every train step uses.

The decay warms up as TensorFlow's `ExponentialMovingAverage(num_updates=step)` does,
min(decay, (1 + step) / (10 + step)): early in a run the average follows the parameters instead of
holding on to their random initialisation for ~1 / (1 - decay) steps (1,000 steps at 0.999, which is a
third of a CPU campaign's first hour). From step (10 d - 1) / (1 - d) on (8,990 at 0.999) it is `decay`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def decay_at(decay: float, step: jax.Array) -> jax.Array:
  """The decay of the update made at `step` (0 for the first update)."""
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(jnp.float32(decay), (1.0 + step) / (10.0 + step))


def update(ema, params, decay: float, step: jax.Array):
  """ema <- d · ema + (1 - d) · params, leaf by leaf, with d = decay_at(decay, step)."""
  d = decay_at(decay, step)
  return jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), ema, params)
