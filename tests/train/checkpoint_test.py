"""`train.checkpoint.restore`: a train state laid out unlike the checkpoint's fails with what to do."""

from __future__ import annotations

import grain.python as grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train import checkpoint


def _iterator():
  return iter(grain.MapDataset.range(8).to_iter_dataset())


def test_state_of_another_layout_names_the_state_and_warm_start(tmp_path):
  """A workdir whose optimiser state has another tree (an older version's layout) is not a data-pipeline
  problem: the error says so, with and without the iterator, and points at --config.warm_start; the
  matching layout restores the state and the iterator's position."""
  it = _iterator()
  next(it)
  state = {"params": {"w": jnp.arange(3.0)}, "opt_state": ({"mu": jnp.zeros(3)}, jnp.zeros((), jnp.int32))}
  with checkpoint.manager(tmp_path, async_save=False) as mngr:
    checkpoint.save(mngr, 1, state, it)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device)
  other = {"params": {"w": spec(state["params"]["w"])}, "opt_state": [spec(jnp.zeros(3))]}
  with checkpoint.manager(tmp_path) as mngr:
    for iterator in (_iterator(), None):
      with pytest.raises(ValueError, match="--config.warm_start=WORKDIR") as e:
        checkpoint.restore(mngr, other, iterator)
      assert "restore_data" not in str(e.value)
    restored, it2 = checkpoint.restore(mngr, jax.tree.map(spec, state), _iterator())
  np.testing.assert_array_equal(restored["params"]["w"], [0.0, 1.0, 2.0])
  assert next(it2) == 1
