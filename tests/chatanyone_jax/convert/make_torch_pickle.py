"""Small PyTorch weight files and the values they hold, for tests/chatanyone_jax/convert/torch_pickle_test.py.

Run once, by hand, from the repo root with a PyTorch environment (the tests themselves never import torch):

  python -m tests.chatanyone_jax.convert.make_torch_pickle

Writes into torch_files/ (each content saved in the zip format, `<name>_zip.*`, and in the legacy format,
`<name>_legacy.*`, via `_use_new_zipfile_serialization=False`):
  tensors: a dict of float32 / float16 / bfloat16 / float64 / int64 / int32 / int16 / int8 / uint8 / bool /
           complex64 tensors, a 0-d tensor, an empty one,
           non-contiguous views of one shared storage (transpose, slices with an offset, a step, a row), an
           expanded (stride 0) tensor, nested dicts / lists / tuples, an OrderedDict, nn.Parameters (one
           with an attribute, as a tensor with one), Python scalars / str / None, a NumPy scalar / array;
  module:  the state_dict of a tiny Conv2d + BatchNorm2d after one training step (num_batches_tracked);
  param:   an nn.Parameter saved on its own;
  new_dtypes (zip only: torch cannot read these back from the legacy format): uint16 / uint32 / uint64
           tensors, which torch writes as UntypedStorage + dtype (_rebuild_tensor_v3);
and, by hand, legacy_views.pt: a legacy file as torch < 1.0 wrote it (storage views in the persistent ids,
torch.cuda storage types, torch._utils._rebuild_tensor), checked against torch.load; torchscript.pt: a tiny
torch.jit.save archive (which the reader must refuse). The expected values go to <name>.npz beside them, keyed
by the '/'-joined path into the saved object (bfloat16 as float32).
"""

from __future__ import annotations

import collections
import pathlib
import pickle
import sys

import numpy as np
import torch
from torch import nn

OUT = pathlib.Path(__file__).with_name("torch_files")


def tensors() -> dict:
  g = torch.Generator().manual_seed(0)
  base = torch.arange(24, dtype=torch.float32).reshape(4, 6) * 0.5 - 3.0
  with_attr = torch.tensor([4.0, 5.0])  # pickled via torch._tensor._rebuild_from_type_v2
  with_attr.note = "x"
  param_with_attr = nn.Parameter(torch.tensor([6.0]))  # via torch._utils._rebuild_parameter_with_state
  param_with_attr.note = "y"
  return {
      "f32": torch.randn(2, 3, generator=g),
      "f16": torch.randn(5, generator=g).half(),
      "bf16": torch.randn(2, 2, generator=g).bfloat16(),
      "f64": torch.randn(3, generator=g, dtype=torch.float64),
      "i64": torch.tensor([-(2**40), 0, 7]),
      "i32": torch.tensor([[1, -2], [3, 2**31 - 1]], dtype=torch.int32),
      "i16": torch.tensor([-300, 300], dtype=torch.int16),
      "i8": torch.tensor([-128, 127], dtype=torch.int8),
      "u8": torch.tensor([0, 255, 3], dtype=torch.uint8),
      "bool": torch.tensor([True, False, True]),
      "c64": torch.tensor([1 + 2j, -3j], dtype=torch.complex64),
      "scalar": torch.tensor(3.25),
      "empty": torch.zeros(0, 3),
      "base": base,
      "transposed": base.t(),
      "sliced": base[1:3, 2:5],
      "stepped": base[:, ::2],
      "row": base[2],
      "expanded": torch.arange(3).expand(2, 3),
      "nested": {"inner": {"w": torch.tensor([0.5, -1.0], dtype=torch.float16)},
                 "list": [base[0], 1, "two", None], "tuple": (torch.tensor([1.5]), 2.5)},
      "ordered": collections.OrderedDict([("b", torch.tensor([1, 2])), ("a", torch.tensor([[True]]))]),
      "param": nn.Parameter(torch.randn(2, generator=g)),
      "with_attr": with_attr, "param_with_attr": param_with_attr,
      "int": 7, "float": 0.5, "str": "hello", "none": None,
      "np_scalar": np.float64(1.25), "np_array": np.arange(6, dtype=np.int32).reshape(2, 3),
  }


def module_state_dict() -> dict:
  torch.manual_seed(1)
  m = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3)).train()
  m(torch.randn(2, 2, 5, 5))  # running stats and num_batches_tracked move off their defaults
  return m.state_dict()


