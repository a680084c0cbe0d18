"""Streaming inference (`infer.stream`, `infer.streaming`) with random tiny networks on real media.

The networks are untrained (`infer.smoke.random_params`), so the frames are noise; what is tested is
the plumbing: frame counts, audio dependence, chunking invariance, keypoint conventions against
preprocessing, the options' checks, and that the jitted step compiles once. The pure core (window
arithmetic, carried audio context, renderer calls) is `tests/chatanyone_jax/stream_step_test.py`.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

import infer
from chatanyone_jax import stream_step
from chatanyone_jax.motion.sampling import GUIDANCE_SCALE, SEAM_FRAMES
from data.media import MediaError, read_audio, read_image
from infer.avatar import (
  AvatarError,
  _reference,
  annotate_image,
  default_style,
  reference_motion,
)
from infer.options import LOW_LATENCY, StreamOptions, Style
from infer.smoke import random_params
from infer.streaming import ASSETS_PORTRAIT, ASSETS_SPEECH, num_output_frames, prepare, stream
from tests.helpers import SMOKE_STREAM, irregular_chunks, media_dir, require

pytestmark = SMOKE_STREAM

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
  seed3 = StreamOptions(seed=3)
  with _CompileCounter() as counter:
    frames = []
    for k, f in enumerate(stream(portrait, [clip], options=seed3, params=params, configs=configs)):
      frames.append(f)
      counter.active = k >= 15  # from the first frame of the second window on
  whole = np.stack(frames)
  assert counter.events == []
  spec = prepare(portrait, params=params, configs=configs).spec
  assert stream_step.make_stream_step(spec)._cache_size() == 1
  assert whole.shape == (expected, 96, 64, 3) and whole.dtype == np.uint8
  step = np.abs(np.diff(whole.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
  assert step.min() > 0.1, step  # every frame differs from the previous one

  # The same audio in irregular chunks: exactly the same frames (same blocks, same step).
  chunked = np.stack(list(stream(portrait, irregular_chunks(clip), options=seed3, params=params,
                                 configs=configs)))
  np.testing.assert_array_equal(chunked, whole)

  # Other speech, same seed and avatar: other frames (the motion follows the audio).
  other = read_audio(require(media_dir() / "speech" / "LatentSync__assets_demo1_audio.wav", "speech"), SR)
  other = other[SR:SR + 8533]  # one window
  frames_other = np.stack(list(stream(portrait, [other], options=seed3, params=params, configs=configs)))
  assert frames_other.shape[0] == 16
  diff = np.abs(frames_other.astype(np.int16) - whole[:16]).mean(axis=(1, 2, 3))
  assert diff.min() > 0.05 and diff.mean() > 1.0, diff  # every frame differs, on average by > 1 level

  # UpperBodyMotion's ΔX_head is trained on zeros (train.tasks.MotionBody): its samples are noise and must
  # not move the face refine's keypoints (the bundled body model's put them about 3 grid units off and the
  # refined face came out black). The first window, with that output de-normalised 50 times larger: the
  # same frames.
  assert seed3.refine and "face_refine" in params
  k = 3 * 32  # head_offset comes first in UpperBodyLayout
  norm = params["motion_body"]["norm"]
  std = np.concatenate([np.full(k, 50.0, np.float32), np.asarray(norm["target_std"])[k:]])
  loud = {**params, "motion_body": {**params["motion_body"], "norm": {**norm, "target_std": std}}}
  first = np.stack(list(stream(portrait, [clip[:8533]], options=seed3, params=loud, configs=configs)))
  np.testing.assert_array_equal(first, whole[:16])


def test_no_face_is_a_clear_error(upper):
  grey = np.full((256, 256, 3), 128, np.uint8)
  with pytest.raises(AvatarError, match="no face found"):
    stream(grey, [np.zeros(SR, np.float32)], params=upper[0], configs=upper[1])


def test_wrong_renderer_for_mode(upper):
  configs = dict(upper[1], render="tiny_head512")
  with pytest.raises(ValueError, match="upper512x768-family"):
    stream(np.zeros((8, 8, 3), np.uint8), [], params=upper[0], configs=configs)


def test_reference_video_sets_reference_and_style(upper, portrait):
  spec = prepare(portrait, params=upper[0], configs=upper[1]).spec
  video = require(media_dir() / "videos" / "LivePortrait__assets_examples_driving_d0.mp4", "video")
  # The whole 3-s video, as a live session reads it (the cache then serves tests/infer/live_test.py).
  ref, style = _reference(video, spec, upper[0]["motion_face"]["norm"])
  assert ref.shape == (1, 16, 52) and np.all(np.isfinite(ref))
  assert style.shape == (2,) and np.all(style > 0)
  # Annotated once per file: a second use (a live session's style change) reads the cache.
  cached = reference_motion(video, compute=False)
  assert cached is not None and reference_motion(video) is cached and not cached.flags.writeable
  again, _ = _reference(video, spec, upper[0]["motion_face"]["norm"])
  np.testing.assert_array_equal(again, ref)
  assert reference_motion(video, max_seconds=3.0, compute=False) is None  # another key: not annotated yet
  with pytest.raises(MediaError, match="cannot use reference video"):
    reference_motion(video.with_name("missing.mp4"))
  # Without a reference video a model with the reference input gets its learned null reference.
  session = prepare(portrait, params=upper[0], configs=upper[1])
  state = session.state
  assert state["reference"].shape == (1, 16, 52) and not np.any(np.asarray(state["reference_valid"]))
  # Face-motion guidance is on by default (the measured inference setting, motion/sampling.py).
  assert session.spec.guidance_scale == GUIDANCE_SCALE == 2.0


# The low-latency head spec (tiny T = 16: a step every 8 frames, 2 frames of look-ahead), shared with
# tests/infer/live_test.py and tests/benchmarks/latency_bench_test.py (compiled once per process).
LOW_HEAD = StreamOptions(mode="head", num_steps=2, **LOW_LATENCY)


def test_low_latency_stream_is_causal_chunk_invariant_and_compiles_once(portrait, speech):
  """hop 8, look-ahead 2: 8 frames per step; the frames of a step depend on its audio and look-ahead only
  (not on later audio), audio in any chunks gives the same frames, and the step compiles once."""
  params, configs = random_params("head")
  kw = dict(options=LOW_HEAD, params=params, configs=configs)
  clip = speech[SR // 2:SR // 2 + 20800]  # 39 frames: 5 steps of 8, the last cut to 7
  with _CompileCounter() as counter:
    frames = []
    for k, f in enumerate(stream(portrait, [clip], **kw)):
      frames.append(f)
      counter.active = k >= 7  # from the first frame of the second step on
  whole = np.stack(frames)
  assert counter.events == [] and whole.shape == (39, 64, 64, 3)
  spec = prepare(portrait, **kw).spec
  assert (spec.step_frames, spec.lookahead, spec.window) == (8, 2, 16)
  assert stream_step.make_stream_step(spec)._cache_size() == 1
  chunked = np.stack(list(stream(portrait, irregular_chunks(clip), **kw)))
  np.testing.assert_array_equal(chunked, whole)
  # Other audio from the end of step 0's look-ahead (sample 5333 = frame 10) on: the first 8 frames stay,
  # the later ones change; other audio inside the look-ahead (frames 8, 9) changes the first 8 frames too.
  other = read_audio(require(media_dir() / "speech" / "LatentSync__assets_demo1_audio.wav", "speech"), SR)
  for start, same in ((5333, True), (4800, False)):
    mixed = np.concatenate([clip[:start], other[SR:SR + 20800 - start]])
    out = np.stack(list(stream(portrait, [mixed], **kw)))
    diff = np.abs(out.astype(np.int16) - whole).mean(axis=(1, 2, 3))
    # Every later frame changes (the first of a step least: it continues the frames before it).
    assert np.all(diff[:8] == 0) == same and diff[8:].min() > 0 and diff[8:].mean() > 0.5, (start, diff)


@pytest.mark.slow
def test_stream_joins_motion_windows(upper, portrait, speech):
  # seam_frames changes the face motion of the first K frames of every window after the first
  # (join_window); the body model attends over its whole window, so the later frames move a little too.
  kw = dict(params=upper[0], configs=upper[1])
  clip = speech[SR // 2:SR // 2 + 17067]  # 32 frames = two windows of 16
  seed3 = StreamOptions(seed=3)
  assert seed3.seam_frames == SEAM_FRAMES == 8
  joined = np.stack(list(stream(portrait, [clip], options=seed3, **kw))).astype(np.int16)
  raw_options = dataclasses.replace(seed3, seam_frames=0)
  raw = np.stack(list(stream(portrait, [clip], options=raw_options, **kw))).astype(np.int16)
  assert joined.shape == raw.shape == (32, 96, 64, 3)
  diff = np.abs(joined - raw).mean(axis=(1, 2, 3))
  print("mean |joined - raw| per frame:", np.round(diff, 3))
  # The first window is the same motion; the two stream programs may round a few pixels differently
  # (XLA fuses them differently): at most about one pixel per thousand one level off.
  assert np.all(diff[:16] < 1e-3), diff
  assert diff[16] > 0.1 and diff[16:24].mean() > 3 * diff[24:].mean(), diff


def test_options_are_checked_when_built():
  """StreamOptions / Style fail at construction, naming the field; the package exports the API."""
  assert infer.stream is stream and infer.StreamOptions is StreamOptions and infer.Style is Style
  o = StreamOptions()
  assert (o.mode, o.refine, o.seed, o.guidance_scale, o.clip_x0) == ("upper", True, 0, GUIDANCE_SCALE, "auto")
  assert (o.hop, o.lookahead) == (None, 0)  # whole windows by default
  assert dataclasses.replace(o, mode="head", num_steps=5) == StreamOptions(mode="head", num_steps=5)
  with pytest.raises(dataclasses.FrozenInstanceError):
    o.seed = 1
  with pytest.raises(TypeError):
    StreamOptions("head")  # keyword-only
  bad = [(dict(mode="face"), "mode must be one of"),
         (dict(render_dtype="float16"), "render_dtype must be one of"),
         (dict(seam_frames=-1), "seam_frames must be >= 0"),
         (dict(guidance_scale=-1.0), "guidance_scale must be >= 0"),
         (dict(num_steps=0), "num_steps must be an integer >= 1"), (dict(num_steps=2.5), "num_steps must be"),
         (dict(clip_x0=0.0), "clip_x0 must be a number > 0"), (dict(clip_x0="off"), "clip_x0 must be"),
         (dict(render_batch=0), "render_batch must be"), (dict(seed="0"), "seed must be an integer"),
         (dict(refine=1), "refine must be True or False"), (dict(hop=0), "hop must be an integer >= 1"),
         (dict(lookahead=-1), "lookahead must be an integer >= 0"),
         (dict(noise_scale=-0.5), "noise_scale must be a number >= 0")]
  for kw, match in bad:
    with pytest.raises(ValueError, match=match):
      StreamOptions(**kw)
  for kw, match in [(dict(amplitude=-0.5), "amplitude must be a number >= 0"),
                    (dict(pose_range=float("nan")), "pose_range must be a number >= 0"),
                    (dict(reference_video=3), "reference_video must be a path or None")]:
    with pytest.raises(ValueError, match=match):
      Style(**kw)
  assert Style(amplitude=0, pose_range=2.0).amplitude == 0  # 0: a still face


@pytest.mark.slow
def test_stream_head_mode_and_bfloat16(portrait, speech):
  params, configs = random_params("head")
  head = StreamOptions(mode="head", num_steps=2)  # the specs of tests/benchmarks/stream_bench_test.py
  frames = np.stack(list(stream(portrait, [speech[:8533]], options=head, params=params, configs=configs)))
  assert frames.shape == (16, 64, 64, 3)
  assert np.abs(np.diff(frames.astype(np.int16), axis=0)).mean() > 0.1
  # bfloat16 renderer compute (`tests/chatanyone_jax/stream_step_test.py` checks the renderer alone).
  head16 = dataclasses.replace(head, render_dtype="bfloat16")
  frames16 = np.stack(list(stream(portrait, [speech[:8533]], options=head16, params=params, configs=configs)))
  assert frames16.shape == frames.shape and np.abs(frames16.astype(np.int16) - frames).mean() < 6


@pytest.mark.slow
def test_stream_with_reference_video(upper, portrait, speech):
  video = require(media_dir() / "videos" / "LivePortrait__assets_examples_driving_d0.mp4", "video")
  kw = dict(options=StreamOptions(seed=3), params=upper[0], configs=upper[1])
  with_ref = np.stack(list(stream(portrait, [speech[:8533]], style=Style(reference_video=video), **kw)))
  without = np.stack(list(stream(portrait, [speech[:8533]], **kw)))
  assert with_ref.shape == without.shape == (16, 96, 64, 3)
  assert np.abs(with_ref.astype(np.int16) - without).mean() > 0.5  # the reference changes the motion
