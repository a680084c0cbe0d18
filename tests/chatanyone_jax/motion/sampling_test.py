"""FaceMotionDiT sampling: CFG pair, long audio by windows with history, seam statistic, training loss."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax.motion.diffusion import cosine_schedule
from chatanyone_jax.motion.sampling import (
                                            FaceConditions,
                                            anchored_noise,
                                            face_motion_loss,
                                            generate_long,
                                            join_window,
                                            sample_window,
                                            seam_statistic,
)

SCHED = cosine_schedule()
B = 2
STEPS = 4  # DDIM steps (the scan traces the model once whatever the count)
CLIP = 3.0


def _cond(cfg, seed=0, valid=True):
  ks = jax.random.split(jax.random.key(seed), 3)
  return FaceConditions(jax.random.normal(ks[0], (B, cfg.window, cfg.audio_dim)),
                        jax.random.normal(ks[1], (B, cfg.history, cfg.motion_dim)),
                        jax.random.uniform(ks[2], (B, cfg.num_style)), None, jnp.full((B,), valid))


@functools.lru_cache
def _window_fn(model):
  return jax.jit(lambda p, cond, key, scale, guidance: sample_window(
      model, p, cond, key, schedule=SCHED, num_steps=STEPS, guidance_scale=scale, guidance=guidance,
      clip_x0=CLIP), static_argnums=(4,))


def test_cfg_scale_one_equals_conditional(face_model, face_params_perturbed):
  cond, key = _cond(face_model.config), jax.random.key(1)
  f = _window_fn(face_model)
  x_cond = f(face_params_perturbed, cond, key, 1.0, False)
  x_pair = f(face_params_perturbed, cond, key, 1.0, True)  # (ε_cond, ε_uncond) from one 2B call
  x_cfg = f(face_params_perturbed, cond, key, 3.0, True)
  assert x_cond.shape == (B, face_model.config.window, face_model.config.motion_dim)
  np.testing.assert_allclose(x_pair, x_cond, atol=1e-4)
  assert np.abs(np.asarray(x_cfg - x_cond)).mean() > 1e-2  # guidance does something


def test_generate_long_audio(face_model, face_params_perturbed):
  cfg = face_model.config
  t_win, h = cfg.window, cfg.history
  n = int(2.7 * t_win)  # 108 frames: 3 windows, the last one cut
  traces = []

  @functools.partial(jax.jit, static_argnums=5)
  def gen(p, audio, style, key, shuffle, seam_frames):
    traces.append(seam_frames)
    return generate_long(face_model, p, audio, style, key, schedule=SCHED, num_steps=STEPS, clip_x0=CLIP,
                         shuffle_history=shuffle, seam_frames=seam_frames)

  p = face_params_perturbed
  audio = jax.random.normal(jax.random.key(2), (B, n, cfg.audio_dim))
  style = jnp.full((B, cfg.num_style), 0.5)
  key = jax.random.key(3)
  raw = gen(p, audio, style, key, False, 0)
  raw_shuf = gen(p, audio * 0.5, style, key, True, 0)  # new values, same shapes: no retrace
  joined = gen(p, audio, style, key, False, 8)
  assert raw.shape == joined.shape == (B, n, cfg.motion_dim) and np.all(np.isfinite(joined))
  assert traces == [0, 8]

  # The window scan carries the right frames: window 1 is exactly one window sampled with the
  # last H frames of window 0 as history, window 0 with no history (null), and keys fold_in(key, i).
  f = _window_fn(face_model)
  a_w = lambda i: audio[:, i * t_win:(i + 1) * t_win]
  w0 = f(p, FaceConditions(a_w(0), jnp.zeros((B, h, cfg.motion_dim)), style, None, jnp.zeros((B,), bool)),
         jax.random.fold_in(key, 0), 1.0, False)
  w1 = f(p, FaceConditions(a_w(1), w0[:, -h:], style, None, jnp.ones((B,), bool)),
         jax.random.fold_in(key, 1), 1.0, False)
  np.testing.assert_allclose(raw[:, :t_win], w0, atol=1e-4)
  np.testing.assert_allclose(raw[:, t_win:2 * t_win], w1, atol=1e-4)
  # join_window touches only the first 8 frames of windows that have a history (not window 0), so
  # the history the next window sees is the same with and without it.
  np.testing.assert_allclose(joined[:, :t_win], w0, atol=1e-4)
  np.testing.assert_allclose(joined[:, t_win:2 * t_win], join_window(w0[:, -h:], w1, 8), atol=1e-4)
  untouched = (np.arange(n) % t_win >= 8) | (np.arange(n) < t_win)
  np.testing.assert_allclose(joined[:, untouched], raw[:, untouched], atol=1e-4)

  # Seam statistic (mean |x_f - x_{f-1}| over boundary pairs vs inside pairs), untrained model with
  # its zero-initialised layers perturbed, 4 DDIM steps, x̂0 clipped at 3. An untrained model has not
  # learnt to continue its history: measured raw boundary 1.94 vs inside 1.61 (shuffled history 2.23
  # vs 1.67); join_window brings the boundary below the inside change.
  b, i = (float(v) for v in seam_statistic(raw, t_win))
  bs, i_s = (float(v) for v in seam_statistic(raw_shuf, t_win))
  bj, ij = (float(v) for v in seam_statistic(joined, t_win))
  print(f"seam raw: boundary {b:.3f} inside {i:.3f}; shuffled history: boundary {bs:.3f} inside {i_s:.3f}; "
        f"joined: boundary {bj:.3f} inside {ij:.3f}")
  assert 0.0 < b < 2.0 * i  # no gross stitching error (a misplaced window jumps by ~2 x 3)
  assert 0.0 < bj < ij


def test_join_window():
  rng = np.random.default_rng(0)
  hist = np.cumsum(rng.normal(size=(2, 5, 3)), axis=1).astype(np.float32)
  win = (np.cumsum(rng.normal(size=(2, 12, 3)), axis=1) + 10.0).astype(np.float32)  # jumps by ~10
  out = np.asarray(join_window(jnp.asarray(hist), jnp.asarray(win), 4))
  v_in, v_out = hist[:, -1] - hist[:, -2], win[:, 1] - win[:, 0]
  np.testing.assert_allclose(out[:, 0], hist[:, -1] + 0.5 * (v_in + v_out), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(out[:, 4:], win[:, 4:])  # frames from K on untouched
  offset = out[:, 0] - win[:, 0]
  for f, w in enumerate([1.0, 0.5 * (1 + np.cos(np.pi / 4)), 0.5, 0.5 * (1 + np.cos(3 * np.pi / 4))]):
    np.testing.assert_allclose(out[:, f] - win[:, f], w * offset, rtol=1e-5, atol=1e-5)
  # valid False (nothing before the window) and K = 0: unchanged.
  out_v = np.asarray(join_window(jnp.asarray(hist), jnp.asarray(win), 4, jnp.array([False, True])))
  np.testing.assert_array_equal(out_v[0], win[0])
  np.testing.assert_allclose(out_v[1], out[1])
  np.testing.assert_array_equal(np.asarray(join_window(jnp.asarray(hist), jnp.asarray(win), 0)), win)
  # A window that already continues its history smoothly (one straight line) is left as it is.
  line = np.arange(17, dtype=np.float32)[None, :, None] * np.array([1.0, -2.0, 0.5], np.float32)
  np.testing.assert_allclose(np.asarray(join_window(jnp.asarray(line[:, :5]), jnp.asarray(line[:, 5:]), 6)),
                             line[:, 5:], atol=1e-5)
  with np.testing.assert_raises(ValueError):
    join_window(jnp.asarray(hist[:, :1]), jnp.asarray(win), 4)


def test_seam_statistic():
  # Two windows of 3 frames: pairs (0,1), (1,2) inside, (2,3) boundary, (3,4), (4,5) inside.
  x = jnp.asarray([0.0, 1.0, 2.0, 10.0, 11.0, 12.0])[None, :, None]
  b, i = seam_statistic(x, 3)
  assert float(b) == 8.0 and float(i) == 1.0


def test_face_motion_loss(face_model, face_params):
  cfg = face_model.config
  cond = _cond(cfg)
  motion = jax.random.normal(jax.random.key(4), (B, cfg.window, cfg.motion_dim))
  batch = {"motion": motion, "audio": cond.audio, "history": cond.history, "style": cond.style,
           "history_valid": cond.history_valid}
  loss_fn = jax.jit(functools.partial(face_motion_loss, model=face_model, schedule=SCHED))
  # At init ε_θ ≡ 0, so the loss is mean(ε²) over B·T·58 = 4640 normals: 1 ± 0.02 (1 sd).
  loss = float(loss_fn(face_params, batch, jax.random.key(5)))
  assert abs(loss - 1.0) < 0.1
  # The frame mask restricts the mean to counted frames: keeping 1 of 40 frames gives a noisier value.
  mask = jnp.zeros((B, cfg.window)).at[:, 0].set(1.0)
  loss_m = float(jax.jit(functools.partial(face_motion_loss, model=face_model, schedule=SCHED))(
      face_params, {**batch, "mask": mask}, jax.random.key(5)))
  assert np.isfinite(loss_m) and loss_m != loss


def test_anchored_noise_is_the_same_for_the_same_frame_in_any_window():
  key = jax.random.key(3)
  a = anchored_noise(key, 0, 16, 5)
  b = jax.jit(anchored_noise, static_argnums=(2, 3))(key, jnp.int32(8), 16, 5)  # traced start
  assert a.shape == b.shape == (1, 16, 5)
  np.testing.assert_array_equal(a[:, 8:], b[:, :8])
  assert not np.allclose(a[:, :8], b[:, 8:])
  assert abs(float(jnp.std(anchored_noise(key, 100, 400, 58))) - 1.0) < 0.02
