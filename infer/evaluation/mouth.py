"""Mouth opening measured on video frames with MediaPipe's face mesh: what a viewer sees, not what stage 1
predicted. `frame_mouth_opening` is the inner-lip gap (mesh points 13 / 14) over the eye-corner distance
(33 / 263), per frame, NaN where no face is found; `curve_correlation` is the Pearson correlation of two
such curves (or a curve and a loudness envelope) over the frames where both are defined, `curve_scale` the
ratio of their standard deviations there: how far a generated mouth moves against the real one (1: as far;
the correlation alone does not see a mouth that follows the speech at a tenth of its size).
"""

from __future__ import annotations

import numpy as np

from data.landmarks import LandmarkError, extract_landmarks

UPPER_LIP, LOWER_LIP = 13, 14  # MediaPipe face mesh: inner lips, middle
EYE_OUTER = (33, 263)  # outer eye corners: the scale the gap is divided by
MIN_FRAMES = 8  # fewer frames with a face on both curves: no correlation


def frame_mouth_opening(frames: np.ndarray, name: str = "video") -> np.ndarray:
  """(T,) inner-lip gap / eye-corner distance of each (H, W, 3) uint8 frame; NaN where no face is found
  (every frame NaN when none has one)."""
  frames = np.asarray(frames)
  try:
    lm = extract_landmarks(frames, pose=False, hands=False, max_num_faces=1, name=name)
  except LandmarkError:
    return np.full((len(frames),), np.nan, np.float32)
  face = lm.face[..., :2]
  gap = np.linalg.norm(face[:, UPPER_LIP] - face[:, LOWER_LIP], axis=-1)
  eyes = np.linalg.norm(face[:, EYE_OUTER[0]] - face[:, EYE_OUTER[1]], axis=-1)
  return np.where(lm.face_valid & (eyes > 0), gap / np.maximum(eyes, 1e-6), np.nan).astype(np.float32)


def _common(a: np.ndarray, b: np.ndarray, min_frames: int) -> tuple[np.ndarray, np.ndarray] | None:
  """a and b (float64) over the frames where both are finite (the shorter length); None when fewer than
  `min_frames` such frames or either curve is constant there."""
  n = min(len(a), len(b))
  a, b = np.asarray(a[:n], np.float64), np.asarray(b[:n], np.float64)
  ok = np.isfinite(a) & np.isfinite(b)
  if ok.sum() < min_frames or a[ok].std() < 1e-9 or b[ok].std() < 1e-9:
    return None
  return a[ok], b[ok]


def curve_correlation(a: np.ndarray, b: np.ndarray, min_frames: int = MIN_FRAMES) -> float | None:
  """Pearson correlation of two (T,) curves over the frames where both are finite (the shorter length);
  None when fewer than `min_frames` such frames or either curve is constant there."""
  common = _common(a, b, min_frames)
  return None if common is None else float(np.corrcoef(*common)[0, 1])


def curve_scale(a: np.ndarray, b: np.ndarray, min_frames: int = MIN_FRAMES) -> float | None:
  """std(a) / std(b) over the frames where both (T,) curves are finite: how far curve a moves against
  curve b (a generated mouth against the real one); None where `curve_correlation` is None."""
  common = _common(a, b, min_frames)
  return None if common is None else float(common[0].std() / common[1].std())
