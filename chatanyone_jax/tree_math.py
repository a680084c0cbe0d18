"""The global L2 norm of a pytree (gradients, parameters) as train steps log and clip it.

`optax.tree.norm` sums one reduction per leaf, and XLA compiles each into a kernel of its own: a
renderer's step logs three such norms over hundreds of leaves (biases, norm scales, small kernels), a
third of the step's kernels at the tiny presets. Here the leaves below `small` elements are concatenated
into one reduction (XLA fuses the concatenation into it); larger leaves keep one each, so that a large leaf
split over devices (`train.parallel.leaf_spec`) is never gathered for it. A config that also splits leaves
below `small` (the tiny configs' fsdp_min_size of 256) has those gathered, at most 64 KB each. The value
is optax's up to float32 summation order.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SMALL_LEAF = 2 ** 14  # elements; also the default of train configs' sharding.fsdp_min_size


def leaf_size(x) -> int:
  """Elements of an array (or ShapeDtypeStruct / tracer)."""
  return int(np.prod(np.shape(x), dtype=np.int64))


def global_norm(tree, small: int = SMALL_LEAF) -> jax.Array:
  """sqrt(sum of every element's square) over the leaves of `tree`, () float32 (0 for no leaves)."""
  leaves = jax.tree.leaves(tree)
  little = [jnp.ravel(x) for x in leaves if leaf_size(x) < small]
  squares = [jnp.sum(jnp.square(x)) for x in leaves if leaf_size(x) >= small]
  if little:
    squares.append(jnp.sum(jnp.square(jnp.concatenate(little))))
  return jnp.sqrt(sum(squares, jnp.zeros((), jnp.float32)))
