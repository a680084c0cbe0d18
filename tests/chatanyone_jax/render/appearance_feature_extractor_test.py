"""F (appearance feature extractor) vs LivePortrait's PyTorch reference, and trainability."""

import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax.convert import liveportrait as convert
from chatanyone_jax.layers import torch_compat as tc
from chatanyone_jax.render import presets
from chatanyone_jax.render.appearance_feature_extractor import (
  AppearanceFeatureExtractor,
  channels_to_volume,
  volume_to_channels,
)
from tests.chatanyone_jax.render import util

REF = "F_appearance_feature_extractor"


def test_matches_torch_reference(load_ref):
  ref = load_ref(REF)
  cfg = presets.reference_reduced.appearance_feature_extractor
  variables = convert.convert_appearance_feature_extractor(util.state_dict(ref), cfg)
  model = AppearanceFeatureExtractor(cfg)
  out, inter = jax.jit(lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]))(
      variables, tc.nchw_to_nhwc(ref["input/source_image"]))
  assert out.shape == (2, 8, 16, 16, 4)  # (B, D, H, W, C)
  np.testing.assert_allclose(tc.nhwc_to_nchw(out), ref["output/feature_3d"], atol=1e-5)
  for mine, theirs in [("first", "first"), ("down_blocks_0", "down_blocks.0"),
                       ("down_blocks_1", "down_blocks.1"), ("second", "second")]:
    np.testing.assert_allclose(tc.nhwc_to_nchw(util.captured(inter, mine)), ref[f"intermediate/{theirs}"],
                               atol=1e-5, err_msg=mine)
  np.testing.assert_allclose(tc.nhwc_to_nchw(util.captured(inter, "resblocks_3d_0", "norm1")),
                             ref["intermediate/resblocks_3d.3dr0.norm1"], atol=1e-5)


def test_volume_view_follows_pytorch_channel_order():
  x = np.arange(2 * 3 * 5 * 12, dtype=np.float32).reshape(2, 12, 3, 5)  # NCHW, C*D = 4*3
  torch_view = x.reshape(2, 4, 3, 3, 5)  # (B, C, D, H, W): channel = c * D + d
  vol = channels_to_volume(jnp.asarray(tc.nchw_to_nhwc(x)), depth=3)
  np.testing.assert_array_equal(tc.nhwc_to_nchw(vol), torch_view)
  np.testing.assert_array_equal(volume_to_channels(vol), tc.nchw_to_nhwc(x))


def test_tiny_shapes_and_gradients():
  cfg = presets.tiny.appearance_feature_extractor
  model = AppearanceFeatureExtractor(cfg)
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  v = util.random_variables(model, x)

  @jax.jit
  def loss(params):
    y, upd = model.apply({"params": params, "batch_stats": v["batch_stats"]}, x, train=True,
                         mutable=["batch_stats"])
    return util.weighted_sum(y), (y, upd)

  grads, (y, upd) = jax.grad(loss, has_aux=True)(v["params"])
  assert y.shape == (2, cfg.reshape_depth, 8, 8, cfg.reshape_channel)
  assert np.all(np.isfinite(y))
  util.assert_gradients_reach_every_parameter(grads)
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), upd["batch_stats"], v["batch_stats"])
  assert all(m > 0 for m in jax.tree.leaves(moved)), "train mode must update every running statistic"
