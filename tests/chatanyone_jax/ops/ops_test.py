"""Pure ops: parity with PyTorch reference vectors and known values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax import ops
from chatanyone_jax.layers.torch_compat import nchw_to_nhwc, nhwc_to_nchw


def test_kp2gaussian_matches_torch(ops_ref):
  kp = ops_ref["kp2gaussian/kp"]  # (B, K, 3)
  want = ops_ref["kp2gaussian/output"]  # (B, K, D, H, W)
  got = jax.jit(ops.kp2gaussian, static_argnums=1)(jnp.asarray(kp), (4, 6, 5))  # (B, D, H, W, K)
  np.testing.assert_allclose(np.moveaxis(np.asarray(got), -1, 1), want, atol=1e-6, rtol=1e-5)


def test_kp2gaussian_peak_and_2d():
  kp = jnp.array([[[0.0, 0.0]]])
  heat = ops.kp2gaussian(kp, (5, 5))
  assert heat.shape == (1, 5, 5, 1)
  assert float(heat[0, 2, 2, 0]) == pytest.approx(1.0)
  assert float(heat[0, 0, 0, 0]) == pytest.approx(np.exp(-0.5 * 2 / 0.01), abs=1e-12)
  with pytest.raises(ValueError):
    ops.kp2gaussian(kp, (3, 5, 5))


@pytest.mark.parametrize("case,size", [
    ("interpolate2d_nearest_size_10x12", (10, 12)),
    ("interpolate2d_nearest_size_5x6", (5, 6)),
    ("upsample2d_nearest_x2", (10, 12)),
    ("interpolate5d_nearest_scale_1_2_2", (4, 10, 12)),
])
def test_nearest_matches_torch(ops_ref, case, size):
  x = nchw_to_nhwc(ops_ref[f"{case}/input"])
  got = nhwc_to_nchw(ops.resize_nearest(jnp.asarray(x), size))
  np.testing.assert_array_equal(got, ops_ref[f"{case}/output"])


def test_nearest_non_integer_ratio_uses_legacy_floor():
  x = jnp.arange(5.0).reshape(1, 5, 1, 1)
  got = ops.resize_nearest(x, (3, 1))[0, :, 0, 0]
  np.testing.assert_array_equal(got, [0.0, 1.0, 3.0])  # floor(i * 5 / 3)
  np.testing.assert_array_equal(ops.upsample_nearest(x, (2, 1))[0, :, 0, 0],
                                np.repeat(np.arange(5.0), 2))


def test_pixel_shuffle_matches_torch_and_inverts(ops_ref):
  x = nchw_to_nhwc(ops_ref["pixel_shuffle_r2/input"])
  got = ops.pixel_shuffle(jnp.asarray(x), 2)
  np.testing.assert_array_equal(nhwc_to_nchw(got), ops_ref["pixel_shuffle_r2/output"])
  np.testing.assert_array_equal(ops.pixel_unshuffle(got, 2), x)
  with pytest.raises(ValueError):
    ops.pixel_shuffle(jnp.zeros((1, 2, 2, 6)), 2)


def test_instance_norm_matches_torch(ops_ref):
  x = nchw_to_nhwc(ops_ref["instance_norm2d/input"])
  got = nhwc_to_nchw(ops.instance_norm(jnp.asarray(x)))
  np.testing.assert_allclose(got, ops_ref["instance_norm2d/output"], atol=1e-5)


def test_grn_matches_torch(ops_ref):
  got = ops.grn(jnp.asarray(ops_ref["grn/input"]), ops_ref["grn/gamma"], ops_ref["grn/beta"])
  np.testing.assert_allclose(got, ops_ref["grn/output"], atol=1e-5, rtol=1e-5)


def test_layer_norm_channels_first_matches_torch(ops_ref):
  x = nchw_to_nhwc(ops_ref["layernorm_channels_first/input"])
  got = ops.layer_norm_channels(jnp.asarray(x), ops_ref["layernorm_channels_first/weight"],
                                ops_ref["layernorm_channels_first/bias"])
  np.testing.assert_allclose(nhwc_to_nchw(got), ops_ref["layernorm_channels_first/output"],
                             atol=1e-5)


def test_gelu_and_leaky_relu_conventions(ops_ref):
  """LivePortrait uses exact GELU; jax.nn.gelu's default is the tanh form."""
  x = ops_ref["gelu_exact/input"]
  np.testing.assert_allclose(jax.nn.gelu(x, approximate=False), ops_ref["gelu_exact/output"],
                             atol=1e-6)
  assert np.abs(np.asarray(jax.nn.gelu(x)) - ops_ref["gelu_exact/output"]).max() > 1e-5
  x = ops_ref["leaky_relu/input"]
  np.testing.assert_allclose(jax.nn.leaky_relu(x, 0.01), ops_ref["leaky_relu/output_0p01"], atol=1e-7)
  np.testing.assert_allclose(jax.nn.leaky_relu(x, 0.2), ops_ref["leaky_relu/output_0p2"], atol=1e-7)


