"""Shared test set-up: CPU-fast JAX settings, reference data, GPU skipping."""

from __future__ import annotations

import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # tests are CPU tests unless marked gpu
# Reuse compiled XLA programs across runs on the same machine (faster local iteration).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(pathlib.Path.home() / ".cache" / "chatanyone_jax" / "xla"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def reference_dir() -> pathlib.Path:
  """Where ../shared/data/reference lives (override with CHATANYONE_REFERENCE_DIR)."""
  env = os.environ.get("CHATANYONE_REFERENCE_DIR")
  return pathlib.Path(env) if env else REPO.parent / "shared" / "data" / "reference"


def media_dir() -> pathlib.Path:
  env = os.environ.get("CHATANYONE_MEDIA_DIR")
  return pathlib.Path(env) if env else REPO.parent / "shared" / "data" / "media"


def _require(path: pathlib.Path, what: str) -> pathlib.Path:
  if not path.exists():
    msg = f"{what} not found at {path}; set the environment variable to point at it"
    if os.environ.get("CI"):  # CI always has shared/ beside the clone: never skip there
      pytest.fail(msg)
    pytest.skip(msg)
  return path


@pytest.fixture(scope="session")
def lp_reference() -> pathlib.Path:
  """The LivePortrait PyTorch reference vectors directory."""
  return _require(reference_dir() / "liveportrait", "LivePortrait reference vectors")


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


def pytest_collection_modifyitems(config, items):
  if jax.default_backend() != "cpu":
    return
  skip = pytest.mark.skip(reason="needs a GPU/TPU (jax.default_backend() is cpu)")
  for item in items:
    if "gpu" in item.keywords:
      item.add_marker(skip)
