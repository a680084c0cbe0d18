"""G (SPADE decoder) vs LivePortrait's PyTorch reference, spectral norm, and trainability."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax import metrics
from chatanyone_jax.convert import liveportrait as convert
from chatanyone_jax.layers import torch_compat as tc
from chatanyone_jax.ops.heatmaps import make_coordinate_grid
from chatanyone_jax.ops.resample import icnr_project, pixel_shuffle, upsample_nearest
from chatanyone_jax.render import presets
from chatanyone_jax.render.spade_generator import (
  SKIP_ALPHA_OFFSET,
  SPADEDecoder,
  SPADEResnetBlock,
  SpectralConv,
  source_skip_image,
)
from tests.chatanyone_jax.render import util

REF = "G_spade_decoder"
SN_LAYERS = [f"G_middle_{i}.conv_{j}" for i in range(6) for j in (0, 1)] + [
    f"up_{i}.conv_{j}" for i in (0, 1) for j in ("0", "1", "s")]


def _apply(model, variables, x):
  fn = lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"])
  return jax.jit(fn)(variables, x)


@pytest.fixture(scope="module")
def reference_run(load_ref):
  ref = load_ref(REF)
  cfg = presets.reference_reduced.spade_generator
  variables = convert.convert_spade_decoder(util.state_dict(ref), cfg)
  out, inter = _apply(SPADEDecoder(cfg), variables, tc.nchw_to_nhwc(ref["input/feature"]))
  return ref, variables, out, inter


def test_matches_torch_reference(reference_run):
  ref, _, out, inter = reference_run
  assert out.shape == (2, 128, 128, 3)
  np.testing.assert_allclose(tc.nhwc_to_nchw(out), ref["output/image"], atol=1e-4)
  checks = [(("fc",), "fc"), (("G_middle_0", "norm_0"), "G_middle_0.norm_0"),
            (("G_middle_0", "norm_0", "mlp_gamma"), "G_middle_0.norm_0.mlp_gamma"),
            (("G_middle_0", "conv_0"), "G_middle_0.conv_0"), (("up_0", "norm_s"), "up_0.norm_s"),
            (("up_0", "conv_s"), "up_0.conv_s"), (("conv_img",), "conv_img.0")]
  checks += [((f"G_middle_{i}",), f"G_middle_{i}") for i in range(6)]
  checks += [(("up_0",), "up_0"), (("up_1",), "up_1")]
  for path, key in checks:
    np.testing.assert_allclose(tc.nhwc_to_nchw(util.captured(inter, *path)), ref[f"intermediate/{key}"],
                               atol=1e-4, err_msg=key)
  np.testing.assert_allclose(tc.nhwc_to_nchw(util.sown(inter, "conv_img_out")), ref["intermediate/conv_img"],
                             atol=1e-4)  # pixel-shuffled, pre-sigmoid


def test_converted_effective_weights_match_torch(reference_run):
  ref, variables, _, _ = reference_run
  sd = util.state_dict(ref)
  for layer in SN_LAYERS:
    block, conv_name = layer.split(".")
    kernel = variables["params"][block][conv_name]["kernel"]
    np.testing.assert_allclose(np.transpose(kernel, (3, 2, 0, 1)), ref[f"effective/{layer}.weight"],
                               rtol=1e-5, atol=1e-7, err_msg=layer)
    sigma = convert.spectral_sigma(*(sd[f"{layer}.weight_{s}"] for s in ("orig", "u", "v")))
    np.testing.assert_allclose(sigma, ref[f"derived/sigma/{layer}"][0], rtol=1e-6, err_msg=layer)


def test_spectral_norm_mode_matches_torch_eval(reference_run):
  """weight_orig + stored u, v (no power iteration in eval) gives PyTorch's eval forward (block up_0)."""
  ref, _, _, _ = reference_run
  cfg = presets.reference_reduced.spade_generator
  variables = convert.convert_spade_decoder(util.state_dict(ref), cfg, spectral_norm=True)
  assert set(variables["batch_stats"]["up_0"]["conv_s"]) == {"u", "v"}
  block = SPADEResnetBlock(cfg.input_channels, spectral_norm=True)
  block_vars = {c: variables[c]["up_0"] for c in ("params", "batch_stats")}
  x = upsample_nearest(tc.nchw_to_nhwc(ref["intermediate/G_middle_5"]), 2)
  out = jax.jit(block.apply)(block_vars, x, tc.nchw_to_nhwc(ref["input/feature"]))
  np.testing.assert_allclose(tc.nhwc_to_nchw(out), ref["intermediate/up_0"], atol=1e-4)


