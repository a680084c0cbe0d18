"""W (warping network + dense motion) vs LivePortrait's PyTorch reference, and trainability."""

import jax
import numpy as np
import pytest

from chatanyone_jax.convert import liveportrait as convert
from chatanyone_jax.layers import torch_compat as tc
from chatanyone_jax.render import presets
from chatanyone_jax.render.warping_network import WarpingNetwork
from tests.chatanyone_jax.render import util

pytestmark = pytest.mark.xdist_group(__name__)  # one worker builds the module fixtures

REF = "W_warping_network"
DM = "dense_motion_network"


@pytest.fixture(scope="module")
def reference_run(load_ref):
  ref = load_ref(REF)
  cfg = presets.reference_reduced.warping_network
  variables = convert.convert_warping_network(util.state_dict(ref), cfg)
  model = WarpingNetwork(cfg)
  out, inter = jax.jit(lambda v, *a: model.apply(v, *a, capture_intermediates=True,
                                                 mutable=["intermediates"]))(
      variables, tc.nchw_to_nhwc(ref["input/feature_3d"]), ref["input/kp_driving"], ref["input/kp_source"])
  return ref, out, inter


def test_outputs_match_torch_reference(reference_run):
  ref, out, _ = reference_run
  assert out["occlusion_map"].shape == (2, 16, 16, 1)
  assert out["deformation"].shape == (2, 8, 16, 16, 3)
  assert out["out"].shape == (2, 16, 16, 16)
  np.testing.assert_allclose(tc.nhwc_to_nchw(out["occlusion_map"]), ref["output/occlusion_map"], atol=1e-4)
  np.testing.assert_allclose(out["deformation"], ref["output/deformation"], atol=1e-4)
  np.testing.assert_allclose(tc.nhwc_to_nchw(out["out"]), ref["output/out"], atol=1e-4)


def test_dense_motion_internals_match_torch_reference(reference_run):
  ref, _, inter = reference_run
  r = lambda key: ref[f"intermediate/{DM}{key}"]
  # compress + BN (+ ReLU) of the volume
  np.testing.assert_allclose(tc.nhwc_to_nchw(util.captured(inter, DM, "norm")), r(".norm"), atol=1e-5)
  # sparse motions (B, K+1, D, H, W, 3): same layout in both
  np.testing.assert_allclose(util.sown(inter, DM, "sparse_motion"), r(".create_sparse_motions"), atol=1e-6)
  # deformed features: mine (B, D, H, W, K+1, c), PyTorch (B, K+1, c, D, H, W)
  deformed = np.transpose(util.sown(inter, DM, "deformed_feature"), (0, 4, 5, 1, 2, 3))
  np.testing.assert_allclose(deformed, r(".create_deformed_feature"), atol=1e-5)
  # heatmaps: mine (B, D, H, W, K+1), PyTorch (B, K+1, 1, D, H, W)
  heat = np.transpose(util.sown(inter, DM, "heatmap"), (0, 4, 1, 2, 3))[:, :, None]
  np.testing.assert_allclose(heat, r(".create_heatmap_representations"), atol=1e-5)
  # hourglass input (channel k (1 + compress) + j) and every encoder level
  encoder = util.sown(inter, DM, "hourglass", "encoder")
  for i, level in enumerate(encoder):
    np.testing.assert_allclose(tc.nhwc_to_nchw(level), r(f".hourglass.encoder/{i}"), atol=1e-4,
                               err_msg=f"encoder level {i}")
  np.testing.assert_allclose(tc.nhwc_to_nchw(util.sown(inter, DM, "hourglass_out")), r(".hourglass"),
                             atol=1e-4)
  np.testing.assert_allclose(tc.nhwc_to_nchw(util.sown(inter, DM, "mask_logits")), r(".mask"), atol=1e-4)
  dense = inter["intermediates"][DM]["__call__"][0]  # the dense-motion dict
  np.testing.assert_allclose(tc.nhwc_to_nchw(dense["mask"]), r("/mask"), atol=1e-5)
  # occlusion: prediction folded with channel f * D + d, then conv2d k7
  np.testing.assert_allclose(tc.nhwc_to_nchw(util.sown(inter, DM, "occlusion_logits")), r(".occlusion"),
                             atol=1e-4)


def test_warp_and_decoder_intermediates_match_torch_reference(reference_run):
  ref, _, inter = reference_run
  np.testing.assert_allclose(tc.nhwc_to_nchw(util.sown(inter, "deform_input")),
                             ref["intermediate/deform_input"], atol=1e-5)
  for name in ("third", "fourth"):
    np.testing.assert_allclose(tc.nhwc_to_nchw(util.captured(inter, name)), ref[f"intermediate/{name}"],
                               atol=1e-4, err_msg=name)


def test_rejects_wrong_keypoint_count():
  cfg = presets.tiny.warping_network
  feature = np.zeros((1, cfg.dense_motion.reshape_depth, 8, 8, cfg.reshape_channel), np.float32)
  kp = np.zeros((1, cfg.num_kp + 1, 3), np.float32)
  with pytest.raises(ValueError, match="kp_driving"):
    jax.eval_shape(lambda: WarpingNetwork(cfg).init(jax.random.key(0), feature, kp, kp))


@pytest.mark.parametrize("decoder_features", [0, 4])  # 4: the hourglass ends narrower (with_narrow_decoder)
def test_tiny_shapes_and_gradients(decoder_features):
  cfg = presets.with_narrow_decoder(presets.tiny, decoder_features).warping_network
  model = WarpingNetwork(cfg)
  k0, k1, k2 = jax.random.split(jax.random.key(0), 3)
  d, c = cfg.dense_motion.reshape_depth, cfg.reshape_channel
  feature = jax.random.normal(k0, (2, d, 8, 8, c))
  kp_d, kp_s = (0.3 * jax.random.normal(k, (2, cfg.num_kp, 3)) for k in (k1, k2))
  v = util.random_variables(model, feature, kp_d, kp_s)

  @jax.jit
  def loss(params):
    out, upd = model.apply({"params": params, "batch_stats": v["batch_stats"]}, feature, kp_d, kp_s,
                           train=True, mutable=["batch_stats"])
    return util.weighted_sum(out), (out, upd)

  grads, (out, upd) = jax.grad(loss, has_aux=True)(v["params"])
  feats = cfg.block_expansion * 2 ** cfg.num_down_blocks
  assert out["out"].shape == (2, 8, 8, feats)
  assert out["deformation"].shape == (2, d, 8, 8, 3)
  assert out["occlusion_map"].shape == (2, 8, 8, 1)
  assert all(np.all(np.isfinite(x)) for x in out.values())
  util.assert_gradients_reach_every_parameter(grads)
  assert jax.tree.structure(upd["batch_stats"]) == jax.tree.structure(v["batch_stats"])
  kernel = v["params"][DM]["hourglass"]["decoder_conv"]["kernel"]
  assert kernel.shape[-1] == (decoder_features or kernel.shape[-2])
