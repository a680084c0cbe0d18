"""Multi-scale patch discriminator: shapes, spectral-norm state, trainability, scale independence."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax.render import presets
from chatanyone_jax.render.discriminator import MultiScaleDiscriminator
from tests.chatanyone_jax.render import util

CFG = presets.tiny.discriminator  # 2 scales, 2 blocks, <= 32 channels
IMAGE = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)  # numpy: no jax at import


def test_tiny_shapes_gradients_and_power_iteration():
  model = MultiScaleDiscriminator(CFG)
  v = util.random_variables(model, IMAGE)
  assert set(v) == {"params", "batch_stats"}

  @jax.jit
  def run(params, stats, image):
    def loss(params, image):
      outs, upd = model.apply({"params": params, "batch_stats": stats}, image, train=True,
                              mutable=["batch_stats"])
      return util.weighted_sum([(o["logits"], o["features"]) for o in outs]), (outs, upd)
    return jax.grad(loss, argnums=(0, 1), has_aux=True)(params, image)

  (g_params, g_image), (outs, upd) = run(v["params"], v["batch_stats"], IMAGE)
  assert [o["logits"].shape for o in outs] == [(2, 8, 8, 1), (2, 4, 4, 1)]
  assert [[f.shape for f in o["features"]] for o in outs] == [
      [(2, 16, 16, 8), (2, 8, 8, 16)], [(2, 8, 8, 8), (2, 4, 4, 16)]]
  util.assert_gradients_reach_every_parameter(g_params)
  assert float(jnp.abs(g_image).max()) > 0
  # one power-iteration step moves every u, v (except the 1-element u of the 1-channel logit conv: +-1)
  changed = jax.tree.map(lambda a, b: a.size == 1 or float(jnp.abs(a - b).max()) > 0,
                         upd["batch_stats"], v["batch_stats"])
  assert all(jax.tree.leaves(changed)), "train mode must update u, v"


def test_scales_are_independent_networks_and_plain_mode():
  cfg = dataclasses.replace(CFG, spectral_norm=False)
  model = MultiScaleDiscriminator(cfg)
  v = util.random_variables(model, IMAGE)
  assert set(v) == {"params"} and set(v["params"]) == {"scale_0", "scale_1"}
  apply = jax.jit(model.apply)
  out = apply(v, IMAGE)
  v2 = jax.tree.map(lambda x: x, v)
  v2["params"]["scale_1"] = jax.tree.map(lambda x: 2 * x, v["params"]["scale_1"])
  out2 = apply(v2, IMAGE)
  np.testing.assert_array_equal(out[0]["logits"], out2[0]["logits"])  # scale 0 does not see scale 1's weights
  assert float(jnp.abs(out[1]["logits"] - out2[1]["logits"]).max()) > 0
  with pytest.raises(ValueError, match="divisible"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), IMAGE[:, :30]))
