"""FID Inception-V3 (chatanyone_jax/eval/inception.py) against pytorch-fid's InceptionV3 run in PyTorch with
seeded weights (reference/make_inception.py -> reference/inception.npz), plus the converter's checks."""

from __future__ import annotations

import ast
import pathlib

import jax
import numpy as np
import pytest

from chatanyone_jax.eval import inception
from chatanyone_jax.ops import resample
from tests.chatanyone_jax.eval.reference.seeded import seeded_input, seeded_state_dict

REF = pathlib.Path(__file__).parent / "reference" / "inception.npz"
# float32 through 94 convs: the measured max deviation is ~1e-5 absolute (features up to ~18); rounding order.
RTOL, ATOL = 1e-4, 1e-4


@pytest.fixture(scope="module")
def ref():
  with np.load(REF) as z:
    return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def torch_sd(ref):
  shapes = {k: ast.literal_eval(str(v)) for k, v in zip(ref["shape_keys"], ref["shape_values"], strict=True)}
  return seeded_state_dict(shapes, int(ref["seed"]))


@pytest.fixture(scope="module")
def variables(torch_sd):
  return inception.convert_fid_inception(torch_sd)


@pytest.fixture(scope="module")
def images(ref):
  x = seeded_input(tuple(ref["input_shape"]), int(ref["input_seed"]))  # NCHW, as torch saw it
  return x.transpose(0, 2, 3, 1)


@pytest.mark.parametrize("n", [64, 512, 1080])
def test_bilinear_weights_are_torchs_to_the_bit(ref, n):
  np.testing.assert_array_equal(resample.torch_bilinear_matrix(n, 299), ref[f"matrix_{n}"])


def test_bilinear_resize_matches_torch(ref, images):
  for i in range(2):
    x, want = ref[f"resize{i}_in"], ref[f"resize{i}_out"]
    got = np.asarray(resample.resize_bilinear_torch(x, want.shape[1:3]))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  got = np.asarray(resample.resize_bilinear_torch(images, (299, 299)))[:, ::37]
  np.testing.assert_allclose(got, ref["resized_rows"], rtol=1e-6, atol=1e-6)
  # A same-size "resize" is the identity, as in torch.
  np.testing.assert_array_equal(np.asarray(resample.resize_bilinear_torch(images, (64, 64))), images)


def test_features_match_pytorch_fid(ref, variables, images):
  feats, state = jax.jit(lambda v, x: inception.FIDInceptionV3().apply(v, x, mutable=["intermediates"]))(
      variables, images)
  inter = state["intermediates"]
  assert inter["block0"][0].shape == tuple(ref["block0_shape"][[0, 2, 3, 1]])
  assert inter["block2"][0].shape == tuple(ref["block2_shape"][[0, 2, 3, 1]])
  for b in range(3):
    np.testing.assert_allclose(np.asarray(inter[f"block{b}"][0]).mean((1, 2)), ref[f"block{b}_mean"],
                               rtol=RTOL, atol=ATOL, err_msg=f"block{b}")
  assert feats.shape == (2, inception.FEATURE_DIM)
  np.testing.assert_allclose(np.asarray(feats), ref["features"], rtol=RTOL, atol=ATOL)


def test_extractor_batches_uint8_and_float(ref, variables):
  # 3 frames with batch_size 2: one full and one zero-padded batch; uint8 is scaled by 1/255 on device.
  frames = (seeded_input((3, 40, 48, 3), 3) * 255).round().astype(np.uint8)
  ex = inception.InceptionFeatures(variables)
  got = ex(frames, batch_size=2)
  assert got.dtype == np.float64 and got.shape == (3, inception.FEATURE_DIM)
  want = ex(frames.astype(np.float32) / 255.0, batch_size=3)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert not np.allclose(got[0], got[1])  # padding did not leak, frames differ
  with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
    ex(frames[0])


def test_converter_layout(torch_sd, variables):
  w = torch_sd["Mixed_6b.branch7x7_2.conv.weight"]  # (out, in, 1, 7)
  np.testing.assert_array_equal(variables["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"],
                                w.transpose(2, 3, 1, 0))
  bn = variables["batch_stats"]["Conv2d_4a_3x3"]["bn"]
  np.testing.assert_array_equal(bn["var"], torch_sd["Conv2d_4a_3x3.bn.running_var"])
  np.testing.assert_array_equal(variables["params"]["Mixed_7c"]["branch_pool"]["bn"]["scale"],
                                torch_sd["Mixed_7c.branch_pool.bn.weight"])


def test_converter_rejects_missing_key(torch_sd):
  sd = dict(torch_sd)
  del sd["Mixed_7b.branch3x3dbl_3a.bn.running_mean"]
  with pytest.raises(ValueError, match=r"missing keys \(1\): Mixed_7b\.branch3x3dbl_3a\.bn\.running_mean"):
    inception.convert_fid_inception(sd)


def test_converter_rejects_wrong_shape(torch_sd):
  sd = dict(torch_sd)
  sd["Mixed_5b.branch_pool.conv.weight"] = np.zeros((64, 192, 1, 1), np.float32)  # torchvision's 5b has 32
  with pytest.raises(ValueError,
                     match=r"wrong shapes \(1\): Mixed_5b\.branch_pool\.conv\.weight \(64, 192, 1, 1\)"):
    inception.convert_fid_inception(sd)


def test_converter_rejects_torchvision_imagenet_inception(torch_sd):
  # torchvision's inception_v3 weights: 1000 classes and AuxLogits; not the FID network.
  sd = dict(torch_sd)
  sd["fc.weight"] = np.zeros((1000, 2048), np.float32)
  sd["fc.bias"] = np.zeros((1000,), np.float32)
  sd["AuxLogits.conv0.conv.weight"] = np.zeros((128, 768, 1, 1), np.float32)
  with pytest.raises(ValueError, match=r"unexpected keys \(1\): AuxLogits\.conv0\.conv\.weight.*wrong shapes "
                                       r"\(2\): fc\.weight \(1000, 2048\)"):
    inception.convert_fid_inception(sd)
  # fc and num_batches_tracked are optional.
  sd = {k: v for k, v in torch_sd.items() if not k.startswith("fc.") and "num_batches" not in k}
  assert inception.convert_fid_inception(sd)["params"].keys() == {
      *(k.split(".")[0] for k in inception.expected_shapes())}


def test_from_file(tmp_path, torch_sd):
  missing = tmp_path / inception.WEIGHTS_FILE
  with pytest.raises(FileNotFoundError, match=r"pt_inception-2015-12-05-6726825d\.pth.*github\.com/mseitzer"):
    inception.InceptionFeatures.from_file(missing)
  path = tmp_path / "fid_inception.npz"
  np.savez(path, **{k: v for k, v in torch_sd.items() if k != "Conv2d_1a_3x3.conv.weight"})
  with pytest.raises(ValueError, match=r"missing keys \(1\): Conv2d_1a_3x3\.conv\.weight"):
    inception.InceptionFeatures.from_file(path)
  np.savez(path, **torch_sd)
  ex = inception.InceptionFeatures.from_file(path)
  np.testing.assert_array_equal(ex.variables["params"]["Conv2d_1a_3x3"]["conv"]["kernel"],
                                torch_sd["Conv2d_1a_3x3.conv.weight"].transpose(2, 3, 1, 0))
