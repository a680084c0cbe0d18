"""The torch-free reader of torch.save files: both formats, dtypes, views, safety, errors, load_state_dict.

The files under torch_files/ were written by PyTorch (make_torch_pickle.py, which also checked that torch
reads back the values stored beside them in <name>.npz); these tests never import torch.
"""

from __future__ import annotations

import collections
import io
import pathlib
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

from chatanyone_jax.convert import state_dict
from chatanyone_jax.convert import torch_pickle as tp

FILES = pathlib.Path(__file__).with_name("torch_files")
# file -> the npz of its expected values
CASES = {
    "tensors_zip.pt": "tensors", "tensors_legacy.pt": "tensors", "module_zip.pth": "module",
    "module_legacy.pth": "module", "param_zip.pt": "param", "param_legacy.pt": "param",
    "new_dtypes_zip.pt": "new_dtypes", "legacy_views.pt": "legacy_views",
}


def _arrays(obj, prefix: str = "", out: dict | None = None) -> dict[str, np.ndarray]:
  """'/'-joined paths -> arrays, as make_torch_pickle.expected names them."""
  out = {} if out is None else out
  if isinstance(obj, dict):
    for k, v in obj.items():
      _arrays(v, f"{prefix}{k}/", out)
  elif isinstance(obj, list | tuple):
    for i, v in enumerate(obj):
      _arrays(v, f"{prefix}{i}/", out)
  elif isinstance(obj, np.ndarray):
    out[prefix[:-1] or "root"] = obj
  return out


