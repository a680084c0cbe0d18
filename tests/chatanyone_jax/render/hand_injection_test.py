"""Hand injection in G (paper Eq. 5): zero-gated start, trainability, shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax.render import presets
from chatanyone_jax.render.hand_injection import HandEncoder, HandInjection
from chatanyone_jax.render.spade_generator import SPADEDecoder
from tests.chatanyone_jax.render import util

pytestmark = pytest.mark.xdist_group(__name__)  # one worker builds the module fixtures

CFG = presets.tiny_upper.spade_generator
# numpy inputs: jax.random at import would start the backend and compile in every collecting worker
RNG = np.random.default_rng(0)
FEATURE = RNG.standard_normal((2, 8, 4, CFG.input_channels), np.float32)
HAND = RNG.uniform(size=(2, 32, 16, 3)).astype(np.float32)  # I_hand at 4x the feature size


@pytest.fixture(scope="module")
def init_vars():
  """Random G weights with the gates as `HandInjection` initialises them (zero; checked below).

  A real `init` of the whole decoder takes a minute to compile on CPU.
  """
  v = util.random_variables(SPADEDecoder(CFG), FEATURE, HAND)
  gate = HandInjection(hidden=4).init(jax.random.key(0), FEATURE, FEATURE)["params"]["gate"]
  assert gate.shape == (CFG.input_channels,) and not np.any(gate), "HandInjection's gate must start at 0"
  for i in range(3):
    v["params"][f"hand_inject_{i}"]["gate"] = jnp.zeros_like(v["params"][f"hand_inject_{i}"]["gate"])
  return v


def _plain_part(params):
  return {k: v for k, v in params.items() if not k.startswith("hand_")}


def test_zero_gate_starts_identical_to_plain_decoder(init_vars):
  params = init_vars["params"]
  assert {k for k in params if k.startswith("hand_")} == {
      "hand_encoder", "hand_inject_0", "hand_inject_1", "hand_inject_2"}
  # The LivePortrait parameters keep their names and shapes: the plain tree is the hand tree minus hand_*.
  plain_cfg = presets.tiny.spade_generator
  plain_shapes = jax.eval_shape(SPADEDecoder(plain_cfg).init, jax.random.key(0), FEATURE)["params"]
  assert jax.tree.structure(plain_shapes) == jax.tree.structure(_plain_part(params))
  with_hand = jax.jit(SPADEDecoder(CFG).apply)(init_vars, FEATURE, HAND)
  plain = jax.jit(SPADEDecoder(plain_cfg).apply)({"params": _plain_part(params)}, FEATURE)
  assert with_hand.shape == (2, 64, 32, 3)
  # Equal up to float32 rounding: the two programs are fused differently by XLA (exact with its default
  # CPU fusion emitters; with the suite's, tests/helpers.TEST_XLA_FLAGS, at most 4.2e-7 apart, measured).
  np.testing.assert_allclose(np.asarray(with_hand), np.asarray(plain), rtol=0, atol=1e-6)
  # hand_image=None runs the plain path of the same module.
  no_hand = jax.jit(SPADEDecoder(CFG).apply)({"params": _plain_part(params)}, FEATURE)
  np.testing.assert_allclose(np.asarray(no_hand), np.asarray(plain), rtol=0, atol=1e-6)


def test_gradients_reach_hand_encoder_once_gate_is_nonzero(init_vars):
  model = SPADEDecoder(CFG)
  grad_fn = jax.jit(jax.grad(lambda p: util.weighted_sum(model.apply({"params": p}, FEATURE, HAND))))
  g0 = grad_fn(init_vars["params"])  # at init: only the gates (and G) get a gradient
  for i in range(3):
    assert float(jnp.abs(g0[f"hand_inject_{i}"]["gate"]).max()) > 0, "the gate must be trainable at init"
  assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(g0["hand_encoder"]))
  # After a step the gates are non-zero (random_variables draws them ~N(0, 0.1^2)): everything learns.
  v = util.random_variables(model, FEATURE, HAND)
  assert all(np.all(v["params"][f"hand_inject_{i}"]["gate"] != 0) for i in range(3))
  g1 = grad_fn(v["params"])
  util.assert_gradients_reach_every_parameter(g1)
  # and the hand image changes the output
  out = jax.jit(model.apply)(v, FEATURE, HAND)
  out2 = jax.jit(model.apply)(v, FEATURE, 1 - HAND)
  assert float(jnp.abs(out - out2).max()) > 1e-4


def test_hand_image_any_size_and_flag_required():
  model = SPADEDecoder(CFG)
  small = jnp.zeros((2, 16, 8, 3))  # the renderer's input size; resized to 4x the feature size
  out = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), FEATURE, small)[0])
  assert out.shape == (2, 64, 32, 3)
  with pytest.raises(ValueError, match="hand_injection"):
    jax.eval_shape(lambda: SPADEDecoder(presets.tiny.spade_generator).init(jax.random.key(0), FEATURE, HAND))


def test_hand_encoder_pyramid_and_injection_identity():
  enc = HandEncoder(block_expansion=4, max_features=6)
  feats = jax.eval_shape(lambda: enc.init_with_output(jax.random.key(0), HAND, [(16, 8), (8, 4), (4, 2)])[0])
  assert [f.shape for f in feats] == [(2, 16, 8, 4), (2, 8, 4, 6), (2, 4, 2, 6)]
  with pytest.raises(ValueError, match="halve"):
    jax.eval_shape(lambda: enc.init(jax.random.key(0), HAND, [(16, 8), (6, 4)]))
  inj = HandInjection(hidden=4)
  f = jax.random.normal(jax.random.key(3), (1, 4, 4, 5))
  h = jax.random.normal(jax.random.key(4), (1, 4, 4, 3))
  v = util.random_variables(inj, f, h)
  v0 = jax.tree.map(lambda x: x, v)
  v0["params"]["gate"] = jnp.zeros_like(v["params"]["gate"])
  np.testing.assert_array_equal(inj.apply(v0, f, h), f)
  assert float(jnp.abs(inj.apply(v, f, h) - f).max()) > 1e-3
