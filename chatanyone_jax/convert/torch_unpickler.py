"""The restricted unpickler of `torch_pickle`: torch.save's pickles -> stand-in objects, never foreign code.

`find_class` hands out only our own stand-ins for the few globals a weights file needs
(torch._utils._rebuild_tensor*, _rebuild_parameter*, torch.*Storage, torch.Size, torch dtypes,
collections.OrderedDict, numpy scalars / arrays, ...) and never imports a module. Any other global raises
`ForbiddenGlobalError` (that includes a whole pickled model, `torch.save(model)`); torch names it does not
handle (quantized, sparse, subclassed tensors) raise `UnsupportedFormatError`. Everything those callables
return is a stand-in class of this module, so BUILD / SETITEM opcodes cannot reach foreign code either.
A tensor comes out as a `TensorRef` (geometry validated here) of a `Storage`, a typed view of a `Root`
(one serialised storage), which `torch_pickle` turns into an array once the bytes are read.
"""

from __future__ import annotations

import collections
import pickle
from typing import IO, Any

import numpy as np


class TorchPickleError(ValueError):
  """A PyTorch weights file could not be read (truncated, corrupt, or see the subclasses)."""


class UnsupportedFormatError(TorchPickleError):
  """A valid file that this reader does not handle (TorchScript, quantized tensors, ...); torch.load may."""


class ForbiddenGlobalError(TorchPickleError, pickle.UnpicklingError):
  """The pickle names a global outside the allow-list (it was refused, nothing was imported or run)."""


# ---- dtypes ----------------------------------------------------------------------------------------------

# torch dtype name -> NumPy dtype of the stored bytes (bfloat16: the raw 16 bits, widened after reading).
NP_DTYPES = {
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


def itemsize(dtype: str) -> int:
  return np.dtype(NP_DTYPES[dtype]).itemsize


# ---- stand-ins for the allowed globals ---------------------------------------------------------------------
# Everything `find_class` returns, and everything those callables return, is one of the classes below (or a
# plain tuple / str / OrderedDict), so BUILD / SETITEM opcodes cannot reach foreign code. Their __setstate__
# refuses, except where a BUILD is part of the format (NumPy dtypes and arrays).

class Frozen:
  __slots__ = ()

  def __setstate__(self, state):
    raise ForbiddenGlobalError(f"unexpected BUILD of a {type(self).__name__} (not a torch.save file?)")


class _Marker(Frozen):
  """A non-callable stand-in for a class / dtype the pickle names (torch.FloatStorage, torch.float32, ...)."""
  __slots__ = ("kind", "name")

  def __init__(self, kind: str, name: str):
    self.kind, self.name = kind, name

  def __repr__(self):
    return f"<{self.kind} {self.name}>"


class Root(Frozen):
  """The bytes of one serialised storage (filled in later for the legacy format)."""
  __slots__ = ("data", "dtype", "key", "nbytes")

  def __init__(self, key: str, dtype: str, nbytes: int):
    self.key, self.dtype, self.nbytes, self.data = key, dtype, nbytes, None


class Storage(Frozen):
  """A typed view of a Root: `numel` elements of `dtype` from `byte_offset` on."""
  __slots__ = ("byte_offset", "dtype", "numel", "root")

  def __init__(self, root: Root, dtype: str, byte_offset: int, numel: int):
    self.root, self.dtype, self.byte_offset, self.numel = root, dtype, byte_offset, numel


class TensorRef(Frozen):
  __slots__ = ("dtype", "metadata", "offset", "size", "storage", "stride")

  def __init__(self, storage, offset, size, stride, dtype=None, metadata=None):
    if not isinstance(storage, Storage):
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


class Value(Frozen):
  """An array made while unpickling (NumPy scalars / arrays), swapped in by `_resolve`."""
  __slots__ = ("array",)

  def __init__(self, array: np.ndarray):
    self.array = array


class _NumpyDType(Frozen):
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


class _NumpyArray(Value):
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
  return TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
  del requires_grad, backward_hooks
  return TensorRef(storage, storage_offset, size, stride, metadata=metadata)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None):
  del requires_grad, backward_hooks
  return TensorRef(storage, storage_offset, size, stride, dtype, metadata)


def _tensor(data):
  if not isinstance(data, TensorRef):
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
  return Value(np.frombuffer(data, dtype.dtype, count=1).reshape(()).astype(dtype.dtype.newbyteorder("=")))


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
_GLOBALS.update({("torch", name): _Marker("dtype", name) for name in (*NP_DTYPES, *_OTHER_DTYPES)})
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


def unpickle(file: IO[bytes], what: str, storage_for=None) -> Any:
  """One pickle from `file`; storage_for(dtype, rest of the persistent id) -> Storage resolves storages.

  Errors of a truncated or corrupt pickle become TorchPickleError naming `what` (the file).
  """
  try:
    return _Unpickler(file, what, storage_for).load()
  except TorchPickleError:
    raise
  except (EOFError, pickle.UnpicklingError) as e:
    raise TorchPickleError(f"{what} is truncated or corrupt ({type(e).__name__}: {e})") from e
  except (TypeError, ValueError, AttributeError, IndexError, KeyError, RecursionError, MemoryError) as e:
    raise TorchPickleError(f"{what} is corrupt or not a plain torch.save file ({type(e).__name__}: {e})") \
        from e


def storage_count(x, what: str) -> int:
  """A storage size / offset read from a persistent id: a non-negative int, else TorchPickleError."""
  if not isinstance(x, int) or isinstance(x, bool) or x < 0:
    raise TorchPickleError(f"bad storage {what} {x!r}")
  return x


def storage_key(x) -> str:
  """A storage key read from a persistent id (str, bytes or int) as str."""
  if isinstance(x, bytes):
    x = x.decode("ascii", "replace")
  if not isinstance(x, str | int):
    raise TorchPickleError(f"bad storage key {x!r}")
  return str(x)
