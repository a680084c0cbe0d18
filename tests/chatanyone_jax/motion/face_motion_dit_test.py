"""FaceMotionDiT: shapes, AdaLN-Zero init, gradients, reference tokens, condition dropout, full size."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax.audio import AudioEncoder
from chatanyone_jax.motion.face_motion_dit import (
                                                   VARIANTS,
                                                   FaceMotionConfig,
                                                   FaceMotionDiT,
                                                   decode_variant,
                                                   dummy_inputs,
                                                   style_controls,
)
from tests.chatanyone_jax.motion.conftest import REF_LEN, perturb

B = 2


def _inputs(cfg, seed=0):
  """Random (x_t, t, audio, history, style, reference) for batch B."""
  ks = jax.random.split(jax.random.key(seed), 5)
  n = jax.random.normal
  return (n(ks[0], (B, cfg.window, cfg.motion_dim)), jnp.array([10, 700], jnp.int32),
          n(ks[1], (B, cfg.window, cfg.audio_dim)), n(ks[2], (B, cfg.history, cfg.motion_dim)),
          jax.random.uniform(ks[3], (B, cfg.num_style)), n(ks[4], (B, REF_LEN, cfg.ref_dim)))


@functools.lru_cache
def _apply_fn(model):
  """One jitted apply for all value-level tests (same shapes -> one compilation)."""
  return jax.jit(lambda p, x, t, a, h, s, r, drop, valid: model.apply(
      {"params": p}, x, t, a, h, s, r, drop=drop, history_valid=valid))


def test_shapes_and_zero_output_at_init(face_model, face_params):
  cfg = face_model.config
  args = _inputs(cfg)
  out = _apply_fn(face_model)(face_params, *args, jnp.array([False, True]), jnp.array([True, False]))
  assert out.shape == (B, cfg.window, cfg.motion_dim) and out.dtype == jnp.float32
  assert np.all(np.asarray(out) == 0.0)  # AdaLN-Zero: every gate and the final layer start at 0
  # Without reference tokens (the default use), still exactly zero and the same shape.
  out = jax.jit(lambda p, *a: face_model.apply({"params": p}, *a))(face_params, *args[:5])
  assert out.shape == (B, cfg.window, cfg.motion_dim) and np.all(np.asarray(out) == 0.0)


def _grads(model, params, args, drop, valid):
  w = jax.random.normal(jax.random.key(9), (B, model.config.window, model.config.motion_dim))
  loss = lambda p: jnp.sum(_apply_fn(model)(p, *args, drop, valid) * w)
  return jax.jit(jax.grad(loss))(params)


def test_gradients(face_model, face_params):
  args = _inputs(face_model.config)
  drop, valid = jnp.array([True, False]), jnp.array([True, True])
  # At init (DiT property): all grads finite; only the final linear layer gets a non-zero gradient.
  g = _grads(face_model, face_params, args, drop, valid)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(g))
  assert np.any(np.asarray(g["final"]["linear"]["kernel"]) != 0)
  assert not np.any(np.asarray(g["block0"]["ada"]["proj"]["kernel"]))
  # With the zero-initialised layers perturbed, the gradient reaches every parameter (sample 0
  # dropped, so every null embedding is used; sample 1 uses the real conditions).
  g = _grads(face_model, perturb(face_params), args, drop, valid)
  dead = [jax.tree_util.keystr(k) for k, x in jax.tree_util.tree_leaves_with_path(g) if not np.any(x)]
  assert not dead, dead
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(g))


def test_reference_changes_output(face_model, face_params_perturbed):
  cfg = face_model.config
  x, t, a, h, s, r = _inputs(cfg)
  f = lambda ref, drop: np.asarray(_apply_fn(face_model)(face_params_perturbed, x, t, a, h, s, ref, drop,
                                                         jnp.ones((B,), bool)))
  keep = jnp.zeros((B,), bool)
  o1, o2 = f(r, keep), f(r[::-1] * 2.0, keep)
  assert o1.shape == (B, cfg.window, cfg.motion_dim)
  assert np.all(np.isfinite(o1)) and np.abs(o1 - o2).mean() > 1e-3 * np.abs(o1).mean()


def test_condition_dropout_replaces_conditions(face_model, face_params_perturbed):
  cfg = face_model.config
  x, t, a, h, s, r = _inputs(cfg)
  _, _, a2, h2, s2, r2 = _inputs(cfg, seed=1)
  f = lambda a, h, s, r, drop, valid: np.asarray(_apply_fn(face_model)(
      face_params_perturbed, x, t, a, h, s, r, jnp.asarray(drop), jnp.asarray(valid)))
  drop = [False, True]
  o1 = f(a, h, s, r, drop, [True, True])
  o2 = f(a2, h2, s2, r2, drop, [True, True])
  assert np.all(o1[1] == o2[1])  # dropped sample: audio, history, style, reference all ignored
  assert np.abs(o1[0] - o2[0]).max() > 1e-3  # kept sample: they matter
  # Each condition alone reaches the kept sample.
  for changed in [(a2, h, s, r), (a, h2, s, r), (a, h, s2, r), (a, h, s, r2)]:
    assert np.abs(f(*changed, drop, [True, True])[0] - o1[0]).max() > 1e-4
  # history_valid = False swaps in the null history: the history values no longer matter.
  o3, o4 = f(a, h, s, r, [False, False], [False, True]), f(a, h2, s, r, [False, False], [False, True])
  assert np.all(o3[0] == o4[0]) and np.abs(o3[1] - o4[1]).max() > 1e-4


def test_reference_valid_false_uses_the_null_reference(face_model, face_params_perturbed):
  cfg = face_model.config
  x, t, a, h, s, r = _inputs(cfg)
  r2 = _inputs(cfg, seed=1)[5]
  f = jax.jit(lambda ref, ref_valid, drop: face_model.apply(
      {"params": face_params_perturbed}, x, t, a, h, s, ref, drop=drop, reference_valid=ref_valid))
  keep, valid = jnp.zeros((B,), bool), jnp.array([False, True])
  o1, o2 = np.asarray(f(r, valid, keep)), np.asarray(f(r2, valid, keep))
  assert np.all(o1[0] == o2[0])  # no reference video: the reference values are ignored
  assert np.abs(o1[1] - o2[1]).max() > 1e-4  # a valid reference still matters
  # The null reference is the one condition dropout uses: sample 0 with reference_valid False and its
  # other conditions kept equals nothing dropped except the reference tokens.
  o_drop = np.asarray(f(r, jnp.ones((B,), bool), jnp.ones((B,), bool)))
  o_null = np.asarray(f(r, jnp.zeros((B,), bool), jnp.ones((B,), bool)))
  np.testing.assert_array_equal(o_drop, o_null)  # dropped anyway: reference_valid changes nothing


@pytest.mark.parametrize("audio_add", [False, True])
def test_audio_valid_false_uses_the_null_audio_per_frame(audio_add):
  # The low-latency stream's unheard frames: their audio tokens are the null audio (and no frame-aligned
  # audio is added), whatever the audio is.
  model = FaceMotionDiT(dataclasses.replace(FaceMotionConfig.tiny(), audio_add=audio_add))
  params = perturb(jax.jit(model.init_params, static_argnums=(1, 2))(jax.random.key(0), B, REF_LEN))
  cfg = model.config
  x, t, a, h, s, r = _inputs(cfg)
  a2 = _inputs(cfg, seed=1)[2]
  f = jax.jit(lambda audio, heard, drop: model.apply(
      {"params": params}, x, t, audio, h, s, r, drop=drop, audio_valid=heard))
  keep = jnp.zeros((B,), bool)
  cut = cfg.window // 2
  heard = jnp.broadcast_to(jnp.arange(cfg.window) < cut, (B, cfg.window))
  late = a.at[:, cut:].set(a2[:, cut:])  # other audio on the unheard frames only
  np.testing.assert_array_equal(np.asarray(f(a, heard, keep)), np.asarray(f(late, heard, keep)))
  assert np.abs(np.asarray(f(a, None, keep)) - np.asarray(f(late, None, keep))).max() > 1e-4
  early = a.at[:, :cut].set(a2[:, :cut])  # the heard frames still matter
  assert np.abs(np.asarray(f(a, heard, keep)) - np.asarray(f(early, heard, keep))).max() > 1e-4
  # All heard is no mask at all; a dropped sample ignores the audio and the mask alike.
  np.testing.assert_array_equal(np.asarray(f(a, jnp.ones((B, cfg.window), bool), keep)),
                                np.asarray(f(a, None, keep)))
  drop = jnp.ones((B,), bool)
  np.testing.assert_array_equal(np.asarray(f(a, heard, drop)), np.asarray(f(a2, None, drop)))


def test_style_controls():
  t = np.arange(40, dtype=np.float32)
  exp = np.tile(np.where(t % 2 == 0, 1.0, -1.0)[:, None], (1, 52)) * 0.5  # std 0.5
  pose = np.tile(np.linspace(0.0, 2.0, 40, dtype=np.float32)[:, None], (1, 6))  # range 2
  motion = jnp.asarray(np.concatenate([exp, pose], -1)[None])
  np.testing.assert_allclose(style_controls(motion), [[0.5, 2.0]], rtol=1e-5)


@pytest.mark.parametrize("cfg, expected", [(FaceMotionConfig(), 51_861_050),
                                           (FaceMotionConfig.tiny(), None)])
def test_param_counts_eval_shape(cfg, expected):
  """Full size: 6 layers, width 512, 8 heads, T = 40, H = 10 -> 51.86 M parameters (with the
  reference branch; 51.83 M without). Shapes only, no FLOPs."""
  model = FaceMotionDiT(cfg)
  shapes = jax.eval_shape(lambda: model.init_params(jax.random.key(0), 1, REF_LEN))
  count = sum(x.size for x in jax.tree.leaves(shapes))
  if expected is not None:
    assert count == expected
  args = dummy_inputs(cfg, 3, 5)
  out = jax.eval_shape(lambda p: model.apply({"params": p}, *args), shapes)
  assert out.shape == (3, cfg.window, cfg.motion_dim)
  assert shapes["block0"]["ada"]["proj"]["kernel"].shape == (cfg.width, 12 * cfg.width)


def test_variants():
  """base = the config defaults (model and audio encoder); tiny = FaceMotionConfig.tiny(); None = {}."""
  base = decode_variant("base")
  assert FaceMotionConfig(**base["dit"]) == FaceMotionConfig()
  assert AudioEncoder(width=256, **base["audio"]) == AudioEncoder()
  assert FaceMotionConfig(**decode_variant("tiny")["dit"]) == FaceMotionConfig.tiny()
  assert decode_variant(None) == {}
  assert set(VARIANTS) == {"base", "small", "tiny"}
  widths = [VARIANTS[v]["dit"]["width"] for v in ("tiny", "small", "base")]
  assert widths == sorted(widths) and len(set(widths)) == 3
  decode_variant("tiny")["dit"]["width"] = 1  # a copy: the table is not changed through it
  assert VARIANTS["tiny"]["dit"]["width"] == 64
  with pytest.raises(ValueError, match="unknown FaceMotionDiT variant 'huge'"):
    decode_variant("huge")
