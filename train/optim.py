"""The optimiser of every training config: AdamW with global-norm clipping, warmup + cosine schedule."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import optax


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup to learning_rate over warmup_steps, cosine decay to end_lr_factor · lr at
  lr_decay_steps (default num_steps)."""
  total = config.lr_decay_steps or config.num_steps
  warmup = max(0, min(config.warmup_steps, total - 1))
  return optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup, max(total, warmup + 1),
                                            config.learning_rate * config.end_lr_factor)


def optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
  """AdamW(schedule, b1, b2, weight_decay) after clipping the gradients' global norm to grad_clip (> 0)."""
  adam = optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay)
  return optax.chain(optax.clip_by_global_norm(config.grad_clip), adam) if config.grad_clip > 0 else adam


def at_schedule_step(opt_state, step: int):
  """opt_state (host arrays) with every learning-rate schedule's count at `step` (Adam's moments and its
  bias-correction count untouched): a fresh optimiser that goes on with the schedule of a longer run."""
  is_schedule = lambda x: isinstance(x, optax.ScaleByScheduleState)
  return jax.tree.map(lambda x: x._replace(count=np.asarray(step, np.asarray(x.count).dtype))
                      if is_schedule(x) else x, opt_state, is_leaf=is_schedule)
