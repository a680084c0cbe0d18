"""XLA compile options of the programs that run the renderers, for `jax.jit(..., compiler_options=...)`.

On CPU, XLA (jaxlib 0.10) hands dot products to YNNPACK fusions by default. For our networks that is
much slower than XLA's own CPU kernels (2-core Xeon, jax 0.10.2, benchmarks/RESULTS.md): the upper-body
stream of the small presets (`benchmarks.stream_bench --modes upper --steps 5 --refine on`) 9.8 -> 27.6
frames/s without them, render_upper512x768:small's train step 2620 -> 1653 ms; the motion model's step
is unchanged (364 vs 351 ms). `cpu_options()` turns them off; other backends compile with their defaults.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

NO_YNN_FUSIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}  # the empty list of YNNPACK fusion types


def cpu_options(**extra) -> dict | None:
  """On a CPU backend: `NO_YNN_FUSIONS` (where this jaxlib has the option) and `extra` (XLA debug
  options); None on other backends, which compile with their defaults."""
  if jax.default_backend() != "cpu":
    return None
  return {**_known_options(), **extra}


@functools.cache
def _known_options() -> dict:
  """NO_YNN_FUSIONS if this jaxlib's XLA knows the option (a trivial program compiles with it), else {}."""
  try:
    jax.jit(lambda x: x + 1).lower(np.float32(0)).compile(NO_YNN_FUSIONS)
  except jax.errors.JaxRuntimeError:  # "No such compile option": an XLA without YNNPACK fusions
    return {}
  return dict(NO_YNN_FUSIONS)
