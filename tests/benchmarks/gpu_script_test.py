"""benchmarks/gpu.sh's checks before it measures, the wheel pins it installs, and the top-ops reader.

The whole script is rehearsed outside the suite (`JAX_PLATFORMS=cpu bash benchmarks/gpu.sh --tiny` in a
Python 3.12 virtualenv holding only the GPU image's packages and the carried wheels: benchmarks/RESULTS.md);
here only its cheap part runs.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from benchmarks import gpu_wheels, profile_top
from tests.helpers import REPO


def _check(tmp_path, *args, pythonpath=""):
  env = {**os.environ, "PYTHON": sys.executable, "GPU_SH_WHEELS": str(tmp_path / "no-wheels"),
         "JAX_PLATFORMS": "cpu", "PYTHONPATH": pythonpath}
  return subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), "--check", *args], env=env,
                        capture_output=True, text=True, timeout=300)


def test_gpu_sh_checks_every_import_then_refuses_a_cpu_backend_without_tiny(tmp_path):
  r = _check(tmp_path)  # no wheels and no inputs.npz here: mediapipe and av must be importable too
  assert r.returncode == 2, r.stdout + r.stderr
  assert "missing" not in r.stderr and "no accelerator visible to jax (backend cpu)" in r.stderr
  assert f"python {sys.version.split()[0]}, jax {jax.__version__}" in r.stdout


def test_gpu_sh_names_a_missing_module_and_what_to_do(tmp_path):
  block = tmp_path / "block"
  block.mkdir()
  # Without numpy (cheap: everything after it fails at once) every module that needs it is listed too.
  (block / "sitecustomize.py").write_text(
      "import sys\n"
      "class _NoNumpy:\n"
      "  def find_spec(self, name, path=None, target=None):\n"
      "    if name == 'numpy' or name.startswith('numpy.'):\n"
      "      raise ModuleNotFoundError(\"No module named 'numpy'\")\n"
      "sys.meta_path.insert(0, _NoNumpy())\n")
  r = _check(tmp_path, "--tiny", pythonpath=str(block))
  assert r.returncode == 2, r.stdout + r.stderr
  assert "gpu.sh: cannot run, missing:\n  numpy (ModuleNotFoundError: No module named 'numpy')" in r.stderr
  assert "\n  jax (" in r.stderr and "\n  grain (" in r.stderr and "\n  mediapipe (" in r.stderr
  assert "python -m benchmarks.gpu_wheels" in r.stderr and "devices" not in r.stdout


def test_wheel_pins_are_exact_and_cover_what_the_image_lacks(tmp_path):
  reqs = gpu_wheels.requirements()
  names = {r.split("==")[0] for r in reqs}
  assert {"ml-collections", "grain", "librosa", "tensorflow-datasets", "tensorboardX", "promise"} <= names
  assert not names & {"mediapipe", "av", "jax", "jaxlib"}  # too large to carry / already there
  bad = tmp_path / "reqs.txt"
  bad.write_text("grain==0.2.11\nlibrosa>=0.10\n")
  with pytest.raises(ValueError, match=r"reqs.txt:2: 'librosa>=0.10' must pin one exact version"):
    gpu_wheels.requirements(bad)


def test_top_ops_of_a_trace_count_innermost_ops_only(tmp_path):
  f = jax.jit(lambda x: jnp.tanh(x @ x).sum() + jnp.sin(x).mean())
  x = jnp.ones((128, 128))
  f(x).block_until_ready()
  with jax.profiler.trace(str(tmp_path), create_perfetto_trace=True):
    for _ in range(3):
      f(x).block_until_ready()
  ops, total_us, counted = profile_top.top_ops(tmp_path, top=50)
  assert counted.startswith("XLA execution threads") and ops and total_us > 0
  assert not any(o.name.startswith(("ThunkExecutor", "ThreadpoolListener")) for o in ops)
  assert sum(o.total_us for o in ops) <= total_us * (1 + 1e-9)
  assert max(o.calls for o in ops) == 3  # the function's ops ran once per call
  md = profile_top.table(ops[:2], total_us)
  assert md.count("\n") == 3 and "| calls | total ms | share |" in md
  with pytest.raises(FileNotFoundError, match="create_perfetto_trace=True"):
    profile_top.find_trace(tmp_path / "empty")
