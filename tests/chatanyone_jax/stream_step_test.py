"""The pure streaming core (`chatanyone_jax.stream_spec`, `chatanyone_jax.stream_step`) on tiny random models.

Window / audio-block arithmetic, the carried log-mel context, the refine pass's face mask, and the
avatar state and renderer call of the step, without the host side (no MediaPipe, no portrait
annotation: `tests/infer/streaming_test.py` covers that).
"""

from __future__ import annotations

import dataclasses
import fractions

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax import stream_spec, stream_step
from chatanyone_jax.audio import log_mel_spectrogram, whisper
from chatanyone_jax.motion.lip_regressor import LipRegressor
from chatanyone_jax.render import face_refine
from chatanyone_jax.template import load_head_template
from chatanyone_jax.template import mouth_opening as tp_mouth_opening
from chatanyone_jax.template.head_template import project_keypoints
from data.media import read_audio, read_image
from infer.models import build_spec
from infer.options import StreamOptions
from infer.smoke import random_params
from infer.streaming import ASSETS_PORTRAIT, ASSETS_SPEECH
from tests.helpers import SMOKE_STREAM, require_module

SR = 16000


def _configs(mode: str) -> dict:
  """The tiny models' configs (no parameters: a spec needs only these), keyed as `infer.stream` takes them."""
  from train.configs import motion_body, motion_face

  configs = {"motion_face": motion_face.get_config("tiny"), "clip_x0": 3.0}
  if mode == "upper":
    configs.update(motion_body=motion_body.get_config("tiny"), render="tiny_upper512x768",
                   face_refine="tiny_face_refine")
  else:
    configs["render"] = "tiny_head512"
  return configs


def test_window_bounds_do_not_drift():
  for t in (16, 40):
    spf = fractions.Fraction(SR, 30)
    lengths = [np.subtract(*stream_spec.window_bounds(i, t, spf)[::-1]) for i in range(300)]
    assert set(lengths) == {int(t * spf), int(t * spf) + 1}  # 8533 / 8534, 21333 / 21334
    assert stream_spec.window_bounds(300, t, spf)[0] == round(300 * t * spf) == sum(lengths)
    # The step's carried rounding phase gives the same counts.
    residue = spf.denominator
    for i in range(300):
      n, residue = stream_step._advance(residue, t, spf)
      assert n == lengths[i], i


def test_step_bounds_of_hops_and_lookahead():
  """Step i consumes [c_i, c_{i+1}) with c_i = round((i · hop + L) · spf) (c_0 = 0): contiguous, no drift,
  within block_samples; the carried phases of `advance_audio` agree; whole windows are `window_bounds`."""
  configs = _configs("head")
  whole = build_spec(configs, StreamOptions(mode="head"))
  spec = build_spec(configs, StreamOptions(mode="head", hop=8, lookahead=2))  # tiny T = 16
  assert (whole.step_frames, whole.lookahead, spec.step_frames) == (16, 0, 8)
  spf = spec.spf
  for i in range(200):
    assert stream_spec.step_bounds(i, whole) == stream_spec.window_bounds(i, 16, spf)
  bounds = [stream_spec.step_bounds(i, spec) for i in range(200)]
  assert bounds[0] == (0, 5333) and stream_spec.block_samples(spec) == 5334  # ceil(10 · 1600 / 3)
  assert all(b[1] == c[0] for b, c in zip(bounds, bounds[1:], strict=False))
  assert all(b[1] == round(((i + 1) * 8 + 2) * spf) for i, b in enumerate(bounds))
  assert max(b - a for a, b in bounds) <= stream_spec.block_samples(spec)
  # A whole clip's blocks: each step's samples, then zeros (also past the clip's end, 7000 samples here).
  audio = np.random.default_rng(0).normal(size=7000).astype(np.float32)
  blocks = list(stream_spec.step_blocks(audio, spec, 3))
  assert [b.shape for b in blocks] == [(5334,)] * 3
  arrived = [b[:c1 - c0] for b, (c0, c1) in zip(blocks, bounds, strict=False)]
  np.testing.assert_array_equal(np.concatenate(arrived), np.pad(audio, (0, bounds[2][1] - 7000)))
  assert not any(b[c1 - c0:].any() for b, (c0, c1) in zip(blocks, bounds, strict=False))
  # The step's audio state: lead c_i - a_i and phase a_i mod 160, with a_i = round(i · hop · spf).
  audio = stream_step.init_audio_state(spec)
  fn = jax.jit(lambda st, i: stream_step.advance_audio(spec, st, i, jnp.zeros(5334, jnp.float32))[0])
  for i in range(30):
    audio = fn(audio, i)
    a = stream_spec.frame_sample((i + 1) * 8, spf)
    assert int(audio["lead"]) == bounds[i][1] - a and int(audio["phase"]) == a % 160, i
  for kw, match in [(dict(hop=17), "hop must be in"), (dict(hop=8, lookahead=9), "lookahead must be in"),
                    (dict(lookahead=1), "lookahead must be in")]:
    with pytest.raises(ValueError, match=match):
      build_spec(configs, StreamOptions(mode="head", **kw))


