"""Test helpers importable as `tests.helpers`."""

from __future__ import annotations

import contextlib

import jax


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
