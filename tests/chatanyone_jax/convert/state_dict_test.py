"""Flat state dicts: the one key / shape check of every converter, and reading .npz / .safetensors / .pth."""

import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from chatanyone_jax.convert.state_dict import check_state_dict, load_state_dict
from tests.chatanyone_jax.render import util

EXPECTED = {"a.weight": (2, 3), "a.bias": (2,), "b.weight": (4,)}


def test_check_names_missing_unexpected_and_misshaped_keys():
  good = {k: np.zeros(s, np.float32) for k, s in EXPECTED.items()}
  check_state_dict(good, EXPECTED, "a test net")  # no error
  check_state_dict({**good, "bn.num_batches_tracked": np.zeros(())}, EXPECTED, "a test net")  # ignored
  bad = {"a.weight": np.zeros((3, 2)), "a.bias": np.zeros(2), "c.weight": np.zeros(1)}
  with pytest.raises(ValueError) as e:
    check_state_dict(bad, EXPECTED, "a test net")
  assert str(e.value) == ("not a test net: missing keys (1): b.weight; unexpected keys (1): c.weight; "
                          "wrong shapes (1): a.weight (3, 2) (expected (2, 3))")


def test_check_optional_ignore_and_long_lists():
  sd = {**{k: np.zeros(s) for k, s in EXPECTED.items()}, "fc.weight": np.zeros((5, 5))}
  check_state_dict(sd, EXPECTED, "x", optional={"fc.weight": (5, 5), "fc.bias": (5,)})  # fc.bias: absent
  with pytest.raises(ValueError, match=r"wrong shapes \(1\): fc\.weight \(5, 5\) \(expected \(6, 5\)\)$"):
    check_state_dict(sd, EXPECTED, "x", optional={"fc.weight": (6, 5)})  # checked when present
  check_state_dict(sd, EXPECTED, "x", ignore=lambda k: k.startswith("fc."))
  many = {f"k{i:02d}": np.zeros(1) for i in range(20)}
  with pytest.raises(ValueError, match=r"unexpected keys \(20\): k00, k01, .*, k11, \.\.\. \(8 more\)$"):
    check_state_dict(many, {}, "x")


@pytest.fixture(scope="module")
def reduced_f_state_dict(load_ref):
  return util.state_dict(load_ref("F_appearance_feature_extractor"))


def test_load_state_dict_npz_safetensors_and_module_prefix(tmp_path, reduced_f_state_dict):
  np.savez(tmp_path / "f.npz", **{f"module.{k}": v for k, v in reduced_f_state_dict.items()})
  save_file({k: np.ascontiguousarray(v) for k, v in reduced_f_state_dict.items()}, tmp_path / "f.safetensors")
  for name in ("f.npz", "f.safetensors"):
    sd = load_state_dict(tmp_path / name)
    assert set(sd) == set(reduced_f_state_dict), name
    for k, v in reduced_f_state_dict.items():
      np.testing.assert_array_equal(sd[k], v, err_msg=f"{name}: {k}")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    load_state_dict(tmp_path / "nope.npz")
  (tmp_path / "f.bin").write_bytes(b"")
  with pytest.raises(ValueError, match="unsupported weights format '.bin'"):
    load_state_dict(tmp_path / "f.bin")


def test_load_state_dict_without_torch_says_how_to_fix(tmp_path, monkeypatch):
  (tmp_path / "m.pth").write_bytes(b"")
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError, installed or not
  with pytest.raises(ImportError, match=r"pip install torch.*\.npz / \.safetensors"):
    load_state_dict(tmp_path / "m.pth")
