"""LivePortrait conversion: strict key / shape checking, the full-size layout, S parity, file readers, CLI."""

import dataclasses
import json
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from chatanyone_jax.convert import liveportrait as convert
from chatanyone_jax.layers import torch_compat as tc
from chatanyone_jax.render import presets
from chatanyone_jax.render import stitching_retargeting as sr
from chatanyone_jax.render.appearance_feature_extractor import AppearanceFeatureExtractor
from chatanyone_jax.render.motion_extractor import MotionExtractor
from chatanyone_jax.render.spade_generator import SPADEDecoder
from chatanyone_jax.render.warping_network import WarpingNetwork
from tests.chatanyone_jax.render import util

LP = presets.liveportrait
# manifest name -> (converter, config)
NETWORKS = {
    "F_appearance_feature_extractor": (convert.convert_appearance_feature_extractor,
                                       LP.appearance_feature_extractor),
    "M_motion_extractor": (convert.convert_motion_extractor, LP.motion_extractor),
    "W_warping_network": (convert.convert_warping_network, LP.warping_network),
    "G_spade_decoder": (convert.convert_spade_decoder, LP.spade_generator),
    "S_stitching": (convert.convert_stitching_retargeting, LP.stitching.stitching),
    "S_lip": (convert.convert_stitching_retargeting, LP.stitching.lip),
    "S_eye": (convert.convert_stitching_retargeting, LP.stitching.eye),
}
FOUR = [n for n in NETWORKS if not n.startswith("S_")]


@pytest.fixture(scope="module")
def manifest(lp_reference):
  return json.loads((lp_reference / "full_manifest.json").read_text())["modules"]


@pytest.fixture(scope="module")
def reduced_f_state_dict(load_ref):
  return util.state_dict(load_ref("F_appearance_feature_extractor"))


def _convert_f(sd):
  cfg = presets.reference_reduced.appearance_feature_extractor
  return convert.convert_appearance_feature_extractor(sd, cfg)


def test_missing_key_is_named(reduced_f_state_dict):
  sd = dict(reduced_f_state_dict)
  del sd["down_blocks.1.norm.running_var"]
  with pytest.raises(ValueError, match=r"Missing keys \(1\): down_blocks\.1\.norm\.running_var"):
    _convert_f(sd)


def test_unexpected_key_is_named(reduced_f_state_dict):
  sd = dict(reduced_f_state_dict, **{"resblocks_3d.3dr1.conv1.weight": np.zeros((4, 4, 3, 3, 3))})
  with pytest.raises(ValueError, match=r"Unexpected keys \(1\): resblocks_3d\.3dr1\.conv1\.weight"):
    _convert_f(sd)


def test_wrong_shape_is_named(reduced_f_state_dict):
  sd = dict(reduced_f_state_dict)
  sd["second.weight"] = np.zeros((32, 16, 1, 1), np.float32)
  with pytest.raises(ValueError, match=r"second\.weight \(32, 16, 1, 1\).*expected \(1, 1, 32, 32\)"):
    _convert_f(sd)


def test_wrong_config_is_rejected(reduced_f_state_dict):
  """A reduced checkpoint loaded with the full-size config fails on keys and shapes, not silently."""
  with pytest.raises(ValueError, match="Missing keys"):
    convert.convert_appearance_feature_extractor(reduced_f_state_dict, LP.appearance_feature_extractor)
  wrong_width = presets.AppearanceFeatureExtractorConfig(
      block_expansion=16, num_down_blocks=2, max_features=32, reshape_channel=4, reshape_depth=8,
      num_resblocks=1)
  with pytest.raises(ValueError, match="shape mismatch"):
    convert.convert_appearance_feature_extractor(reduced_f_state_dict, wrong_width)


def test_converted_variables_are_numpy_float32(reduced_f_state_dict):
  variables = _convert_f(reduced_f_state_dict)
  assert set(variables) == {"params", "batch_stats"}
  leaves = jax.tree.leaves(variables)
  assert all(isinstance(x, np.ndarray) and x.dtype == np.float32 for x in leaves)
  np.testing.assert_array_equal(variables["batch_stats"]["first"]["norm"]["var"],
                                reduced_f_state_dict["first.norm.running_var"])


@pytest.mark.parametrize("name", list(NETWORKS))
def test_full_size_checkpoint_layout_converts(manifest, name):
  """Every key of a full-size LivePortrait state dict maps onto the `liveportrait` preset."""
  converter, cfg = NETWORKS[name]
  entry = manifest[name]
  one = np.float32(1)
  sd = {k: np.broadcast_to(one, shape) if dtype == "float32" else np.zeros(shape, np.int64)
        for k, shape, dtype in entry["state_dict"]}
  variables = converter(sd, cfg)
  assert util.num_params(variables["params"]) == entry["num_parameters"]


