"""Lip-sync measures on the mouth-opening curve: two audio-only baselines, correlation and silence behaviour.

The mouth opening of a frame is the template's inner-lip gap (`template.mouth_opening` of the expression
coefficients). The baselines a model must beat predict it from the audio alone. The loudness baseline is a
linear map a · e + b of the smoothed loudness envelope e (dB of the RMS over each frame's samples,
Gaussian-smoothed over frames), fitted by least squares on training clips (`fit_loudness_baseline`). The
log-mel baseline is a ridge regression (`fit_ridge`) from the log-mel that stage 1 consumes, resampled to
the video frames with ±`MEL_CONTEXT` frames of context (`mel_features`): the loudness envelope carries
little about the opening of word-length clips that are speech throughout, a linear read-out of the model's
own input does (docs/EVALUATION.md). `speech_mask` marks a
frame as speech when its loudness is within `SPEECH_DB` of the clip's loudest frames;
`silence_measures` gives the mean opening in silence as a fraction of the mean while speaking and the
lag from each speech offset until the mouth is closed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from chatanyone_jax.audio.encoder import resample_matrix

SMOOTH_FRAMES = 2.0  # sigma of the envelope's Gaussian smoothing, in video frames
SPEECH_DB = 30.0  # a frame is speech within this many dB of the clip's 95th-percentile loudness
FLOOR_DB = -80.0
MEL_CONTEXT = 5  # log-mel baseline: frames of context on each side of a video frame
# Ridge penalties (on standardised features) tried by `ridge_penalty_cv`; MEL_PENALTY is the one used when
# the training clips' people are unknown: the best of speaker-grouped 5-fold CV on the 1,341 training clips
# of the CPU campaign's records at MEL_CONTEXT 5 (880 features).
MEL_PENALTIES = (1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7)
MEL_PENALTY = 1e5


def loudness_envelope(audio: np.ndarray, num_frames: int, *, smooth_frames: float = SMOOTH_FRAMES
                      ) -> np.ndarray:
  """(num_frames,) loudness in dB of each video frame's share of `audio` (1-D, any scale), smoothed."""
  audio = np.asarray(audio, np.float64)
  if audio.ndim != 1 or num_frames < 1:
    raise ValueError(f"want 1-D audio and num_frames >= 1, got {audio.shape} and {num_frames}")
  edges = np.round(np.linspace(0, audio.size, num_frames + 1)).astype(int)
  rms = np.array([np.sqrt(np.mean(audio[a:b] ** 2)) if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:],
                                                                                          strict=True)])
  db = np.maximum(20 * np.log10(np.maximum(rms, 1e-12)), FLOOR_DB)
  if smooth_frames > 0:
    r = int(np.ceil(3 * smooth_frames))
    w = np.exp(-0.5 * (np.arange(-r, r + 1) / smooth_frames) ** 2)
    db = np.convolve(np.pad(db, r, mode="edge"), w / w.sum(), mode="valid")
  return db


@dataclasses.dataclass(frozen=True)
class LoudnessBaseline:
  """mouth opening ≈ slope · loudness envelope (dB) + intercept."""
  slope: float
  intercept: float

  def __call__(self, envelope: np.ndarray) -> np.ndarray:
    return self.slope * np.asarray(envelope) + self.intercept


def fit_loudness_baseline(envelopes: list[np.ndarray], openings: list[np.ndarray]) -> LoudnessBaseline:
  """Least-squares a, b of opening ≈ a · envelope + b over all frames of the training clips."""
  e = np.concatenate([np.ravel(x) for x in envelopes])
  o = np.concatenate([np.ravel(x) for x in openings])
  if e.shape != o.shape or e.size < 2:
    raise ValueError(f"need matching envelope / opening frames (>= 2), got {e.shape} and {o.shape}")
  a, b = np.polyfit(e, o, 1)
  return LoudnessBaseline(float(a), float(b))


def stack_context(x: np.ndarray, context: int) -> np.ndarray:
  """(T, (2·context + 1)·D) frames t - context … t + context of x (T, D) side by side, oldest first; the
  clip's first / last frame stands in for frames past its edges."""
  x = np.asarray(x)
  if x.ndim != 2 or context < 0:
    raise ValueError(f"want (T, D) features and context >= 0, got {x.shape} and {context}")
  padded = np.pad(x, ((context, context), (0, 0)), mode="edge")
  return np.concatenate([padded[i:i + x.shape[0]] for i in range(2 * context + 1)], axis=1)


def mel_features(log_mel: np.ndarray, num_frames: int, *, mel_rate: float, fps: float,
                 context: int = MEL_CONTEXT) -> np.ndarray:
  """(num_frames, (2·context + 1)·n_mels) features of the log-mel baseline.

  log_mel: (M, n_mels) the clip's log-mel at mel_rate frames per second, resampled to num_frames video
  frames at fps with the audio encoder's triangle filter (`resample_matrix`), then `stack_context`.
  """
  log_mel = np.asarray(log_mel, np.float32)
  return stack_context(resample_matrix(log_mel.shape[0], num_frames, mel_rate, fps) @ log_mel, context)


@dataclasses.dataclass(frozen=True)
class RidgeBaseline:
  """mouth opening ≈ ((features - mean) / scale) · weights + bias, features (..., D)."""
  mean: np.ndarray  # (D,)
  scale: np.ndarray  # (D,)
  weights: np.ndarray  # (D,)
  bias: float
  penalty: float

  def __call__(self, features: np.ndarray) -> np.ndarray:
    return ((np.asarray(features) - self.mean) / self.scale) @ self.weights + self.bias


