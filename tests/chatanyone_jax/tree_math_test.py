"""`chatanyone_jax.tree_math.global_norm`: optax's global norm, the small leaves in one reduction."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from chatanyone_jax import tree_math


def _tree(rng) -> dict:
  small = {f"b{i}": rng.normal(size=(i + 1,)) for i in range(40)}  # 40 biases, 1 to 40 elements
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32),
                      {"small": small, "big": rng.normal(size=(130, 130)), "scalar": np.float32(3.0)})


def test_equals_optax_norm_in_two_reductions():
  tree = _tree(np.random.default_rng(0))
  np.testing.assert_allclose(tree_math.global_norm(tree), optax.tree.norm(tree), rtol=1e-6)
  np.testing.assert_allclose(tree_math.global_norm(tree, small=1), optax.tree.norm(tree), rtol=1e-6)
  assert float(tree_math.global_norm({})) == 0.0
  # What it is for: XLA's program has one reduction for the 41 small leaves and one for the large leaf;
  # optax's one per leaf (40 here: XLA drops the reductions of the 1-element leaves).
  count = lambda f: jax.jit(f).lower(tree).compile().as_text().count(" reduce(")
  assert count(tree_math.global_norm) == 2 and count(optax.tree.norm) >= 40, (
      count(tree_math.global_norm), count(optax.tree.norm))


def test_leaf_size_of_arrays_and_abstract_values():
  assert tree_math.leaf_size(np.zeros((3, 4))) == 12 and tree_math.leaf_size(jnp.float32(1)) == 1
  assert tree_math.leaf_size(jax.ShapeDtypeStruct((2, 5, 7), jnp.float32)) == 70
