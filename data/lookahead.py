"""Look-ahead augmentation of stage-1 windows (`data.pipelines.CutWindow`, config.lookahead_prob).

The low-latency stream (`chatanyone_jax.stream_spec.StreamSpec.hop`, `lookahead`) generates each window
knowing the audio of only its first hop + L frames: the rest has not arrived and is zeros. A face model
trained on whole windows alone reads those zeros as a pause and closes the mouth towards the end of the
frames it emits (held-out lip sync 0.20 at hop 8 against 0.30 with whole windows, benchmarks/RESULTS.md).
A window drawn for look-ahead gets a fixed cut (`lookahead_cut`, one per window row, so that a cached
speech-feature row of the cut audio matches it: `data.speech_features`, variant "lookahead"): the window's
audio from frame c on is zeros, exactly as the stream's, and "audio_valid" marks its first c frames, so
that FaceMotionDiT replaces the later frames' audio tokens by its learned null audio (`audio_valid`) and
can tell "not heard yet" from silence. The target is unchanged: the model learns to continue the motion.
"""

from __future__ import annotations

import numpy as np

# Frames of the generated T whose audio a look-ahead window keeps: hop + L of the stream (hop 4-10 and L 0-4
# at the low-latency settings, up to 24 for longer hops).
KNOWN_FRAMES = (4, 24)


def lookahead_cut(row: int, config) -> int:
  """c: frames of window row `row`'s generated T (config: a `data.pipelines.MotionWindowConfig`) whose
  audio look-ahead augmentation keeps; one fixed random value per row in KNOWN_FRAMES (below T)."""
  rng = np.random.default_rng([0x10_0C_A4E, row])
  t = config.window
  lo, hi = min(KNOWN_FRAMES[0], t - 1), min(KNOWN_FRAMES[1], t - 1)
  return int(rng.integers(lo, hi + 1))


def lookahead_audio(audio: np.ndarray, row: int, config, first_frame: float,
                    samples_per_frame: float) -> np.ndarray:
  """`audio` (a copy) with zeros from row `row`'s cut on; audio[0] is the sample of frame `first_frame` of
  the row's T + H frames (0 for the window audio, H minus the context for the speech encoder's input).
  The cut is at sample round((H + c) · spf) of the row, where the stream's step ends (`step_bounds`)."""
  end = config.history + lookahead_cut(row, config)
  lo = max(int(round((end - first_frame) * samples_per_frame)), 0)
  out = np.array(audio, np.float32)
  out[lo:] = 0.0
  return out


def audio_valid(row: int, config) -> np.ndarray:
  """(T,) bool: the frames of the generated window whose audio a look-ahead row keeps."""
  return np.arange(config.window) < lookahead_cut(row, config)
