"""Shared test set-up: CPU-fast JAX settings, reference data, GPU skipping."""

from __future__ import annotations

import gc
import multiprocessing
import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # tests are CPU tests unless marked gpu
# Reuse compiled XLA programs across runs on the same machine (faster local iteration).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(pathlib.Path.home() / ".cache" / "chatanyone_jax" / "xla"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
# librosa compiles its numba utilities (peak picking, local maxima) on first use in a fresh environment and
# caches them in the venv: 17.4 s of CPU at numba's default -O3, 12.4 s at -O0 (measured); the tests only
# compare against librosa's features. Subprocesses inherit it.
os.environ.setdefault("NUMBA_OPT", "0")
# Every program compiles without most of XLA's optimisations (LLVM at -O0, no expensive passes), as the flax
# examples' tests do: most tests compile small programs and run them once or a few times. Tests that run a
# program many times compile it `tests.helpers.optimized()`. Subprocesses inherit it.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests.helpers import reference_dir, require, write_wav, xla_flags  # noqa: E402

os.environ["XLA_FLAGS"] = xla_flags(os.environ.get("XLA_FLAGS", ""))  # read when the CPU backend starts

# Python's cyclic collector: a full collection walks every live object, and a test process holds hundreds of
# thousands (jit caches, traced programs). At Python's default thresholds (700, 10, 10) the render train-step
# and streaming tests spent 13.2 s of 266 s in collections (27 full ones); at (10000, 10, 10) 3.7 s (7),
# and their CPU time fell to 0.93x (benchmarks/RESULTS.md, twenty-sixth session).
gc.set_threshold(10_000, 10, 10)


def pytest_sessionfinish(session, exitstatus):
  """When the session ends, pytest's unraisable-exception plugin runs five full collections (to surface
  exceptions raised in `__del__` of cyclic garbage) over everything the process still holds: 2.5 M objects
  per worker at the end of the suite (jit caches), about 0.8 s per collection per million. One collection
  does that work; then the survivors are frozen (`gc.freeze`), so that the plugin's collections skip them."""
  gc.collect()
  gc.freeze()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
  """A pytest-xdist worker exits here, its results already with the controller (they go out as each test
  ends; `workerfinished` at session finish). Otherwise JAX's atexit clean-up frees every compiled program
  and cache the worker holds, 4-7 s at the end of the suite while the controller waits for both workers to
  exit (measured: 4.6 s for a process holding 0.6 M objects; `os._exit` 0.3 s). Output is flushed and child
  processes (a test that leaked one) are terminated first; the controller's own exit stays as it is."""
  if not hasattr(config, "workerinput"):
    return
  for child in multiprocessing.active_children():
    child.terminate()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(0)


@pytest.fixture(scope="session")
def lp_reference() -> pathlib.Path:
  """The LivePortrait PyTorch reference vectors directory."""
  return require(reference_dir() / "liveportrait", "LivePortrait reference vectors")


@pytest.fixture(scope="session")
def ops_ref(lp_reference):
  return dict(np.load(lp_reference / "ops.npz"))


@pytest.fixture(scope="session")
def load_ref(lp_reference):
  """load_ref("F_appearance_feature_extractor") -> dict of the npz arrays."""
  cache = {}

  def load(name: str) -> dict[str, np.ndarray]:
    if name not in cache:
      cache[name] = dict(np.load(lp_reference / f"{name}.npz"))
    return cache[name]

  return load


# The demo's outputs (preprocessed bundled clip, four tiny trained workdirs, a streamed video) are the
# fixture of every end-to-end test after it: the demo test, the evaluation CLI and the notebooks. Tests
# that use it carry `pytest.mark.xdist_group("demo")` so that under pytest-xdist one worker builds it.
DEMO_ARGS = ("--train", "--steps-render", "2", "--steps-motion", "3", "--clip-seconds", "2", "--steps", "2")
DEMO_SPEECH_SECONDS = 1.0  # of the bundled speech: two windows of the stream step (the first compiles)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> pathlib.Path:
  """`python -m infer.demo --train` with short settings on the first second of the bundled speech:
  OUT/data (records), OUT/runs (checkpoint), demo.mp4 (summary.json names the speech file)."""
  from data.media import read_audio
  from infer import demo

  out = tmp_path_factory.mktemp("demo")
  speech = out.parent / "demo_speech.wav"
  write_wav(speech, read_audio(demo.ASSETS_SPEECH)[:int(DEMO_SPEECH_SECONDS * 16000)])
  # Without most optimisations, as every test compiles (2-3 steps of each program: compiling dominates, 17 %
  # less time in all), so that the tests on the demo's outputs find its programs in the persistent cache.
  assert demo.main(["--out", str(out), "--audio", str(speech), *DEMO_ARGS]) == 0
  return out


def pytest_collection_modifyitems(config, items):
  # Modules with a test marked slow first, each module's tests together and in order (module fixtures are
  # built once): pytest-xdist hands out the groups first (the largest first), then the other tests in this
  # order, so that long tests do not end the run on one worker while the other idles.
  slow_modules = {item.path for item in items if "slow" in item.keywords}
  items.sort(key=lambda item: item.path not in slow_modules)
  if jax.default_backend() != "cpu":
    return
  skip = pytest.mark.skip(reason="needs a GPU/TPU (jax.default_backend() is cpu)")
  for item in items:
    if "gpu" in item.keywords:
      item.add_marker(skip)
