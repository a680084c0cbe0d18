"""Read PyTorch weight files (`torch.save` output) without PyTorch: `load(path)` -> NumPy arrays.

Both formats of `torch.save` are read with the standard library and NumPy: the zip format (the default
since torch 1.6: `<archive>/data.pkl` with persistent ids pointing at the raw bytes in
`<archive>/data/<key>`) and the legacy one (torch < 1.6, e.g. most torchvision / pytorch-fid / i3d /
SyncNet weights: pickles of the magic number, protocol version and sys_info, of the object and of the
storage keys, then each storage's bytes). Tensors become fresh, writable np.ndarrays: the storage type
gives the dtype (bfloat16 widened exactly to float32), offset, size and stride select the elements, so
views come out right. Containers keep their types; scalars, strings and None pass through.

The pickles are read by `torch_unpickler`, which lets no file run code (`ForbiddenGlobalError`).
TorchScript archives, the pre-0.1.10 tar format, quantized / sparse tensors and dtypes NumPy lacks raise
`UnsupportedFormatError` (`state_dict.load_state_dict` then falls back to `torch.load` when PyTorch is
installed); truncated or corrupt files raise `TorchPickleError`.
"""

from __future__ import annotations

import os
import struct
import zipfile
from typing import IO, Any

import numpy as np

from chatanyone_jax.convert.torch_unpickler import (
  NP_DTYPES,
  ForbiddenGlobalError,
  Frozen,
  Root,
  Storage,
  TensorRef,
  TorchPickleError,
  UnsupportedFormatError,
  Value,
  itemsize,
  storage_count,
  storage_key,
  unpickle,
)

__all__ = ["ForbiddenGlobalError", "TorchPickleError", "UnsupportedFormatError", "load"]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001


# ---- building arrays ---------------------------------------------------------------------------------------

def _check_data(storage: Storage, itemsize: int) -> bytes:
  root = storage.root
  if root.data is None:
    raise TorchPickleError(f"storage {root.key} has no data in the file (truncated or corrupt)")
  if storage.byte_offset + storage.numel * itemsize > len(root.data):
    raise TorchPickleError(f"storage {root.key} holds {len(root.data)} bytes, fewer than its tensors need")
  return root.data


def _np_dtype(dtype: str, big_endian: bool) -> np.dtype:
  if dtype not in NP_DTYPES:
    raise UnsupportedFormatError(f"tensors of dtype torch.{dtype} are not supported (NumPy lacks the dtype)")
  d = np.dtype(NP_DTYPES[dtype])
  return d.newbyteorder(">" if big_endian else "<")


def _finish(a: np.ndarray, dtype: str) -> np.ndarray:
  """Native byte order; bfloat16 bits -> float32 (exact); bool bytes -> bool."""
  if dtype == "bfloat16":
    return (a.astype(np.uint32) << 16).view(np.float32)
  if dtype == "bool":
    return a != 0
  return a.astype(a.dtype.newbyteorder("="), copy=False)


def _storage_array(s: Storage, big_endian: bool) -> np.ndarray:
  d = _np_dtype(s.dtype, big_endian)
  data = _check_data(s, d.itemsize)
  return _finish(np.frombuffer(data, d, count=s.numel, offset=s.byte_offset).copy(), s.dtype)


def _tensor_array(t: TensorRef, big_endian: bool) -> np.ndarray:
  d = _np_dtype(t.dtype, big_endian)
  s = t.storage
  nbytes = s.numel * itemsize(s.dtype)
  if nbytes % d.itemsize:
    raise TorchPickleError(f"storage {s.root.key} of {nbytes} bytes does not hold whole torch.{t.dtype}s")
  numel = nbytes // d.itemsize
  data = _check_data(s, itemsize(s.dtype))
  if 0 in t.size:
    a = np.zeros(t.size, d)
  else:
    last = t.offset + sum((n - 1) * st for n, st in zip(t.size, t.stride, strict=True))
    if last >= numel:
      raise TorchPickleError(f"a tensor of size {t.size}, stride {t.stride}, offset {t.offset} reaches past "
                             f"the end of its storage {s.root.key} ({numel} elements)")
    flat = np.frombuffer(data, d, count=numel, offset=s.byte_offset)
    a = np.lib.stride_tricks.as_strided(flat[t.offset:], t.size, tuple(st * d.itemsize for st in t.stride),
                                        writeable=False).copy()
  a = _finish(a, t.dtype)
  if t.metadata and t.metadata.get("conj"):
    a = np.conj(a)
  if t.metadata and t.metadata.get("neg"):
    a = -a
  return a


