import time

import jax
import jax.numpy as jnp

from benchmarks import harness


def test_time_jitted_measures_and_rows_append(tmp_path):
  f = jax.jit(lambda x: jnp.sin(x) @ x.T)
  t = harness.time_jitted(f, (jnp.ones((64, 64)),), name="matmul", config="64x64", iters=5)
  assert len(t.times_s) >= 5 and t.median_ms > 0 and t.compile_s > 0
  assert t.quantile_ms(0.1) <= t.median_ms <= t.quantile_ms(0.9)
  path = tmp_path / "R.md"
  harness.append_rows([t], path)
  harness.append_rows([t], path)
  lines = path.read_text().splitlines()
  assert lines[4].startswith("| date") and len([l for l in lines if "| matmul |" in l]) == 2
  assert harness.device_name() in lines[-1]


def test_timing_blocks_on_async_dispatch():
  """A function that sleeps on the host via a callback must be timed, not just dispatched."""
  def slow(x):
    jax.debug.callback(lambda: time.sleep(0.05))
    return x + 1
  t = harness.time_jitted(jax.jit(slow), (jnp.ones(3),), name="s", config="", iters=3, warmup=0)
  assert t.median_ms >= 45
