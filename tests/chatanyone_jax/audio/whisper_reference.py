"""NumPy reference of Whisper's front end (faster-whisper's FeatureExtractor) and encoder, written on the
CTranslate2 variables as they are stored (channel-first, fused q / k / v), independent of the JAX code.
The encoder matched ctranslate2's `Whisper.encode` to 2.6e-5 (docs/SPEECH_FEATURES.md)."""

import numpy as np
from scipy.special import erf

from chatanyone_jax.audio.melspec import mel_filterbank


def log_mel(audio: np.ndarray, pad_to_30s: bool = True) -> np.ndarray:
  """(L,) -> (80, F): F = 3000 with the 30-s zero padding (Whisper's default), else L // 160."""
  x = np.pad(audio.astype(np.float32), (0, 480000 if pad_to_30s else 0))
  x = np.pad(x, (200, 200), mode="reflect")
  n = 1 + (x.size - 400) // 160
  frames = np.lib.stride_tricks.sliding_window_view(x, 400)[::160][:n]
  spec = np.fft.rfft(frames * np.hanning(401)[:-1].astype(np.float32), axis=-1)
  mag = (np.abs(spec[:-1]) ** 2).T  # drop the last frame, (201, F)
  log = np.log10(np.clip(mel_filterbank(16000, 400, 80).T.astype(np.float32) @ mag, 1e-10, None))
  log = (np.maximum(log, log.max() - 8.0) + 4.0) / 4.0
  return (log[:, :3000] if pad_to_30s else log).astype(np.float32)


def encoder(mel: np.ndarray, w: dict) -> np.ndarray:
  """(80, F) log-mel, CTranslate2 variables {name: float32} -> (ceil(F / 2), D)."""
  gelu = lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2)))

  def conv1d(x, k, b, stride):  # x (C, T), k (O, C, 3), padding 1
    xp = np.pad(x, ((0, 0), (1, 1)))
    t = (x.shape[1] - 1) // stride + 1
    cols = np.stack([xp[:, i:i + stride * (t - 1) + 1:stride] for i in range(3)], -1)  # (C, T, 3)
    return np.einsum("ctk,ock->ot", cols, k) + b[:, None]

  def ln(x, p):
    m = x.mean(-1, keepdims=True)
    return (x - m) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * w[p + "/gamma"] + w[p + "/beta"]

  lin = lambda x, p: x @ w[p + "/weight"].T + w[p + "/bias"]
  x = gelu(conv1d(mel, w["encoder/conv1/weight"], w["encoder/conv1/bias"], 1))
  x = gelu(conv1d(x, w["encoder/conv2/weight"], w["encoder/conv2/bias"], 2)).T  # (T, D)
  x = x + w["encoder/position_encodings/encodings"][:x.shape[0]]
  h = int(w["encoder/num_heads"])
  hd = x.shape[1] // h
  i = 0
  while f"encoder/layer_{i}/ffn/linear_0/weight" in w:
    p = f"encoder/layer_{i}/"
    qkv = lin(ln(x, p + "self_attention/layer_norm"), p + "self_attention/linear_0")
    q, k, v = (a.reshape(-1, h, hd).transpose(1, 0, 2) for a in np.split(qkv, 3, -1))
    a = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
    a = np.exp(a - a.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    x = x + lin((a @ v).transpose(1, 0, 2).reshape(-1, h * hd), p + "self_attention/linear_1")
    x = x + lin(gelu(lin(ln(x, p + "ffn/layer_norm"), p + "ffn/linear_0")), p + "ffn/linear_1")
    i += 1
  return ln(x, "encoder/layer_norm")
