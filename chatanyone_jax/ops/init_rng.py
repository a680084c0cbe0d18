"""The random keys of parameter initialisation: a counter-based 32-bit hash instead of threefry.

A network's init draws every parameter from its own key (flax folds the parameter's path into the
init key), so the init program holds one random-number chain per parameter. With threefry (20 rounds
of add / rotate / xor, then the same again for each `fold_in`) XLA spends most of the init's compile
on those chains: the tiny face-refine renderer's train state (about 250 random arrays) compiled in 7.1 s
on 2 CPU cores, the tiny motion DiT's parameters in 6.0 s at full optimisation. Under `init_key` the
same initialisers draw from `hash32` (below): 2.9 s and 1.1 s. The initialisers, their distributions and
the determinism per seed are unchanged; the values are not those of a threefry key of the same seed.

hash32: a key is two uint32 words; element i of `random_bits` is mix(mix(i ^ k0) + (k1 ^ c)), `fold_in(k, d)`
and `split` remix both words with d (or the split index), where mix is the lowbias32 integer hash
(C. Wellons, "Prospecting for hash functions", 2018: full avalanche, bias about 0.17 %). That is ample
for drawing initial weights; it is no substitute for threefry's statistical guarantees elsewhere, so
only parameter initialisation uses it: keys for training randomness (dropout, noise, data) stay the
caller's.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.extend.random import define_prng_impl

_GOLDEN = 0x9E3779B9  # constants that decorrelate the two words and the different uses of the hash
_C1, _C2, _C3, _C4 = 0x85EBCA6B, 0xC2B2AE35, 0x27D4EB2F, 0x165667B1


def _u32(x) -> jax.Array:
  return jnp.uint32(x)


def mix(x: jax.Array) -> jax.Array:
  """lowbias32: uint32 -> uint32, a bijection in which every input bit flips each output bit with
  probability about 1/2."""
  x = x ^ (x >> 16)
  x = x * _u32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * _u32(0x846CA68B)
  return x ^ (x >> 16)


def _seed(seed: jax.Array) -> jax.Array:
  s = jnp.asarray(seed).astype(jnp.uint32)
  return jnp.stack([mix(s ^ _u32(_GOLDEN)), mix(s + _u32(_C1))])


def _fold_in(key: jax.Array, data: jax.Array) -> jax.Array:
  d = jnp.asarray(data).astype(jnp.uint32)
  return jnp.stack([mix(key[0] ^ mix(d + _u32(_GOLDEN))), mix(key[1] + mix(d ^ _u32(_C2)))])


def _split(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  i = jnp.arange(math.prod(shape), dtype=jnp.uint32)
  keys = jnp.stack([mix(key[0] ^ mix(i + _u32(_C3))), mix(key[1] + mix(i ^ _u32(_C4)))], axis=-1)
  return keys.reshape(*shape, 2)


def _random_bits(key: jax.Array, bit_width: int, shape: tuple[int, ...]) -> jax.Array:
  i = jnp.arange(math.prod(shape), dtype=jnp.uint32)
  low = mix(mix(i ^ key[0]) + (key[1] ^ _u32(_C1)))
  if bit_width == 64:
    high = mix((mix(i ^ key[1]) + key[0]) ^ _u32(_GOLDEN))
    return ((high.astype(jnp.uint64) << 32) | low.astype(jnp.uint64)).reshape(shape)
  dtype = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32}[bit_width]
  return (low >> (32 - bit_width)).astype(dtype).reshape(shape)


HASH32 = define_prng_impl(key_shape=(2,), seed=_seed, split=_split, random_bits=_random_bits,
                          fold_in=_fold_in, name="hash32", tag="h32")


def init_key(key: jax.Array) -> jax.Array:
  """`key` (a typed key of any implementation, or a raw uint32 key array) as a hash32 key of the same
  bits, for parameter initialisation. Idempotent; traceable. (...) -> (...) key array."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if jax.random.key_impl(key) == HASH32:
      return key
    data = jax.random.key_data(key)
  else:
    data = jnp.asarray(key, jnp.uint32)
  data = data.astype(jnp.uint32)
  if data.shape[-1] != 2:  # other implementations' key widths: fold the extra words in
    words = data
    data = words[..., :2]
    for j in range(2, words.shape[-1]):
      data = jnp.stack([mix(data[..., 0] ^ words[..., j]), mix(data[..., 1] + words[..., j])], axis=-1)
  return jax.random.wrap_key_data(data, impl=HASH32)
