"""M (motion extractor, ConvNeXt-V2) vs LivePortrait's PyTorch reference, pose post-processing, grads."""

import jax
import numpy as np

from chatanyone_jax.convert import liveportrait as convert
from chatanyone_jax.layers import torch_compat as tc
from chatanyone_jax.ops import headpose_from_bins, rotation_matrix, transform_keypoints
from chatanyone_jax.render import presets
from chatanyone_jax.render.motion_extractor import MotionExtractor
from tests.chatanyone_jax.render import util

REF = "M_motion_extractor"


def test_matches_torch_reference_and_pose(load_ref):
  ref = load_ref(REF)
  cfg = presets.reference_reduced.motion_extractor
  variables = convert.convert_motion_extractor(util.state_dict(ref), cfg)
  model = MotionExtractor(cfg)

  @jax.jit
  def forward(v, x):
    out, inter = model.apply(v, x, capture_intermediates=True, mutable=["intermediates"])
    b, k = x.shape[0], cfg.num_kp
    pitch, yaw, roll = (headpose_from_bins(out[a]) for a in ("pitch", "yaw", "roll"))
    rot = rotation_matrix(pitch, yaw, roll)
    kp, exp = out["kp"].reshape(b, k, 3), out["exp"].reshape(b, k, 3)
    derived = {"pitch_deg": pitch, "yaw_deg": yaw, "roll_deg": roll, "rotation": rot,
               "kp_bk3": kp, "exp_bk3": exp,
               "kp_transformed": transform_keypoints(kp, rot, exp, out["scale"], out["t"])}
    return out, inter, derived

  out, inter, derived = forward(variables, tc.nchw_to_nhwc(ref["input/x"]))
  assert set(out) == {"pitch", "yaw", "roll", "t", "exp", "scale", "kp"}
  for key, value in out.items():
    np.testing.assert_allclose(value, ref[f"output/{key}"], atol=1e-5, err_msg=key)
  np.testing.assert_allclose(tc.nhwc_to_nchw(util.captured(inter, "stem_norm")),
                             ref["intermediate/detector.downsample_layers.0"], atol=1e-5)
  np.testing.assert_allclose(tc.nhwc_to_nchw(util.captured(inter, "stages_0_0", "dwconv")),
                             ref["intermediate/detector.stages.0.0.dwconv"], atol=1e-5)
  np.testing.assert_allclose(util.captured(inter, "stages_0_0", "grn"),  # NHWC in both
                             ref["intermediate/detector.stages.0.0.grn"], atol=1e-5)
  for i in range(4):
    np.testing.assert_allclose(tc.nhwc_to_nchw(util.sown(inter, f"stages_{i}")),
                               ref[f"intermediate/detector.stages.{i}"], atol=1e-5, err_msg=f"stage {i}")
  np.testing.assert_allclose(util.sown(inter, "norm_out"), ref["intermediate/detector.norm"], atol=1e-5)
  for key, value in derived.items():
    np.testing.assert_allclose(value, ref[f"derived/{key}"], atol=1e-4 if key.endswith("deg") else 1e-5,
                               err_msg=key)


def test_tiny_shapes_and_gradients():
  cfg = presets.tiny.motion_extractor
  model = MotionExtractor(cfg)
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  params = util.random_variables(model, x)["params"]  # GRN gamma, beta != 0 (0 is the identity)

  @jax.jit
  def loss(params):
    out = model.apply({"params": params}, x)
    return util.weighted_sum(out), out

  grads, out = jax.grad(loss, has_aux=True)(params)
  k = cfg.num_kp
  shapes = {key: v.shape for key, v in out.items()}
  assert shapes == {"pitch": (2, 66), "yaw": (2, 66), "roll": (2, 66), "t": (2, 3), "exp": (2, 3 * k),
                    "scale": (2, 1), "kp": (2, 3 * k)}
  assert all(np.all(np.isfinite(v)) for v in out.values())
  util.assert_gradients_reach_every_parameter(grads)
