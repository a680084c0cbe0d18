"""Log-mel front end: librosa parity on real speech, streaming == whole clip."""

import functools

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from chatanyone_jax.audio import melspec
from chatanyone_jax.audio.melspec import MelConfig
from data import media
from tests.helpers import media_dir, require

SPEECH = ["LatentSync__assets_demo1_audio.wav", "Real-Time-Voice-Cloning__samples_1320_00000.mp3"]
SECONDS = 4


@functools.cache
def _speech(name: str) -> np.ndarray:
  path = require(media_dir() / "speech" / name, "speech clip")
  y = media.read_audio(path, 16000)[:SECONDS * 16000]
  assert y.shape[0] > 3 * 16000 and np.abs(y).max() > 0.1  # real, non-silent speech
  return y


@functools.cache
def _jitted(cfg: MelConfig, log: bool):
  return jax.jit(functools.partial(melspec.log_mel_spectrogram if log else melspec.mel_power_spectrogram,
                                   cfg=cfg))


def _librosa_mel(y: np.ndarray, n_fft: int, center: bool) -> np.ndarray:
  """(F, 80) float64 reference."""
  return librosa.feature.melspectrogram(y=y.astype(np.float64), sr=16000, n_fft=n_fft, hop_length=160,
                                        win_length=400, n_mels=80, center=center).T


@pytest.mark.parametrize("n_fft", [400, 512])
def test_filterbank_equals_librosa(n_fft):
  ours = melspec.mel_filterbank(16000, n_fft, 80)
  ref = librosa.filters.mel(sr=16000, n_fft=n_fft, n_mels=80, dtype=np.float64)
  assert ours.shape == (n_fft // 2 + 1, 80)
  np.testing.assert_allclose(ours, ref.T, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", SPEECH)
@pytest.mark.parametrize("n_fft,padding", [(400, "valid"), (400, "center"), (512, "center")])
def test_matches_librosa_on_real_speech(name, n_fft, padding):
  y = _speech(name)
  cfg = MelConfig(n_fft=n_fft, padding=padding)
  ref = _librosa_mel(y, n_fft, center=padding == "center")
  power = np.asarray(_jitted(cfg, False)(y))
  assert power.shape == ref.shape == (melspec.num_frames(len(y), cfg), 80)
  rel = np.linalg.norm(power - ref) / np.linalg.norm(ref)
  assert rel < 1e-6, rel  # measured <= 1.2e-7
  logmel = np.asarray(_jitted(cfg, True)(y))
  log_err = np.abs(logmel - np.log(np.maximum(ref, 1e-5))).max()
  assert log_err < 5e-4, log_err  # measured <= 6e-5


def test_causal_framing_is_librosa_valid_after_left_padding():
  y = _speech(SPEECH[0])
  cfg = MelConfig()  # causal
  out = np.asarray(_jitted(cfg, True)(y))
  assert out.shape == (len(y) // 160, 80)  # 100 frames per second
  ref = _librosa_mel(np.pad(y, (400 - 160, 0)), 400, center=False)
  np.testing.assert_allclose(out, np.log(np.maximum(ref, 1e-5)), atol=5e-4)


def test_batch_dims():
  y = _speech(SPEECH[0])[:16000]
  batch = np.stack([y, 0.5 * y[::-1]])  # (2, L)
  out = _jitted(MelConfig(), True)(batch)
  assert out.shape == (2, 100, 80)
  np.testing.assert_allclose(out[1], _jitted(MelConfig(), True)(batch[1]), atol=1e-5)


def _stream(y: np.ndarray, chunk: int, cfg: MelConfig) -> np.ndarray:
  step = jax.jit(functools.partial(melspec.mel_stream_step, cfg=cfg))
  state, outs = melspec.init_mel_stream(cfg), []
  for i in range(0, len(y), chunk):
    state, frames, n = step(state, y[i:i + chunk])
    assert frames.shape == (melspec.max_stream_frames(len(y[i:i + chunk]), cfg), 80)
    outs.append(np.asarray(frames)[:int(n)])
  return np.concatenate(outs)


@pytest.mark.parametrize("padding", ["causal", "valid"])
@pytest.mark.parametrize("chunk", [1000, 537, 4001, 399, 57])
def test_streaming_equals_whole_clip(padding, chunk):
  cfg = MelConfig(padding=padding)
  y = _speech(SPEECH[1])[:24000]  # 1.5 s; ends mid-hop for most chunk sizes
  whole = np.asarray(_jitted(cfg, True)(y))
  got = _stream(y, chunk, cfg)
  assert got.shape == whole.shape
  np.testing.assert_allclose(got, whole, rtol=0, atol=1e-5)  # measured: 0.0


def test_causal_stream_in_scan_emits_one_frame_per_hop():
  """Hop-multiple chunks: every call yields chunk / hop valid frames; the step scans."""
  cfg = MelConfig()
  y = _speech(SPEECH[0])[:32000]
  chunks = jnp.asarray(y.reshape(-1, 3200))  # (10, 3200): 200 ms chunks

  @jax.jit
  def run(chunks):
    def body(state, chunk):
      state, frames, n = melspec.mel_stream_step(state, chunk, cfg)
      return state, (frames, n)
    return jax.lax.scan(body, melspec.init_mel_stream(cfg), chunks)[1]

  frames, n = run(chunks)
  np.testing.assert_array_equal(n, 20)
  np.testing.assert_allclose(frames.reshape(-1, 80), _jitted(cfg, True)(y), atol=1e-5)


def test_streaming_rejects_center_padding():
  with pytest.raises(ValueError, match="streaming"):
    melspec.init_mel_stream(MelConfig(padding="center"))
