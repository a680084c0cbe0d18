"""init_rng: the hash32 keys of parameter initialisation draw well-spread, independent values."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax.ops.init_rng import HASH32, init_key, mix

N = 1 << 16


def test_mix_is_a_bijection_with_avalanche():
  x = np.arange(N, dtype=np.uint32)
  y = np.asarray(mix(jnp.asarray(x)))
  assert len(np.unique(y)) == N
  # Flipping one input bit flips each output bit with probability about 1/2.
  for bit in (0, 7, 31):
    flipped = np.asarray(mix(jnp.asarray(x ^ np.uint32(1 << bit))))
    bits = np.unpackbits((y ^ flipped).view(np.uint8)).reshape(N, 32).mean(0)
    assert np.abs(bits - 0.5).max() < 0.02, (bit, bits)


def test_bits_are_uniform_and_keys_independent():
  key = init_key(jax.random.key(0))
  bits = np.asarray(jax.random.bits(key, (N,)))
  freq = np.unpackbits(bits.view(np.uint8)).reshape(N, 32).mean(0)
  assert np.abs(freq - 0.5).max() < 0.01, freq  # every bit position balanced, element 0 too
  u = np.asarray(jax.random.uniform(key, (N,)))
  assert abs(u.mean() - 0.5) < 0.01 and abs(u.std() - 12 ** -0.5) < 0.01
  # Sibling keys (fold_in, split) and neighbouring seeds give uncorrelated draws.
  draws = [jax.random.normal(k, (N,)) for k in (jax.random.fold_in(key, 1), jax.random.fold_in(key, 2),
                                               *jax.random.split(key, 2), init_key(jax.random.key(1)))]
  c = np.corrcoef(np.stack([np.asarray(d) for d in draws]))
  assert np.abs(c - np.eye(len(draws))).max() < 0.02, c
  for d in draws:
    assert abs(float(d.mean())) < 0.02 and abs(float(d.std()) - 1) < 0.02
  keys = jax.random.key_data(jax.random.split(key, 1000))
  assert len({tuple(k) for k in np.asarray(keys)}) == 1000


def test_init_key_accepts_every_key_and_is_idempotent():
  key = init_key(jax.random.key(3))
  assert jax.random.key_impl(key) == HASH32
  assert init_key(key) is key
  raw = init_key(jax.random.PRNGKey(3))  # a legacy uint32 key: the same bits
  np.testing.assert_array_equal(jax.random.key_data(raw), jax.random.key_data(key))
  rbg = init_key(jax.random.key(3, impl="rbg"))  # 4 words folded into 2
  assert jax.random.key_data(rbg).shape == (2,)
  traced = jax.jit(lambda k: jax.random.normal(init_key(k), (4,)))(jax.random.key(3))
  np.testing.assert_array_equal(traced, jax.random.normal(key, (4,)))
  assert not np.array_equal(traced, jax.random.normal(init_key(jax.random.key(4)), (4,)))
  for dtype in (jnp.uint8, jnp.uint16):  # narrower draws: the high bits, spread over the whole range
    small = np.asarray(jax.random.bits(key, (N,), dtype))
    assert small.dtype == dtype and abs(small.mean() / np.iinfo(dtype).max - 0.5) < 0.01


def test_flax_initialisers_keep_their_distributions():
  """A conv kernel (lecun_normal: truncated at 2 sigma, std 1 / sqrt(fan_in)) drawn from a hash32 key has
  the initialiser's statistics; two layers of one network draw independent values."""
  conv = nn.Conv(256, (3, 3))
  params = conv.init(init_key(jax.random.key(0)), jnp.zeros((1, 8, 8, 128)))["params"]
  k = np.asarray(params["kernel"])
  assert abs(k.std() * np.sqrt(3 * 3 * 128) - 1) < 0.02
  bound = 2 / 0.87962566103423978 / np.sqrt(3 * 3 * 128)  # 2 sigma of the normal before truncation
  assert 0.97 * bound < np.abs(k).max() <= bound * (1 + 1e-6)

  class Two(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(64, name="a")(x), nn.Dense(64, name="b")(x)

  two = Two().init(init_key(jax.random.key(0)), jnp.zeros((1, 64)))["params"]
  a, b = np.asarray(two["a"]["kernel"]).ravel(), np.asarray(two["b"]["kernel"]).ravel()
  assert abs(np.corrcoef(a, b)[0, 1]) < 0.03  # each path folds its own key