def _full_size_io(name):
  """(module, inputs as ShapeDtypeStructs) at 256x256, batch 1, channels-last."""
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  if name == "F_appearance_feature_extractor":
    return AppearanceFeatureExtractor(LP.appearance_feature_extractor), (f32(1, 256, 256, 3),)
  if name == "M_motion_extractor":
    return MotionExtractor(LP.motion_extractor), (f32(1, 256, 256, 3),)
  if name == "W_warping_network":
    return WarpingNetwork(LP.warping_network), (f32(1, 16, 64, 64, 32), f32(1, 21, 3), f32(1, 21, 3))
  return SPADEDecoder(LP.spade_generator), (f32(1, 64, 64, 256),)


def _channels_last(shape):
  """PyTorch (N, C, *spatial) -> (N, *spatial, C); the 5-D deformation is already channels-last."""
  return tuple(shape[:1]) + tuple(shape[2:]) + tuple(shape[1:2])


@pytest.mark.parametrize("name", FOUR)
def test_full_size_preset_params_and_shapes(manifest, name):
  """`liveportrait` preset: parameter count and 256x256 output shapes equal LivePortrait's (no FLOPs)."""
  entry = manifest[name]
  model, inputs = _full_size_io(name)
  variables = jax.eval_shape(lambda *a: model.init(jax.random.key(0), *a), *inputs)
  assert util.num_params(variables["params"]) == entry["num_parameters"]
  out = jax.eval_shape(lambda v, *a: model.apply(v, *a), variables, *inputs)
  if not isinstance(out, dict):
    out = {next(iter(entry["outputs"])): out}
  want = {}
  for key, shape in entry["outputs"].items():
    want[key] = tuple(shape) if key in ("deformation", "pitch", "yaw", "roll", "t", "exp", "scale", "kp") \
        else _channels_last(shape)
  assert {k: tuple(v.shape) for k, v in out.items()} == want


# ---- stitching / retargeting MLPs vs the PyTorch reference ----------------------------------------------

def _rel_err(mine, ref) -> float:
  """max |mine - ref| / max |ref|."""
  return float(np.max(np.abs(np.asarray(mine) - ref)) / np.max(np.abs(ref)))


def _convert_s(ref, name):
  cfg = getattr(presets.reference_reduced.stitching, name)
  return convert.convert_stitching_retargeting(util.state_dict(ref), cfg)


def test_stitching_matches_torch_reference(load_ref):
  ref = load_ref("S_stitching")
  variables = _convert_s(ref, "stitching")
  kp_s, kp_d = ref["input/kp_source"], ref["input/kp_driving"]
  x = np.concatenate([kp_s.reshape(2, -1), kp_d.reshape(2, -1)], -1)
  np.testing.assert_array_equal(x, ref["input/x"])  # how the reference built the MLP input
  delta = jax.jit(sr.stitching_delta)(variables, kp_s, kp_d)
  stitched = jax.jit(sr.stitch)(variables, kp_s, kp_d)
  assert delta.shape == (2, 17) and stitched.shape == (2, 5, 3)
  assert _rel_err(delta, ref["output/delta"]) < 1e-4
  assert _rel_err(stitched, ref["derived/kp_driving_stitched"]) < 1e-4


@pytest.mark.parametrize(("name", "fn", "ratio"), [("lip", sr.retarget_lip, "lip_close_ratio"),
                                                    ("eye", sr.retarget_eye, "eye_close_ratio")])
def test_retargeting_matches_torch_reference(load_ref, name, fn, ratio):
  ref = load_ref(f"S_{name}")
  variables = _convert_s(ref, name)
  kp_s, r = ref["input/kp_source"], ref[f"input/{ratio}"]
  np.testing.assert_array_equal(np.concatenate([kp_s.reshape(2, -1), r], -1), ref["input/x"])
  delta = jax.jit(fn)(variables, kp_s, r)
  assert delta.shape == (2, 5, 3)
  assert _rel_err(delta, ref["output/delta"].reshape(2, 5, 3)) < 1e-4


def test_stitching_wrong_config_is_rejected(load_ref):
  sd = util.state_dict(load_ref("S_eye"))
  with pytest.raises(ValueError, match=r"Unexpected keys \(4\): mlp\.10\.bias, mlp\.10\.weight, mlp\.8"):
    convert.convert_stitching_retargeting(sd, presets.reference_reduced.stitching.lip)
  with pytest.raises(ValueError, match=r"shape mismatch.*mlp\.0\.weight \(32, 18\)"):
    convert.convert_stitching_retargeting(sd, LP.stitching.eye)


# ---- state-dict files ------------------------------------------------------------------------------------

def _stitching_file_dict(load_ref, prefix=""):
  return {f"{outer}.{prefix}{k}": v for name, outer in convert.STITCHING_KEYS.items()
          for k, v in util.state_dict(load_ref(f"S_{name}")).items()}


