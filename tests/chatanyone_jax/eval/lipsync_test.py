"""Lip-sync measures: loudness envelope, the fitted loudness baseline, correlation and silence."""

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
