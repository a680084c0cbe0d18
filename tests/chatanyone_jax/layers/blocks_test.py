"""Renderer blocks vs LivePortrait's PyTorch intermediates, and trainability."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax.layers import (
  BatchNorm,
  DownBlock2d,
  DownBlock3d,
  ResBlock2d,
  ResBlock3d,
  SameBlock2d,
  UpBlock2d,
  UpBlock3d,
  blocks,
)
from chatanyone_jax.layers import torch_compat as tc
from chatanyone_jax.layers.blocks import DepthFoldedConv3d, DepthwiseConv2d, batch_norm, conv
from chatanyone_jax.ops.resample import upsample_nearest

F_REF = "F_appearance_feature_extractor"
W_REF = "W_warping_network"


def _apply(module, params, stats, x):
  return jax.jit(lambda p, s, x: module.apply({"params": p, "batch_stats": s}, x))(params, stats, x)


def test_same_and_down_block2d_match_torch(load_ref):
  ref = load_ref(F_REF)
  x = tc.nchw_to_nhwc(ref["input/source_image"])
  p, s = tc.conv_bn_block(ref, "param/first")
  first = _apply(SameBlock2d(8), p, s, x)
  np.testing.assert_allclose(tc.nhwc_to_nchw(first), ref["intermediate/first"], atol=1e-5)
  h = tc.nchw_to_nhwc(ref["intermediate/first"])
  for i, feats in enumerate((16, 32)):
    p, s = tc.conv_bn_block(ref, f"param/down_blocks.{i}")
    h = _apply(DownBlock2d(feats), p, s, h)
    np.testing.assert_allclose(tc.nhwc_to_nchw(h), ref[f"intermediate/down_blocks.{i}"], atol=1e-5)


def test_res_block3d_matches_torch(load_ref):
  ref = load_ref(F_REF)
  second = ref["intermediate/second"]  # (B, 32, 16, 16), channel = c * D + d
  b, _, hh, ww = second.shape
  vol = tc.nchw_to_nhwc(second.reshape(b, 4, 8, hh, ww))  # (B, D, H, W, C)
  p, s = tc.res_block(ref, "param/resblocks_3d.3dr0")
  out = _apply(ResBlock3d(), p, s, vol)
  np.testing.assert_allclose(tc.nhwc_to_nchw(out), ref["intermediate/resblocks_3d.3dr0"], atol=1e-5)
  np.testing.assert_allclose(tc.nhwc_to_nchw(out), ref["output/feature_3d"], atol=1e-5)


class _HourglassDecoderTail(nn.Module):
  """LivePortrait's hourglass decoder, built from UpBlock3d, for the parity test."""
  widths: tuple[int, ...]

  @nn.compact
  def __call__(self, skips):
    out = skips[-1]
    for i, w in enumerate(self.widths):
      out = UpBlock3d(w, name=f"up_blocks_{i}")(out)
      out = jnp.concatenate([out, skips[-2 - i]], axis=-1)
    out = conv(out.shape[-1], 3, 3, name="conv")(out)
    return nn.relu(batch_norm(False, "norm")(out))


def test_down_and_up_block3d_match_torch_hourglass(load_ref):
  ref = load_ref(W_REF)
  pre = "param/dense_motion_network.hourglass"
  enc = [tc.nchw_to_nhwc(ref[f"intermediate/dense_motion_network.hourglass.encoder/{i}"])
         for i in range(4)]
  for i, w in enumerate((8, 16, 16)):
    p, s = tc.conv_bn_block(ref, f"{pre}.encoder.down_blocks.{i}")
    np.testing.assert_allclose(_apply(DownBlock3d(w), p, s, enc[i]), enc[i + 1], atol=1e-5)
  params, stats = {}, {}
  for i in range(3):
    params[f"up_blocks_{i}"], stats[f"up_blocks_{i}"] = tc.conv_bn_block(
        ref, f"{pre}.decoder.up_blocks.{i}")
  params["conv"] = tc.conv_params(ref, f"{pre}.decoder.conv")
  params["norm"], stats["norm"] = tc.batchnorm_params(ref, f"{pre}.decoder.norm")
  out = _apply(_HourglassDecoderTail((16, 8, 4)), params, stats, enc)
  np.testing.assert_allclose(tc.nhwc_to_nchw(out), ref["intermediate/dense_motion_network.hourglass"],
                             atol=1e-5)


