"""Parity of the Flax I3D (FVD features) with piergiaj/pytorch-i3d's InceptionI3d on seeded weights.

Reference outputs: reference/i3d.npz, written by reference/make_i3d.py (see there for the cases). The
weights are rebuilt here from the same seed and the state-dict shapes stored in the npz.
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax.eval import i3d
from tests.chatanyone_jax.eval.reference.seeded import seeded_input, seeded_state_dict

REF = pathlib.Path(__file__).parent / "reference" / "i3d.npz"
with np.load(REF, allow_pickle=False) as _z:
  SEEDS = json.loads(str(_z["seeds"]))  # {"weights", "net", "eps5", "pipeline", "upsample"}
# float32 through ~60 convs on CPU (XLA vs ATen summation order); logits are O(1-10).
RTOL, ATOL = 1e-4, 1e-4
ATOL_RESIZE = 1e-6  # resized frames in [-1, 1]: float32 rounding only


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
  with np.load(REF, allow_pickle=False) as z:
    return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def state_dict(ref) -> dict[str, np.ndarray]:
  shapes = {k: tuple(v) for k, v in json.loads(str(ref["shapes"])).items()}
  return seeded_state_dict(shapes, SEEDS["weights"])


@pytest.fixture(scope="module")
def variables(state_dict):
  return i3d.convert_i3d(state_dict)


def _uint8_clip(shape, seed):
  return np.round(seeded_input(shape, seed, 0.0, 255.0)).astype(np.uint8)


def test_state_dict_keys_match_expected_shapes(state_dict):
  # The torch model's state dict (shapes from the reference) is exactly what the converter expects.
  torch_keys = {k: tuple(v.shape) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  assert torch_keys == i3d.expected_shapes()


@pytest.fixture(scope="module")
def net():
  """The network at the reference size, compiled once; bn_eps is traced so both eps cases share it."""
  def run(variables, x, eps):
    return i3d.InceptionI3D(bn_eps=eps, final_pool=(2, 1, 2)).apply(variables, x, return_features=True)
  return jax.jit(run)


def test_network_matches_torch(ref, variables, net):
  x = seeded_input((2, 17, 32, 48, 3), SEEDS["net"], -1.0, 1.0)
  logits, feats = net(variables, x, i3d.BN_EPS)
  assert ref["net_logits_t"].shape[-1] == 2  # the case does average two time steps
  np.testing.assert_allclose(np.asarray(logits), ref["net_logits"], rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(np.asarray(feats), ref["net_features"], rtol=RTOL, atol=ATOL)
  # logits are the logits conv of the time-averaged features (linear head)
  w = variables["params"]["logits"]["conv3d"]
  np.testing.assert_allclose(np.asarray(feats) @ w["kernel"][0, 0, 0] + w["bias"], ref["net_logits"],
                             rtol=RTOL, atol=ATOL)


def test_videogpt_bn_eps(ref, variables, net):
  x = seeded_input((2, 17, 32, 48, 3), SEEDS["eps5"], -1.0, 1.0)
  logits, _ = net(variables, x, i3d.VIDEOGPT_BN_EPS)
  np.testing.assert_allclose(np.asarray(logits), ref["eps5_logits"], rtol=RTOL, atol=ATOL)
  # the eps matters at this tolerance: piergiaj's 0.001 does not reproduce VideoGPT's outputs
  assert np.abs(np.asarray(net(variables, x, i3d.BN_EPS)[0]) - ref["eps5_logits"]).max() > 10 * ATOL


def test_too_short_or_wrong_size_clips_are_rejected(variables):
  model = i3d.InceptionI3D()
  with pytest.raises(ValueError, match="T >= 9"):
    jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((1, 8, 224, 224, 3), jnp.float32))
  with pytest.raises(ValueError, match="224x224"):
    jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((1, 16, 256, 256, 3), jnp.float32))
  out = jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((3, 9, 224, 224, 3), jnp.float32))
  assert out.shape == (3, i3d.NUM_CLASSES)
  extractor = i3d.I3DFeatures(variables, resolution=32)
  with pytest.raises(ValueError, match="at least 9 frames"):
    extractor(np.zeros((1, 8, 32, 32, 3), np.uint8))


def test_preprocess_matches_videogpt():
  video = _uint8_clip((1, 2, 20, 26, 3), SEEDS["upsample"])  # upsampling, H < W
  with np.load(REF, allow_pickle=False) as z:
    want = z["upsample"].transpose(1, 2, 3, 0)[None]  # CTHW -> NTHWC
  got = np.asarray(i3d.preprocess(jnp.asarray(video), 32))
  np.testing.assert_allclose(got, want, rtol=0, atol=ATOL_RESIZE)
  # float input in [0, 1] is the same as uint8 / 255
  np.testing.assert_allclose(np.asarray(i3d.preprocess(jnp.asarray(video / 255.0, jnp.float32), 32)), want,
                             rtol=0, atol=ATOL_RESIZE)


def test_extractor_matches_videogpt_pipeline(ref, variables):
  videos = _uint8_clip((2, 10, 48, 72, 3), SEEDS["pipeline"])  # downsampling + centre crop
  first = np.asarray(i3d.preprocess(jnp.asarray(videos[:, :1]), 32))[:, 0]
  np.testing.assert_allclose(first, ref["pipeline_first_frame"].transpose(0, 2, 3, 1), rtol=0,
                             atol=ATOL_RESIZE)
  extractor = i3d.I3DFeatures(variables, resolution=32)
  # 3 clips in batches of 2: the second batch is zero-padded
  got, feats = extractor(videos[[0, 1, 0]], batch_size=2, return_features=True)
  assert got.dtype == np.float64 and got.shape == (3, i3d.NUM_CLASSES)
  np.testing.assert_allclose(got, ref["pipeline_logits"][[0, 1, 0]], rtol=RTOL, atol=ATOL)
  assert feats.dtype == np.float64 and feats.shape == (3, i3d.FEATURE_DIM)
  w = variables["params"]["logits"]["conv3d"]
  np.testing.assert_allclose(feats @ w["kernel"][0, 0, 0] + w["bias"], got, rtol=RTOL, atol=ATOL)
  # float frames in [0, 1] and one batch: the same features
  np.testing.assert_allclose(extractor(videos / 255.0, batch_size=8), got[:2], rtol=RTOL, atol=ATOL)


def test_convert_reports_missing_unexpected_and_misshaped_keys(state_dict):
  sd = dict(state_dict)
  del sd["Mixed_4c.b1b.bn.running_var"]
  with pytest.raises(ValueError, match=r"missing keys \(1\): Mixed_4c\.b1b\.bn\.running_var"):
    i3d.convert_i3d(sd)
  sd = {**state_dict, "Mixed_6a.b0.conv3d.weight": np.zeros((1, 1, 1, 1, 1), np.float32)}
  with pytest.raises(ValueError, match=r"unexpected keys \(1\): Mixed_6a\.b0\.conv3d\.weight"):
    i3d.convert_i3d(sd)
  sd = {**state_dict, "logits.conv3d.weight": np.zeros((600, 1024, 1, 1, 1), np.float32),
        "logits.conv3d.bias": np.arange(600, dtype=np.float32)}
  with pytest.raises(ValueError, match=r"wrong shapes \(2\): logits\.conv3d\.weight \(600, 1024, 1, 1, 1\) "
                                       r"\(expected \(400, 1024, 1, 1, 1\)\)"):
    i3d.convert_i3d(sd)
  np.testing.assert_array_equal(i3d.convert_i3d(sd, num_classes=600)["params"]["logits"]["conv3d"]["bias"],
                                np.arange(600))


def test_convert_layout(state_dict, variables):
  w = state_dict["Conv3d_1a_7x7.conv3d.weight"]  # (out, in, kt, kh, kw)
  k = variables["params"]["Conv3d_1a_7x7"]["conv3d"]["kernel"]  # (kt, kh, kw, in, out)
  assert k.shape == (7, 7, 7, 3, 64)
  np.testing.assert_array_equal(k[1, 2, 3, 0, 5], w[5, 0, 1, 2, 3])
  bn = variables["batch_stats"]["Mixed_5c"]["b2b"]["bn"]
  np.testing.assert_array_equal(bn["var"], state_dict["Mixed_5c.b2b.bn.running_var"])
  np.testing.assert_array_equal(variables["params"]["Mixed_5c"]["b2b"]["bn"]["scale"],
                                state_dict["Mixed_5c.b2b.bn.weight"])


def test_from_file(tmp_path, state_dict):
  with pytest.raises(FileNotFoundError, match="rgb_imagenet.pt / i3d_pretrained_400.pt.*pytorch-i3d/raw"):
    i3d.I3DFeatures.from_file(tmp_path / "i3d_pretrained_400.pt")
  path = tmp_path / "i3d_pretrained_400.npz"
  np.savez(path, **{f"module.{k}": v for k, v in state_dict.items()})  # DataParallel prefix is stripped
  extractor = i3d.I3DFeatures.from_file(path)
  assert extractor.model.bn_eps == i3d.VIDEOGPT_BN_EPS
  assert extractor.model.final_pool == i3d.FINAL_POOL  # the upstream [2, 7, 7] at 224
  np.testing.assert_array_equal(np.asarray(extractor.variables["params"]["logits"]["conv3d"]["bias"]),
                                state_dict["logits.conv3d.bias"])
  assert i3d.I3DFeatures.from_file(path, bn_eps=i3d.BN_EPS).model.bn_eps == i3d.BN_EPS
  assert i3d.default_bn_eps("models/rgb_imagenet.pt") == i3d.BN_EPS


def test_fvd():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(300, 32))  # D = 32 instead of 400 keeps scipy's sqrtm fast; fvd does not care
  assert abs(i3d.fvd(a, a)) < 1e-8
  assert i3d.fvd(a, a + 0.5) == pytest.approx(32 * 0.25, rel=1e-8)  # a mean shift only
  # scaling by 2: |mu|^2 + tr(S + 4S - 2 (4 S^2)^1/2) = |mu|^2 + tr(S)
  want = float(np.sum(a.mean(0) ** 2) + np.trace(np.cov(a, rowvar=False)))
  assert i3d.fvd(a, 2.0 * a) == pytest.approx(want, rel=1e-8)
