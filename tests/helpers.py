"""Test helpers importable as `tests.helpers`."""

from __future__ import annotations

import contextlib
import os
import pathlib

import jax
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


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
