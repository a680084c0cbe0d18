"""Streaming inference (`chatanyone_jax.stream`, `infer.stream`) with random tiny networks on real media.

The networks are untrained (`random_params`), so the frames are noise; what is tested is the plumbing:
frame counts, audio dependence, chunking invariance, the carried audio context, keypoint conventions
against preprocessing, and that the jitted step compiles once.
"""

from __future__ import annotations

import fractions

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax import stream as core
from chatanyone_jax.audio import log_mel_spectrogram
from data.media import read_audio, read_image
from infer.stream import (
  ASSETS_PORTRAIT,
  ASSETS_SPEECH,
  GUIDANCE_SCALE,
  AvatarError,
  annotate_image,
  default_style,
  num_output_frames,
  prepare,
  random_params,
  stream,
)
from tests.helpers import media_dir, require

SR = 16000


@pytest.fixture(scope="module")
def upper():
  return random_params("upper")


@pytest.fixture(scope="module")
def portrait():
  return read_image(ASSETS_PORTRAIT)


@pytest.fixture(scope="module")
def speech():
  return read_audio(ASSETS_SPEECH, SR)


def test_window_bounds_do_not_drift():
  for t in (16, 40):
    spf = fractions.Fraction(SR, 30)
    lengths = [np.subtract(*core.window_bounds(i, t, spf)[::-1]) for i in range(300)]
    assert set(lengths) == {int(t * spf), int(t * spf) + 1}  # 8533 / 8534, 21333 / 21334
    assert core.window_bounds(300, t, spf)[0] == round(300 * t * spf) == sum(lengths)
    # The step's carried rounding phase gives the same counts.
    residue = spf.denominator
    for i in range(300):
      n, residue = core._next_samples(residue, _Spec(t, spf))
      assert n == lengths[i], i


class _Spec:
  """The two fields `_next_samples` reads."""

  def __init__(self, window, spf):
    self.window, self.spf = window, spf


def test_window_mel_equals_whole_clip_log_mel(upper, portrait, speech):
  """The carried context makes window i's mel = whole-clip frames [floor(a_i / hop), + M)."""
  spec = prepare(portrait, params=upper[0], configs=upper[1]).spec
  audio = speech[:5 * 8534]
  whole = np.asarray(log_mel_spectrogram(jnp.asarray(audio)))
  fn = jax.jit(lambda st, block, n: core.window_mel(spec, st, block, n))
  state = core.init_mel_stream(spec.mel)
  block = core.block_samples(spec)
  for i in range(4):
    a0, a1 = core.window_bounds(i, spec.window, spec.spf)
    buf = np.zeros(block, np.float32)
    buf[:a1 - a0] = audio[a0:a1]
    state, mel = fn(state, buf, a1 - a0)
    m0 = a0 // spec.mel.hop_length
    np.testing.assert_allclose(np.asarray(mel), whole[m0:m0 + spec.num_mel], atol=2e-4, rtol=0)
  assert spec.num_mel == 53  # 8533 samples // 160, as the tiny training windows


def test_face_oval_is_mediapipe_and_polygon_mask_fills_it():
  from mediapipe.python.solutions.face_mesh_connections import FACEMESH_FACE_OVAL

  loop = core.FACE_OVAL
  edges = {frozenset(e) for e in zip(loop, loop[1:] + loop[:1], strict=True)}
  assert edges == {frozenset(e) for e in FACEMESH_FACE_OVAL}
  # A 10 x 6 px rectangle and a triangle: even-odd fill at pixel centres.
  rect = jnp.array([[[2.0, 3.0], [12.0, 3.0], [12.0, 9.0], [2.0, 9.0]]])
  tri = jnp.array([[[0.0, 0.0], [16.0, 0.0], [0.0, 16.0]]])
  m = np.asarray(core.polygon_mask(jnp.concatenate([rect, tri[:, [0, 1, 2, 2]]]), (16, 16)))[..., 0]
  assert m[0].sum() == 60 and m[0, 3:9, 2:12].all()
  assert m[1].sum() == 16 * 15 / 2  # pixel centres (j + .5, i + .5) with i + j + 1 < 16