def test_spectral_conv_train_step_is_one_power_iteration():
  layer = SpectralConv(4, 3)
  x = jax.random.normal(jax.random.key(0), (1, 5, 5, 3))
  v = util.random_variables(layer, x)
  y, upd = jax.jit(lambda v, x: layer.apply(v, x, train=True, mutable=["batch_stats"]))(v, x)
  w = np.asarray(v["params"]["kernel"]).transpose(3, 2, 0, 1).reshape(4, -1)  # PyTorch (out, in*kh*kw)
  u0 = np.asarray(v["batch_stats"]["u"])
  v1 = w.T @ u0
  v1 /= np.linalg.norm(v1)
  u1 = w @ v1
  u1 /= np.linalg.norm(u1)
  np.testing.assert_allclose(upd["batch_stats"]["v"], v1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(upd["batch_stats"]["u"], u1, rtol=1e-5, atol=1e-6)
  sigma = u1 @ w @ v1
  plain = jax.lax.conv_general_dilated(x, v["params"]["kernel"] / sigma, (1, 1), [(1, 1)] * 2,
                                       dimension_numbers=("NHWC", "HWIO", "NHWC")) + v["params"]["bias"]
  np.testing.assert_allclose(y, plain, atol=1e-5)
  y_eval = layer.apply({"params": v["params"], **upd}, x)  # eval reuses the stored u, v: same sigma
  np.testing.assert_allclose(y_eval, y, atol=1e-6)


def test_spectral_conv_gradients_reach_kernel_and_bias():
  layer = SpectralConv(4, 3)
  x = jax.random.normal(jax.random.key(0), (1, 5, 5, 3))
  v = util.random_variables(layer, x)
  loss = lambda p: util.weighted_sum(
      layer.apply({**v, "params": p}, x, train=True, mutable=["batch_stats"])[0])
  util.assert_gradients_reach_every_parameter(jax.grad(loss)(v["params"]))


def test_tiny_shapes_and_gradients():
  cfg = presets.tiny.spade_generator
  model = SPADEDecoder(cfg)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, cfg.input_channels))
  v = util.random_variables(model, x)

  @jax.jit
  def loss(params):
    y, upd = model.apply({"params": params}, x, train=True, mutable=["batch_stats"])
    return util.weighted_sum(y), (y, upd)

  grads, (y, upd) = jax.grad(loss, has_aux=True)(v["params"])
  assert y.shape == (2, 64, 64, 3)
  assert np.all(np.isfinite(y)) and float(y.min()) > 0 and float(y.max()) < 1
  util.assert_gradients_reach_every_parameter(grads)
  assert not upd, "the plain decoder has no state"


def test_source_skip_at_zero_flow_is_copying_the_source_and_a_flow_moves_it():
  """The skip image at W's identity grid is the bilinear upsampling of the source (the copy-the-source
  baseline, exactly); a flow of one source pixel to the right samples the next column."""
  src = jax.random.uniform(jax.random.key(0), (2, 16, 12, 3))
  identity = jnp.broadcast_to(make_coordinate_grid((4, 3)), (2, 4, 3, 2))
  upsampled = source_skip_image(src, identity, (32, 24))
  np.testing.assert_allclose(upsampled, jax.image.resize(src, (2, 32, 24, 3), "linear"), atol=1e-5)
  moved = source_skip_image(src, identity.at[..., 0].add(2 / 12), (16, 12))
  np.testing.assert_allclose(moved[:, :, :-1], src[:, :, 1:], atol=1e-5)
  np.testing.assert_allclose(moved[:, :, -1], src[:, :, -1], atol=1e-5)  # clamped at the border


