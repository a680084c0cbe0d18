"""The optimiser of every training config: AdamW with global-norm clipping, warmup + cosine schedule."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import optax

from chatanyone_jax.tree_math import global_norm, leaf_size


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup to learning_rate over warmup_steps, cosine decay to end_lr_factor · lr at
  lr_decay_steps (default num_steps)."""
  total = config.lr_decay_steps or config.num_steps
  warmup = max(0, min(config.warmup_steps, total - 1))
  return optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup, max(total, warmup + 1),
                                            config.learning_rate * config.end_lr_factor)


def optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
  """AdamW(schedule, b1, b2, weight_decay) after clipping the gradients' global norm to grad_clip (> 0).

  The leaves below config.sharding.fsdp_min_size elements (biases, norms, small kernels: the leaves every
  device holds whole, `parallel.leaf_spec`) are updated as one flat vector (`optax.flatten`; the others
  leaf by leaf), and the global norm sums them in one reduction: the same arithmetic in far fewer XLA
  kernels than one chain per leaf (a renderer's step has hundreds of such leaves; benchmarks/RESULTS.md).
  Their optimiser state is then one vector per moment, whatever the mesh."""
  min_size = config.sharding.fsdp_min_size
  adam = optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay)
  labels = lambda tree: jax.tree.map(lambda x: "small" if leaf_size(x) < min_size else "big", tree)
  tx = optax.multi_transform({"small": _flatten(adam), "big": adam}, labels)
  return optax.chain(clip_by_global_norm(config.grad_clip, min_size), tx) if config.grad_clip > 0 else tx


def _flatten(inner: optax.GradientTransformation) -> optax.GradientTransformation:
  """`optax.flatten(inner)`, or `inner` itself on a tree without leaves (a model with no small leaf)."""
  flat = optax.flatten(inner)
  init = lambda params: (flat if jax.tree.leaves(params) else inner).init(params)
  update = lambda updates, state, params=None: (flat if jax.tree.leaves(updates) else inner).update(
      updates, state, params)
  return optax.GradientTransformation(init, update)


def clip_by_global_norm(max_norm: float, min_size: int) -> optax.GradientTransformation:
  """`optax.clip_by_global_norm`, with the norm of `chatanyone_jax.tree_math.global_norm` (the leaves below
  `min_size` elements in one reduction)."""

  def update(updates, state, params=None):
    del params
    norm = global_norm(updates, min_size)
    keep = norm < max_norm
    clip = lambda t: jax.lax.select(keep, t, (t / norm.astype(t.dtype)) * max_norm)
    return jax.tree.map(clip, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def at_schedule_step(opt_state, step: int):
  """opt_state (host arrays) with every learning-rate schedule's count at `step` (Adam's moments and its
  bias-correction count untouched): a fresh optimiser that goes on with the schedule of a longer run."""
  is_schedule = lambda x: isinstance(x, optax.ScaleByScheduleState)
  return jax.tree.map(lambda x: x._replace(count=np.asarray(step, np.asarray(x.count).dtype))
                      if is_schedule(x) else x, opt_state, is_leaf=is_schedule)