def test_source_keypoints_follow_preprocessing(upper, portrait):
  """Head keypoints fed to W equal annotate_clip's head_kp; δ = 0, s = s_src, t = t_src gives the source."""
  session = prepare(portrait, params=upper[0], configs=upper[1])
  ann = annotate_image(portrait)
  av = jax.device_get(session.state["avatar"])
  np.testing.assert_allclose(av["kp_source"][0, :32], ann["head_kp"], atol=1e-3)
  body = av["body_canonical"] * av["scale"][:, None, None] + av["pose"][:, None, 3:6]
  np.testing.assert_allclose(body, av["kp_source"][:, 32:], atol=1e-5)
  # The refine pass: head-crop keypoints of preprocessing, and the head box inside the output frame.
  units = av["refine_kp_source"] - av["refine_head_offset"]
  np.testing.assert_allclose(units[0], ann["head_kp_head"], atol=1e-3)
  x0, y0, x1, y1 = av["refine_box"][0]
  assert 0 <= x1 - x0 == pytest.approx(y1 - y0, rel=0.1) and x1 - x0 < session.spec.output_size[1]
  np.testing.assert_allclose(session.state["style"], default_style(16)[None])


def _irregular_chunks(audio, sizes=(1234, 5000, 17, 3000, 9001)):
  i = 0
  for s in sizes:
    yield audio[i:i + s]
    i += s
  yield audio[i:]


class _CompileCounter:
  """Counts lowerings and backend compiles (jax.monitoring events; a persistent-cache hit still lowers)."""
  EVENTS = ("/jax/core/compile/jaxpr_to_mlir_module_duration", "/jax/core/compile/backend_compile_duration")

  def __init__(self):
    self.events = []
    self.active = False

  def __call__(self, event, duration, **kwargs):
    if self.active and event in self.EVENTS:
      self.events.append(event)

  def __enter__(self):
    jax.monitoring.register_event_duration_secs_listener(self)
    return self

  def __exit__(self, *exc):
    jax.monitoring.unregister_event_duration_listener(self)


