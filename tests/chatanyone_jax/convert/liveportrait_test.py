"""LivePortrait conversion: strict key / shape checks, the full-size layout, S parity, the stitching file."""

import json
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax.convert import liveportrait as convert
from chatanyone_jax.convert.state_dict import load_state_dict
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
  with pytest.raises(ValueError, match=r"missing keys \(1\): down_blocks\.1\.norm\.running_var"):
    _convert_f(sd)


def test_unexpected_key_is_named(reduced_f_state_dict):
  sd = dict(reduced_f_state_dict, **{"resblocks_3d.3dr1.conv1.weight": np.zeros((4, 4, 3, 3, 3))})
  with pytest.raises(ValueError, match=r"unexpected keys \(1\): resblocks_3d\.3dr1\.conv1\.weight"):
    _convert_f(sd)


def test_wrong_shape_is_named(reduced_f_state_dict):
  sd = dict(reduced_f_state_dict)
  sd["second.weight"] = np.zeros((32, 16, 1, 1), np.float32)
  with pytest.raises(ValueError, match=r"^not a LivePortrait appearance_feature_extractor state dict of this "
                                       r"config: wrong shapes \(1\): second\.weight \(32, 16, 1, 1\) "
                                       r"\(expected \(32, 32, 1, 1\)\)$"):
    _convert_f(sd)


def test_wrong_config_is_rejected(reduced_f_state_dict):
  """A reduced checkpoint loaded with the full-size config fails on keys and shapes, not silently."""
  with pytest.raises(ValueError, match="missing keys"):
    convert.convert_appearance_feature_extractor(reduced_f_state_dict, LP.appearance_feature_extractor)
  wrong_width = presets.AppearanceFeatureExtractorConfig(
      block_expansion=16, num_down_blocks=2, max_features=32, reshape_channel=4, reshape_depth=8,
      num_resblocks=1)
  with pytest.raises(ValueError, match=r"wrong shapes \(\d+\): first\.conv\.weight \(8, 3, 3, 3\) "
                                       r"\(expected \(16, 3, 3, 3\)\)"):
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
  assert set(out) - set(want) <= {"flow"}  # W's 2-D flow (G's source skip) is ours, not LivePortrait's
  assert {k: tuple(v.shape) for k, v in out.items() if k in want} == want


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
  with pytest.raises(ValueError, match=r"unexpected keys \(4\): mlp\.10\.bias, mlp\.10\.weight, mlp\.8"):
    convert.convert_stitching_retargeting(sd, presets.reference_reduced.stitching.lip)
  with pytest.raises(ValueError, match=r"wrong shapes.*mlp\.0\.weight \(32, 18\)"):
    convert.convert_stitching_retargeting(sd, LP.stitching.eye)


# ---- the stitching file ------------------------------------------------------------------------------------

def _stitching_file_dict(load_ref, prefix=""):
  return {f"{outer}.{prefix}{k}": v for name, outer in convert.STITCHING_KEYS.items()
          for k, v in util.state_dict(load_ref(f"S_{name}")).items()}


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
  sd = load_state_dict(tmp_path / "s.pth")
  assert calls == [("cpu", True)]
  assert set(sd) == set(_stitching_file_dict(load_ref))
  parts = convert.split_stitching_state_dict(sd)
  np.testing.assert_array_equal(parts["eye"]["mlp.10.bias"], load_ref("S_eye")["param/mlp.10.bias"])
  with pytest.raises(ValueError, match="nothing under retarget_mouth"):
    convert.split_stitching_state_dict({k: v for k, v in sd.items() if not k.startswith("retarget_mouth")})


def test_stitching_file_errors_and_weights_file_names(load_ref):
  sd = _stitching_file_dict(load_ref)
  with pytest.raises(ValueError, match=r"unexpected keys \(1\): retarget_nose\.mlp\.0\.bias"):
    convert.split_stitching_state_dict({**sd, "retarget_nose.mlp.0.bias": np.zeros(3)})
  with pytest.raises(ValueError, match="has no stitching"):
    convert.convert_weights_file(convert.STITCHING, sd, presets.tiny)
  with pytest.raises(ValueError, match="unknown LivePortrait weights file 'eye'"):
    convert.convert_weights_file("eye", sd, presets.reference_reduced)
  tree = convert.convert_weights_file(convert.STITCHING, sd, presets.reference_reduced)
  assert set(tree) == set(convert.STITCHING_KEYS)
  np.testing.assert_array_equal(tree["lip"]["params"]["mlp_0"]["kernel"],
                                load_ref("S_lip")["param/mlp.0.weight"].T)  # Linear (out, in) -> (in, out)
