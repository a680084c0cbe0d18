"""Checkpoint conversion: strict key / shape checking, and the full-size LivePortrait layout."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax.render import convert, presets
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
}


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


@pytest.mark.parametrize("name", list(NETWORKS))
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
