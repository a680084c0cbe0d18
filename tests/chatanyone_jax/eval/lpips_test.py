"""LPIPS v0.1 (chatanyone_jax.eval.lpips) against richzhang/PerceptualSimilarity's torch module.

reference/lpips.npz is written by reference/make_lpips.py (torch + torchvision, run by hand): the upstream
LPIPS forward on torchvision alexnet / vgg16 features, with seeded backbone and lin weights (lin made
non-negative, as the trained ones are) on two 64x64 pairs. The weights and inputs are rebuilt here from
the same seeds.
"""

from __future__ import annotations

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax.eval import lpips
from tests.chatanyone_jax.eval.reference.seeded import seeded_input, seeded_state_dict

REF = np.load(pathlib.Path(__file__).parent / "reference" / "lpips.npz")
INPUT_SEEDS = {"alex": 103, "vgg": 203}  # as make_lpips.SEEDS
SIZE, N_PAIRS = 64, 2


def _state_dicts(net: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  shapes = json.loads(str(REF[f"{net}_shapes"]))
  seed_backbone, seed_lin = (int(s) for s in REF[f"{net}_seeds"])
  backbone = seeded_state_dict({k: tuple(v) for k, v in shapes["backbone"].items()}, seed_backbone)
  lin = seeded_state_dict({k: tuple(v) for k, v in shapes["lin"].items()}, seed_lin)
  return backbone, {k: np.abs(v) for k, v in lin.items()}


def _pairs(net: str) -> tuple[np.ndarray, np.ndarray]:
  """As make_lpips._run: an image vs an independent one, and an image vs a noisy copy of itself."""
  x = seeded_input((2 * N_PAIRS, SIZE, SIZE, 3), INPUT_SEEDS[net])
  a = x[:N_PAIRS]
  b = np.concatenate([x[N_PAIRS:N_PAIRS + 1], np.clip(a[1:2] + 0.1 * (x[N_PAIRS + 1:] - 0.5), 0, 1)])
  return a, b


@pytest.fixture(scope="module")
def alex_sds():
  return _state_dicts("alex")


@pytest.fixture(scope="module")
def alex(alex_sds):
  return lpips.LPIPS.from_state_dicts(*alex_sds, net="alex")


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_matches_torch_reference(net, alex):
  metric = alex if net == "alex" else lpips.LPIPS.from_state_dicts(*_state_dicts(net), net=net)
  a, b = _pairs(net)
  np.testing.assert_allclose([a.astype(np.float64).sum(), b.astype(np.float64).sum()],
                             REF[f"{net}_input_sums"], rtol=1e-12)
  # Measured: distances agree to ~5e-7 relative, per-layer terms to ~4e-6 (float32, CPU).
  np.testing.assert_allclose(metric(a, b), REF[f"{net}_distance"], rtol=1e-5, atol=1e-8)
  per_layer = jax.jit(functools.partial(lpips.LPIPSNet(net).apply, per_layer=True))(
      metric.variables, 2 * a - 1, 2 * b - 1)
  np.testing.assert_allclose(np.asarray(per_layer), REF[f"{net}_per_layer"], rtol=1e-4, atol=1e-9)


def test_identical_images_give_zero(alex):
  x = seeded_input((3, 48, 40, 3), 7)
  np.testing.assert_array_less(np.abs(alex(x, x)), 1e-6)
  u8 = (x * 255).astype(np.uint8)
  np.testing.assert_array_less(np.abs(alex(u8, u8)), 1e-6)


def test_symmetric(alex):
  a, b = seeded_input((3, 48, 48, 3), 8), seeded_input((3, 48, 48, 3), 9)
  d_ab, d_ba = alex(a, b), alex(b, a)
  assert np.all(d_ab > 1e-3)
  np.testing.assert_allclose(d_ab, d_ba, rtol=1e-5)


def test_grows_with_noise(alex):
  x = seeded_input((2, 48, 48, 3), 10)
  noise = np.random.default_rng(11).standard_normal(x.shape).astype(np.float32)
  levels = (0.01, 0.03, 0.1, 0.3)
  d = np.stack([alex(x, np.clip(x + s * noise, 0, 1)) for s in levels])  # (levels, images)
  assert np.all(np.diff(d, axis=0) > 0), d


def test_batching_padding_and_uint8(alex):
  a, b = seeded_input((5, 40, 40, 3), 12), seeded_input((5, 40, 40, 3), 13)
  full = alex(a, b, batch_size=32)
  assert full.shape == (5,) and full.dtype == np.float32
  np.testing.assert_allclose(alex(a, b, batch_size=2), full, rtol=1e-5)  # 2 + 2 + padded 1
  one = np.asarray(lpips.lpips_batch(alex.variables, a[3:4], b[3:4], net="alex"))
  np.testing.assert_allclose(one, full[3:4], rtol=1e-5)
  ua, ub = (a * 255).round().astype(np.uint8), (b * 255).round().astype(np.uint8)
  fa, fb = (ua / np.float32(255)).astype(np.float32), (ub / np.float32(255)).astype(np.float32)
  np.testing.assert_allclose(alex(ua, ub), alex(fa, fb), rtol=1e-5)
  assert alex(a[:0], b[:0]).shape == (0,)


def test_input_validation(alex):
  x = seeded_input((2, 40, 40, 3), 14)
  with pytest.raises(ValueError, match="one shape"):
    alex(x, x[:1])
  with pytest.raises(ValueError, match="too small"):
    alex(x[:, :30], x[:, :30])
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    alex(2 * x - 1, x)
  with pytest.raises(ValueError, match="batch_size"):
    alex(x, x, batch_size=0)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_min_size_is_the_smallest_valid_input(net):
  variables = jax.eval_shape(lambda: lpips.convert_lpips(*map(_shapes_only, lpips.expected_keys(net)), net))

  def smallest_feature(size):
    out = jax.eval_shape(lambda v, x: lpips.LPIPSBackbone(net).apply({"params": v["params"]["net"]}, x),
                         variables, jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
    return min(min(f.shape[1:3]) for f in out)

  assert smallest_feature(lpips.MIN_SIZE[net]) >= 1
  assert smallest_feature(lpips.MIN_SIZE[net] - 1) < 1


def _shapes_only(shapes):
  return {k: np.zeros(s, np.float32) for k, s in shapes.items()}


def test_expected_keys_match_reference_shapes():
  for net in ("alex", "vgg"):
    shapes = json.loads(str(REF[f"{net}_shapes"]))
    backbone, lin = lpips.expected_keys(net)
    assert backbone == {k: tuple(v) for k, v in shapes["backbone"].items()}
    assert lin == {k: tuple(v) for k, v in shapes["lin"].items()}


def test_converter_errors(alex_sds):
  backbone, lin = alex_sds
  with pytest.raises(ValueError, match=r"missing keys \(1\): features\.3\.weight"):
    lpips.convert_lpips({k: v for k, v in backbone.items() if k != "features.3.weight"}, lin)
  with pytest.raises(ValueError, match=r"lin2.model.1.weight \(1, 100, 1, 1\) \(expected \(1, 384, 1, 1\)\)"):
    lpips.convert_lpips(backbone, {**lin, "lin2.model.1.weight": np.zeros((1, 100, 1, 1), np.float32)})
  with pytest.raises(ValueError, match=r"unexpected keys \(1\): lin5\.model\.1\.weight"):
    lpips.convert_lpips(backbone, {**lin, "lin5.model.1.weight": lin["lin4.model.1.weight"]})
  with pytest.raises(ValueError, match=r"missing keys \(5\): lin0\.model\.1\.weight"):
    lpips.convert_lpips(backbone, backbone)  # swapped / wrong file
  with pytest.raises(ValueError, match="vgg16"):
    lpips.convert_lpips(backbone, lin, net="vgg")
  with pytest.raises(ValueError, match="unknown LPIPS net"):
    lpips.convert_lpips(backbone, lin, net="squeeze")


def test_converter_accepts_classifier_and_lins_alias(alex_sds):
  backbone, lin = alex_sds
  ref = lpips.convert_lpips(backbone, lin)
  extra = {**backbone, "classifier.1.weight": np.zeros((4, 9216), np.float32)}
  alias = {**lin, **{f"lins.{k[3]}.model.1.weight": v for k, v in lin.items()}}  # full-module state dict
  only_alias = {f"lins.{k[3]}.model.1.weight": v for k, v in lin.items()}
  for got in (lpips.convert_lpips(extra, alias), lpips.convert_lpips(backbone, only_alias)):
    jax.tree_util.tree_map(np.testing.assert_array_equal, got, ref)
  # (1, C, 1, 1) lin / (out, in, kh, kw) conv weights -> (kh, kw, in, out) kernels
  np.testing.assert_array_equal(ref["params"]["lin1"]["kernel"][0, 0, :, 0],
                                lin["lin1.model.1.weight"][0, :, 0, 0])
  np.testing.assert_array_equal(ref["params"]["net"]["features_0"]["kernel"][2, 5, 1, 7],
                                backbone["features.0.weight"][7, 1, 2, 5])
  assert ref["params"]["net"]["features_0"]["kernel"].shape == (11, 11, 3, 64)


def test_from_files_and_missing_files(tmp_path, alex_sds, alex):
  backbone, lin = alex_sds
  with pytest.raises(FileNotFoundError) as e:
    lpips.LPIPS.from_files(tmp_path / "alexnet-owt-7be5be79.pth", tmp_path / "alex.pth")
  msg = str(e.value)
  assert "alexnet-owt-7be5be79.pth" in msg and "download.pytorch.org/models" in msg
  # The same state dicts as .npz are read (the .pth files need torch or the torch-free reader).
  np.savez(tmp_path / "alexnet-owt-7be5be79.npz", **backbone)
  with pytest.raises(FileNotFoundError, match="lin weights alex.pth") as e:
    lpips.LPIPS.from_files(tmp_path / "alexnet-owt-7be5be79.npz", tmp_path / "alex.pth")
  assert "PerceptualSimilarity" in str(e.value) and "pip package" in str(e.value)
  np.savez(tmp_path / "alex.npz", **lin)
  metric = lpips.LPIPS.from_files(tmp_path / "alexnet-owt-7be5be79.npz", tmp_path / "alex.npz")
  a, b = _pairs("alex")
  np.testing.assert_allclose(metric(a, b), alex(a, b), rtol=1e-6)
