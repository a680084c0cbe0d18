"""Stitching / retargeting MLPs: full-size presets (no FLOPs), the stitch formula, input checks."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax.render import presets
from chatanyone_jax.render import stitching_retargeting as sr
from tests.chatanyone_jax.render import util

STITCHING = presets.liveportrait.stitching
MANIFEST_NAMES = {"stitching": "S_stitching", "lip": "S_lip", "eye": "S_eye"}


def _param_count(cfg: presets.StitchingRetargetingConfig) -> int:
  model = sr.StitchingRetargetingNetwork.from_config(cfg)
  x = jax.ShapeDtypeStruct((1, cfg.input_size), jnp.float32)
  variables = jax.eval_shape(lambda a: model.init(jax.random.key(0), a), x)
  return util.num_params(variables["params"])


def test_full_size_sizes_and_parameter_counts(lp_reference):
  assert (STITCHING.stitching.input_size, STITCHING.stitching.hidden_sizes, STITCHING.stitching.output_size) \
      == (126, (128, 128, 64), 65)
  assert (STITCHING.lip.input_size, STITCHING.lip.hidden_sizes, STITCHING.lip.output_size) \
      == (65, (128, 128, 64), 63)
  assert (STITCHING.eye.input_size, STITCHING.eye.hidden_sizes, STITCHING.eye.output_size) \
      == (66, (256, 256, 128, 128, 64), 63)
  assert _param_count(STITCHING.stitching) == 45_249
  manifest = json.loads((lp_reference / "full_manifest.json").read_text())["modules"]
  for name, ref in MANIFEST_NAMES.items():
    cfg = getattr(STITCHING, name)
    kw = manifest[ref]["kwargs"]
    assert (kw["input_size"], tuple(kw["hidden_sizes"]), kw["output_size"]) \
        == (cfg.input_size, cfg.hidden_sizes, cfg.output_size), name
    assert _param_count(cfg) == manifest[ref]["num_parameters"], name  # 45,249 / 37,311 / 144,703


def test_reduced_preset_matches_reference_kwargs(lp_reference):
  cfg = presets.reference_reduced.stitching
  for name, ref in MANIFEST_NAMES.items():
    kw = json.loads((lp_reference / f"{ref}.json").read_text())["kwargs"]
    mine = getattr(cfg, name)
    assert (kw["input_size"], tuple(kw["hidden_sizes"]), kw["output_size"]) \
        == (mine.input_size, mine.hidden_sizes, mine.output_size), name


def _random_params(cfg, seed=0):
  x = jnp.zeros((1, cfg.input_size))
  return util.random_variables(sr.StitchingRetargetingNetwork.from_config(cfg), x, seed=seed)


def test_stitch_adds_delta_and_translation():
  """stitch = kp_driving + delta[:, :3K] as (B, K, 3), then delta[:, 3K:] added to x, y of every keypoint."""
  cfg = presets.reference_reduced.stitching
  params = _random_params(cfg.stitching)
  rng = np.random.default_rng(1)
  kp_s, kp_d = (rng.normal(size=(2, 5, 3)).astype(np.float32) for _ in range(2))
  delta = np.asarray(jax.jit(sr.stitching_delta)(params, kp_s, kp_d))
  assert delta.shape == (2, 17)
  want = kp_d + delta[:, :15].reshape(2, 5, 3)
  want[..., :2] += delta[:, None, 15:]
  np.testing.assert_allclose(jax.jit(sr.stitch)(params, kp_s, kp_d), want, atol=1e-6)
  # the bare params dict works as well as {"params": ...}
  np.testing.assert_allclose(sr.stitch(params["params"], kp_s, kp_d), want, atol=1e-6)


def test_retargeting_shapes_and_errors():
  cfg = presets.reference_reduced.stitching
  kp = jnp.ones((2, 5, 3))
  lip, eye = _random_params(cfg.lip, 1), _random_params(cfg.eye, 2)
  assert sr.retarget_lip(lip, kp, jnp.ones((2, 2))).shape == (2, 5, 3)
  assert sr.retarget_eye(eye, kp, jnp.ones((2, 3))).shape == (2, 5, 3)
  with pytest.raises(ValueError, match=r"eye_close_ratio must be \(B, 3\)"):
    sr.retarget_eye(eye, kp, jnp.ones((2, 2)))
  with pytest.raises(ValueError, match="expects 18 input features"):
    sr.retarget_eye(eye, jnp.ones((2, 4, 3)), jnp.ones((2, 3)))  # wrong K for these params
  with pytest.raises(ValueError, match="not the params of a StitchingRetargetingNetwork"):
    sr.stitch({"params": {"dense": {}}}, kp, kp)
