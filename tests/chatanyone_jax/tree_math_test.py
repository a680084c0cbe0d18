"""`chatanyone_jax.tree_math.global_norm`: optax's global norm, the small leaves in one reduction."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from chatanyone_jax import tree_math


def _tree(rng) -> dict:
  small = {f"b{i}": rng.normal(size=(i + 1,)) for i in range(40)}  # 40 biases, 1 to 40 elements
  tree = {"small": small, "big": rng.normal(size=(130, 130)), "scalar": 3.0}
  return jax.device_put(jax.tree.map(np.float32, tree))


def test_equals_optax_norm_in_two_reductions():
  tree = _tree(np.random.default_rng(0))
  # Jitted, as the train steps call them (op by op, optax's norm alone compiled ~120 small programs: 15 s).
  optax_norm = jax.jit(optax.tree.norm)
  np.testing.assert_allclose(jax.jit(tree_math.global_norm)(tree), optax_norm(tree), rtol=1e-6)
  np.testing.assert_allclose(jax.jit(tree_math.global_norm, static_argnums=1)(tree, 1), optax_norm(tree),
                             rtol=1e-6)
  assert float(tree_math.global_norm({})) == 0.0
  # What it is for: XLA's program has one reduction for the 41 small leaves and one for the large leaf;
  # optax's one per leaf (40 here: XLA drops the reductions of the 1-element leaves).
  counts = [jax.jit(f).lower(tree).compile().as_text().count(" reduce(") for f in (tree_math.global_norm,
                                                                                   optax.tree.norm)]
  assert counts[0] == 2 and counts[1] >= 40, counts


def test_leaf_size_of_arrays_and_abstract_values():
  assert tree_math.leaf_size(np.zeros((3, 4))) == 12 and tree_math.leaf_size(jnp.float32(1)) == 1
  assert tree_math.leaf_size(jax.ShapeDtypeStruct((2, 5, 7), jnp.float32)) == 70
