"""The trainer's optimiser (`train.optim`): AdamW after global-norm clipping, small leaves as one vector."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from train import optim
from train.configs import render_head512


def _params(rng) -> dict:
  """Leaves on both sides of fsdp_min_size (256 in the tiny configs): a conv kernel and a dense matrix
  above it, biases and a norm scale below."""
  shapes = {"conv": {"kernel": (3, 3, 8, 16), "bias": (16,)}, "dense": {"kernel": (40, 40), "bias": (7,)},
            "norm": {"scale": (255,)}}
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s), jnp.float32), shapes,
                      is_leaf=lambda s: isinstance(s, tuple))


@pytest.mark.parametrize("grad_clip,grad_scale", [(0.0, 1.0), (1.0, 1e-3), (1.0, 10.0)])
def test_updates_equal_optax_adamw_after_clipping(grad_clip, grad_scale):
  """Five steps against optax's own chain (clip_by_global_norm, adamw) leaf by leaf: below and above the
  clipping norm, and without clipping. Equal up to float32 rounding (measured: 0 to 1e-10)."""
  config = render_head512.get_config("tiny")
  config.grad_clip, config.weight_decay = grad_clip, 0.01
  schedule = optim.learning_rate_schedule(config)
  ours = optim.optimizer(config, schedule)
  adamw = optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay)
  reference = optax.chain(optax.clip_by_global_norm(grad_clip), adamw) if grad_clip else adamw
  rng = np.random.default_rng(0)
  p_ours = p_ref = _params(rng)
  s_ours, s_ref = ours.init(p_ours), reference.init(p_ref)
  for _ in range(5):
    grads = jax.tree.map(lambda p: grad_scale * jnp.asarray(rng.normal(size=p.shape), jnp.float32), p_ref)
    u_ours, s_ours = jax.jit(ours.update)(grads, s_ours, p_ours)
    u_ref, s_ref = jax.jit(reference.update)(grads, s_ref, p_ref)
    p_ours, p_ref = optax.apply_updates(p_ours, u_ours), optax.apply_updates(p_ref, u_ref)
  for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_ref), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
  moved = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(_params(
      np.random.default_rng(0))), strict=True))
  assert moved > 1e-4  # the steps did move the parameters


def test_small_leaves_share_one_moment_vector_and_schedules_move_together():
  """Adam's moments: one vector for every leaf below fsdp_min_size (here 16 + 7 + 255 elements), one array
  per larger leaf; `at_schedule_step` moves the schedule counts of both groups."""
  config = render_head512.get_config("tiny")
  assert config.sharding.fsdp_min_size == 256
  tx = optim.optimizer(config, optim.learning_rate_schedule(config))
  state = tx.init(_params(np.random.default_rng(0)))
  adam = [s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
          if isinstance(s, optax.ScaleByAdamState)]
  shapes = sorted(tuple(np.shape(x)) for s in adam for x in jax.tree.leaves(s.mu))
  assert shapes == [(3, 3, 8, 16), (40, 40), (278,)], shapes
  moved = optim.at_schedule_step(jax.device_get(state), 100)
  counts = [int(s.count) for s in jax.tree.leaves(
      moved, is_leaf=lambda s: isinstance(s, optax.ScaleByScheduleState))
      if isinstance(s, optax.ScaleByScheduleState)]
  assert counts == [100, 100]


@pytest.mark.parametrize("shape", [(30, 30), (3,)])
def test_a_model_with_leaves_on_one_side_only(shape):
  """Every leaf above fsdp_min_size, or every leaf below it: the other group is empty, and the step is
  still AdamW's (the first step of Adam moves each element by the learning rate)."""
  config = render_head512.get_config("tiny")
  config.grad_clip, config.warmup_steps = 1.0, 0
  tx = optim.optimizer(config, optim.learning_rate_schedule(config))
  params = {"w": jnp.ones(shape)}
  updates, _ = jax.jit(tx.update)({"w": jnp.ones(shape)}, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], -config.learning_rate * (1 + config.weight_decay), rtol=1e-3)
