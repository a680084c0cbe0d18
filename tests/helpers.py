"""Test helpers importable as `tests.helpers`."""

from __future__ import annotations

import contextlib
import importlib
import os
import pathlib
import wave

import jax
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# pytest-xdist groups (`make test` runs `--dist loadgroup`): a group's tests run in one worker process, one
# after the other, and share what that process built. A module whose module-scoped fixture is expensive
# marks itself `pytest.mark.xdist_group(__name__)`, so that one worker builds it once. The demo's group is
# in tests/conftest.py.
# The streaming tests with random tiny models: `infer.smoke.random_params` (cached per process) and the
# stream steps compiled for their specs (cached per spec) are built once.
SMOKE_STREAM = pytest.mark.xdist_group("smoke_stream")


@contextlib.contextmanager
def enable_x64():
  """float64 for finite-difference checks (jax.enable_x64 on jax >= 0.10)."""
  if hasattr(jax, "enable_x64"):
    with jax.enable_x64(True):
      yield
  else:  # older jax
    from jax.experimental import enable_x64 as _ctx
    with _ctx():
      yield


@contextlib.contextmanager
def optimized():
  """XLA's optimisations for the programs compiled inside (LLVM at TEST_XLA_FLAGS' -O1). Every test process
  compiles without most of them (tests/conftest.py sets `JAX_DISABLE_MOST_OPTIMIZATIONS`, as the flax
  examples' tests do; subprocesses inherit it): most tests compile small programs and run them once or a
  few times, where compiling fast beats running fast. The few that run a program many times (overfitting
  for hundreds of steps, streaming seconds of speech through the bundled models) run inside this. The
  setting is an option of the compile: programs compiled inside stay compiled that way in jit caches, and a
  program compiled outside is compiled again inside. Measured (2-core Xeon, jax 0.10.2, cold cache): the
  motion overfit test and the bundled-demo module 178.6 CPU-s without most optimisations, 137.0 at -O1,
  153.4 at XLA's default level (benchmarks/RESULTS.md)."""
  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", False)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", before)


# XLA:CPU flags of every test process: tests/conftest.py puts them in XLA_FLAGS, and the tests that start
# JAX subprocesses with flags of their own add them through `xla_flags`. The elemental fusion emitters
# (instead of XLA:CPU's newer MLIR fusion emitters) compile the renderer's programs faster without most
# optimisations and run them a little slower: render_head512:tiny's step compiles in 10.3 s instead of
# 14.2 s and steps in 0.24 instead of 0.21 s (2-core Xeon, jax 0.10.2). The motion model's programs compile
# slower with them (the motion overfit test 44 s -> 57 s); the whole suite 999.6 s -> 878.8 s
# (benchmarks/RESULTS.md). Tests only: at full optimisation they slow the renderer down.
# One LLVM module per program instead of XLA:CPU's split into parts compiled on parallel threads (on 2
# cores shared by two test processes the split costs CPU and buys no time): the tiny render step compiles
# in 7.4-7.6 instead of 8.7-9.2 CPU-s. LLVM at -O1 instead of XLA's default for the programs compiled
# `optimized()` (every other program compiles at -O0, `JAX_DISABLE_MOST_OPTIMIZATIONS`). No YNNPACK
# fusions in any program (the library turns them off for the renderers' programs,
# `chatanyone_jax.xla_options.cpu_options`): the streaming, live and stream-step tests 154 -> 136.5 CPU-s.
TEST_XLA_FLAGS = ("--xla_cpu_use_fusion_emitters=false", "--xla_backend_optimization_level=1",
                  "--xla_cpu_parallel_codegen_split_count=1", "--xla_cpu_experimental_ynn_fusion_type=")


def xla_flags(*flags: str) -> str:
  """XLA_FLAGS for a test process: `flags` (each a space-separated string; empty ones ignored), then those
  of TEST_XLA_FLAGS not among them."""
  given = " ".join(f for f in flags if f).split()
  return " ".join([*given, *(f for f in TEST_XLA_FLAGS if f not in given)])


def reference_dir() -> pathlib.Path:
  """Where ../shared/data/reference lives (override with CHATANYONE_REFERENCE_DIR)."""
  env = os.environ.get("CHATANYONE_REFERENCE_DIR")
  return pathlib.Path(env) if env else REPO.parent / "shared" / "data" / "reference"


def media_dir() -> pathlib.Path:
  env = os.environ.get("CHATANYONE_MEDIA_DIR")
  return pathlib.Path(env) if env else REPO.parent / "shared" / "data" / "media"


def require(path: pathlib.Path, what: str) -> pathlib.Path:
  if not path.exists():
    msg = f"{what} not found at {path}; set the environment variable to point at it"
    if os.environ.get("CI"):  # CI always has shared/ beside the clone: never skip there
      pytest.fail(msg)
    pytest.skip(msg)
  return path


def require_module(name: str, install: str) -> None:
  """Skips the test when an optional package is missing (`install` says how to get it); fails under CI, whose
  environment installs the dev extra, so a missing package there is a set-up error."""
  try:
    importlib.import_module(name)
  except ImportError:
    msg = f"optional package {name} is not installed: {install}"
    if os.environ.get("CI"):
      pytest.fail(msg)
    pytest.skip(msg)


def write_wav(path: str | os.PathLike, audio: np.ndarray, rate: int = 16000, channels: int = 1) -> None:
  """float samples in [-1, 1] -> a 16-bit PCM WAV file (the same samples in every channel)."""
  pcm = np.clip(np.round(np.asarray(audio) * 32767), -32768, 32767).astype(np.int16)
  with wave.open(str(path), "wb") as w:
    w.setnchannels(channels)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes(np.repeat(pcm, channels).tobytes())


def irregular_chunks(audio, sizes=(1234, 5000, 17, 3000, 9001)):
  """`audio` cut into chunks of uneven sizes (then the rest), as a live source delivers it."""
  i = 0
  for s in sizes:
    yield audio[i:i + s]
    i += s
  yield audio[i:]