def expected(obj, prefix: str = "", out: dict | None = None) -> dict[str, np.ndarray]:
  out = {} if out is None else out
  if isinstance(obj, dict):
    for k, v in obj.items():
      expected(v, f"{prefix}{k}/", out)
  elif isinstance(obj, list | tuple):
    for i, v in enumerate(obj):
      expected(v, f"{prefix}{i}/", out)
  elif isinstance(obj, torch.Tensor):
    t = obj.detach()
    out[prefix[:-1] or "root"] = (t.float() if t.dtype == torch.bfloat16 else t).numpy().copy()
  elif isinstance(obj, np.ndarray | np.generic):
    out[prefix[:-1] or "root"] = np.asarray(obj)
  return out


def new_dtypes() -> dict:
  """dtypes without a legacy <Type>Storage: torch writes them as UntypedStorage + dtype (zip format only)."""
  return {"u16": torch.tensor([0, 65535, 12], dtype=torch.uint16),
          "u32": torch.tensor([[2**32 - 1, 5]], dtype=torch.uint32),
          "u64": torch.tensor([2**64 - 1, 0], dtype=torch.uint64)[1:]}


def save_both(name: str, obj, suffix: str = ".pt", legacy: bool = True) -> None:
  torch.save(obj, OUT / f"{name}_zip{suffix}")
  if legacy:
    torch.save(obj, OUT / f"{name}_legacy{suffix}", _use_new_zipfile_serialization=False)
  np.savez_compressed(OUT / f"{name}.npz", **expected(obj))


class _View:
  """A storage view as torch < 1.0 pickled them: a root storage plus (view_key, offset, size)."""

  def __init__(self, root_key, numel, view=None):
    self.root_key, self.numel, self.view = root_key, numel, view


class _OldTensor:
  def __init__(self, storage, offset, size, stride):
    self.args = (storage, offset, size, stride)

  def __reduce__(self):
    return torch._utils._rebuild_tensor, self.args


def legacy_views() -> None:
  """{'a': storage[2:5] (a view), 'b': the whole storage as 2x3, 'c': the view again} by hand."""
  data = np.arange(6, dtype=np.float32) * 1.5 - 2.0
  root = _View("7", 6)
  view = _View("7", 6, ("8", 2, 3))
  obj = collections.OrderedDict(a=_OldTensor(view, 0, (3,), (1,)), b=_OldTensor(root, 0, (2, 3), (3, 1)),
                                c=_OldTensor(view, 1, (2,), (1,)))

  class Pickler(pickle.Pickler):
    def persistent_id(self, o):
      if isinstance(o, _View):
        return ("storage", torch.cuda.FloatStorage, o.root_key, "cuda:0", o.numel, o.view)
      return None

  path = OUT / "legacy_views.pt"
  with open(path, "wb") as f:
    sizes = {"short": 2, "int": 4, "long": 4}
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": sizes}
    for head in (0x1950A86A20F9469CFC6C, 1001, sys_info):
      pickle.dump(head, f, protocol=2)
    Pickler(f, protocol=2).dump(obj)
    pickle.dump(["7"], f, protocol=2)
    f.write(np.int64(6).tobytes())
    f.write(data.tobytes())
  loaded = torch.load(path, map_location="cpu", weights_only=False)
  want = {"a": data[2:5], "b": data.reshape(2, 3), "c": data[3:5]}
  for k, v in want.items():
    np.testing.assert_array_equal(loaded[k].numpy(), v, err_msg=k)
  np.savez_compressed(OUT / "legacy_views.npz", **want)


def main() -> None:
  OUT.mkdir(exist_ok=True)
  save_both("tensors", tensors())
  save_both("module", module_state_dict(), ".pth")
  save_both("param", nn.Parameter(torch.randn(3, 2, generator=torch.Generator().manual_seed(2))))
  save_both("new_dtypes", new_dtypes(), legacy=False)
  legacy_views()
  torch.jit.save(torch.jit.script(nn.Linear(2, 1)), OUT / "torchscript.pt")
  for suffix in ("_zip", "_legacy"):  # torch itself reads back what it wrote
    for name, ext in (("tensors", ".pt"), ("module", ".pth"), ("param", ".pt"), ("new_dtypes", ".pt")):
      if not (OUT / f"{name}{suffix}{ext}").exists():
        continue
      got = expected(torch.load(OUT / f"{name}{suffix}{ext}", weights_only=False))
      with np.load(OUT / f"{name}.npz") as z:
        assert sorted(got) == sorted(z.files), (name, suffix)
        for k in z.files:
          np.testing.assert_array_equal(got[k], z[k], err_msg=f"{name}{suffix}: {k}")
  total = sum(p.stat().st_size for p in OUT.iterdir())
  print(f"torch {torch.__version__}, python {sys.version.split()[0]}: {total} bytes in {OUT}")
  for p in sorted(OUT.iterdir()):
    print(f"  {p.name}: {p.stat().st_size}")


if __name__ == "__main__":
  main()