def test_batchnorm_train_mode_follows_pytorch():
  x = jax.random.normal(jax.random.key(0), (4, 5, 6, 3)) * 2 + 1
  bn = BatchNorm()
  v = bn.init(jax.random.key(1), x)
  y, upd = bn.apply(v, x, train=True, mutable=["batch_stats"])
  xn = np.asarray(x).reshape(-1, 3)
  mean, var_b, var_u = xn.mean(0), xn.var(0), xn.var(0, ddof=1)
  np.testing.assert_allclose(y, (x - mean) / np.sqrt(var_b + 1e-5), atol=1e-5)
  np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * mean, atol=1e-6)
  np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * var_u, atol=1e-6)
  # Eval mode with the updated statistics uses them, not the batch.
  y_eval = bn.apply({"params": v["params"], **upd}, x)
  rm, rv = upd["batch_stats"]["mean"], upd["batch_stats"]["var"]
  np.testing.assert_allclose(y_eval, (x - rm) / np.sqrt(rv + 1e-5), atol=1e-5)


BLOCKS = [
    (SameBlock2d(8), (2, 8, 8, 3), (2, 8, 8, 8)),
    (SameBlock2d(8, lrelu=True), (2, 8, 8, 3), (2, 8, 8, 8)),
    (DownBlock2d(8), (2, 8, 8, 3), (2, 4, 4, 8)),
    (UpBlock2d(8), (2, 4, 4, 3), (2, 8, 8, 8)),
    (ResBlock2d(), (2, 8, 8, 4), (2, 8, 8, 4)),
    (DownBlock3d(8), (2, 4, 8, 8, 3), (2, 4, 4, 4, 8)),
    (UpBlock3d(8), (2, 4, 4, 4, 3), (2, 4, 8, 8, 8)),
    (ResBlock3d(), (2, 4, 8, 8, 4), (2, 4, 8, 8, 4)),
]


@pytest.mark.parametrize("block,in_shape,out_shape", BLOCKS, ids=lambda b: getattr(b, "__name__", None))
def test_block_shapes_and_gradients_reach_every_parameter(block, in_shape, out_shape):
  x = jax.random.normal(jax.random.key(0), in_shape)
  v = block.init(jax.random.key(1), x)

  @jax.jit
  def loss(params):
    y, _ = block.apply({"params": params, "batch_stats": v["batch_stats"]}, x, train=True,
                       mutable=["batch_stats"])
    return jnp.mean(y * jnp.arange(y.size).reshape(y.shape) / y.size), y

  (val, y), grads = jax.value_and_grad(loss, has_aux=True)(v["params"])
  assert y.shape == out_shape
  assert np.isfinite(float(val))
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert float(jnp.abs(g).max()) > 0, f"no gradient reaches {jax.tree_util.keystr(path)}"


def _same_variables_as_nn_conv(module, plain, x, use_bias: bool, features: int) -> dict:
  """Asserts `module` initialises exactly as the nn.Conv `plain` (names, shapes, values); returns plain's
  variables with a non-zero bias (so that outputs check it too)."""
  v_module, v_plain = module.init(jax.random.key(1), x), plain.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, v_module) == jax.tree.map(jnp.shape, v_plain)
  jax.tree.map(np.testing.assert_array_equal, v_module, v_plain)
  if use_bias:
    v_plain = {"params": {**v_plain["params"], "bias": jnp.arange(float(features))}}
  return v_plain


@pytest.mark.parametrize("kernel,padding,use_bias", [(7, 3, True), (3, 1, True), (1, 0, False), (3, 0, True)])
def test_depth_folded_conv3d_is_nn_conv(kernel, padding, use_bias):
  """`conv(..., ndim=3)`: the same parameters (names, shapes, initial values) and outputs as nn.Conv."""
  x = jax.random.normal(jax.random.key(0), (2, 6, 9, 7, 5))
  folded = conv(4, 3, kernel, padding=padding, use_bias=use_bias)
  plain = nn.Conv(4, (kernel,) * 3, padding=[(padding, padding)] * 3, use_bias=use_bias)
  v_plain = _same_variables_as_nn_conv(folded, plain, x, use_bias, 4)
  y = folded.apply(v_plain, x)
  np.testing.assert_allclose(y, plain.apply(v_plain, x), rtol=1e-5, atol=1e-5)
  assert y.shape == (2, *(n + 2 * padding - kernel + 1 for n in (6, 9, 7)), 4)


