"""Flat PyTorch state dicts: read one weights file into {key: np.ndarray}, check it against a converter.

`load_state_dict` reads a named .pth / .pt / .ckpt / .model (`torch.save`, without PyTorch:
`chatanyone_jax.convert.torch_pickle`), .npz or .safetensors file. `check_state_dict` is the one key /
shape check every converter (LivePortrait, the evaluation networks, VGG-19) runs before it maps keys, so
a file of the wrong network or config fails with a ValueError naming the keys instead of a silent
mismatch.
"""

from __future__ import annotations

import importlib
import os
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from safetensors.numpy import load_file as load_safetensors

from chatanyone_jax.convert import torch_pickle

StateDict = Mapping[str, np.ndarray]
MAX_LISTED = 12
# In the order a folder search prefers them when a folder holds one stem in several formats (torch.save
# files last: the others hold plain arrays).
WEIGHT_SUFFIXES = (".safetensors", ".npz", ".pth", ".pt", ".ckpt", ".model")
# torch.save files (".model": SyncNet's syncnet_v2.model), read by `torch_pickle`.
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".model")
MODULE_PREFIX = "module."  # DataParallel / DDP wrappers


# ---- checking -------------------------------------------------------------------------------------------

def listed(keys: list[str], limit: int = MAX_LISTED) -> str:
  more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
  return ", ".join(keys[:limit]) + more


def _num_batches_tracked(key: str) -> bool:
  return key.endswith("num_batches_tracked")


def check_state_dict(sd: StateDict, expected: Mapping[str, tuple[int, ...]], what: str, *,
                     optional: Mapping[str, tuple[int, ...]] | None = None,
                     ignore: Callable[[str], bool] = _num_batches_tracked) -> None:
  """Raises a ValueError "not {what}: missing keys (n): ...; unexpected keys (n): ...; wrong shapes (n):
  key (shape) (expected shape)" unless `sd` has every expected key with its shape.

  optional: keys that may be absent (their shape is checked when present); ignore(key): keys that are
  never unexpected (default: BatchNorm's `num_batches_tracked`).
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


# ---- reading --------------------------------------------------------------------------------------------

def strip_module(key: str) -> str:
  """`key` without a leading `module.` (the prefix DataParallel / DDP wrappers add)."""
  return key[len(MODULE_PREFIX):] if key.startswith(MODULE_PREFIX) else key


def _flatten(tree: Mapping, to_numpy: Callable[[Any], np.ndarray | None], prefix: str = "",
             out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
  """Nested dicts -> "outer.inner" keys, dropping a leading `module.` at every level."""
  out = {} if out is None else out
  for k, v in tree.items():
    key = prefix + strip_module(str(k))
    if isinstance(v, Mapping):
      _flatten(v, to_numpy, key + ".", out)
    elif (arr := to_numpy(v)) is not None:
      out[key] = arr
  return out


def _import_torch(path: pathlib.Path, why: torch_pickle.UnsupportedFormatError):
  try:  # torch is optional (not a dependency): imported only for the files our reader cannot read
    return importlib.import_module("torch")
  except ImportError as e:
    raise ImportError(
        f"{why} -- so reading {path} needs PyTorch's own torch.load, and PyTorch is not installed. Either "
        f"`pip install torch` (the CPU build is enough), or convert the file to .npz / .safetensors on a "
        f"machine that has torch (nested dicts as 'outer.inner' keys) and pass that instead.") from e


def _torch_loader(path: pathlib.Path) -> tuple[Any, Callable[[Any], np.ndarray | None]]:
  """Our torch-free reader; torch.load(weights_only=True) only for what it reports as unsupported."""
  def numpy_leaf(v):
    return np.asarray(v) if isinstance(v, np.ndarray | np.generic | int | float) else None  # drop str, None

  try:
    return torch_pickle.load(path), numpy_leaf
  except torch_pickle.UnsupportedFormatError as e:
    torch = _import_torch(path, e)
  raw = torch.load(path, map_location="cpu", weights_only=True)

  def to_numpy(v):
    if isinstance(v, torch.Tensor):
      v = v.detach().cpu()
      return (v.float() if v.dtype == torch.bfloat16 else v).numpy()
    return np.asarray(v) if isinstance(v, int | float | np.ndarray) else None  # drop strings, None, ...

  return raw, to_numpy


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """A flat {key: np.ndarray} state dict from a torch.save (.pth .pt .ckpt .model), .npz or .safetensors file.

  torch.save files are read without PyTorch by `torch_pickle.load` (the zip and the legacy format; pickled
  code is refused). Only files it reports as unsupported (TorchScript archives, quantized tensors, ...) go
  to `torch.load(weights_only=True)`, which needs PyTorch installed.

  Nested dicts (LivePortrait's stitching file: {'retarget_shoulder': {...}, ...}) are flattened to
  "outer.inner" keys; a leading `module.` is stripped from every key (and every nesting level).
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"state dict file {path} does not exist")
  suffix = path.suffix.lower()
  to_numpy: Callable[[Any], np.ndarray | None] = np.asarray
  if suffix in TORCH_SUFFIXES:
    raw, to_numpy = _torch_loader(path)
  elif suffix == ".npz":
    with np.load(path, allow_pickle=False) as z:
      raw = {k: z[k] for k in z.files}
  elif suffix == ".safetensors":
    raw = load_safetensors(str(path))
  else:
    raise ValueError(f"{path}: unsupported weights format {suffix!r}; use one of "
                     f"{', '.join(WEIGHT_SUFFIXES)}")
  if not isinstance(raw, Mapping):
    raise ValueError(f"{path}: expected a state dict (a dict of tensors), got {type(raw).__name__}")
  return _flatten(raw, to_numpy)
