"""Lip-sync measures on the mouth-opening curve: a loudness baseline, correlation and silence behaviour.

The mouth opening of a frame is the template's inner-lip gap (`template.mouth_opening` of the expression
coefficients). The baseline a model must beat predicts it from the audio alone: a linear map
a · e + b of the smoothed loudness envelope e (dB of the RMS over each frame's samples, Gaussian-smoothed
over frames), fitted by least squares on training clips (`fit_loudness_baseline`). `speech_mask` marks a
frame as speech when its loudness is within `SPEECH_DB` of the clip's loudest frames;
`silence_measures` gives the mean opening in silence as a fraction of the mean while speaking and the
lag from each speech offset until the mouth is closed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SMOOTH_FRAMES = 2.0  # sigma of the envelope's Gaussian smoothing, in video frames
SPEECH_DB = 30.0  # a frame is speech within this many dB of the clip's 95th-percentile loudness
FLOOR_DB = -80.0


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