def _standardisation(features: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  x = np.concatenate(features).astype(np.float64)
  return x.mean(axis=0), x.std(axis=0) + 1e-6


def _normal_equations(features: list[np.ndarray], targets: list[np.ndarray], mean: np.ndarray,
                      scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Z^T Z (D + 1, D + 1) and Z^T y (D + 1,) of the standardised features with a column of ones."""
  z = (np.concatenate(features).astype(np.float64) - mean) / scale
  z = np.concatenate([z, np.ones((z.shape[0], 1))], axis=1)
  return z.T @ z, z.T @ np.concatenate([np.ravel(y) for y in targets]).astype(np.float64)


def _solve(gram: np.ndarray, moment: np.ndarray, penalty: float) -> np.ndarray:
  reg = np.full(gram.shape[0], penalty)
  reg[-1] = 0.0  # the bias is not penalised
  return np.linalg.solve(gram + np.diag(reg), moment)


def _check(features: list[np.ndarray], targets: list[np.ndarray]) -> None:
  if len(features) != len(targets) or not features or any(
      np.shape(x)[:1] != np.shape(np.ravel(y)) for x, y in zip(features, targets, strict=True)):
    raise ValueError("need one (T, D) feature array per (T,) target, at least one clip")


def fit_ridge(features: list[np.ndarray], targets: list[np.ndarray], penalty: float) -> RidgeBaseline:
  """Ridge regression over all frames of the clips: features (T_i, D) standardised with the mean and std
  over all frames, penalty · |weights|² added to the squared error, the bias unpenalised."""
  _check(features, targets)
  mean, scale = _standardisation(features)
  w = _solve(*_normal_equations(features, targets, mean, scale), penalty)
  return RidgeBaseline(mean, scale, w[:-1], float(w[-1]), float(penalty))


def ridge_penalty_cv(features: list[np.ndarray], targets: list[np.ndarray], groups: list[str], *,
                     penalties: tuple[float, ...] = MEL_PENALTIES, folds: int = 5) -> dict[float, float]:
  """{penalty: mean per-clip Pearson r} of `fit_ridge` under grouped cross-validation.

  groups: one label per clip (the person); the groups are dealt (seeded shuffle) into min(folds, #groups)
  folds and every clip is predicted by a ridge fitted on the other folds, so no clip is scored by a model
  that saw its speaker. Clips with a constant curve are skipped. The standardisation uses all clips.
  """
  _check(features, targets)
  names = sorted(set(groups))
  if len(groups) != len(features) or len(names) < 2:
    raise ValueError(f"need one group per clip and at least 2 groups, got {len(groups)} for "
                     f"{len(features)} clips in {len(names)} groups")
  np.random.default_rng(0).shuffle(names)
  fold_of = {g: i % min(folds, len(names)) for i, g in enumerate(names)}
  clip_fold = np.array([fold_of[g] for g in groups])
  mean, scale = _standardisation(features)
  stats = [_normal_equations([features[i] for i in idx], [targets[i] for i in idx], mean, scale)
           for idx in (np.flatnonzero(clip_fold == f) for f in sorted(set(fold_of.values())))]
  gram, moment = sum(s[0] for s in stats), sum(s[1] for s in stats)
  out = {}
  for penalty in penalties:
    rs = []
    for f, (g, m) in enumerate(stats):
      w = _solve(gram - g, moment - m, penalty)
      for i in np.flatnonzero(clip_fold == f):
        rs.append(pearson(((features[i] - mean) / scale) @ w[:-1] + w[-1], targets[i]))
    rs = [r for r in rs if np.isfinite(r)]
    out[float(penalty)] = float(np.mean(rs)) if rs else float("nan")
  return out


def pearson(x: np.ndarray, y: np.ndarray) -> float:
  """Pearson correlation of two curves; NaN when either is constant."""
  x, y = np.ravel(x).astype(np.float64), np.ravel(y).astype(np.float64)
  if x.shape != y.shape:
    raise ValueError(f"curves differ in length: {x.shape} vs {y.shape}")
  sx, sy = x.std(), y.std()
  if sx == 0 or sy == 0:
    return float("nan")
  return float(np.mean((x - x.mean()) * (y - y.mean())) / (sx * sy))


def speech_mask(envelope: np.ndarray, *, speech_db: float = SPEECH_DB) -> np.ndarray:
  """(T,) bool: frames whose loudness is within speech_db of the clip's 95th-percentile loudness."""
  envelope = np.asarray(envelope)
  return envelope > np.percentile(envelope, 95) - speech_db


def silence_measures(opening: np.ndarray, speech: np.ndarray, fps: float, *, closed_fraction: float = 0.25
                     ) -> dict[str, float]:
  """Mouth behaviour in silence.

  Returns {"silence_ratio": mean opening in silence / mean opening while speaking (NaN without both),
  "offset_lag_s": mean time from a speech offset until the opening first falls below closed_fraction ·
  the speaking mean (NaN without an offset followed by silence), "offsets": how many were measured}.
  """
  opening, speech = np.asarray(opening, np.float64), np.asarray(speech, bool)
  if opening.shape != speech.shape:
    raise ValueError(f"opening {opening.shape} and speech mask {speech.shape} differ")
  speaking = opening[speech].mean() if speech.any() else np.nan
  silent = opening[~speech].mean() if (~speech).any() else np.nan
  closed = closed_fraction * speaking
  lags = []
  for t in np.flatnonzero(speech[:-1] & ~speech[1:]) + 1:  # first silent frame after speech
    end = t
    while end < speech.size and not speech[end]:
      end += 1
    below = np.flatnonzero(opening[t:end] < closed)
    if below.size:
      lags.append(below[0] / fps)
  return {"silence_ratio": float(silent / speaking) if speaking > 0 else float("nan"),
          "offset_lag_s": float(np.mean(lags)) if lags else float("nan"), "offsets": len(lags)}