def _resolve(obj: Any, big_endian: bool, done: dict[int, Any]) -> Any:
  """Swaps tensors / storages / NumPy values for arrays, in place for dicts and lists (tuples are rebuilt)."""
  if id(obj) in done:
    return done[id(obj)]
  if isinstance(obj, TensorRef):
    out = _tensor_array(obj, big_endian)
  elif isinstance(obj, Storage):
    out = _storage_array(obj, big_endian)
  elif isinstance(obj, Value):
    out = obj.array
  elif isinstance(obj, Frozen):
    raise TorchPickleError(f"the file holds a bare {obj!r}, not a tensor")
  elif isinstance(obj, dict):
    done[id(obj)] = out = obj
    for k, v in obj.items():
      obj[k] = _resolve(v, big_endian, done)
  elif isinstance(obj, list):
    done[id(obj)] = out = obj
    obj[:] = [_resolve(v, big_endian, done) for v in obj]
  elif isinstance(obj, tuple):
    out = tuple(_resolve(v, big_endian, done) for v in obj)
  else:
    return obj
  done[id(obj)] = out
  return out


def _resolve_all(obj: Any, big_endian: bool, what: str) -> Any:
  done: dict[int, Any] = {}
  try:
    return _resolve(obj, big_endian, done)
  except RecursionError as e:
    raise TorchPickleError(f"{what} nests containers too deeply") from e


# ---- the two formats -------------------------------------------------------------------------------------

_TORCHSCRIPT_MESSAGE = (
    "{what} is a TorchScript archive (torch.jit.save), which this reader does not support: load it with "
    "torch.jit.load on a machine with PyTorch and save `module.state_dict()` with torch.save instead")


def _load_zip(file: IO[bytes], what: str) -> Any:
  try:
    zf = zipfile.ZipFile(file)
  except (zipfile.BadZipFile, OSError, EOFError) as e:
    raise TorchPickleError(f"{what} is a truncated or corrupt zip archive ({e})") from e
  with zf:
    names = zf.namelist()
    for name in names:
      parts = name.split("/")
      if parts[-1] in ("constants.pkl", "model.json") or "code" in parts[:-1]:
        raise UnsupportedFormatError(_TORCHSCRIPT_MESSAGE.format(what=what))
    pickles = sorted((n for n in names if n == "data.pkl" or n.endswith("/data.pkl")),
                     key=lambda n: n.count("/"))
    if not pickles:
      raise UnsupportedFormatError(f"{what} is a zip archive without a data.pkl: not a torch.save file")
    prefix = pickles[0][:-len("data.pkl")]
    big_endian = False
    if prefix + "byteorder" in names:
      big_endian = zf.read(prefix + "byteorder").strip() == b"big"
    roots: dict[str, Root] = {}

    def storage_for(dtype: str, rest: tuple) -> Storage:
      if len(rest) != 3:
        raise TorchPickleError(f"{what}: persistent id {rest!r} is not (key, location, numel)")
      key, numel = storage_key(rest[0]), storage_count(rest[2], "numel")
      if key not in roots:
        record = f"{prefix}data/{key}"
        try:
          data = zf.read(record)
        except KeyError as e:
          raise TorchPickleError(f"{what} lacks the record {record} (truncated or corrupt)") from e
        roots[key] = Root(key, dtype, len(data))
        roots[key].data = data
      return Storage(roots[key], dtype, 0, numel)

    try:
      with zf.open(pickles[0]) as f:
        obj = unpickle(f, what, storage_for)
      return _resolve_all(obj, big_endian, what)
    except (zipfile.BadZipFile, OSError, EOFError) as e:  # a bad CRC / short record inside the archive
      raise TorchPickleError(f"{what} is a truncated or corrupt zip archive ({e})") from e