def test_spec_defaults_are_the_inference_defaults():
  """One definition of each stream default: StreamSpec, StreamOptions and the sampling constants agree."""
  from chatanyone_jax.motion.sampling import CLIP_X0, DDIM_STEPS, GUIDANCE_SCALE, SEAM_FRAMES

  configs = _configs("head")
  spec = build_spec(configs, StreamOptions(mode="head"))
  fields = {f.name: f.default for f in stream_spec.StreamSpec.__dataclass_fields__.values()}
  assert (fields["num_steps"], fields["guidance_scale"], fields["seam_frames"]) == (
      DDIM_STEPS, GUIDANCE_SCALE, SEAM_FRAMES) == (spec.num_steps, spec.guidance_scale, spec.seam_frames)
  assert spec.fps == stream_spec.FPS == 30 and spec.mel.sample_rate == stream_spec.SAMPLE_RATE == SR
  assert spec.clip_x0 == 3.0  # StreamOptions' clip_x0 "auto" reads configs["clip_x0"]
  assert build_spec(configs, StreamOptions(mode="head", clip_x0=None)).clip_x0 is None
  trained = {k: v for k, v in configs.items() if k != "clip_x0"}  # a checkpoint's configs: the default clip
  assert build_spec(trained, StreamOptions(mode="head")).clip_x0 == CLIP_X0 == 4.0
  assert stream_spec.block_samples(spec) == 8534 and spec.window == 16  # ceil(16 · 1600 / 3)


def _window_inputs(spec, audio, steps):
  """(x, start, phase, c_{i+1}) of the first steps of a stream of `audio` (`advance_audio`)."""
  fn = jax.jit(lambda st, i, block: stream_step.advance_audio(spec, st, i, block))
  state = stream_step.init_audio_state(spec)
  for i in range(steps):
    c0, c1 = stream_spec.step_bounds(i, spec)
    buf = np.full(stream_spec.block_samples(spec), 0.5, np.float32)  # padding after the step's samples
    buf[:c1 - c0] = audio[c0:c1]
    phase = state["phase"]
    state, x, start = fn(state, i, buf)
    yield x, start, phase, c1


