"""Deterministic weights for parity tests against public PyTorch networks, from NumPy alone.

A generator script (run once, by hand, with PyTorch: see each `make_*.py`) fills the canonical torch
model with `seeded_state_dict(shapes, seed)`, runs it on `seeded_input(...)` and stores only the outputs
in a small .npz beside it. The test rebuilds the same weights and inputs from the same seeds — NumPy's
PCG64 streams are stable across versions — converts them with our converter, and compares. No weight
file is committed, and torch is never needed at test time.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def seeded_array(key: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
  """One parameter or buffer, scaled so activations stay O(1) through deep nets."""
  name = key.rsplit(".", 1)[-1]
  shape = tuple(int(s) for s in shape)
  if name == "num_batches_tracked":
    return np.zeros(shape, np.int64)
  if name == "running_var":
    return rng.uniform(0.5, 1.5, shape).astype(np.float32)
  if name == "running_mean":
    return (0.1 * rng.standard_normal(shape)).astype(np.float32)
  if len(shape) >= 2:  # conv / linear weight (out, in, *k): variance-preserving He-like scale
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))).astype(np.float32)
  if name == "weight":  # norm scale
    return rng.uniform(0.8, 1.2, shape).astype(np.float32)
  return (0.05 * rng.standard_normal(shape)).astype(np.float32)  # biases and the rest


def seeded_state_dict(shapes: Mapping[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
  """{key: array} for every key of a state dict's {key: shape}, drawn in sorted key order."""
  rng = np.random.default_rng(seed)
  return {k: seeded_array(k, shapes[k], rng) for k in sorted(shapes)}


def seeded_input(shape: tuple[int, ...], seed: int, low: float = 0.0, high: float = 1.0) -> np.ndarray:
  return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)
