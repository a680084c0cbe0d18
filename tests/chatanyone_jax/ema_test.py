import jax.numpy as jnp
import numpy as np

from chatanyone_jax import ema


def test_decay_warms_up_to_the_configured_value():
  steps = jnp.array([0, 1, 10, 90, 8990, 100_000])
  want = [0.1, 2 / 11, 11 / 20, 0.91, 0.999, 0.999]
  np.testing.assert_allclose(ema.decay_at(0.999, steps), want, rtol=1e-6)
  np.testing.assert_allclose(ema.decay_at(0.5, jnp.array([0, 20])), [0.1, 0.5], rtol=1e-6)


def test_update_is_leafwise_and_keeps_dtypes():
  old = {"a": jnp.zeros(3), "b": jnp.ones((2,), jnp.bfloat16)}
  new = {"a": jnp.full(3, 10.0), "b": jnp.full((2,), 3.0, jnp.bfloat16)}
  out = ema.update(old, new, 0.999, jnp.int32(90))  # d = 0.91
  np.testing.assert_allclose(out["a"], 0.9, rtol=1e-5)
  assert out["b"].dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out["b"], np.float32), 1.18, rtol=1e-2)
  late = ema.update(old, new, 0.999, jnp.int32(50_000))
  np.testing.assert_allclose(late["a"], 0.01, rtol=1e-4)
