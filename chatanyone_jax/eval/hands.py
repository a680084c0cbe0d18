"""HKC, hand keypoint confidence (paper Table 1; CyberHost / EchoMimicV2 use the same idea): how
confidently a hand detector finds hands in generated frames where the ground-truth frame has hands.

Back-end: MediaPipe Hands (the `.tflite` models ship in the mediapipe 0.10.14 wheel), in static-image
mode with a low detection threshold so that the score is graded rather than cut at 0.5. MediaPipe's
legacy solution exposes one confidence per detected hand (the handedness classifier's score, which is
also its hand-presence gate), not one per landmark; that score is what we average.

Per frame with n ground-truth hands (1 or 2): the n highest scores among the detected hands, missing
ones counting 0, averaged; HKC is the mean over such frames.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image


class HandConfidence:
  """Hand scores of RGB frames with MediaPipe Hands (use as a context manager, or call `close`)."""

  def __init__(self, min_detection_confidence: float = 0.1, min_size: int = 256):
    os.environ.setdefault("GLOG_minloglevel", "2")
    from mediapipe.python.solutions import hands as mp_hands  # after GLOG_minloglevel: read on import

    self._hands = mp_hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=1,
                                 min_detection_confidence=min_detection_confidence)
    self.min_size = min_size

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def close(self) -> None:
    self._hands.close()

  def scores(self, frame: np.ndarray) -> list[float]:
    """Scores of the hands detected in one (H, W, 3) frame (uint8, or float in [0, 1]), highest first."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
      frame = np.clip(np.asarray(frame, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    factor = self.min_size / min(frame.shape[:2])
    if factor > 1.0:
      h, w = frame.shape[:2]
      frame = np.asarray(Image.fromarray(frame).resize((round(w * factor), round(h * factor)),
                                                       Image.Resampling.BILINEAR))
    res = self._hands.process(np.ascontiguousarray(frame))
    if not res.multi_handedness:
      return []
    return sorted((float(h.classification[0].score) for h in res.multi_handedness), reverse=True)

  def frame_confidence(self, frame: np.ndarray, num_hands: int) -> float:
    s = self.scores(frame)[:num_hands]
    return float(np.sum(s) / num_hands)


def hand_keypoint_confidence(detector: HandConfidence, frames, hand_present: np.ndarray) -> tuple[float, int]:
  """(HKC over frames whose ground truth has hands, number of such frames); (NaN, 0) if there are none.

  hand_present: (T, 2) bool, the ground truth's left / right hand presence per frame.
  """
  present = np.asarray(hand_present, bool).sum(axis=-1)
  vals = [detector.frame_confidence(f, int(n)) for f, n in zip(frames, present, strict=True) if n > 0]
  if not vals:
    return float("nan"), 0
  return float(np.mean(vals)), len(vals)