def test_load_state_dict_npz_safetensors_and_module_prefix(tmp_path, reduced_f_state_dict):
  np.savez(tmp_path / "f.npz", **{f"module.{k}": v for k, v in reduced_f_state_dict.items()})
  save_file({k: np.ascontiguousarray(v) for k, v in reduced_f_state_dict.items()}, tmp_path / "f.safetensors")
  for name in ("f.npz", "f.safetensors"):
    sd = convert.load_state_dict(tmp_path / name)
    assert set(sd) == set(reduced_f_state_dict), name
    for k, v in reduced_f_state_dict.items():
      np.testing.assert_array_equal(sd[k], v, err_msg=f"{name}: {k}")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    convert.load_state_dict(tmp_path / "nope.npz")
  (tmp_path / "f.bin").write_bytes(b"")
  with pytest.raises(ValueError, match="unsupported weights format '.bin'"):
    convert.load_state_dict(tmp_path / "f.bin")


def test_load_state_dict_without_torch_says_how_to_fix(tmp_path, monkeypatch):
  (tmp_path / "m.pth").write_bytes(b"")
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError, installed or not
  with pytest.raises(ImportError, match=r"pip install torch.*\.npz / \.safetensors"):
    convert.load_state_dict(tmp_path / "m.pth")


def test_load_state_dict_pth_nested_stitching_file(tmp_path, monkeypatch, load_ref):
  """A torch-free stand-in for torch.load: LivePortrait's nested {'retarget_shoulder': {'module.mlp...'}}."""

  class Tensor:
    def __init__(self, a):
      self.a, self.dtype = a, "float32"

    def detach(self):
      return self

    def cpu(self):
      return self

    def numpy(self):
      return self.a

  nested = {}
  for k, v in _stitching_file_dict(load_ref).items():
    outer, inner = k.split(".", 1)
    nested.setdefault(outer, {})[f"module.{inner}"] = Tensor(v)
  calls = []

  def load(path, map_location, weights_only):
    calls.append((map_location, weights_only))
    return nested

  fake = types.SimpleNamespace(Tensor=Tensor, bfloat16="bfloat16", load=load)
  monkeypatch.setitem(sys.modules, "torch", fake)
  (tmp_path / "s.pth").write_bytes(b"")
  sd = convert.load_state_dict(tmp_path / "s.pth")
  assert calls == [("cpu", True)]
  assert set(sd) == set(_stitching_file_dict(load_ref))
  parts = convert.split_stitching_state_dict(sd)
  np.testing.assert_array_equal(parts["eye"]["mlp.10.bias"], load_ref("S_eye")["param/mlp.10.bias"])
  with pytest.raises(ValueError, match="nothing under retarget_mouth"):
    convert.split_stitching_state_dict({k: v for k, v in sd.items() if not k.startswith("retarget_mouth")})


# ---- the command line: weights folder -> one orbax checkpoint ---------------------------------------------

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


CKPT_NAMES = {"appearance_feature_extractor": "F_appearance_feature_extractor",
              "motion_extractor": "M_motion_extractor", "warping_network": "W_warping_network",
              "spade_generator": "G_spade_decoder", "stitching": "S_stitching", "lip": "S_lip",
              "eye": "S_eye"}


def test_cli_converts_a_weights_folder(tmp_path, load_ref, lp_reference, capsys):
  d = _fake_weights(tmp_path, load_ref)
  out = tmp_path / "ckpt"
  assert convert.main(["--weights", str(d), "--out", str(out), "--preset", "reference_reduced"]) == 0
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
    convert.main(["--weights", str(d), "--out", str(out), "--preset", "reference_reduced"])


def test_cli_errors_missing_folder_and_file(tmp_path, load_ref):
  with pytest.raises(FileNotFoundError, match="weights folder .*nope does not exist"):
    convert.main(["--weights", str(tmp_path / "nope"), "--out", str(tmp_path / "ckpt")])
  d = _fake_weights(tmp_path, load_ref, stitching=False)
  (d / "warping_module.npz").unlink()
  with pytest.raises(FileNotFoundError, match=r"missing LivePortrait weights: warping_module\.pth .*"
                                              r"HuggingFace repo KwaiVGI/LivePortrait"):
    convert.main(["--weights", str(d), "--out", str(tmp_path / "ckpt")])
  assert not (tmp_path / "ckpt").exists()


def test_cli_wrong_preset_names_the_mismatch(tmp_path, load_ref, monkeypatch):
  d = _fake_weights(tmp_path, load_ref, stitching=False)
  wrong = presets.AppearanceFeatureExtractorConfig(
      block_expansion=16, num_down_blocks=2, max_features=32, reshape_channel=4, reshape_depth=8,
      num_resblocks=1)
  monkeypatch.setitem(presets.PRESETS, "reduced_wrong_width", dataclasses.replace(
      presets.reference_reduced, appearance_feature_extractor=wrong))
  with pytest.raises(ValueError, match=r"appearance_feature_extractor\.npz does not match preset "
                                       r"'reduced_wrong_width'.*shape mismatch"):
    convert.main(["--weights", str(d), "--out", str(tmp_path / "ckpt"), "--preset", "reduced_wrong_width"])
  with pytest.raises(ValueError, match="does not match preset 'liveportrait'.*Missing keys"):
    convert.main(["--weights", str(d), "--out", str(tmp_path / "ckpt")])
  assert not (tmp_path / "ckpt").exists()