@pytest.mark.parametrize("kernel,padding,use_bias,dtype", [(7, 3, True, None), (3, 0, False, None),
                                                           (7, 3, True, jnp.bfloat16)])
def test_depthwise_conv2d_is_grouped_nn_conv(kernel, padding, use_bias, dtype):
  """ConvNeXt's dwconv: the same parameters (names, shapes, initial values) and outputs as nn.Conv with
  feature_group_count = C; bfloat16 accumulates in float32 (within bfloat16's rounding of the result)."""
  x = jax.random.normal(jax.random.key(0), (2, 11, 9, 6))
  dw = DepthwiseConv2d(kernel, padding, use_bias=use_bias, dtype=dtype)
  plain = nn.Conv(6, (kernel, kernel), padding=[(padding, padding)] * 2, feature_group_count=6,
                  use_bias=use_bias, dtype=dtype)
  v_plain = _same_variables_as_nn_conv(dw, plain, x, use_bias, 6)
  y = dw.apply(v_plain, x)
  want = nn.Conv(6, (kernel, kernel), padding=[(padding, padding)] * 2, feature_group_count=6,
                 use_bias=use_bias).apply(v_plain, x)  # float32
  tol = 1e-5 if dtype is None else 2e-2
  assert y.dtype == (dtype or jnp.float32)
  np.testing.assert_allclose(np.asarray(y, np.float32), want, rtol=tol, atol=tol * 4)
  assert y.shape == (2, 11 + 2 * padding - kernel + 1, 9 + 2 * padding - kernel + 1, 6)
  # Gradients (the grouped convolution's, through a custom VJP) w.r.t. the input and every parameter.
  loss = lambda m: lambda v, x: jnp.sum(jnp.sin(m.apply(v, x).astype(jnp.float32)))  # noqa: E731
  g_dw = jax.grad(loss(dw), argnums=(0, 1))(v_plain, x)
  g_plain = jax.grad(loss(plain), argnums=(0, 1))(v_plain, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                                       rtol=tol * 4, atol=tol * 4), g_dw, g_plain)


@pytest.mark.parametrize("kernel,padding,min_flops", [(3, 1, 0), (3, 1, 1e9), (5, 2, 0)])
def test_upsampling_conv3d_is_nearest_upsample_then_nn_conv(kernel, padding, min_flops, monkeypatch):
  """`DepthFoldedConv3d(upsample=True)` (UpBlock3d's conv; at 3x3 from POLYPHASE_MIN_FLOPS on the
  four-phase `upsampled_conv3x3`, otherwise an explicit upsampling): the values and the gradients of
  nearest (1, 2, 2) upsampling followed by nn.Conv with the same parameters, odd H and W included."""
  monkeypatch.setattr(blocks, "POLYPHASE_MIN_FLOPS", min_flops)
  x = jax.random.normal(jax.random.key(0), (2, 4, 5, 7, 6))
  folded = DepthFoldedConv3d(3, kernel, padding, upsample=True)
  plain = nn.Conv(3, (kernel,) * 3, padding=[(padding, padding)] * 3)
  v = {"params": {"kernel": jax.random.normal(jax.random.key(1), (kernel,) * 3 + (6, 3)),
                  "bias": jnp.arange(3.0)}}
  up = lambda x: upsample_nearest(x, (1, 2, 2))
  np.testing.assert_allclose(folded.apply(v, x), plain.apply(v, up(x)), rtol=1e-5, atol=1e-4)
  loss = lambda m, pre: lambda p, x: jnp.sum(jnp.sin(m.apply(p, pre(x))))
  g_folded = jax.grad(loss(folded, lambda x: x), argnums=(0, 1))(v, x)
  g_plain = jax.grad(loss(plain, up), argnums=(0, 1))(v, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3), g_folded, g_plain)
