"""Audio encoders: tokens at 30 fps from log-mel or external features; time resampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax.audio import AudioEncoder, ExternalFeatureAdapter, MelConfig, log_mel_spectrogram
from chatanyone_jax.audio.encoder import num_output_frames, resample_matrix, resample_time

TINY = dict(width=32, num_layers=1, num_heads=2, mlp_ratio=2)


def _check_grads(grads):
  leaves = jax.tree_util.tree_leaves_with_path(grads)
  assert leaves
  for path, g in leaves:
    assert np.all(np.isfinite(g)), path
    assert float(jnp.abs(g).max()) > 0, f"no gradient reaches {jax.tree_util.keystr(path)}"


def _forward_and_grads(module, params, x):
  """One compile: output and d(mean out^2)/d params."""
  def loss(p):
    out = module.apply({"params": p}, x)
    return jnp.mean(out ** 2), out
  (_, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return out, grads


def test_audio_encoder_30_and_75_tokens_for_1_and_2p5_seconds_and_gradients():
  mel_fn = jax.jit(log_mel_spectrogram)
  audio = 0.1 * jax.random.normal(jax.random.key(0), (2, 40000))  # 2.5 s
  mel_1s, mel_2p5s = mel_fn(audio[:, :16000]), mel_fn(audio)
  assert mel_1s.shape == (2, 100, 80) and mel_2p5s.shape == (2, 250, 80)
  enc = AudioEncoder(**TINY)
  params = jax.jit(enc.init)(jax.random.key(1), mel_1s)["params"]  # parameters do not depend on length
  out, grads = _forward_and_grads(enc, params, mel_1s)
  assert out.shape == (2, 30, 32)
  assert np.all(np.isfinite(out))
  _check_grads(grads)
  out = jax.jit(enc.apply)({"params": params}, mel_2p5s)
  assert out.shape == (2, 75, 32)
  assert np.all(np.isfinite(out))


def test_audio_encoder_lengths_without_compiling():
  enc = AudioEncoder()  # default (full-size) preset, shapes only
  mel = jax.ShapeDtypeStruct((1, 101, 80), jnp.float32)  # librosa center=True framing of 1 s
  v = jax.eval_shape(enc.init, jax.random.key(0), mel)
  assert jax.eval_shape(enc.apply, v, mel).shape == (1, 30, 256)
  assert jax.eval_shape(lambda v, m: enc.apply(v, m, num_tokens=31), v, mel).shape == (1, 31, 256)
  n_params = sum(x.size for x in jax.tree.leaves(v))
  assert 1_000_000 < n_params < 3_000_000, n_params


@pytest.mark.parametrize("rate,dim,frames,tokens", [
    (50.0, 768, 50, 30),  # wav2vec2-base / HuBERT-base, 1 s
    (50.0, 1280, 125, 75),  # Whisper-large encoder, 2.5 s
    (100 / 6, 512, 42, 75),  # Paraformer (60 ms LFR), 2.5 s: upsampled
])
def test_external_adapter_shapes(rate, dim, frames, tokens):
  adapter = ExternalFeatureAdapter(frame_rate=rate, width=256)
  feats = jax.ShapeDtypeStruct((2, frames, dim), jnp.float32)
  v = jax.eval_shape(adapter.init, jax.random.key(0), feats)
  assert jax.eval_shape(adapter.apply, v, feats).shape == (2, tokens, 256)


def test_external_adapter_values_and_gradients():
  feats = 3.0 * jax.random.normal(jax.random.key(0), (2, 50, 768)) + 1.0  # wav2vec2-like, 1 s
  adapter = ExternalFeatureAdapter(frame_rate=50.0, **TINY)
  params = jax.jit(adapter.init)(jax.random.key(1), feats)["params"]
  out, grads = _forward_and_grads(adapter, params, feats)
  assert out.shape == (2, 30, 32)
  assert np.all(np.isfinite(out))
  _check_grads(grads)


def test_resample_rows_are_normalised_and_time_aligned():
  m = resample_matrix(100, 30, 100.0, 30.0)  # (30, 100)
  np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)
  assert np.all(m >= 0)
  # A signal equal to its own time stamps maps to the token time stamps (interior tokens: full
  # support); the discrete triangle filter is off by at most ~0.12 ms.
  t_in = (np.arange(100) + 0.5) / 100
  t_out = (np.arange(30) + 0.5) / 30
  np.testing.assert_allclose((m @ t_in)[1:-1], t_out[1:-1], atol=2e-4)
  # Each 30 fps token averages the mel frames within one video frame of it: +-1/30 s, ~6.7 frames.
  assert np.count_nonzero(m[15]) in (6, 7)
  # Any length keeps the 100 -> 30 alignment (no stretching to fit).
  np.testing.assert_allclose(resample_matrix(250, 75, 100.0, 30.0)[:29, :100], m[:29], atol=1e-6)


def test_resample_upsampling_is_linear_interpolation():
  rate_in, rate_out, n_in = 100 / 6, 30.0, 40
  x = np.random.default_rng(0).normal(size=(1, n_in, 3)).astype(np.float32)
  n_out = num_output_frames(n_in, rate_in, rate_out)
  assert n_out == 72
  out = np.asarray(resample_time(jnp.asarray(x), rate_in, rate_out))
  t_in = (np.arange(n_in) + 0.5) / rate_in
  t_out = (np.arange(n_out) + 0.5) / rate_out
  for c in range(3):
    np.testing.assert_allclose(out[0, :, c], np.interp(t_out, t_in, x[0, :, c]), atol=1e-5)


def test_conv_front_end_is_local_in_time():
  """Without attention, a token only sees audio near its own time: editing the audio after 1.5 s
  leaves the tokens before ~1.4 s unchanged and changes the later ones."""
  cfg = MelConfig()
  audio = 0.1 * jax.random.normal(jax.random.key(0), (1, 32000))
  enc = AudioEncoder(**{**TINY, "num_layers": 0})

  @jax.jit
  def tokens(v, a):
    return enc.apply(v, log_mel_spectrogram(a, cfg))

  v = jax.jit(enc.init)(jax.random.key(1), log_mel_spectrogram(audio, cfg))
  a = tokens(v, audio)
  b = tokens(v, audio.at[:, 24000:].set(0.0))
  assert a.shape == (1, 60, 32)
  np.testing.assert_allclose(a[:, :40], b[:, :40], atol=1e-5)
  assert float(jnp.abs(a[:, 50:] - b[:, 50:]).max()) > 1e-2
