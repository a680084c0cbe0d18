"""Log-mel spectrogram in pure JAX, whole-clip and streaming.

The default front end of stage 1 (ARCHITECTURE §3): 16 kHz mono, 80 mel bins,
25 ms window (n_fft 400), 10 ms hop, periodic Hann window, power spectrum,
Slaney mel filterbank (librosa's defaults, built in NumPy without importing
librosa), log-mel = ln(max(mel, 1e-5)). Everything is jit-able and fuses into
the streaming step; the only NumPy work (window, filterbank) runs once at
trace time.

Framing (`MelConfig.padding`): "causal" (default; L // hop frames for L
samples, 100 per second, each 10 ms of streamed audio completes one frame,
what the streaming functions compute), "valid" (librosa `center=False`) or
"center" (librosa `center=True`, whole clips only). Parity with librosa:
tests/chatanyone_jax/audio/melspec_test.py.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Padding = Literal["causal", "valid", "center"]


@dataclasses.dataclass(frozen=True)
class MelConfig:
  """Static parameters of the log-mel front end (hashable: usable as a jit static argument).

  win_length < n_fft (e.g. 400 in a 512 FFT) zero-pads the window to n_fft in the centre, as librosa
  does. The log floor 1e-5 (ln = -11.51) is about 50 dB under a full-scale sine. `padding`:
    * "causal": the clip is left-padded with n_fft - hop zeros and framed without right padding, so
      frame k ends at sample (k + 1) * hop and L samples give L // hop frames;
    * "valid": librosa `center=False`, 1 + (L - n_fft) // hop frames;
    * "center": librosa `center=True` (zero padding), 1 + L // hop frames; whole clips only.
  """
  sample_rate: int = 16000
  n_fft: int = 400
  win_length: int = 400
  hop_length: int = 160
  n_mels: int = 80
  fmin: float = 0.0
  fmax: float | None = None  # None -> sample_rate / 2
  log_floor: float = 1e-5
  padding: Padding = "causal"

  @property
  def frame_rate(self) -> float:
    """Mel frames per second (100 by default)."""
    return self.sample_rate / self.hop_length


# --- NumPy constants (trace time) ------------------------------------------------------------------------


# Slaney mel scale (librosa `htk=False`): linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
  f = np.asarray(f, np.float64)
  log_part = _MIN_LOG_MEL + np.log(np.maximum(f, 1e-10) / _MIN_LOG_HZ) / _LOGSTEP
  return np.where(f >= _MIN_LOG_HZ, log_part, f / _F_SP)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
  m = np.asarray(m, np.float64)
  return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), _F_SP * m)


@functools.lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
  """Slaney-normalised triangular mel filters, librosa.filters.mel's formula.

  Returns:
    (n_fft // 2 + 1, n_mels) float64, laid out for `power @ fb`. Read-only (cached).
  """
  fmax = sample_rate / 2 if fmax is None else fmax
  fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)  # (F,)
  mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))  # (M + 2,)
  fdiff = np.diff(mel_f)
  ramps = mel_f[:, None] - fft_freqs[None, :]  # (M + 2, F)
  lower = -ramps[:-2] / fdiff[:-1, None]
  upper = ramps[2:] / fdiff[1:, None]
  weights = np.maximum(0.0, np.minimum(lower, upper))  # (M, F)
  weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
  out = np.ascontiguousarray(weights.T)
  out.flags.writeable = False
  return out


@functools.lru_cache(maxsize=16)
def _window(win_length: int, n_fft: int) -> np.ndarray:
  """Periodic Hann window of win_length, zero-padded to n_fft in the centre (librosa pad_center)."""
  n = np.arange(win_length)
  w = 0.5 - 0.5 * np.cos(2 * np.pi * n / win_length)
  left = (n_fft - win_length) // 2
  out = np.zeros(n_fft)
  out[left:left + win_length] = w
  out.flags.writeable = False
  return out


# --- Frames -> mel ----------------------------------------------------------------------------------------


def _frames_to_power_mel(frames: jax.Array, cfg: MelConfig) -> jax.Array:
  """(..., F, n_fft) raw sample frames -> (..., F, n_mels) power mel."""
  win = jnp.asarray(_window(cfg.win_length, cfg.n_fft), jnp.float32)
  spec = jnp.fft.rfft(frames.astype(jnp.float32) * win, n=cfg.n_fft, axis=-1)  # (..., F, n_fft//2+1)
  power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
  fb = jnp.asarray(mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax), jnp.float32)
  # HIGHEST keeps full float32 on GPUs whose default f32 matmul is TF32.
  return jnp.matmul(power, fb, precision=jax.lax.Precision.HIGHEST)


def _log(mel: jax.Array, cfg: MelConfig) -> jax.Array:
  return jnp.log(jnp.maximum(mel, cfg.log_floor))


def _frame(x: jax.Array, num_frames: int, cfg: MelConfig) -> jax.Array:
  """(..., N) -> (..., num_frames, n_fft) with hop_length stride, starting at sample 0."""
  idx = np.arange(num_frames)[:, None] * cfg.hop_length + np.arange(cfg.n_fft)[None, :]
  return x[..., idx]


def num_frames(num_samples: int, cfg: MelConfig = MelConfig()) -> int:
  """Frames that `log_mel_spectrogram` returns for a clip of num_samples."""
  if cfg.padding == "causal":
    return num_samples // cfg.hop_length
  if cfg.padding == "center":
    return 1 + num_samples // cfg.hop_length
  if cfg.padding == "valid":
    return max(0, 1 + (num_samples - cfg.n_fft) // cfg.hop_length)
  raise ValueError(f"unknown padding {cfg.padding!r}")


def mel_power_spectrogram(audio: jax.Array, cfg: MelConfig = MelConfig()) -> jax.Array:
  """Power mel spectrogram (before the log), framed per `cfg.padding`.

  Args:
    audio: (..., L) float waveform at cfg.sample_rate.

  Returns:
    (..., num_frames(L), n_mels) float32.
  """
  audio = jnp.asarray(audio, jnp.float32)
  length = audio.shape[-1]
  n = num_frames(length, cfg)
  pad = [(0, 0)] * (audio.ndim - 1)
  if cfg.padding == "causal":
    audio = jnp.pad(audio, pad + [(cfg.n_fft - cfg.hop_length, 0)])
  elif cfg.padding == "center":
    audio = jnp.pad(audio, pad + [(cfg.n_fft // 2, cfg.n_fft // 2)])
  return _frames_to_power_mel(_frame(audio, n, cfg), cfg)


def log_mel_spectrogram(audio: jax.Array, cfg: MelConfig = MelConfig()) -> jax.Array:
  """ln(max(mel, log_floor)) of `mel_power_spectrogram`.

  Args:
    audio: (..., L) float waveform at cfg.sample_rate.

  Returns:
    (..., num_frames(L), n_mels) float32; 100 frames per second with the defaults.
  """
  return _log(mel_power_spectrogram(audio, cfg), cfg)


# --- Streaming --------------------------------------------------------------------------------------------


class MelStreamState(NamedTuple):
  """Carried audio context of a mel stream (a pytree).

  buffer: (..., n_fft - 1) the most recent samples, right-aligned.
  count: () int32, how many of them belong to frames not yet emitted.
  """
  buffer: jax.Array
  count: jax.Array


def init_mel_stream(cfg: MelConfig = MelConfig(), batch_shape: tuple[int, ...] = ()) -> MelStreamState:
  """Empty stream state. "causal" starts with n_fft - hop zeros of context, "valid" with none."""
  if cfg.padding == "causal":
    count = cfg.n_fft - cfg.hop_length
  elif cfg.padding == "valid":
    count = 0
  else:
    raise ValueError(f"streaming supports padding 'causal' or 'valid', not {cfg.padding!r}")
  return MelStreamState(jnp.zeros((*batch_shape, cfg.n_fft - 1), jnp.float32), jnp.asarray(count, jnp.int32))


def max_stream_frames(chunk_length: int, cfg: MelConfig = MelConfig()) -> int:
  """Most frames one `mel_stream_step` can emit for a chunk: ceil(chunk_length / hop)."""
  return -(-chunk_length // cfg.hop_length)


def mel_stream_step(state: MelStreamState, chunk: jax.Array,
                    cfg: MelConfig = MelConfig()) -> tuple[MelStreamState, jax.Array, jax.Array]:
  """Log-mel frames completed by one chunk of audio; any chunk length (static per compile).

  Concatenating `frames[..., :num_valid, :]` over the chunks of a clip equals
  `log_mel_spectrogram(clip, cfg)` for "causal" and "valid" padding (same
  framing, same per-frame arithmetic). With "causal" padding and chunk lengths
  that are multiples of hop_length every call emits exactly chunk_length / hop
  frames, so all of them are valid.

  Args:
    state: from `init_mel_stream` or the previous step.
    chunk: (..., C) new samples; leading dims match the state's batch shape.
    cfg: static front-end parameters.

  Returns:
    (new state, frames (..., ceil(C / hop), n_mels), num_valid () int32). Frames
    past num_valid are zeros.
  """
  chunk = jnp.asarray(chunk, jnp.float32)
  c = chunk.shape[-1]
  hop, n_fft = cfg.hop_length, cfg.n_fft
  ctx = n_fft - 1
  f_max = max_stream_frames(c, cfg)
  x = jnp.concatenate([state.buffer, chunk], axis=-1)  # (..., ctx + C), valid tail of count + C
  total = state.count + c
  num_valid = jnp.maximum(0, (total - n_fft) // hop + 1).astype(jnp.int32)
  # Pad so that a window of f_max frames starting anywhere in the valid region stays in bounds.
  span = (f_max - 1) * hop + n_fft
  xp = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, span)])
  start = ctx - state.count
  window = jax.lax.dynamic_slice_in_dim(xp, start, span, axis=-1)  # (..., span)
  frames = _frame(window, f_max, cfg)  # (..., f_max, n_fft)
  logmel = _log(_frames_to_power_mel(frames, cfg), cfg)
  valid = jnp.arange(f_max) < num_valid  # (f_max,)
  logmel = jnp.where(valid[:, None], logmel, 0.0)
  new_state = MelStreamState(buffer=x[..., -ctx:], count=(total - num_valid * hop).astype(jnp.int32))
  return new_state, logmel, num_valid
