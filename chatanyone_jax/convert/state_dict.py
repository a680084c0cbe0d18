"""Checking a flat PyTorch state dict against the keys and shapes a converter expects."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

MAX_LISTED = 12


def listed(keys: list[str], limit: int = MAX_LISTED) -> str:
  more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
  return ", ".join(keys[:limit]) + more


def _num_batches_tracked(key: str) -> bool:
  return key.endswith("num_batches_tracked")


def check_state_dict(sd: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]], what: str, *,
                     optional: Mapping[str, tuple[int, ...]] | None = None,
                     ignore: Callable[[str], bool] = _num_batches_tracked) -> None:
  """Raises a ValueError "not {what}: missing keys (n): ...; unexpected keys (n): ...; wrong shapes (n):
  key (shape) (expected shape)" unless `sd` has every expected key with its shape.

  optional: keys that may be absent (their shape is checked when present); ignore(key): keys to skip.
  """
  optional = optional or {}
  shapes = {**expected, **optional}
  missing = [k for k in expected if k not in sd]
  unexpected = sorted(k for k in sd if k not in shapes and not ignore(k))
  bad = [f"{k} {tuple(np.shape(sd[k]))} (expected {tuple(s)})" for k, s in shapes.items()
         if k in sd and tuple(np.shape(sd[k])) != tuple(s)]
  parts = [f"{name} ({len(keys)}): {listed(keys)}" for name, keys in
           (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", bad)) if keys]
  if parts:
    raise ValueError(f"not {what}: " + "; ".join(parts))
