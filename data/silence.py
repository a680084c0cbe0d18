"""Silence augmentation of stage-1 windows (`data.pipelines.CutWindow`, config.silence_prob).

The training clips are nearly all speech, so a model trained on them alone never sees a pause and keeps
talking through one. A window drawn for silence gets a fixed span of 0.4-1.2 s inside its generated T
frames (`silence_span`, one per window row, so that a cached speech-feature row of the silenced audio
matches it: `data.speech_features`, silent=True) whose audio is faint noise (`silence_noise`) and whose
expression eases into the clip's most closed mouth (the frame of least inner-lip gap, `LipGap`) and back.
"""

from __future__ import annotations

import numpy as np

SILENCE_FRAMES = (12, 36)
SILENCE_RAMP = 3
SILENCE_NOISE_DB = (-75.0, -50.0)  # the noise's RMS, dB of full scale


def silence_span(row: int, config) -> tuple[int, int]:
  """Frames [a, b) of window row `row`'s T + H frames (config: a `data.pipelines.MotionWindowConfig`) that
  silence augmentation silences: one fixed random span per row, inside the last T."""
  rng = np.random.default_rng([0x51_1E_4C_E, row])
  t, h = config.window, config.history
  n = int(rng.integers(min(SILENCE_FRAMES[0], t), min(SILENCE_FRAMES[1], t) + 1))
  a = h + int(rng.integers(0, t - n + 1))
  return a, a + n


def silence_noise(row: int, num_samples: int) -> np.ndarray:
  """The faint noise that fills row `row`'s silenced span: Gaussian, RMS uniform in SILENCE_NOISE_DB."""
  rng = np.random.default_rng([0x401_5E, row])
  rms = 10.0 ** (rng.uniform(*SILENCE_NOISE_DB) / 20.0)
  return (rms * rng.standard_normal(num_samples)).astype(np.float32)


def silence_audio(audio: np.ndarray, row: int, config, first_frame: int,
                  samples_per_frame: float) -> np.ndarray:
  """`audio` (a copy) with row `row`'s silence span filled with its noise; audio[0] is the sample of
  frame `first_frame` of the row's T + H frames (0 for the window audio, H minus the context for the
  speech encoder's input, fractional frames allowed)."""
  a, b = silence_span(row, config)
  lo = max(int(round((a - first_frame) * samples_per_frame)), 0)
  hi = min(int(round((b - first_frame) * samples_per_frame)), audio.size)
  out = np.array(audio, np.float32)
  if hi > lo:
    out[lo:hi] = silence_noise(row, hi - lo)
  return out


class LipGap:
  """`chatanyone_jax.template.mouth_opening` in NumPy (the data workers run no JAX): the inner-lip gap of
  expression coefficients, from the template's `lip_gap_vectors`."""

  def __init__(self):
    from chatanyone_jax import template as tp
    self.mean, self.id_dir, self.exp_dir = (np.asarray(v, np.float32)
                                            for v in tp.lip_gap_vectors(tp.load_head_template()))

  def __call__(self, exp: np.ndarray, identity: np.ndarray | None = None) -> np.ndarray:
    d = self.mean + np.asarray(exp, np.float32) @ self.exp_dir
    if identity is not None:
      d = d + np.asarray(identity, np.float32) @ self.id_dir
    return np.linalg.norm(d, axis=-1)
