"""AppearanceEmbedding: the body model's appearance tokens from identity coefficients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax.motion.appearance_embedding import AppearanceEmbedding


def test_tokens_are_an_affine_map_of_the_identity():
  emb = AppearanceEmbedding(16)
  params = emb.init(jax.random.key(0), 10)
  assert jax.tree.map(np.shape, params) == {"kernel": (10, 16), "bias": (16,)}
  identity = jax.random.normal(jax.random.key(1), (3, 10))
  tokens = emb.apply(params, identity)
  assert tokens.shape == (3, 1, 16)
  np.testing.assert_allclose(tokens[:, 0], identity @ params["kernel"] + params["bias"], rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(tokens).max()) > 0  # the kernel is not zero-initialised


def test_params_are_those_of_a_dense_layer():
  """Checkpoints store nn.Dense params under params["appearance"]: same names, shapes and init values."""
  key = jax.random.key(3)
  want = nn.Dense(8).init(key, jnp.zeros((1, 5)))["params"]
  jax.tree.map(np.testing.assert_array_equal, AppearanceEmbedding(8).init(key, 5), want)
