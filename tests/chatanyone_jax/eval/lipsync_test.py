"""Lip-sync measures: loudness envelope, the loudness and log-mel baselines, correlation and silence."""

import numpy as np
import pytest

from chatanyone_jax.eval import lipsync

SR, FPS = 16000, 30


def _bursts(pattern: str, seed: int = 0) -> np.ndarray:
  """Audio of 0.1-s blocks: "x" noise at 0.3 amplitude, "." silence."""
  rng = np.random.default_rng(seed)
  n = SR // 10
  return np.concatenate([0.3 * rng.standard_normal(n) if c == "x" else np.zeros(n) for c in pattern])


def test_envelope_tracks_loudness_per_video_frame():
  audio = _bursts("xx..xx")
  env = lipsync.loudness_envelope(audio, 18, smooth_frames=0)
  assert env.shape == (18,)
  np.testing.assert_allclose(env[:6], 20 * np.log10(0.3), atol=0.6)  # RMS of the noise
  assert np.all(env[6:12] == lipsync.FLOOR_DB)
  smooth = lipsync.loudness_envelope(audio, 18)
  assert smooth[5] < env[5] and smooth[6] > env[6]  # smoothing spreads the edges
  with pytest.raises(ValueError, match="1-D audio"):
    lipsync.loudness_envelope(audio[None], 18)


def test_baseline_fit_recovers_a_linear_map_and_pearson():
  rng = np.random.default_rng(1)
  envs = [rng.normal(-30, 10, 50) for _ in range(3)]
  openings = [0.002 * e + 0.1 for e in envs]
  base = lipsync.fit_loudness_baseline(envs, openings)
  assert base.slope == pytest.approx(0.002) and base.intercept == pytest.approx(0.1)
  assert lipsync.pearson(base(envs[0]), openings[0]) == pytest.approx(1.0)
  assert lipsync.pearson(envs[0], -envs[0]) == pytest.approx(-1.0)
  assert np.isnan(lipsync.pearson(np.ones(5), np.arange(5.0)))
  with pytest.raises(ValueError, match="matching"):
    lipsync.fit_loudness_baseline([np.zeros(3)], [np.zeros(4)])


def test_speech_mask_and_silence_measures():
  env = lipsync.loudness_envelope(_bursts("xxx...xxx...", 2), 36, smooth_frames=0)
  speech = lipsync.speech_mask(env)
  assert speech.tolist() == [True] * 9 + [False] * 9 + [True] * 9 + [False] * 9
  # Open 1.0 while speaking; after each offset the mouth takes 3 frames to close (0.5, 0.5, 0.5, then 0.1).
  opening = np.where(speech, 1.0, 0.1)
  for t in (9, 27):
    opening[t:t + 3] = 0.5
  m = lipsync.silence_measures(opening, speech, FPS)
  assert m["offsets"] == 2 and m["offset_lag_s"] == pytest.approx(3 / FPS)
  assert m["silence_ratio"] == pytest.approx((3 * 0.5 + 6 * 0.1) / 9)
  never = lipsync.silence_measures(np.ones(36), speech, FPS)  # the mouth never closes: no lag measured
  assert never["offsets"] == 0 and np.isnan(never["offset_lag_s"]) and never["silence_ratio"] == 1.0


def test_stack_context_repeats_the_edge_frames():
  x = np.stack([np.arange(5.0), 10 * np.arange(5.0)], axis=1)  # (T=5, D=2)
  s = lipsync.stack_context(x, 2)
  assert s.shape == (5, 10)
  np.testing.assert_array_equal(s[2], x[0:5].ravel())  # frames 0..4, oldest first
  np.testing.assert_array_equal(s[0], x[[0, 0, 0, 1, 2]].ravel())  # before the clip: frame 0
  np.testing.assert_array_equal(s[4], x[[2, 3, 4, 4, 4]].ravel())  # after it: the last frame
  np.testing.assert_array_equal(lipsync.stack_context(x, 0), x)
  with pytest.raises(ValueError, match=r"\(T, D\)"):
    lipsync.stack_context(x[:, 0], 1)


def test_mel_features_resample_the_log_mel_to_video_frames_with_context():
  rng = np.random.default_rng(2)
  mel = rng.normal(size=(100, 8)).astype(np.float32)  # 1 s at 100 Hz
  f = lipsync.mel_features(mel, 30, mel_rate=100.0, fps=30.0, context=1)
  assert f.shape == (30, 24)
  # The middle block is frame t itself: a triangle-weighted average of the mel frames near (t + 0.5) / 30 s.
  t = 10
  centre = f[t, 8:16]
  near = mel[int((t + 0.5) / 30 * 100) - 3:int((t + 0.5) / 30 * 100) + 4]
  assert np.all(centre >= near.min(0) - 1e-5) and np.all(centre <= near.max(0) + 1e-5)
  np.testing.assert_allclose(f[t, :8], f[t - 1, 8:16])  # frame t - 1
  np.testing.assert_allclose(f[t, 16:], f[t + 1, 8:16])
  const = lipsync.mel_features(np.full((100, 8), -3.0), 30, mel_rate=100.0, fps=30.0, context=2)
  np.testing.assert_allclose(const, -3.0, rtol=1e-6)  # rows of the filter sum to 1, edges included


def test_ridge_recovers_a_linear_map_and_cv_prefers_a_small_penalty_on_clean_data():
  rng = np.random.default_rng(3)
  w, b = rng.normal(size=6), 0.7
  xs = [rng.normal(2.0, 3.0, (int(n), 6)) for n in rng.integers(20, 40, 12)]
  ys = [x @ w + b for x in xs]
  ridge = lipsync.fit_ridge(xs, ys, 1e-6)
  np.testing.assert_allclose(ridge.weights / ridge.scale, w, rtol=1e-5)  # on the raw features
  np.testing.assert_allclose(ridge(xs[0]), ys[0], atol=1e-5)
  shrunk = lipsync.fit_ridge(xs, ys, 1e6)  # a huge penalty leaves about the mean opening
  assert np.abs(shrunk.weights).max() < 0.01 * np.abs(ridge.weights).max()
  assert shrunk.bias == pytest.approx(np.concatenate(ys).mean(), rel=1e-6)  # the bias is not penalised
  noisy = [y + rng.normal(0, 1.0, y.shape) for y in ys]
  cv = lipsync.ridge_penalty_cv(xs, noisy, [f"p{i % 4}" for i in range(12)], penalties=(1e-3, 1e6))
  assert cv[1e-3] > 0.9 and cv[1e-3] > cv[1e6]
  with pytest.raises(ValueError, match="at least 2 groups"):
    lipsync.ridge_penalty_cv(xs, ys, ["p"] * 12)
  with pytest.raises(ValueError, match="one .* feature array per"):
    lipsync.fit_ridge(xs, ys[:-1], 1.0)
