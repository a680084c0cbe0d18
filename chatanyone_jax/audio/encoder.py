"""Audio encoders: log-mel (100 Hz) or external speech features -> one token per video frame (30 fps).

The paper feeds Paraformer ASR features (§3.3). Our default front end is a
learned encoder on the JAX log-mel (ARCHITECTURE §3); `ExternalFeatureAdapter`
takes precomputed features of any model (wav2vec2 / HuBERT / Whisper at 50 Hz,
Paraformer at 16.7 Hz, ...) to the same tokens.

Rate conversion is `resample_time`: frame i of a stream at rate r stands for
the time (i + 0.5) / r seconds, token j for (j + 0.5) / fps, and a clip of T
input frames gives floor(T * fps / r) tokens unless `num_tokens` is given
(100 "causal" mel frames = 1 s -> 30 tokens).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax.layers.attention import MultiHeadAttention
from chatanyone_jax.ops.embedding import sinusoidal_positions


def num_output_frames(num_in: int, rate_in: float, rate_out: float) -> int:
  """floor(num_in * rate_out / rate_in), robust to float rounding (100 -> 30 at 100 Hz -> 30 fps)."""
  return int(math.floor(num_in * rate_out / rate_in + 1e-6))


def resample_matrix(num_in: int, num_out: int, rate_in: float, rate_out: float,
                    phase_in: float = 0.5) -> np.ndarray:
  """(num_out, num_in) float32 triangle-filter weights (module docstring); rows sum to 1.

  Input frame i stands for the time (i + phase_in) / rate_in (0 for frames centred on i / rate_in, such as
  Whisper's encoder outputs).
  """
  t_in = (np.arange(num_in) + phase_in) / rate_in  # (T,) seconds
  t_out = (np.arange(num_out) + 0.5) / rate_out  # (N,)
  half_width = max(1.0 / rate_in, 1.0 / rate_out)
  w = np.maximum(0.0, 1.0 - np.abs(t_out[:, None] - t_in[None, :]) / half_width)  # (N, T)
  empty = w.sum(axis=1) == 0  # tokens past the end of the input (only with a large num_tokens)
  if empty.any():
    nearest = np.clip(np.round(t_out[empty] * rate_in - 0.5).astype(int), 0, num_in - 1)
    w[np.flatnonzero(empty), nearest] = 1.0
  return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def resample_time(x: jax.Array, rate_in: float, rate_out: float, num_out: int | None = None,
                  phase_in: float = 0.5) -> jax.Array:
  """Resamples the time axis of (B, T, D) features from rate_in to rate_out.

  Frame i of a stream at rate r stands for the time (i + 0.5) / r seconds (half-sample centres, like
  image resizing without corner alignment). Output frame j is a triangle-weighted average of the input
  frames, weight max(0, 1 - |t_i - t_j| / h) with h = max(1 / rate_in, 1 / rate_out), renormalised to
  sum 1 (which handles the clip edges): downsampling (100 Hz -> 30 fps) is an anti-aliased linear
  filter spanning +-1 output frame, upsampling plain linear interpolation. It is a fixed (N, T) matrix
  built in NumPy at trace time, so any length works and the alignment does not drift. The default
  causal mel frame k is centred 7.5 ms before (k + 0.5) / 100 s, a quarter video frame that the
  convolutions and attention absorb. `phase_in` moves the input frames' times (see `resample_matrix`).

  Returns:
    (B, num_out, D); num_out defaults to floor(T * rate_out / rate_in).
  """
  t = x.shape[1]
  if num_out is None:
    num_out = num_output_frames(t, rate_in, rate_out)
  m = jnp.asarray(resample_matrix(t, num_out, rate_in, rate_out, phase_in), x.dtype)
  return jnp.einsum("nt,btd->bnd", m, x, precision=jax.lax.Precision.HIGHEST)


class TransformerBlock(nn.Module):
  """Pre-LN transformer block: x + MHA(LN(x)); x + MLP(LN(x)). Bidirectional over the window."""
  num_heads: int
  mlp_ratio: int = 4
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: (B, T, D) -> (B, T, D)."""
    d = x.shape[-1]
    x = x + MultiHeadAttention(self.num_heads, dtype=self.dtype, name="attn")(
        nn.LayerNorm(name="norm1", dtype=self.dtype)(x))
    h = nn.LayerNorm(name="norm2", dtype=self.dtype)(x)
    h = nn.gelu(nn.Dense(self.mlp_ratio * d, name="fc1", dtype=self.dtype)(h))
    return x + nn.Dense(d, name="fc2", dtype=self.dtype)(h)


class _TokenTransformer(nn.Module):
  """Sinusoidal positions + `num_layers` TransformerBlocks + final LayerNorm on (B, N, D)."""
  num_layers: int
  num_heads: int
  mlp_ratio: int = 4
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + sinusoidal_positions(x.shape[1], x.shape[-1]).astype(x.dtype)[None]
    for i in range(self.num_layers):
      x = TransformerBlock(self.num_heads, self.mlp_ratio, dtype=self.dtype, name=f"block{i}")(x)
    return nn.LayerNorm(name="norm_out", dtype=self.dtype)(x)


class AudioEncoder(nn.Module):
  """Log-mel frames -> audio tokens at the video frame rate.

  fixed affine (x - input_mean) / input_std -> `num_conv` x [Conv1D(k=3) + GELU]
  at the mel rate -> `resample_time` to fps -> sinusoidal positions ->
  `num_layers` pre-LN transformer blocks -> LayerNorm.

  input_mean / input_std are about the mean / std of the default log-mel
  (ln, floor 1e-5) over the real speech clips in shared/data/media (-8.0, 3.7).

  Attributes:
    width: token width D.
    num_layers / num_heads / mlp_ratio: the transformer.
    num_conv / kernel_size: the convolution stack.
    frame_rate: input frames per second (MelConfig().frame_rate = 100).
    fps: output tokens per second (video frame rate).
  """
  width: int = 256
  num_layers: int = 2
  num_heads: int = 4
  mlp_ratio: int = 4
  num_conv: int = 2
  kernel_size: int = 3
  frame_rate: float = 100.0
  fps: float = 30.0
  input_mean: float = -8.0
  input_std: float = 4.0
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, mel: jax.Array, num_tokens: int | None = None) -> jax.Array:
    """Encodes a window of log-mel frames.

    Args:
      mel: (B, T, n_mels) log-mel at frame_rate.
      num_tokens: static output length; floor(T * fps / frame_rate) by default.

    Returns:
      (B, num_tokens, width).
    """
    x = (mel - self.input_mean) / self.input_std
    for i in range(self.num_conv):
      x = nn.gelu(nn.Conv(self.width, (self.kernel_size,), padding="SAME", dtype=self.dtype,
                          name=f"conv{i}")(x))  # (B, T, D)
    x = resample_time(x, self.frame_rate, self.fps, num_tokens)  # (B, N, D)
    return _TokenTransformer(self.num_layers, self.num_heads, self.mlp_ratio, dtype=self.dtype,
                             name="transformer")(x)