def test_adain_transfers_statistics():
  k1, k2 = jax.random.split(jax.random.key(0))
  content = jax.random.normal(k1, (2, 8, 8, 3)) * 3 + 1
  style = jax.random.normal(k2, (2, 5, 6, 3)) * jnp.array([0.5, 2.0, 1.0]) + jnp.array([4., -1., 0.])
  out = ops.adain_from_style(content, style)
  m_out, s_out = ops.channel_stats(out)
  m_sty, s_sty = ops.channel_stats(style)
  np.testing.assert_allclose(m_out, m_sty, atol=1e-4)
  np.testing.assert_allclose(s_out, s_sty, rtol=1e-3)
  # With unit scale and zero shift, adain is plain instance norm.
  np.testing.assert_allclose(ops.adain(content, jnp.ones((2, 3)), jnp.zeros((2, 3))),
                             ops.instance_norm(content), atol=1e-6)


def test_modulate():
  x = jnp.ones((2, 3, 4))
  shift = jnp.full((2, 4), 0.5)
  scale = jnp.full((2, 4), 1.0)
  np.testing.assert_allclose(ops.modulate(x, shift, scale), 2.5)
  np.testing.assert_allclose(ops.modulate(x, jnp.zeros((2, 3, 4)), jnp.zeros((2, 3, 4))), x)


def test_timestep_embedding_values():
  emb = ops.timestep_embedding(jnp.array([0, 1, 500]), 8)
  assert emb.shape == (3, 8)
  np.testing.assert_allclose(emb[0], [1, 1, 1, 1, 0, 0, 0, 0], atol=1e-7)
  freqs = np.exp(-np.log(10000.0) * np.arange(4) / 4)
  want = np.concatenate([np.cos(500 * freqs), np.sin(500 * freqs)])
  np.testing.assert_allclose(emb[2], want, atol=1e-4)
  odd = ops.timestep_embedding(jnp.array([3.5]), 7)
  assert odd.shape == (1, 7) and float(odd[0, -1]) == 0.0
  # Distinct timesteps give distinct embeddings (what the DiT needs).
  e = ops.timestep_embedding(jnp.arange(1000), 256)
  d = np.linalg.norm(np.asarray(e[1:] - e[:-1]), axis=-1)
  assert d.min() > 1e-2
  assert ops.sinusoidal_positions(10, 16).shape == (10, 16)


def test_pose_matches_torch(ops_ref):
  r = {k.split("/", 1)[1]: v for k, v in ops_ref.items() if k.startswith("pose/")}
  pitch = ops.headpose_from_bins(jnp.asarray(r["pitch_logits"]))
  yaw = ops.headpose_from_bins(jnp.asarray(r["yaw_logits"]))
  roll = ops.headpose_from_bins(jnp.asarray(r["roll_logits"]))
  np.testing.assert_allclose(pitch, r["pitch_deg"], atol=1e-4)
  np.testing.assert_allclose(yaw, r["yaw_deg"], atol=1e-4)
  np.testing.assert_allclose(roll, r["roll_deg"], atol=1e-4)
  rot = ops.rotation_matrix(pitch, yaw, roll)
  np.testing.assert_allclose(rot, r["rotation"], atol=1e-5)
  b = r["kp"].shape[0]
  kp = ops.transform_keypoints(jnp.asarray(r["kp"]).reshape(b, -1, 3), rot,
                               jnp.asarray(r["exp"]).reshape(b, -1, 3), jnp.asarray(r["scale"]),
                               jnp.asarray(r["t"]))
  np.testing.assert_allclose(kp, r["kp_transformed"], atol=1e-5)


def test_rotation_examples_match_torch(ops_ref):
  a = ops_ref["rotation_examples/angles"]
  rot = ops.rotation_matrix(a[:, 0], a[:, 1], a[:, 2])
  np.testing.assert_allclose(rot, ops_ref["rotation_examples/rotation"], atol=1e-6)
  np.testing.assert_allclose(rot @ jnp.swapaxes(rot, -1, -2), np.broadcast_to(np.eye(3), rot.shape),
                             atol=1e-6)


def test_resize_bilinear_identity_average_and_constant():
  x = jax.random.normal(jax.random.key(0), (2, 8, 6, 3))
  assert ops.resize_bilinear(x, (8, 6)) is x
  # A linear ramp over pixel centres stays linear: output pixel j sits at input (j + 0.5) * s - 0.5.
  ramp = jnp.broadcast_to(jnp.arange(16.0)[None, None, :, None], (1, 4, 16, 1))
  half = ops.resize_bilinear(ramp, (4, 8))[0, 0, 1:-1, 0]  # interior columns (edges are clamped)
  np.testing.assert_allclose(half, (np.arange(1, 7) + 0.5) * 2 - 0.5, atol=1e-5)
  up = ops.resize_bilinear(ramp, (4, 32))[0, 0, 2:-2, 0]
  np.testing.assert_allclose(up, (np.arange(2, 30) + 0.5) * 0.5 - 0.5, atol=1e-5)
  const = jnp.full((1, 5, 7, 2), 0.3)
  np.testing.assert_allclose(ops.resize_bilinear(const, (11, 13)), 0.3, atol=1e-6)
