"""UpperBodyMotion: target layout pack/unpack, shapes, AdaLN-Zero init, gradients, full size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax.audio import AudioEncoder
from chatanyone_jax.motion.upper_body_motion import (
                                                     UpperBodyConfig,
                                                     UpperBodyLayout,
                                                     UpperBodyMotion,
                                                     decode_variant,
                                                     dummy_upper_body_inputs,
)
from tests.chatanyone_jax.motion.conftest import perturb


def test_layout_pack_unpack():
  lay = UpperBodyLayout()
  assert lay.dim == 32 * 3 + 21 * 3 + 1 + 3 + 130 == 293
  x = jnp.arange(2 * 5 * lay.dim, dtype=jnp.float32).reshape(2, 5, lay.dim)
  parts = lay.unpack(x)
  assert parts["head_offset"].shape == (2, 5, 32, 3) and parts["body_delta"].shape == (2, 5, 21, 3)
  assert parts["scale"].shape == (2, 5, 1) and parts["translation"].shape == (2, 5, 3)
  assert parts["hands"].shape == (2, 5, 130)
  assert float(parts["scale"][0, 0, 0]) == 96 + 63  # order: ΔX_head, δ, s, t, hands
  np.testing.assert_array_equal(lay.pack(parts), x)
  small = UpperBodyLayout(num_head_kp=4, num_body_kp=2, hand_dim=10)
  assert small.dim == 12 + 6 + 1 + 3 + 10


def test_tiny_forward_zero_init_and_gradients():
  cfg = UpperBodyConfig.tiny()
  model = UpperBodyMotion(cfg)
  ks = jax.random.split(jax.random.key(0), 5)
  x, _, kp, a, app = dummy_upper_body_inputs(cfg, 2, 4)
  args = (jax.random.normal(ks[0], x.shape), jnp.array([5, 900]), jax.random.normal(ks[1], kp.shape),
          jax.random.normal(ks[2], a.shape), jax.random.normal(ks[3], app.shape))
  params = jax.jit(model.init)(jax.random.key(1), *args)["params"]
  out = jax.eval_shape(lambda p: model.apply({"params": p}, *args), params)
  assert out.shape == (2, cfg.window, cfg.layout.dim)
  # One compiled function gives the output and the gradient (compilation dominates on CPU).
  w = jax.random.normal(ks[4], out.shape)
  f = jax.jit(jax.value_and_grad(lambda p, *a: jnp.sum(jnp.abs(model.apply({"params": p}, *a)) * w)))
  v, g = f(params, *args)
  assert float(v) == 0.0  # AdaLN-Zero: exactly zero output at init
  assert np.any(np.asarray(g["final"]["linear"]["kernel"]))
  assert not np.any(np.asarray(g["block0"]["ada"]["proj"]["kernel"]))
  pp = perturb(params)
  v, g = f(pp, *args)
  dead = [jax.tree_util.keystr(k) for k, x in jax.tree_util.tree_leaves_with_path(g) if not np.any(x)]
  assert not dead, dead
  # Every condition reaches the output once the gates are open.
  for i in (2, 3, 4):
    changed = list(args)
    changed[i] = changed[i] * -1.0
    assert abs(float(f(pp, *changed)[0]) - float(v)) > 1e-4


def test_full_config_eval_shape():
  """Full size: 2 layers, width 512, 8 heads, target 293 -> 18.34 M parameters. Shapes only."""
  cfg = UpperBodyConfig()
  model = UpperBodyMotion(cfg)
  args = dummy_upper_body_inputs(cfg, 1, 16)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args))["params"]
  count = sum(v.size for v in jax.tree.leaves(shapes))
  assert count == 18_340_133
  out = jax.eval_shape(lambda p: model.apply({"params": p}, *dummy_upper_body_inputs(cfg, 3, 7)), shapes)
  assert out.shape == (3, 40, 293)



def test_variants():
  """base = the config defaults (model and audio encoder); tiny = UpperBodyConfig.tiny(); None = {}."""
  base = decode_variant("base")
  assert UpperBodyConfig(**base["body"]) == UpperBodyConfig()
  assert AudioEncoder(width=256, **base["audio"]) == AudioEncoder()
  tiny = decode_variant("tiny")
  assert UpperBodyConfig(**tiny["body"]) == UpperBodyConfig.tiny() and tiny["body"]["width"] == 64
  small = decode_variant("small")  # the CPU campaign's (train/configs/motion_body.py:small)
  assert small["body"]["width"] == 128 and small["body"]["audio_dim"] == small["body"]["app_dim"] == 64
  assert decode_variant(None) == {}
  with pytest.raises(ValueError, match="unknown UpperBodyMotion variant"):
    decode_variant("huge")