def _load_legacy(f: IO[bytes], what: str) -> Any:
  magic = unpickle(f, what)
  if magic != LEGACY_MAGIC_NUMBER:
    raise UnsupportedFormatError(f"{what} is a pickle but not a torch.save file (no PyTorch magic number)")
  version = unpickle(f, what)
  if version != LEGACY_PROTOCOL_VERSION:
    raise UnsupportedFormatError(f"{what} has legacy protocol version {version!r}, not "
                                 f"{LEGACY_PROTOCOL_VERSION}")
  sys_info = unpickle(f, what)
  big_endian = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
  roots: dict[str, Root] = {}
  views: dict[str, Storage] = {}

  def storage_for(dtype: str, rest: tuple) -> Storage:
    if len(rest) != 4:
      raise TorchPickleError(f"{what}: persistent id {rest!r} is not (key, location, numel, view_metadata)")
    key, numel, view = storage_key(rest[0]), storage_count(rest[2], "numel"), rest[3]
    if key not in roots:
      roots[key] = Root(key, dtype, numel * itemsize(dtype))
    root = roots[key]
    if view is None:
      return Storage(root, root.dtype, 0, root.nbytes // itemsize(root.dtype))
    if not (isinstance(view, tuple | list) and len(view) == 3):
      raise TorchPickleError(f"{what}: bad storage view {view!r}")
    view_key = storage_key(view[0])
    if view_key not in views:
      offset, size = storage_count(view[1], "view offset"), storage_count(view[2], "view size")
      views[view_key] = Storage(root, root.dtype, offset * itemsize(root.dtype), size)
    return views[view_key]

  obj = unpickle(f, what, storage_for)
  keys = unpickle(f, what)
  if not isinstance(keys, list):
    raise TorchPickleError(f"{what}: the storage key list is a {type(keys).__name__}")
  for key in map(storage_key, keys):
    if key not in roots:
      raise TorchPickleError(f"{what}: data for storage {key}, which no tensor uses (corrupt file)")
    root = roots[key]
    head = f.read(8)
    if len(head) < 8:
      raise TorchPickleError(f"{what} is truncated: the data of storage {key} is missing")
    count = struct.unpack(">q" if big_endian else "<q", head)[0]
    if count * itemsize(root.dtype) != root.nbytes:
      raise TorchPickleError(f"{what}: storage {key} has {count} elements in the file, {root.nbytes} bytes "
                             f"in the pickle (corrupt file)")
    root.data = f.read(root.nbytes)
    if len(root.data) != root.nbytes:
      raise TorchPickleError(f"{what} is truncated: storage {key} has {len(root.data)} of {root.nbytes} "
                             f"bytes")
  return _resolve_all(obj, big_endian, what)


def load(path: str | os.PathLike | IO[bytes]) -> Any:
  """The object `torch.save` wrote to `path` (a file name or a seekable binary file), tensors as np.ndarray.

  A state dict comes back as a dict / OrderedDict {name: np.ndarray} (nested containers are kept). Raises
  UnsupportedFormatError for TorchScript archives and the other cases listed in the module docstring,
  ForbiddenGlobalError for pickles naming anything beyond the allow-list, TorchPickleError for truncated or
  corrupt files, FileNotFoundError when `path` does not exist.
  """
  if hasattr(path, "read"):
    return _load(path, f"the file {getattr(path, 'name', '<stream>')}")
  with open(path, "rb") as f:
    return _load(f, str(path))


def _load(f: IO[bytes], what: str) -> Any:
  start = f.tell()
  head = f.read(512)
  f.seek(start)
  if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
    return _load_zip(f, what)
  if len(head) > 262 and head[257:262] == b"ustar":
    raise UnsupportedFormatError(f"{what} is a tar archive (the torch < 0.1.10 format)")
  if head[:1] == b"\x80":  # pickle PROTO opcode: torch.save pickles with protocol 2
    return _load_legacy(f, what)
  desc = "an empty file" if not head else "neither a zip archive nor a pickle"
  raise UnsupportedFormatError(f"{what} is {desc}: not a file written by torch.save")
