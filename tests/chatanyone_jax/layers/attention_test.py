"""Multi-head attention against a direct softmax implementation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax.layers import MultiHeadAttention


def _reference(params, x, ctx, mask, heads):
  q = jnp.einsum("btd,dnh->btnh", x, params["query"]["kernel"]) + params["query"]["bias"]
  k = jnp.einsum("btd,dnh->btnh", ctx, params["key"]["kernel"]) + params["key"]["bias"]
  v = jnp.einsum("btd,dnh->btnh", ctx, params["value"]["kernel"]) + params["value"]["bias"]
  logits = jnp.einsum("bqnh,bknh->bnqk", q, k) / np.sqrt(q.shape[-1])
  if mask is not None:
    logits = jnp.where(mask, logits, -1e30)
  w = jax.nn.softmax(logits, axis=-1)
  o = jnp.einsum("bnqk,bknh->bqnh", w, v)
  return jnp.einsum("bqnh,nhd->bqd", o, params["out"]["kernel"]) + params["out"]["bias"]


@pytest.mark.parametrize("cross", [False, True])
def test_matches_reference_with_and_without_mask(cross):
  kx, kc, km, ki = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(kx, (2, 5, 32))
  ctx = jax.random.normal(kc, (2, 7, 24)) if cross else None
  tk = 7 if cross else 5
  m = MultiHeadAttention(num_heads=4)
  v = m.init(ki, x, ctx)
  ref_ctx = x if ctx is None else ctx
  np.testing.assert_allclose(m.apply(v, x, ctx), _reference(v["params"], x, ref_ctx, None, 4),
                             atol=1e-5)
  mask = jax.random.bernoulli(km, 0.6, (2, 1, 5, tk)).at[..., 0].set(True)
  np.testing.assert_allclose(m.apply(v, x, ctx, mask=mask),
                             _reference(v["params"], x, ref_ctx, mask, 4), atol=1e-5)


def test_key_padding_mask_ignores_padded_keys():
  x = jax.random.normal(jax.random.key(0), (2, 4, 16))
  ctx = jax.random.normal(jax.random.key(1), (2, 6, 16))
  pad = jnp.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]], bool)
  m = MultiHeadAttention(num_heads=2)
  v = m.init(jax.random.key(2), x, ctx)
  out = m.apply(v, x, ctx, mask=pad)
  garbage = ctx.at[:, 3:].set(100.0).at[0, 3].set(ctx[0, 3])
  np.testing.assert_allclose(m.apply(v, x, garbage, mask=pad), out, atol=1e-5)
  # Without the mask the padded keys do change the result.
  assert float(jnp.abs(m.apply(v, x, garbage) - m.apply(v, x, ctx)).max()) > 1e-3


def test_zero_init_out_and_gradients():
  x = jax.random.normal(jax.random.key(0), (2, 3, 16))
  m = MultiHeadAttention(num_heads=2, zero_init_out=True)
  v = m.init(jax.random.key(1), x)
  assert float(jnp.abs(m.apply(v, x)).max()) == 0
  m2 = MultiHeadAttention(num_heads=2)
  v2 = m2.init(jax.random.key(1), x)
  g = jax.grad(lambda p: jnp.sum(m2.apply({"params": p}, x) ** 2))(v2["params"])
  for path, leaf in jax.tree_util.tree_leaves_with_path(g):
    assert float(jnp.abs(leaf).max()) > 0, jax.tree_util.keystr(path)
  with pytest.raises(ValueError):
    MultiHeadAttention(num_heads=3).init(jax.random.key(0), x)