def test_stream_upper_counts_chunking_compiles_and_audio(upper, portrait, speech):
  params, configs = upper
  clip = speech[SR // 2:SR // 2 + 20800]  # 1.3 s of speech: 39 frames = windows of 16 + 16 + 7
  expected = num_output_frames(clip.size)
  assert expected == 39 == round(clip.size / SR * 30)

  # Whole clip in one chunk; no compilation after the first window.
  with _CompileCounter() as counter:
    frames = []
    for k, f in enumerate(stream(portrait, [clip], params=params, configs=configs, seed=3)):
      frames.append(f)
      counter.active = k >= 15  # from the first frame of the second window on
  whole = np.stack(frames)
  assert counter.events == []
  assert core.make_stream_step(prepare(portrait, params=params, configs=configs).spec)._cache_size() == 1
  assert whole.shape == (expected, 96, 64, 3) and whole.dtype == np.uint8
  step = np.abs(np.diff(whole.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
  assert step.min() > 0.1, step  # every frame differs from the previous one

  # The same audio in irregular chunks: exactly the same frames (same blocks, same step).
  chunked = np.stack(list(stream(portrait, _irregular_chunks(clip), params=params, configs=configs,
                                 seed=3)))
  np.testing.assert_array_equal(chunked, whole)

  # Other speech, same seed and avatar: other frames (the motion follows the audio).
  other = read_audio(require(media_dir() / "speech" / "LatentSync__assets_demo1_audio.wav", "speech"), SR)
  other = other[SR:SR + 8533]  # one window
  frames_other = np.stack(list(stream(portrait, [other], params=params, configs=configs, seed=3)))
  assert frames_other.shape[0] == 16
  diff = np.abs(frames_other.astype(np.int16) - whole[:16]).mean(axis=(1, 2, 3))
  assert diff.min() > 0.05 and diff.mean() > 1.0, diff  # every frame differs, on average by > 1 level


def test_no_face_is_a_clear_error(upper):
  grey = np.full((256, 256, 3), 128, np.uint8)
  with pytest.raises(AvatarError, match="no face found"):
    stream(grey, [np.zeros(SR, np.float32)], params=upper[0], configs=upper[1])


def test_wrong_renderer_for_mode(upper):
  configs = dict(upper[1], render="tiny_head512")
  with pytest.raises(ValueError, match="upper512x768-family"):
    stream(np.zeros((8, 8, 3), np.uint8), [], params=upper[0], configs=configs)


def test_reference_video_sets_reference_and_style(upper, portrait):
  from infer.stream import _reference

  spec = prepare(portrait, params=upper[0], configs=upper[1]).spec
  video = require(media_dir() / "videos" / "LivePortrait__assets_examples_driving_d0.mp4", "video")
  ref, style = _reference(video, spec, upper[0]["motion_face"]["norm"], max_seconds=1.0)
  assert ref.shape == (1, 16, 52) and np.all(np.isfinite(ref))
  assert style.shape == (2,) and np.all(style > 0)
  # Without a reference video a model with the reference input gets its learned null reference.
  session = prepare(portrait, params=upper[0], configs=upper[1])
  state = session.state
  assert state["reference"].shape == (1, 16, 52) and not np.any(np.asarray(state["reference_valid"]))
  # Face-motion guidance is on by default (the measured inference setting, motion/sampling.py).
  assert session.spec.guidance_scale == GUIDANCE_SCALE == 2.0


@pytest.mark.slow
def test_stream_joins_motion_windows(upper, portrait, speech):
  # seam_frames changes the face motion of the first K frames of every window after the first
  # (join_window); the body model attends over its whole window, so the later frames move a little too.
  kw = dict(params=upper[0], configs=upper[1], seed=3)
  clip = speech[SR // 2:SR // 2 + 17067]  # 32 frames = two windows of 16
  joined = np.stack(list(stream(portrait, [clip], **kw))).astype(np.int16)  # default seam_frames 8
  raw = np.stack(list(stream(portrait, [clip], seam_frames=0, **kw))).astype(np.int16)
  assert joined.shape == raw.shape == (32, 96, 64, 3)
  diff = np.abs(joined - raw).mean(axis=(1, 2, 3))
  print("mean |joined - raw| per frame:", np.round(diff, 3))
  assert np.all(diff[:16] == 0), diff
  assert diff[16] > 0.1 and diff[16:24].mean() > 3 * diff[24:].mean(), diff


@pytest.mark.slow
def test_stream_head_mode_and_render_batches(portrait, speech):
  params, configs = random_params("head")
  frames = np.stack(list(stream(portrait, [speech[:8533]], params=params, configs=configs, mode="head")))
  assert frames.shape == (16, 64, 64, 3)
  assert np.abs(np.diff(frames.astype(np.int16), axis=0)).mean() > 0.1
  # render_batch (lax.map over groups of frames, to bound memory at full size) renders the same frames.
  session = prepare(portrait, params=params, configs=configs, mode="head")
  av, rvars = session.state["avatar"], session.params["render"]
  kp = av["kp_source"] + 0.05 * jax.random.normal(jax.random.key(0), (6, 32, 3))
  render = jax.jit(lambda kp, batch: core._render(session.spec.renderer, rvars, av["volume"], av["kp_source"],
                                                  kp, None, batch), static_argnums=1)
  np.testing.assert_allclose(render(kp, 4), render(kp, None), atol=1e-5)
  # bfloat16 renderer compute: close to float32 (the per-frame networks only), but really bfloat16.
  render16 = jax.jit(lambda kp: core._render(session.spec.renderer, rvars, av["volume"], av["kp_source"],
                                             kp, None, None, "bfloat16"))
  f32, b16 = np.asarray(render(kp, None)), np.asarray(render16(kp))
  assert b16.dtype == np.float32 and 0 < np.abs(b16 - f32).mean() < 0.02, np.abs(b16 - f32).mean()
  frames16 = np.stack(list(stream(portrait, [speech[:8533]], params=params, configs=configs, mode="head",
                                  render_dtype="bfloat16")))
  assert frames16.shape == frames.shape and np.abs(frames16.astype(np.int16) - frames).mean() < 6
  with pytest.raises(ValueError, match="render_dtype must be one of"):
    prepare(portrait, params=params, configs=configs, mode="head", render_dtype="float16")
  with pytest.raises(ValueError, match="seam_frames must be >= 0"):
    prepare(portrait, params=params, configs=configs, mode="head", seam_frames=-1)
  with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
    prepare(portrait, params=params, configs=configs, mode="head", guidance_scale=-1.0)


@pytest.mark.slow
def test_stream_with_reference_video(upper, portrait, speech):
  video = require(media_dir() / "videos" / "LivePortrait__assets_examples_driving_d0.mp4", "video")
  kw = dict(params=upper[0], configs=upper[1], seed=3)
  with_ref = np.stack(list(stream(portrait, [speech[:8533]], reference_video=video, **kw)))
  without = np.stack(list(stream(portrait, [speech[:8533]], **kw)))
  assert with_ref.shape == without.shape == (16, 96, 64, 3)
  assert np.abs(with_ref.astype(np.int16) - without).mean() > 0.5  # the reference changes the motion
