"""`python -m train.convert`: a LivePortrait weights folder -> one orbax checkpoint; listing weights files."""

import dataclasses
import json
import pathlib

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from chatanyone_jax.layers import torch_compat as tc
from chatanyone_jax.render import presets
from chatanyone_jax.render import stitching_retargeting as sr
from chatanyone_jax.render.appearance_feature_extractor import AppearanceFeatureExtractor
from tests.chatanyone_jax.convert.liveportrait_test import _rel_err, _stitching_file_dict
from tests.chatanyone_jax.render import util
from train import convert

TORCH_FILES = pathlib.Path(__file__).parents[1] / "chatanyone_jax" / "convert" / "torch_files"

LP_FILES = {"F_appearance_feature_extractor": "appearance_feature_extractor.npz",
            "M_motion_extractor": "motion_extractor.npz", "W_warping_network": "warping_module.npz",
            "G_spade_decoder": "spade_generator.safetensors"}


def _fake_weights(tmp_path, load_ref, stitching=True):
  """A LivePortrait base_models-style folder holding the reduced reference weights (npz / safetensors)."""
  d = tmp_path / "base_models"
  (d / "retargeting_models").mkdir(parents=True)
  for ref, name in LP_FILES.items():
    sd = util.state_dict(load_ref(ref))
    if name.endswith(".npz"):
      np.savez(d / name, **{("module." if ref.startswith("M") else "") + k: v for k, v in sd.items()})
    else:
      save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, d / name)
  if stitching:
    np.savez(d / "retargeting_models" / "stitching_retargeting_module.npz", **_stitching_file_dict(load_ref))
  return d


def _convert(weights, out, *flags):
  return convert.main(["liveportrait", "--weights", str(weights), "--out", str(out), *flags])


CKPT_NAMES = {"appearance_feature_extractor": "F_appearance_feature_extractor",
              "motion_extractor": "M_motion_extractor", "warping_network": "W_warping_network",
              "spade_generator": "G_spade_decoder", "stitching": "S_stitching", "lip": "S_lip",
              "eye": "S_eye"}


def test_cli_converts_a_weights_folder(tmp_path, load_ref, lp_reference, capsys):
  d = _fake_weights(tmp_path, load_ref)
  out = tmp_path / "ckpt"
  assert _convert(d, out, "--preset", "reference_reduced") == 0
  assert "wrote" in capsys.readouterr().out
  meta = convert.load_liveportrait_meta(out)
  assert meta["preset"] == "reference_reduced"
  assert meta["sources"]["spade_generator"] == "spade_generator.safetensors"
  assert meta["sources"]["stitching_retargeting"] == "retargeting_models/stitching_retargeting_module.npz"
  assert meta["num_parameters"] == {  # PyTorch's parameter counts (G: weight_orig, without u / v)
      name: json.loads((lp_reference / f"{ref}.json").read_text())["num_parameters"]
      for name, ref in CKPT_NAMES.items()}

  tree = convert.load_liveportrait_checkpoint(out)
  assert set(tree) == set(CKPT_NAMES)
  assert set(tree["warping_network"]) == {"params", "batch_stats"} and set(tree["eye"]) == {"params"}
  f_ref = load_ref("F_appearance_feature_extractor")
  model = AppearanceFeatureExtractor(presets.reference_reduced.appearance_feature_extractor)
  feature = jax.jit(model.apply)(tree["appearance_feature_extractor"],
                                 tc.nchw_to_nhwc(f_ref["input/source_image"]))
  assert _rel_err(tc.nhwc_to_nchw(feature), f_ref["output/feature_3d"]) < 1e-4
  s_ref = load_ref("S_stitching")
  stitched = jax.jit(sr.stitch)(tree["stitching"], s_ref["input/kp_source"], s_ref["input/kp_driving"])
  assert _rel_err(stitched, s_ref["derived/kp_driving_stitched"]) < 1e-4

  with pytest.raises(FileExistsError, match="--overwrite"):
    _convert(d, out, "--preset", "reference_reduced")


def test_cli_errors_missing_folder_and_file(tmp_path, load_ref):
  with pytest.raises(FileNotFoundError, match="weights folder .*nope does not exist"):
    _convert(tmp_path / "nope", tmp_path / "ckpt")
  d = _fake_weights(tmp_path, load_ref, stitching=False)
  (d / "warping_module.npz").unlink()
  with pytest.raises(FileNotFoundError, match=r"missing LivePortrait weights: warping_module\.pth .*"
                                              r"HuggingFace repo KwaiVGI/LivePortrait"):
    _convert(d, tmp_path / "ckpt")
  assert not (tmp_path / "ckpt").exists()


def test_cli_wrong_preset_names_the_mismatch(tmp_path, load_ref, monkeypatch):
  d = _fake_weights(tmp_path, load_ref, stitching=False)
  wrong = presets.AppearanceFeatureExtractorConfig(
      block_expansion=16, num_down_blocks=2, max_features=32, reshape_channel=4, reshape_depth=8,
      num_resblocks=1)
  monkeypatch.setitem(presets.PRESETS, "reduced_wrong_width", dataclasses.replace(
      presets.reference_reduced, appearance_feature_extractor=wrong))
  with pytest.raises(ValueError, match=r"appearance_feature_extractor\.npz does not match preset "
                                       r"'reduced_wrong_width'.*wrong shapes"):
    _convert(d, tmp_path / "ckpt", "--preset", "reduced_wrong_width")
  with pytest.raises(ValueError, match="does not match preset 'liveportrait'.*missing keys"):
    _convert(d, tmp_path / "ckpt")
  assert not (tmp_path / "ckpt").exists()


def test_stitching_file_needs_a_preset_with_stitching(tmp_path, load_ref):
  d = _fake_weights(tmp_path, load_ref)
  with pytest.raises(ValueError, match=r"preset 'tiny' has no stitching .*stitching_retargeting_module\.npz"):
    _convert(d, tmp_path / "ckpt", "--preset", "tiny")
  assert not (tmp_path / "ckpt").exists()


def test_inspect_lists_the_arrays_of_a_torch_file(capsys):
  assert convert.main(["inspect", str(TORCH_FILES / "module_zip.pth")]) == 0
  out = capsys.readouterr().out.splitlines()
  assert "0.weight\tfloat32\t(3, 2, 3, 3)" in out and "1.num_batches_tracked\tint64\t()" in out
  assert list(convert.describe({"a": [np.zeros(2, np.int8), "x"]})) == ["a.0\tint8\t(2,)", "a.1\tstr\t'x'"]