class ExternalFeatureAdapter(nn.Module):
  """Precomputed speech-model features (any width, any rate) -> the same tokens as AudioEncoder.

  LayerNorm (feature scales differ between models) -> Dense(width) + GELU ->
  Conv1D(k=3) + GELU at the feature rate -> `resample_time` to fps ->
  sinusoidal positions -> `num_layers` transformer blocks -> LayerNorm. The input
  width comes from the features (e.g. 768 for wav2vec2-base, 1024 for HuBERT-
  large, 512 for Paraformer); the rate is `frame_rate` (50 for wav2vec2/HuBERT/
  Whisper encoders).

  Attributes:
    frame_rate: input feature frames per second.
    phase_in: input frame i stands for (i + phase_in) / frame_rate seconds (0 for Whisper's encoder,
      whose outputs are centred on i / 50 s; `resample_matrix`).
    width, num_layers, num_heads, mlp_ratio, fps: as AudioEncoder.
  """
  frame_rate: float
  width: int = 256
  num_layers: int = 1
  num_heads: int = 4
  mlp_ratio: int = 4
  fps: float = 30.0
  phase_in: float = 0.5
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, features: jax.Array, num_tokens: int | None = None) -> jax.Array:
    """features: (B, T, D_in) at frame_rate -> (B, num_tokens, width); num_tokens as AudioEncoder."""
    x = nn.LayerNorm(name="norm_in", dtype=self.dtype)(features)
    x = nn.gelu(nn.Dense(self.width, name="proj", dtype=self.dtype)(x))
    x = nn.gelu(nn.Conv(self.width, (3,), padding="SAME", dtype=self.dtype, name="conv")(x))
    x = resample_time(x, self.frame_rate, self.fps, num_tokens, self.phase_in)  # (B, N, D)
    return _TokenTransformer(self.num_layers, self.num_heads, self.mlp_ratio, dtype=self.dtype,
                             name="transformer")(x)
