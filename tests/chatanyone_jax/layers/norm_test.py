"""SPADE vs LivePortrait, AdaIN and AdaLN-Zero behaviour."""

import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax import ops
from chatanyone_jax.layers import SPADE, AdaIN, AdaLNZero, AdaLNZeroFinal
from chatanyone_jax.layers import torch_compat as tc


def test_spade_matches_torch(load_ref):
  ref = load_ref("G_spade_decoder")
  x = tc.nchw_to_nhwc(ref["intermediate/fc"])  # (B, 16, 16, 32)
  seg = tc.nchw_to_nhwc(ref["input/feature"])  # the segmap of every SPADE in G
  params = tc.spade(ref, "param/G_middle_0.norm_0")
  out = jax.jit(SPADE().apply)({"params": params}, x, seg)
  np.testing.assert_allclose(tc.nhwc_to_nchw(out), ref["intermediate/G_middle_0.norm_0"], atol=1e-4,
                             rtol=1e-5)


def test_spade_resizes_segmap():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
  seg = jax.random.normal(jax.random.key(1), (2, 4, 4, 3))
  m = SPADE(hidden=16)
  v = m.init(jax.random.key(2), x, seg)
  out = m.apply(v, x, seg)
  assert out.shape == x.shape
  # Doubling the segmap by nearest upsampling first changes nothing.
  np.testing.assert_allclose(m.apply(v, x, ops.upsample_nearest(seg, 2)), out, atol=1e-6)


def test_adain_zero_init_is_instance_norm_and_trains():
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 5)) * 3 + 2
  style = jax.random.normal(jax.random.key(1), (2, 7))
  m = AdaIN(zero_init=True)
  v = m.init(jax.random.key(2), x, style)
  np.testing.assert_allclose(m.apply(v, x, style), ops.instance_norm(x), atol=1e-5)
  g = jax.grad(lambda p: jnp.sum(m.apply({"params": p}, x, style) ** 3))(v["params"])
  assert float(jnp.abs(g["proj"]["kernel"]).max()) > 0
  # A non-zero style projection makes the output depend on the style.
  m2 = AdaIN()
  v2 = m2.init(jax.random.key(3), x, style)
  assert float(jnp.abs(m2.apply(v2, x, style) - m2.apply(v2, x, -style)).max()) > 1e-3


def test_adaln_zero_starts_at_zero_and_learns():
  c = jax.random.normal(jax.random.key(0), (3, 16))
  m = AdaLNZero(features=8, num_chunks=6)
  v = m.init(jax.random.key(1), c)
  chunks = m.apply(v, c)
  assert len(chunks) == 6 and all(ch.shape == (3, 8) for ch in chunks)
  assert all(float(jnp.abs(ch).max()) == 0 for ch in chunks)
  g = jax.grad(lambda p: sum(jnp.sum(ch * (i + 1)) for i, ch in enumerate(
      m.apply({"params": p}, c))))(v["params"])
  assert float(jnp.abs(g["proj"]["kernel"]).max()) > 0


def test_adaln_zero_final_layer_outputs_zero_at_init():
  x = jax.random.normal(jax.random.key(0), (2, 5, 16))
  c = jax.random.normal(jax.random.key(1), (2, 16))
  m = AdaLNZeroFinal(out_features=58)
  v = m.init(jax.random.key(2), x, c)
  out = m.apply(v, x, c)
  assert out.shape == (2, 5, 58)
  assert float(jnp.abs(out).max()) == 0
