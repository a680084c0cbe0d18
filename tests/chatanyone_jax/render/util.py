"""Shared helpers of the renderer tests (importable as tests.chatanyone_jax.render.util)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax.convert import liveportrait as convert

# Biases that feed a per-channel normalisation (BatchNorm in train mode, or SPADE's instance norm)
# cancel out, so their gradient is zero up to rounding; every other parameter must get a gradient.
NORMALISED_BIASES = ("['conv']['bias']", "['conv1']['bias']", "['decoder_conv']['bias']",
                     "['compress']['bias']", "['conv_0']['bias']")


def state_dict(ref: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The PyTorch state dict stored in a reference npz (its `param/<key>` entries)."""
  return convert.strip_prefix(ref, "param/")


def captured(inter: dict, *path: str) -> np.ndarray:
  """A submodule output recorded by `capture_intermediates=True` (its first __call__)."""
  node = inter["intermediates"]
  for p in path:
    node = node[p]
  return np.asarray(node["__call__"][0])


def sown(inter: dict, *path: str):
  """A value recorded with `self.sow("intermediates", ...)`."""
  node = inter["intermediates"]
  for p in path:
    node = node[p]
  return node[0]


def weighted_sum(tree) -> jax.Array:
  """A scalar depending on every output element with distinct weights (so no gradient cancels)."""
  total = 0.0
  for leaf in jax.tree.leaves(tree):
    w = jnp.sin(jnp.arange(leaf.size, dtype=jnp.float32)).reshape(leaf.shape) + 1.5
    total = total + jnp.mean(leaf * w)
  return total


def assert_gradients_reach_every_parameter(grads) -> None:
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    name = jax.tree_util.keystr(path)
    assert np.all(np.isfinite(g)), f"non-finite gradient at {name}"
    if name.endswith(NORMALISED_BIASES):
      continue
    assert float(jnp.abs(g).max()) > 0, f"no gradient reaches {name}"


def num_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def random_variables(model, *args, seed: int = 0, **kwargs) -> dict:
  """Random variables of the right shapes, without compiling `model.init` (slow on CPU).

  Shapes come from `jax.eval_shape(model.init, ...)`; values from NumPy: kernels
  ~ N(0, 1/fan_in), norm scales ~ 1 + N(0, 0.1^2), everything else in params
  (biases, GRN gamma / beta) ~ N(0, 0.1^2), BatchNorm running mean ~ N(0, 0.1^2),
  running var ~ 1 + |N(0, 0.1^2)|, spectral-norm u / v random unit vectors.
  """
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))
  rng = np.random.default_rng(seed)

  def make(path, s):
    name = jax.tree_util.keystr(path[-1:])
    n = rng.standard_normal(s.shape).astype(np.float32)
    if name == "['kernel']":
      return n / np.sqrt(np.prod(s.shape[:-1]))
    if name == "['scale']":
      return 1 + 0.1 * n
    if name == "['var']":
      return 1 + 0.1 * np.abs(n)
    if name in ("['u']", "['v']"):
      return n / np.linalg.norm(n)
    return 0.1 * n

  return jax.tree_util.tree_map_with_path(make, shapes)