def test_lip_regressor_gives_the_stream_its_mouth():
  """With a lip regressor (motion_lip) the stream's face motion is FaceMotionDiT's sample (same key) with the
  mouth of the regressor run on the window's Whisper features (of the block it reads) put in by
  `blend_mouth`: pose untouched,
  the mouth opening the regressor's; `StreamOptions(lip=False)` streams without it; a log-mel face model
  cannot take one."""
  from data import whisper_weights
  from infer.models import speech_params
  from train import tasks
  from train.configs import motion_face, motion_lip

  require_module(whisper_weights.PACKAGE, whisper_weights.INSTALL_HINT)
  from chatanyone_jax.motion.lip_regressor import blend_mouth, mouth_blend_matrix, predict_exp

  configs = {**_configs("head"), "motion_face": motion_face.get_config("tiny_whisper"),
             "motion_lip": motion_lip.get_config("tiny")}
  spec = build_spec(configs, StreamOptions(mode="head"))
  assert spec.lip is not None and build_spec(configs, StreamOptions(mode="head", lip=False)).lip is None
  plain = dataclasses.replace(spec, lip=None)
  face, lip = tasks.get_task(configs["motion_face"]), tasks.get_task(configs["motion_lip"])
  k1, k2 = jax.random.split(jax.random.key(0))
  face_params = jax.jit(lambda k: face.init_params(k, face.batch_spec(1)))(k1)
  std = np.concatenate([np.full(52, 0.5), [4.0, 4.0, 2.0], [0.02] * 3]).astype(np.float32)
  norm = {"motion_mean": np.zeros(58, np.float32), "motion_std": std}
  lip_norm = {"feature_mean": np.zeros(384, np.float32), "feature_std": np.full(384, 0.5, np.float32),
              "exp_mean": np.zeros(52, np.float32), "exp_std": np.ones(52, np.float32)}
  lip_params = jax.jit(lambda k: lip.init_params(k, lip.batch_spec(1)))(k2)
  template = load_head_template()
  encoder = speech_params(configs["motion_face"])
  params = {"motion_face": {"params": face_params, "norm": norm, "speech": encoder},
            "motion_lip": {"params": lip_params, "norm": lip_norm, "blend": mouth_blend_matrix(template)}}
  audio = read_audio(ASSETS_SPEECH, SR)[:8534]
  block = np.zeros(stream_spec.block_samples(spec), np.float32)
  c0, c1 = stream_spec.step_bounds(0, spec)
  block[:c1 - c0] = audio[c0:c1]
  style = np.zeros((1, 2), np.float32)
  out = {}
  for name, s in (("lip", spec), ("plain", plain)):
    ref = np.zeros((1, 16, 52), np.float32)
    state = stream_step.init_motion_state(s, style, jax.random.key(3), ref, False)
    out[name] = np.asarray(jax.jit(lambda p, st, b, s=s: stream_step.motion_step(s, p, st, b))(
        params, state, jnp.asarray(block))[1][0])
  c = spec.speech_context
  received = jnp.asarray(np.concatenate([np.zeros(c, np.float32), audio[:8533]]))[None]
  assert spec.lip.speech_layer == 2  # motion_lip.py's: the regressor reads Whisper's second block
  features = whisper.window_features(spec.speech, encoder, received, c, spec.lip.speech_layer)
  exp_lip = np.asarray(predict_exp(spec.lip, lip_params, features, 30.0, 16, lip_norm))[0]
  raw = lambda m: m * std
  expected = np.asarray(blend_mouth(raw(out["plain"])[:, :52], exp_lip, params["motion_lip"]["blend"]))
  np.testing.assert_allclose(raw(out["lip"])[:, :52], expected, atol=1e-4)
  np.testing.assert_allclose(out["lip"][:, 52:], out["plain"][:, 52:], atol=1e-6)  # the pose is the DiT's
  opening = lambda e: np.asarray(tp_mouth_opening(template, e))
  np.testing.assert_allclose(opening(raw(out["lip"])[:, :52]), opening(exp_lip), rtol=0.1, atol=0.02)
  configs["motion_face"] = motion_face.get_config("tiny")
  with pytest.raises(ValueError, match="log-mel"):
    build_spec(configs, StreamOptions(mode="head"))


