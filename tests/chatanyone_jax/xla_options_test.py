"""`xla_options.cpu_options`: the programs compiled with it have no YNNPACK fusions on CPU.

The test processes already compile without them (tests/helpers.TEST_XLA_FLAGS), so the check runs in a
subprocess with XLA's default flags, where a plain dot product becomes a YNNPACK fusion (jaxlib 0.10).
"""

import json
import os
import subprocess
import sys

from chatanyone_jax import xla_options
from tests.helpers import REPO

SCRIPT = """
import json
import jax, numpy as np
from chatanyone_jax import xla_options
from chatanyone_jax.render.train_step import INIT_COMPILER_OPTIONS
f = lambda a, b: (a @ b).sum()
a, b = np.ones((64, 100), np.float32), np.ones((100, 1434), np.float32)
count = lambda options: (jax.jit(f, compiler_options=options).lower(a, b).compile().as_text()
                         .count("__ynn_fusion"))
print(json.dumps({"default": count(None), "cpu_options": count(xla_options.cpu_options()),
                  "init": count(xla_options.cpu_options(**INIT_COMPILER_OPTIONS))}))
"""


def test_cpu_options_turn_off_ynnpack_fusions():
  assert xla_options.cpu_options() == xla_options.NO_YNN_FUSIONS  # tests run on CPU, jaxlib >= 0.10.2
  assert xla_options.cpu_options(xla_backend_optimization_level=0) == {
      **xla_options.NO_YNN_FUSIONS, "xla_backend_optimization_level": 0}
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.run([sys.executable, "-c", SCRIPT], env={**env, "JAX_PLATFORMS": "cpu"}, cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  counts = json.loads(proc.stdout.strip().splitlines()[-1])
  assert counts["default"] > 0, counts  # XLA's default: the dot is a YNNPACK fusion
  assert counts["cpu_options"] == counts["init"] == 0, counts
