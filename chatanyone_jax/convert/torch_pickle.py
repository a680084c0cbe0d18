"""Read PyTorch weight files (`torch.save` output) without PyTorch: `load(path)` -> NumPy arrays.

Both serialisation formats of `torch.save` are read with the standard library (and NumPy):

  * the zip format (the default since torch 1.6): `<archive>/data.pkl` is a pickle whose persistent ids
    ('storage', storage_type, key, location, numel) point at the raw little-endian bytes in
    `<archive>/data/<key>` (the archive folder name varies; a `<archive>/byteorder` record saying "big" is
    honoured);
  * the legacy format (`_use_new_zipfile_serialization=False`, and every file written by torch < 1.6, e.g.
    most torchvision / pytorch-fid / i3d / SyncNet weights): pickles of the magic number, the protocol
    version and the writer's sys_info, then the object pickle with persistent ids ('storage', storage_type,
    key, location, numel, view_metadata), then a pickle of the storage keys, then for each key an 8-byte
    element count followed by the raw bytes.

Tensors (and `nn.Parameter`s, which load as their data) become `np.ndarray`s: the dtype comes from the storage
type (Float/Double/Half/Long/Int/Short/Char/Byte/Bool/ComplexFloat/ComplexDouble storages; BFloat16 is upcast
to float32, exactly; newer dtypes such as uint16/uint32/uint64 that torch writes as an UntypedStorage plus a
dtype are read too), and the storage offset, size and stride select the elements, so non-contiguous views
(transposes, slices, expanded tensors) and several tensors viewing one storage come out right; every array is
a fresh, writable copy. Containers keep their types (dict, OrderedDict, list, tuple); Python scalars, strings
and None pass through; NumPy scalars and arrays pickled inside a checkpoint become arrays.

Safety: the pickles are read with a restricted Unpickler whose `find_class` hands out only our own stand-ins
for the few names a weights file needs (torch._utils._rebuild_tensor*, _rebuild_parameter*, torch.*Storage,
torch.Size, torch dtypes, collections.OrderedDict, numpy scalars / arrays, ...) and never imports a module,
so a malicious file cannot run code: any other global raises `ForbiddenGlobalError` (that includes files of
whole pickled models, `torch.save(model)`: save `model.state_dict()` instead). Storage offsets, sizes and
strides are bounds-checked before any array is built.

Not supported, raising `UnsupportedFormatError` (`chatanyone_jax.convert.liveportrait.load_state_dict` then
falls back to `torch.load` when PyTorch is installed): TorchScript archives (`torch.jit.save`, recognised by
their constants.pkl / code/ entries: load the module with torch and save its `state_dict()` instead), the
pre-0.1.10 tar format, quantized / sparse / nested / tensor-subclass tensors and dtypes NumPy lacks (float8,
...), and files that are neither of the two formats. Truncated or corrupt files raise `TorchPickleError`.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
import zipfile
from typing import IO, Any

import numpy as np

__all__ = ["ForbiddenGlobalError", "TorchPickleError", "UnsupportedFormatError", "load"]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001


class TorchPickleError(ValueError):
  """A PyTorch weights file could not be read (truncated, corrupt, or see the subclasses)."""


class UnsupportedFormatError(TorchPickleError):
  """A valid file that this reader does not handle (TorchScript, quantized tensors, ...); torch.load may."""


class ForbiddenGlobalError(TorchPickleError, pickle.UnpicklingError):
  """The pickle names a global outside the allow-list (it was refused, nothing was imported or run)."""


# ---- dtypes ----------------------------------------------------------------------------------------------

# torch dtype name -> NumPy dtype of the stored bytes (bfloat16: the raw 16 bits, widened after reading).
_NP_DTYPES = {
    "float32": "f4", "float64": "f8", "float16": "f2", "bfloat16": "u2", "int64": "i8", "int32": "i4",
    "int16": "i2", "int8": "i1", "uint8": "u1", "bool": "u1", "complex64": "c8", "complex128": "c16",
    "uint16": "u2", "uint32": "u4", "uint64": "u8",
}
# Aliases torch uses as attribute names (torch.float, torch.long, ...).
_DTYPE_ALIASES = {
    "float": "float32", "double": "float64", "half": "float16", "long": "int64", "int": "int32",
    "short": "int16", "cfloat": "complex64", "cdouble": "complex128",
}
# dtypes torch has but NumPy does not (a tensor of one raises UnsupportedFormatError when it is built).
_OTHER_DTYPES = {
    "complex32", "chalf", "bcomplex32", "float8_e5m2", "float8_e4m3fn", "float8_e5m2fnuz", "float8_e4m3fnuz",
    "float8_e8m0fnu", "float4_e2m1fn_x2", "bits8", "bits16", "bits1x8", "bits2x4", "bits4x2", "qint8",
    "qint32", "quint8", "quint4x2", "quint2x4", "int1", "int2", "int3", "int4", "int5", "int6", "int7",
    "uint1", "uint2", "uint3", "uint4", "uint5", "uint6", "uint7",
}
_STORAGE_TYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "UntypedStorage": "uint8",
}


def _itemsize(dtype: str) -> int:
  return np.dtype(_NP_DTYPES[dtype]).itemsize


# ---- stand-ins for the allowed globals ---------------------------------------------------------------------
# Everything `find_class` returns, and everything those callables return, is one of the classes below (or a
# plain tuple / str / OrderedDict), so BUILD / SETITEM opcodes cannot reach foreign code. Their __setstate__
# refuses, except where a BUILD is part of the format (NumPy dtypes and arrays).

class _Frozen:
  __slots__ = ()

  def __setstate__(self, state):
    raise ForbiddenGlobalError(f"unexpected BUILD of a {type(self).__name__} (not a torch.save file?)")


class _Marker(_Frozen):
  """A non-callable stand-in for a class / dtype the pickle names (torch.FloatStorage, torch.float32, ...)."""
  __slots__ = ("kind", "name")

  def __init__(self, kind: str, name: str):
    self.kind, self.name = kind, name

  def __repr__(self):
    return f"<{self.kind} {self.name}>"


class _Root(_Frozen):
  """The bytes of one serialised storage (filled in later for the legacy format)."""
  __slots__ = ("data", "dtype", "key", "nbytes")

  def __init__(self, key: str, dtype: str, nbytes: int):
    self.key, self.dtype, self.nbytes, self.data = key, dtype, nbytes, None


class _Storage(_Frozen):
  """A typed view of a _Root: `numel` elements of `dtype` from `byte_offset` on."""
  __slots__ = ("byte_offset", "dtype", "numel", "root")

  def __init__(self, root: _Root, dtype: str, byte_offset: int, numel: int):
    self.root, self.dtype, self.byte_offset, self.numel = root, dtype, byte_offset, numel


class _TensorRef(_Frozen):
  __slots__ = ("dtype", "metadata", "offset", "size", "storage", "stride")

  def __init__(self, storage, offset, size, stride, dtype=None, metadata=None):
    if not isinstance(storage, _Storage):
      raise TorchPickleError(f"a tensor's storage is a {type(storage).__name__}, not a storage")
    if isinstance(dtype, _Marker) and dtype.kind == "dtype":
      dtype = dtype.name
    elif dtype is not None:
      raise TorchPickleError(f"a tensor's dtype is {dtype!r}")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride) or not isinstance(offset, int) or offset < 0 \
        or min(size + stride, default=0) < 0:
      raise TorchPickleError(f"bad tensor geometry: offset {offset!r}, size {size}, stride {stride}")
    self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
    self.dtype = storage.dtype if dtype is None else dtype
    self.metadata = metadata if isinstance(metadata, dict) else None


class _Value(_Frozen):
  """An array made while unpickling (NumPy scalars / arrays), swapped in by `_resolve`."""
  __slots__ = ("array",)

  def __init__(self, array: np.ndarray):
    self.array = array


class _NumpyDType(_Frozen):
  __slots__ = ("dtype",)

  def __init__(self, spec, align=False, copy=False):
    del align, copy
    try:
      dtype = np.dtype(spec) if isinstance(spec, str) else None
    except TypeError:
      dtype = None
    if dtype is None or dtype.kind not in "biufc":
      raise UnsupportedFormatError(f"NumPy dtype {spec!r} in the pickle (only numeric dtypes are read)")
    self.dtype = dtype

  def __setstate__(self, state):  # (version, byteorder, subarray, names, fields, elsize, alignment, flags)
    if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">") and self.dtype.itemsize > 1:
      self.dtype = self.dtype.newbyteorder(state[1])


class _NumpyArray(_Value):
  __slots__ = ()

  def __setstate__(self, state):  # (version, shape, dtype, is_fortran, raw bytes)
    if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], _NumpyDType)
            and isinstance(state[4], bytes | bytearray)):
      raise UnsupportedFormatError("a pickled NumPy array that is not a plain numeric array")
    _, shape, dtype, fortran, raw = state
    shape = _int_tuple(shape, "NumPy array shape")
    count = int(np.prod(shape, dtype=np.int64))
    if count * dtype.dtype.itemsize != len(raw):
      raise TorchPickleError(f"a pickled NumPy array of shape {shape} has {len(raw)} bytes")
    flat = np.frombuffer(raw, dtype.dtype, count=count)
    self.array = flat.reshape(shape, order="F" if fortran else "C").astype(dtype.dtype.newbyteorder("="))


def _int_tuple(x, what: str) -> tuple[int, ...]:
  if not isinstance(x, tuple | list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in x):
    raise TorchPickleError(f"a tensor's {what} is {x!r}, not a tuple of ints")
  return tuple(x)


def _rebuild_tensor(storage, storage_offset, size, stride):
  return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
  del requires_grad, backward_hooks
  return _TensorRef(storage, storage_offset, size, stride, metadata=metadata)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None):
  del requires_grad, backward_hooks
  return _TensorRef(storage, storage_offset, size, stride, dtype, metadata)


def _tensor(data):
  if not isinstance(data, _TensorRef):
    raise TorchPickleError(f"a Parameter's data is a {type(data).__name__}, not a tensor")
  return data


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  return _tensor(data)


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
  del requires_grad, backward_hooks, state
  return _tensor(data)


_TENSOR_TYPES = {("torch", "Tensor"), ("torch._tensor", "Tensor"), ("torch.tensor", "Tensor"),
                 ("torch.nn.parameter", "Parameter"), ("torch.nn", "Parameter")}
_REBUILD_TENSOR = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter,
                   _rebuild_parameter_with_state)


def _rebuild_from_type_v2(func, new_type, args, state):
  """Tensor.__reduce_ex__ of a Tensor / Parameter carrying a __dict__: the state (attributes) is dropped."""
  del state
  if func not in _REBUILD_TENSOR or not isinstance(args, tuple):
    raise UnsupportedFormatError(f"_rebuild_from_type_v2 with {func!r}")
  if not (isinstance(new_type, _Marker) and new_type.kind == "tensor type"):
    raise UnsupportedFormatError(f"a tensor subclass {new_type!r}")
  return func(*args)


def _numpy_scalar(dtype, data=None):
  if not isinstance(dtype, _NumpyDType) or not isinstance(data, bytes | bytearray) \
      or len(data) != dtype.dtype.itemsize:
    raise UnsupportedFormatError("a pickled NumPy scalar that is not numeric")
  return _Value(np.frombuffer(data, dtype.dtype, count=1).reshape(()).astype(dtype.dtype.newbyteorder("=")))


def _numpy_reconstruct(cls, shape, typecode):
  del shape, typecode
  if not (isinstance(cls, _Marker) and cls.kind == "numpy class"):
    raise UnsupportedFormatError(f"a pickled NumPy object of type {cls!r}")
  return _NumpyArray(np.zeros((0,)))


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
  """Protocol-2 pickles store bytes as _codecs.encode(str, 'latin1')."""
  if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
    raise ForbiddenGlobalError(f"_codecs.encode of {type(obj).__name__} with {encoding!r}")
  return obj.encode(encoding, errors if errors in ("strict", "ignore", "replace") else "strict")


def _torch_device(kind, index=None):
  return str(kind) if index is None else f"{kind}:{index}"


def _torch_size(dims=()):
  return tuple(_int_tuple(dims, "torch.Size"))


_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): _torch_size,
    ("torch", "device"): _torch_device,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("numpy", "dtype"): _NumpyDType,
    ("numpy", "ndarray"): _Marker("numpy class", "ndarray"),
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
}
_GLOBALS.update({key: _Marker("tensor type", key[1]) for key in _TENSOR_TYPES})
_GLOBALS.update({(module, name): _Marker("storage type", dtype) for name, dtype in _STORAGE_TYPES.items()
                 for module in ("torch", "torch.cuda")})
_GLOBALS["torch.storage", "UntypedStorage"] = _Marker("storage type", "uint8")
_GLOBALS.update({("torch", name): _Marker("dtype", name) for name in (*_NP_DTYPES, *_OTHER_DTYPES)})
_GLOBALS.update({("torch", alias): _Marker("dtype", name) for alias, name in _DTYPE_ALIASES.items()})


# ---- unpickling ------------------------------------------------------------------------------------------

class _Unpickler(pickle.Unpickler):
  """pickle.Unpickler that resolves globals from `_GLOBALS` only and storages through `storage_for`."""

  def __init__(self, file: IO[bytes], what: str, storage_for=None):
    super().__init__(file, encoding="utf-8")
    self._what, self._storage_for = what, storage_for

  def find_class(self, module: str, name: str):
    found = _GLOBALS.get((module, name))
    if found is not None:
      return found
    if module == "torch" or module.startswith("torch."):
      raise UnsupportedFormatError(
          f"{self._what} uses {module}.{name}, which this reader does not support (quantized, sparse or "
          f"subclassed tensors, or a whole pickled model: save `model.state_dict()` instead)")
    raise ForbiddenGlobalError(
        f"{self._what}: refusing to load the global {module}.{name} (only tensors, storages, containers and "
        f"a few torch / collections / numpy names are allowed, so the file cannot run code). A file holding "
        f"a whole pickled model or other Python objects is not a plain state dict: save "
        f"`model.state_dict()` instead")

  def persistent_load(self, pid):
    if self._storage_for is None:
      raise TorchPickleError(f"{self._what}: unexpected persistent id {pid!r}")
    if not isinstance(pid, tuple) or not pid:
      raise TorchPickleError(f"{self._what}: bad persistent id {pid!r}")
    kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if kind == "module":
      raise UnsupportedFormatError(f"{self._what} pickles a whole nn.Module: save `model.state_dict()`")
    if kind != "storage":
      raise TorchPickleError(f"{self._what}: unknown persistent id type {kind!r}")
    storage_type = pid[1] if len(pid) > 1 else None
    if not (isinstance(storage_type, _Marker) and storage_type.kind == "storage type"):
      raise TorchPickleError(f"{self._what}: persistent id with storage type {storage_type!r}")
    return self._storage_for(storage_type.name, pid[2:])


def _unpickle(file: IO[bytes], what: str, storage_for=None) -> Any:
  try:
    return _Unpickler(file, what, storage_for).load()
  except TorchPickleError:
    raise
  except (EOFError, pickle.UnpicklingError) as e:
    raise TorchPickleError(f"{what} is truncated or corrupt ({type(e).__name__}: {e})") from e
  except (TypeError, ValueError, AttributeError, IndexError, KeyError, RecursionError, MemoryError) as e:
    raise TorchPickleError(f"{what} is corrupt or not a plain torch.save file ({type(e).__name__}: {e})") \
        from e


def _count(x, what: str) -> int:
  if not isinstance(x, int) or isinstance(x, bool) or x < 0:
    raise TorchPickleError(f"bad storage {what} {x!r}")
  return x


def _key(x) -> str:
  if isinstance(x, bytes):
    x = x.decode("ascii", "replace")
  if not isinstance(x, str | int):
    raise TorchPickleError(f"bad storage key {x!r}")
  return str(x)


# ---- building arrays ---------------------------------------------------------------------------------------

def _check_data(storage: _Storage, itemsize: int) -> bytes:
  root = storage.root
  if root.data is None:
    raise TorchPickleError(f"storage {root.key} has no data in the file (truncated or corrupt)")
  if storage.byte_offset + storage.numel * itemsize > len(root.data):
    raise TorchPickleError(f"storage {root.key} holds {len(root.data)} bytes, fewer than its tensors need")
  return root.data


def _np_dtype(dtype: str, big_endian: bool) -> np.dtype:
  if dtype not in _NP_DTYPES:
    raise UnsupportedFormatError(f"tensors of dtype torch.{dtype} are not supported (NumPy lacks the dtype)")
  d = np.dtype(_NP_DTYPES[dtype])
  return d.newbyteorder(">" if big_endian else "<")


def _finish(a: np.ndarray, dtype: str) -> np.ndarray:
  """Native byte order; bfloat16 bits -> float32 (exact); bool bytes -> bool."""
  if dtype == "bfloat16":
    return (a.astype(np.uint32) << 16).view(np.float32)
  if dtype == "bool":
    return a != 0
  return a.astype(a.dtype.newbyteorder("="), copy=False)


def _storage_array(s: _Storage, big_endian: bool) -> np.ndarray:
  d = _np_dtype(s.dtype, big_endian)
  data = _check_data(s, d.itemsize)
  return _finish(np.frombuffer(data, d, count=s.numel, offset=s.byte_offset).copy(), s.dtype)


def _tensor_array(t: _TensorRef, big_endian: bool) -> np.ndarray:
  d = _np_dtype(t.dtype, big_endian)
  s = t.storage
  nbytes = s.numel * _itemsize(s.dtype)
  if nbytes % d.itemsize:
    raise TorchPickleError(f"storage {s.root.key} of {nbytes} bytes does not hold whole torch.{t.dtype}s")
  numel = nbytes // d.itemsize
  data = _check_data(s, _itemsize(s.dtype))
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
  if isinstance(obj, _TensorRef):
    out = _tensor_array(obj, big_endian)
  elif isinstance(obj, _Storage):
    out = _storage_array(obj, big_endian)
  elif isinstance(obj, _Value):
    out = obj.array
  elif isinstance(obj, _Frozen):
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
    roots: dict[str, _Root] = {}

    def storage_for(dtype: str, rest: tuple) -> _Storage:
      if len(rest) != 3:
        raise TorchPickleError(f"{what}: persistent id {rest!r} is not (key, location, numel)")
      key, numel = _key(rest[0]), _count(rest[2], "numel")
      if key not in roots:
        record = f"{prefix}data/{key}"
        try:
          data = zf.read(record)
        except KeyError as e:
          raise TorchPickleError(f"{what} lacks the record {record} (truncated or corrupt)") from e
        roots[key] = _Root(key, dtype, len(data))
        roots[key].data = data
      return _Storage(roots[key], dtype, 0, numel)

    try:
      with zf.open(pickles[0]) as f:
        obj = _unpickle(f, what, storage_for)
      return _resolve_all(obj, big_endian, what)
    except (zipfile.BadZipFile, OSError, EOFError) as e:  # a bad CRC / short record inside the archive
      raise TorchPickleError(f"{what} is a truncated or corrupt zip archive ({e})") from e


def _load_legacy(f: IO[bytes], what: str) -> Any:
  magic = _unpickle(f, what)
  if magic != LEGACY_MAGIC_NUMBER:
    raise UnsupportedFormatError(f"{what} is a pickle but not a torch.save file (no PyTorch magic number)")
  version = _unpickle(f, what)
  if version != LEGACY_PROTOCOL_VERSION:
    raise UnsupportedFormatError(f"{what} has legacy protocol version {version!r}, not "
                                 f"{LEGACY_PROTOCOL_VERSION}")
  sys_info = _unpickle(f, what)
  big_endian = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
  roots: dict[str, _Root] = {}
  views: dict[str, _Storage] = {}

  def storage_for(dtype: str, rest: tuple) -> _Storage:
    if len(rest) != 4:
      raise TorchPickleError(f"{what}: persistent id {rest!r} is not (key, location, numel, view_metadata)")
    key, numel, view = _key(rest[0]), _count(rest[2], "numel"), rest[3]
    if key not in roots:
      roots[key] = _Root(key, dtype, numel * _itemsize(dtype))
    root = roots[key]
    if view is None:
      return _Storage(root, root.dtype, 0, root.nbytes // _itemsize(root.dtype))
    if not (isinstance(view, tuple | list) and len(view) == 3):
      raise TorchPickleError(f"{what}: bad storage view {view!r}")
    view_key = _key(view[0])
    if view_key not in views:
      offset, size = _count(view[1], "view offset"), _count(view[2], "view size")
      views[view_key] = _Storage(root, root.dtype, offset * _itemsize(root.dtype), size)
    return views[view_key]

  obj = _unpickle(f, what, storage_for)
  keys = _unpickle(f, what)
  if not isinstance(keys, list):
    raise TorchPickleError(f"{what}: the storage key list is a {type(keys).__name__}")
  for key in map(_key, keys):
    if key not in roots:
      raise TorchPickleError(f"{what}: data for storage {key}, which no tensor uses (corrupt file)")
    root = roots[key]
    head = f.read(8)
    if len(head) < 8:
      raise TorchPickleError(f"{what} is truncated: the data of storage {key} is missing")
    count = struct.unpack(">q" if big_endian else "<q", head)[0]
    if count * _itemsize(root.dtype) != root.nbytes:
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


def _main(argv: list[str] | None = None) -> None:
  """`python -m chatanyone_jax.convert.torch_pickle FILE`: lists the arrays in a PyTorch weights file."""
  import sys

  for path in argv if argv is not None else sys.argv[1:]:
    stack: list[tuple[str, Any]] = [("", load(path))]
    while stack:
      name, obj = stack.pop()
      if isinstance(obj, dict):
        stack.extend((f"{name}.{k}" if name else str(k), v) for k, v in reversed(list(obj.items())))
      elif isinstance(obj, list | tuple):
        stack.extend((f"{name}.{i}" if name else str(i), v) for i, v in reversed(list(enumerate(obj))))
      elif isinstance(obj, np.ndarray):
        print(f"{name or '<root>'}\t{obj.dtype}\t{tuple(obj.shape)}")
      else:
        print(f"{name or '<root>'}\t{type(obj).__name__}\t{obj!r:.60}")


if __name__ == "__main__":
  _main()