@pytest.mark.parametrize("latency", [{}, {"hop": 8, "lookahead": 2}])
def test_window_mel_equals_whole_clip_log_mel(latency):
  """Window i's mel = whole-clip frames [floor(a_i / hop), + M) of the audio received so far (silence after
  c_{i+1}); a_i = round(i · hop · spf). Whole windows: all of the window's audio has arrived."""
  spec = build_spec(_configs("upper"), StreamOptions(**latency))
  assert spec.refine is not None and spec.body is not None
  audio = read_audio(ASSETS_SPEECH, SR)[:5 * 8534]
  mel = jax.jit(lambda x, start, phase: stream_step.window_mel(spec, x, start, phase))
  for i, (x, start, phase, c1) in enumerate(_window_inputs(spec, audio, 5 if latency else 4)):
    received = np.where(np.arange(audio.size) < c1, audio, 0.0)
    whole = np.asarray(log_mel_spectrogram(jnp.asarray(received)))
    a = stream_spec.frame_sample(i * spec.step_frames, spec.spf)
    m0 = a // spec.mel.hop_length
    np.testing.assert_allclose(np.asarray(mel(x, start, phase)), whole[m0:m0 + spec.num_mel], atol=2e-4,
                               rtol=0)
    if latency:  # the audio after the look-ahead is silence: the window's last mel frames are the log floor
      assert c1 < a + spec.window_samples and np.all(whole[(c1 + 400) // 160:m0 + spec.num_mel] < -11.5)
  assert spec.num_mel == 53  # 8533 samples // 160, as the tiny training windows


@pytest.mark.parametrize("latency", [{}, {"hop": 8, "lookahead": 2}])
def test_window_speech_carries_whisper_context(latency):
  """A Whisper face model in the stream: window i's features = `whisper.window_features` of the
  speech_context samples before a_i (zeros before the stream) and its first W samples (silence after
  c_{i+1}), as the training cache (`data.speech_features`) computes them, and a lip regressor's of the
  block it reads from the same pass; and the spec and parameters come from the config."""
  from data import whisper_weights
  from infer.models import speech_params
  from train.configs import motion_face

  require_module(whisper_weights.PACKAGE, whisper_weights.INSTALL_HINT)
  configs = {**_configs("head"), "motion_face": motion_face.get_config("tiny_whisper")}
  spec = build_spec(configs, StreamOptions(mode="head", **latency))
  assert spec.speech is not None and spec.speech_context == 32000 and spec.window_samples == 8533
  encoder_params = speech_params(configs["motion_face"])
  assert speech_params(_configs("head")["motion_face"]) is None  # log-mel models have none
  params = {"motion_face": {"speech": encoder_params}}
  audio = read_audio(ASSETS_SPEECH, SR)[:6 * 8534]
  lip_spec = dataclasses.replace(spec, lip=LipRegressor(speech_layer=2))
  fn = jax.jit(lambda x, start: stream_step.window_speech(lip_spec, params, x, start))
  whole = jax.jit(lambda a: whisper.window_layers(spec.speech, encoder_params, a, spec.speech_context,
                                                  (None, 2)))
  x0, start0, _, _ = next(_window_inputs(spec, audio, 1))
  assert jax.eval_shape(lambda x, s: stream_step.window_speech(spec, params, x, s), x0, start0)[1] is None
  c = spec.speech_context
  steps = 5 if not latency else 9  # the context fills up over several windows (2 s = 3.75 tiny windows)
  for i, (x, start, _, c1) in enumerate(_window_inputs(spec, audio, steps)):
    if latency and i not in (0, 8):
      continue
    received = np.concatenate([np.zeros(c, np.float32), np.where(np.arange(audio.size) < c1, audio, 0.0)])
    a = stream_spec.frame_sample(i * spec.step_frames, spec.spf)
    features, lip = fn(x, start)
    expected, expected_lip = whole(received[None, a:a + c + spec.window_samples])
    assert features.shape == (1, whisper.num_window_features(8533, 32000), 384) == expected.shape
    np.testing.assert_allclose(np.asarray(features), np.asarray(expected), atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(lip), np.asarray(expected_lip), atol=1e-3, rtol=0)
    assert np.abs(np.asarray(lip) - np.asarray(features)).max() > 1.0  # another layer's features
  with pytest.raises(ValueError, match="ExternalFeatureAdapter"):
    dataclasses.replace(spec, speech=None)


def test_unheard_audio_is_masked_for_a_face_model_trained_for_it():
  """A face model trained with look-ahead augmentation (config.lookahead_prob > 0) gets the null audio token
  on the frames after hop + L of each low-latency window (its spec's mask_unheard_audio); whole windows
  and models trained without it are not masked."""
  params, configs = random_params("head")
  configs.pop("clip_x0", None)
  trained = {**configs, "motion_face": configs["motion_face"].copy_and_resolve_references()}
  trained["motion_face"].lookahead_prob = 0.5
  low = StreamOptions(mode="head", hop=4, lookahead=2)
  assert build_spec(trained, low).mask_unheard_audio and not build_spec(configs, low).mask_unheard_audio
  audio = read_audio(ASSETS_SPEECH, SR)[SR // 2:SR // 2 + 3 * 8534]
  style = jnp.zeros((1, 2), jnp.float32)

  def motion(spec, steps=2):
    step = jax.jit(lambda st, b: stream_step.motion_step(spec, params, st, b))
    state = stream_step.init_motion_state(spec, style, jax.random.key(0), jnp.zeros((1, 16, 52)), False)
    out = []
    for block in stream_spec.step_blocks(audio, spec, steps):
      state, m = step(state, jnp.asarray(block))
      out.append(np.asarray(m[0]))
    return np.concatenate(out)

  masked, plain = build_spec(trained, low), build_spec(configs, low)
  np.testing.assert_array_equal(masked.heard_frames(), np.arange(16)[None] < 4 + 2)
  assert plain.heard_frames() is None
  assert build_spec(trained, StreamOptions(mode="head")).heard_frames() is None  # whole windows
  assert np.abs(motion(masked) - motion(plain)).max() > 1e-3  # the mask reaches the sampled motion


def test_face_oval_is_mediapipe_and_polygon_mask_fills_it():
  from mediapipe.python.solutions.face_mesh_connections import FACEMESH_FACE_OVAL

  loop = stream_step.FACE_OVAL
  edges = {frozenset(e) for e in zip(loop, loop[1:] + loop[:1], strict=True)}
  assert edges == {frozenset(e) for e in FACEMESH_FACE_OVAL}
  # A 10 x 6 px rectangle and a triangle: even-odd fill at pixel centres.
  rect = jnp.array([[[2.0, 3.0], [12.0, 3.0], [12.0, 9.0], [2.0, 9.0]]])
  tri = jnp.array([[[0.0, 0.0], [16.0, 0.0], [0.0, 16.0]]])
  m = np.asarray(face_refine.polygon_mask(jnp.concatenate([rect, tri[:, [0, 1, 2, 2]]]), (16, 16)))[..., 0]
  assert m[0].sum() == 60 and m[0, 3:9, 2:12].all()
  assert m[1].sum() == 16 * 15 / 2  # pixel centres (j + .5, i + .5) with i + j + 1 < 16


def _head_avatar(spec, params):
  """A synthetic head-mode avatar: the bundled portrait resized (no annotation), a frontal template fit
  whose keypoints `kp_affine` maps into the middle of the crop's grid."""
  template = load_head_template()
  size = spec.renderer.image_size
  image = jax.image.resize(jnp.asarray(read_image(ASSETS_PORTRAIT), jnp.float32) / 255.0, (*size, 3),
                           "bilinear")[None]
  n_id = template.num_id
  fit = {"pose": np.zeros((1, 6), np.float32), "scale": np.ones((1,), np.float32),
         "exp": np.zeros((1, 52), np.float32), "identity": np.zeros((1, n_id), np.float32)}
  units = np.asarray(project_keypoints(template, fit["pose"], fit["scale"], fit["exp"], fit["identity"]))[0]
  lo, hi = units.min(0), units.max(0)
  scale = 1.0 / np.maximum(hi - lo, 1e-6)  # the keypoints span [-0.5, 0.5] of the grid on each axis
  kp_affine = np.stack([scale, -(lo + hi) / 2 * scale]).astype(np.float32)
  return {"image": image, "kp_affine": kp_affine, "style": np.ones((1, 2), np.float32), **fit}


@pytest.mark.slow
@SMOKE_STREAM
def test_head_state_and_render_batches():
  params, configs = random_params("head")
  spec = build_spec(configs, StreamOptions(mode="head", num_steps=2))  # as tests/infer/streaming_test.py
  params = {k: params[k] for k in ("motion_face", "render")} | {"template": load_head_template()}
  state = stream_step.make_init_state(spec)(params, _head_avatar(spec, params), jax.random.key(0))
  av = state["avatar"]
  assert int(state["window"]) == 0 and not np.any(np.asarray(state["history_valid"]))
  assert state["history"].shape == (1, spec.history, 58) and not np.any(np.asarray(state["history"]))
  # The tiny face model has the reference input: without a video, its learned null reference.
  assert state["reference"].shape == (1, 16, 52) and not np.any(np.asarray(state["reference_valid"]))
  assert av["kp_source"].shape == av["head_offset"].shape == (1, 32, 3)
  np.testing.assert_allclose(av["kp_source"] - av["head_offset"],
                             project_keypoints(params["template"], av["pose"], av["scale"], av["exp"],
                                               av["identity"]) * av["kp_affine"][0] + av["kp_affine"][1],
                             atol=1e-5)  # "head_offset": template keypoints + ΔX_src
  # render_batch (lax.map over groups of frames, to bound memory at full size) renders the same frames.
  rvars = params["render"]
  kp = av["kp_source"] + 0.05 * jax.random.normal(jax.random.key(0), (6, 32, 3))
  render = jax.jit(lambda kp, batch: stream_step.render_frames(spec.renderer, rvars, av["volume"],
                                                               av["kp_source"], kp, None, batch),
                   static_argnums=1)
  # bfloat16 renderer compute: close to float32 (the per-frame networks only), but really bfloat16.
  render16 = jax.jit(lambda kp: stream_step.render_frames(spec.renderer, rvars, av["volume"],
                                                          av["kp_source"], kp, None, None, "bfloat16"))
  np.testing.assert_allclose(render(kp, 4), render(kp, None), atol=1e-5)
  f32, b16 = np.asarray(render(kp, None)), np.asarray(render16(kp))
  assert f32.shape == (6, 64, 64, 3) and f32.std() > 0.01  # the frames are not blank
  assert b16.dtype == np.float32 and 0 < np.abs(b16 - f32).mean() < 0.02, np.abs(b16 - f32).mean()


def test_render_frames_with_the_source_skip():
  """A renderer with G's source skip renders from the avatar's source image: at the source keypoints W's
  flow is the identity, so a G whose alpha head is fresh (alpha 0.12 everywhere) is within 0.12 of the
  upsampled source; without the source image G says what it needs."""
  from chatanyone_jax.render import presets
  from chatanyone_jax.render.spade_generator import SKIP_ALPHA_OFFSET
  from tests.chatanyone_jax.render.util import random_variables

  cfg = presets.tiny_head512_skip
  nets = stream_step._nets(cfg)
  source = jax.random.uniform(jax.random.key(1), (1, *cfg.image_size, 3))
  v_f = random_variables(nets["F"], source)
  volume = jax.jit(nets["F"].apply)(v_f, source)  # jitted: one compile, not one per op
  kp = 0.5 * jax.random.normal(jax.random.key(2), (1, 32, 3))
  v_w = random_variables(nets["W"], volume, kp, kp)
  warped = jax.jit(nets["W"].apply)(v_w, volume, kp, kp)
  v_g = random_variables(nets["G"], warped["out"], source=source, flow=warped["flow"])
  v_g["params"]["conv_alpha"] = jax.tree.map(jnp.zeros_like, v_g["params"]["conv_alpha"])  # as initialised
  rvars = {"params": {"F": v_f["params"], "W": v_w["params"], "G": v_g["params"]},
           "batch_stats": {"F": v_f.get("batch_stats", {}), "W": v_w.get("batch_stats", {}), "G": {}}}
  kp_driving = jnp.broadcast_to(kp, (3, 32, 3))
  frames = np.asarray(jax.jit(lambda: stream_step.render_frames(cfg, rvars, volume, kp, kp_driving, None,
                                                                None, source=source))())
  upsampled = np.asarray(jax.image.resize(source, (1, *cfg.output_size, 3), "linear"))
  assert frames.shape == (3, *cfg.output_size, 3)
  assert np.abs(frames - upsampled).max() <= float(jax.nn.sigmoid(SKIP_ALPHA_OFFSET)) + 1e-5
  assert np.abs(frames - upsampled).max() > 1e-3  # G's image is in it too
  with pytest.raises(ValueError, match="source skip"):  # traced only: eagerly, W's ops compile one by one
    jax.eval_shape(lambda: stream_step.render_frames(cfg, rvars, volume, kp, kp_driving, None, None))