def test_source_skip_decoder_starts_near_the_warped_source_and_trains_both_heads():
  cfg = dataclasses.replace(presets.tiny.spade_generator, source_skip=True)
  model = SPADEDecoder(cfg)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, cfg.input_channels))
  src = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  flow = jnp.broadcast_to(make_coordinate_grid((8, 8)), (2, 8, 8, 2))
  with pytest.raises(ValueError, match="source skip"):
    model.init(jax.random.key(2), x)
  v = jax.jit(lambda: model.init(jax.random.key(2), x, source=src, flow=flow))()
  y = jax.jit(lambda v: model.apply(v, x, source=src, flow=flow))(v)  # jitted: one compile, not one per op
  assert y.shape == (2, 64, 64, 3)
  skip = jax.image.resize(src, (2, 64, 64, 3), "linear")
  # alpha starts at sigmoid(SKIP_ALPHA_OFFSET) = 0.12 everywhere and G's image is in (0, 1).
  alpha = float(jax.nn.sigmoid(SKIP_ALPHA_OFFSET))
  assert 0 < float(jnp.max(jnp.abs(y - skip))) <= alpha + 1e-6
  v = util.random_variables(model, x, source=src, flow=flow)
  grads = jax.jit(jax.grad(lambda p, f: util.weighted_sum(model.apply({"params": p}, x, source=src, flow=f)),
                           argnums=(0, 1)))(v["params"], flow)
  util.assert_gradients_reach_every_parameter(grads[0])
  assert float(jnp.abs(grads[1]).sum()) > 0, "the flow gets a gradient through the skip"


def test_sub_pixel_head_starts_without_checkerboard_and_a_projection_removes_one():
  """G's conv_img is ICNR-initialised: the four sub-pixel kernels of each colour are equal, so its shuffled
  output starts constant on every 2x2 block (the nearest upsampling of one conv). A head with disagreeing
  sub-kernels draws period-2 stripes (a higher alternation index); projected onto ICNR (`icnr_project`) it
  is the upsampled mean head, with no stripes."""
  cfg = presets.tiny.spade_generator
  model = SPADEDecoder(cfg)
  x = jax.random.normal(jax.random.key(0), (1, 8, 8, cfg.input_channels))
  head = jax.jit(model.init)(jax.random.key(1), x)["params"]["conv_img"]
  kernel = np.asarray(head["kernel"]).reshape(3, 3, cfg.out_channels, 3, 4)  # pixel_shuffle's channel order
  np.testing.assert_array_equal(kernel, np.repeat(kernel[..., :1], 4, -1))
  assert float(np.std(kernel)) > 0 and not np.any(head["bias"])
  # A smooth image through a head whose sub-kernels disagree: stripes; through its projection: none.
  yy, xx = np.mgrid[0:32, 0:32] / 32.0
  smooth = np.stack([np.sin(3 * xx + 2 * yy), np.cos(2 * xx - yy)], -1)[None].astype(np.float32)
  kernel = np.zeros((1, 1, 2, 4), np.float32)
  kernel[0, 0, 0] = [1.0, 0.2, 1.0, 0.2]  # columns alternate: sub-kernels (i, 0) vs (i, 1)
  shuffled = lambda k: pixel_shuffle(jnp.einsum("nhwc,cd->nhwd", smooth, k[0, 0]), 2)
  striped = shuffled(kernel)
  projected, _ = icnr_project(kernel, None, 2)
  flat = shuffled(projected)
  assert float(metrics.alternation(striped)[0]) > 1.5 * float(metrics.alternation(flat)[0])
  np.testing.assert_allclose(flat, upsample_nearest(jnp.asarray(smooth[..., :1] * 0.6), 2), atol=1e-6)