@pytest.fixture(autouse=True)
def _no_torch(monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails: the reader must not need it


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_match_what_torch_saved(name):
  got = _arrays(tp.load(FILES / name))
  with np.load(FILES / f"{CASES[name]}.npz") as z:
    want = {k: z[k] for k in z.files}
  assert sorted(got) == sorted(want)
  for k, w in want.items():
    g = got[k]
    assert (g.dtype, g.shape) == (w.dtype, w.shape), k
    assert g.flags.writeable and g.flags.c_contiguous, k
    np.testing.assert_array_equal(g, w, err_msg=f"{name}: {k}")


@pytest.mark.parametrize("name", ["tensors_zip.pt", "tensors_legacy.pt"])
def test_containers_scalars_and_shared_storage(name):
  obj = tp.load(FILES / name)
  assert type(obj) is dict
  assert type(obj["ordered"]) is collections.OrderedDict and list(obj["ordered"]) == ["b", "a"]
  assert obj["nested"]["list"][1:] == [1, "two", None]
  assert isinstance(obj["nested"]["tuple"], tuple) and obj["nested"]["tuple"][1] == 2.5
  assert (obj["int"], obj["float"], obj["str"], obj["none"]) == (7, 0.5, "hello", None)
  assert obj["scalar"].shape == () and obj["scalar"] == 3.25
  assert obj["bf16"].dtype == np.float32 and obj["f16"].dtype == np.float16 and obj["bool"].dtype == bool
  # base, transposed, sliced, stepped, row and nested.list.0 view one storage; the arrays are independent
  base = obj["base"]
  np.testing.assert_array_equal(obj["transposed"], base.T)
  np.testing.assert_array_equal(obj["sliced"], base[1:3, 2:5])
  np.testing.assert_array_equal(obj["stepped"], base[:, ::2])
  np.testing.assert_array_equal(obj["row"], base[2])
  base[2] = 99.0
  assert not np.any(obj["row"] == 99.0) and not np.any(obj["transposed"] == 99.0)


def test_file_object():
  data = (FILES / "module_legacy.pth").read_bytes()
  sd = tp.load(io.BytesIO(data))
  assert isinstance(sd, collections.OrderedDict) and sd["1.num_batches_tracked"].dtype == np.int64
  with np.load(FILES / "module.npz") as z:
    want = {k: z[k] for k in z.files}
  got = _arrays(sd)
  assert sorted(got) == sorted(want)
  for k, w in want.items():
    np.testing.assert_array_equal(got[k], w, err_msg=k)


@pytest.mark.parametrize("suffix", [".pth", ".model", ".ckpt"])
def test_load_state_dict_reads_torch_files_without_torch(tmp_path, suffix):
  with np.load(FILES / "module.npz") as z:
    want = {k.replace("/", "."): z[k] for k in z.files}
  for fmt in ("zip", "legacy"):
    path = tmp_path / f"syncnet_{fmt}{suffix}"
    path.write_bytes((FILES / f"module_{fmt}.pth").read_bytes())
    sd = state_dict.load_state_dict(path)
    assert sorted(sd) == sorted(want), fmt
    for k, w in want.items():
      np.testing.assert_array_equal(sd[k], w, err_msg=f"{fmt}: {k}")
    assert sd["1.num_batches_tracked"] == 1
  assert {".model", ".ckpt"} <= set(state_dict.WEIGHT_SUFFIXES) and set(state_dict.TORCH_SUFFIXES) <= set(
      state_dict.WEIGHT_SUFFIXES)


def test_load_state_dict_flattens_nested_checkpoints():
  sd = state_dict.load_state_dict(FILES / "tensors_legacy.pt")
  assert sd["nested.inner.w"].dtype == np.float16 and sd["ordered.b"].tolist() == [1, 2]
  assert sd["np_scalar"] == 1.25 and sd["int"] == 7
  assert "str" not in sd and "none" not in sd and not any(k.startswith("nested.list") for k in sd)


# ---- hand-made pickles ------------------------------------------------------------------------------------

def _legacy(obj_pickle: bytes, keys: list[str] = (), data: bytes = b"") -> bytes:
  head = b"".join(pickle.dumps(x, protocol=2) for x in (
      tp.LEGACY_MAGIC_NUMBER, tp.LEGACY_PROTOCOL_VERSION, {"protocol_version": 1001, "little_endian": True}))
  return head + obj_pickle + pickle.dumps(list(keys), protocol=2) + data


def _zip(obj_pickle: bytes, records: dict[str, bytes] | None = None) -> bytes:
  b = io.BytesIO()
  with zipfile.ZipFile(b, "w") as z:
    z.writestr("evil/data.pkl", obj_pickle)
    for name, data in (records or {}).items():
      z.writestr(f"evil/{name}", data)
  return b.getvalue()


def _tensor_pickle(numel: int, size: tuple, stride: tuple, offset: int = 0) -> bytes:
  """Protocol-0 `_rebuild_tensor(FloatStorage '0' of numel, offset, size, stride)`, legacy persistent id."""
  ints = lambda xs: b"(" + b"".join(b"I%d\n" % x for x in xs) + b"t"
  pid = b"(Vstorage\nctorch\nFloatStorage\nV0\nVcpu\nI%d\nNtQ" % numel
  return b"ctorch._utils\n_rebuild_tensor\n(" + pid + b"I%d\n" % offset + ints(size) + ints(stride) + b"tR."


def test_hand_made_legacy_tensor_and_bounds_checks(tmp_path):
  data = struct.pack("<q", 4) + np.arange(4, dtype=np.float32).tobytes()
  path = tmp_path / "t.pt"
  path.write_bytes(_legacy(_tensor_pickle(4, (2, 2), (1, 2)), ["0"], data))
  np.testing.assert_array_equal(tp.load(path), [[0.0, 2.0], [1.0, 3.0]])
  for size, stride, offset in (((2, 3), (3, 1), 0), ((4,), (1,), 1), ((2,), (5,), 0)):  # past the end
    path.write_bytes(_legacy(_tensor_pickle(4, size, stride, offset), ["0"], data))
    with pytest.raises(tp.TorchPickleError, match="reaches past the end of its storage"):
      tp.load(path)
  path.write_bytes(_legacy(_tensor_pickle(4, (2,), (-1,), 3), ["0"], data))
  with pytest.raises(tp.TorchPickleError, match="bad tensor geometry"):
    tp.load(path)
  path.write_bytes(_legacy(_tensor_pickle(4, (4,), (1,)), ["0"], struct.pack("<q", 5) + data[8:]))
  with pytest.raises(tp.TorchPickleError, match="has 5 elements in the file"):
    tp.load(path)


@pytest.mark.parametrize("wrap", ["bare", "legacy", "zip"])
def test_forbidden_global_is_refused_without_running(tmp_path, wrap, monkeypatch):
  marker = tmp_path / "pwned"
  evil = b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR."
  path = tmp_path / "evil.pth"
  path.write_bytes({"bare": b"\x80\x02" + evil, "legacy": _legacy(evil), "zip": _zip(evil)}[wrap])
  with pytest.raises(tp.ForbiddenGlobalError, match=r"refusing to load the global os\.system.*state_dict"):
    tp.load(path)
  assert isinstance(tp.ForbiddenGlobalError("x"), pickle.UnpicklingError)
  # load_state_dict does not hand a refused file to torch.load, even where torch is installed
  calls = []
  fake = types.SimpleNamespace(Tensor=type("T", (), {}), load=lambda *a, **k: calls.append(a))
  monkeypatch.setitem(sys.modules, "torch", fake)
  with pytest.raises(tp.ForbiddenGlobalError):
    state_dict.load_state_dict(path)
  assert calls == [] and not marker.exists()


def test_unknown_torch_global_and_whole_model_pickles_are_unsupported(tmp_path):
  path = tmp_path / "q.pt"
  path.write_bytes(_legacy(b"ctorch._utils\n_rebuild_qtensor\n)R."))
  with pytest.raises(tp.UnsupportedFormatError, match="torch._utils._rebuild_qtensor"):
    tp.load(path)
  path.write_bytes(_zip(b"c__main__\nNet\n)R."))
  with pytest.raises(tp.ForbiddenGlobalError, match="__main__.Net"):
    tp.load(path)


def test_truncated_and_corrupt_files(tmp_path):
  path = tmp_path / "t.pth"
  legacy = (FILES / "tensors_legacy.pt").read_bytes()
  zipped = (FILES / "tensors_zip.pt").read_bytes()
  for data in (legacy[:-10], legacy[:len(legacy) // 3], legacy[:40], zipped[:-30], zipped[:len(zipped) // 2]):
    path.write_bytes(data)
    with pytest.raises(tp.TorchPickleError, match="truncated") as e:
      tp.load(path)
    assert not isinstance(e.value, tp.UnsupportedFormatError)
    with pytest.raises(tp.TorchPickleError, match="truncated"):
      state_dict.load_state_dict(path)
  with zipfile.ZipFile(io.BytesIO(zipped)) as z:
    record = next(i for i in z.infolist() if i.filename.endswith("data/0"))
  corrupt = bytearray(zipped)
  name_len, extra_len = struct.unpack("<HH", zipped[record.header_offset + 26:record.header_offset + 30])
  corrupt[record.header_offset + 30 + name_len + extra_len] ^= 0xFF  # its first data byte: a bad CRC
  path.write_bytes(bytes(corrupt))
  with pytest.raises(tp.TorchPickleError, match="corrupt zip archive"):
    tp.load(path)


def test_torchscript_and_foreign_files_are_unsupported(tmp_path, monkeypatch):
  script = FILES / "torchscript.pt"
  with pytest.raises(tp.UnsupportedFormatError, match=r"TorchScript archive.*state_dict\(\)"):
    tp.load(script)
  foreign = {"empty.pt": b"", "text.pt": b"hello", "plain.pt": pickle.dumps({"a": 1}, protocol=2),
             "nopkl.pt": b"PK\x05\x06" + b"\0" * 18}  # an empty zip archive
  for name, data in foreign.items():
    (tmp_path / name).write_bytes(data)
    with pytest.raises(tp.UnsupportedFormatError):
      tp.load(tmp_path / name)
  # load_state_dict: without torch, an ImportError that says why and how to fix; with torch, torch.load
  with pytest.raises(ImportError, match=r"TorchScript.*pip install torch.*\.npz / \.safetensors"):
    state_dict.load_state_dict(script)
  calls = []

  def load(path, map_location, weights_only):
    calls.append((pathlib.Path(path).name, map_location, weights_only))
    return {"w": np.ones(2, np.float32)}

  monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(Tensor=type("T", (), {}), load=load))
  assert state_dict.load_state_dict(script)["w"].tolist() == [1.0, 1.0]
  assert calls == [("torchscript.pt", "cpu", True)]
