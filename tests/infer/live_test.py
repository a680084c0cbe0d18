"""The live state machine (`infer.live`) with random tiny networks on the bundled portrait and speech.

What is tested is what the servers rely on: a pushed stream makes the frames `infer.stream` makes, blocks
carry their audio and timestamps, style and mode change between blocks, the backlog is bounded, the timeline
keeps a block's frames and audio on the same units, and portraits are annotated once per content.
"""

from __future__ import annotations

import io
import shutil
import threading
import time

import numpy as np
import pytest
from PIL import Image

from data.media import read_audio, read_image
from infer import live as live_module
from infer.live import Block, LiveError, LiveModels, LiveStream, PortraitCache
from infer.options import LOW_LATENCY, StreamOptions, Style
from infer.streaming import ASSETS_PORTRAIT, ASSETS_SPEECH, stream
from infer.timeline import OUTPUT_RATE, Timeline, Upsampler
from tests.helpers import SMOKE_STREAM, irregular_chunks, media_dir, require

pytestmark = SMOKE_STREAM  # the tiny models and the upper-mode step of tests/infer/streaming_test.py

SR = 16000


@pytest.fixture(scope="module")
def models():
  # The specs of tests/infer/streaming_test.py (compiled once per process in the smoke_stream group).
  return LiveModels.random(("upper", "head"), {"upper": StreamOptions(seed=3),
                                               "head": StreamOptions(mode="head", num_steps=2)})


@pytest.fixture(scope="module")
def low_latency():
  # The low-latency head spec of tests/infer/streaming_test.py (LOW_HEAD).
  return LiveModels.random(("head",), StreamOptions(num_steps=2, **LOW_LATENCY))


@pytest.fixture(scope="module")
def portrait():
  cache = PortraitCache()
  return cache.get(cache.add_file(ASSETS_PORTRAIT))


@pytest.fixture(scope="module")
def speech():
  return read_audio(ASSETS_SPEECH, SR)[SR // 2:SR // 2 + 20800]  # 1.3 s: windows of 16 + 16 + 7 frames



def test_pushed_stream_makes_the_frames_of_infer_stream(models, portrait, speech):
  params, configs = models.models["upper"]
  expected = np.stack(list(stream(portrait, [speech], options=StreamOptions(seed=3), params=params,
                                  configs=configs)))  # 39 frames: two whole windows and 7 of a third
  live = LiveStream(models, portrait, mode="upper", overflow="wait", max_backlog=4)
  blocks = []
  for chunk in irregular_chunks(speech):
    live.feed(chunk)
    while (block := live.step()) is not None:
      blocks.append(block)
  assert [b.index for b in blocks] == [0, 1] and live.pending_samples == speech.size - 17067
  last = live.flush()
  assert live.flush() is None and live.pending_samples == 0
  blocks.append(last)
  frames = np.concatenate([b.frames for b in blocks])
  assert frames.shape == (48, 96, 64, 3)
  np.testing.assert_array_equal(frames[:39], expected)  # padding leaves the frames of the audio as they are
  # Blocks carry their place and their input audio: frame n at n / 30 s, samples [a_i, a_i+1) of window i.
  assert [b.first_frame for b in blocks] == [0, 16, 32]
  assert [b.sample_start for b in blocks] == [0, 8533, 17067]
  np.testing.assert_allclose(blocks[1].timestamps, (16 + np.arange(16)) / 30)
  np.testing.assert_array_equal(np.concatenate([b.audio for b in blocks])[:speech.size], speech)
  assert last.padded == 8533 - (speech.size - 17067) and not np.any(last.audio[-last.padded:])
  stats = live.stats()
  assert stats["frames"] == 48 and stats["dropped_frames"] == 0 and stats["fps"] > 0
  assert 0 < stats["first_frame_latency_s"] < 120


def test_low_latency_blocks_are_hops_with_the_frames_of_infer_stream(low_latency, portrait, speech):
  params, configs = low_latency.models["head"]
  options = StreamOptions(mode="head", num_steps=2, **LOW_LATENCY)
  expected = np.stack(list(stream(portrait, [speech], options=options, params=params, configs=configs)))
  live = LiveStream(low_latency, portrait, mode="head", overflow="wait", max_backlog=8)
  assert live.window_samples() == 5333  # the first step waits for 8 frames and the 2 of look-ahead
  blocks = []
  for chunk in irregular_chunks(speech):
    live.feed(chunk)
    while (block := live.step()) is not None:
      blocks.append(block)
  blocks.append(live.flush())
  assert [b.first_frame for b in blocks] == [0, 8, 16, 24, 32] and all(len(b.frames) == 8 for b in blocks)
  # Step i consumes samples [c_i, c_{i+1}), c_i = round((8 i + 2) · 1600 / 3) (c_0 = 0).
  assert [b.sample_start for b in blocks] == [0, 5333, 9600, 13867, 18133]
  assert blocks[-1].padded == 22400 - speech.size
  np.testing.assert_array_equal(np.concatenate([b.frames for b in blocks])[:39], expected)
  stats = live.stats()
  assert (stats["hop"], stats["lookahead"], stats["window"]) == (8, 2, 16)
  assert all(0 <= b.latency_s < 120 and b.algorithmic_s == pytest.approx(9 / 30) for b in blocks)
  assert stats["speech_latency_s"] == pytest.approx(blocks[-1].latency_s + 9 / 30)


def test_style_and_mode_change_from_the_next_block(models, portrait, speech):
  two = speech[:17067]  # two windows

  def run(changes):
    live = LiveStream(models, portrait, mode="upper")
    live.feed(two[:8533])
    first = live.step()
    live.request(**changes)
    live.feed(two[8533:])
    return first, live.step(), live

  first_a, second_a, _ = run({})
  first_b, second_b, live = run({"style": Style(amplitude=0.0, pose_range=0.0)})
  np.testing.assert_array_equal(first_a.frames, first_b.frames)
  assert np.abs(second_a.frames.astype(np.int16) - second_b.frames).mean() > 0.2  # a still face moves less
  np.testing.assert_array_equal(np.asarray(live._session.state["style"]), [[0.0, 0.0]])

  first_c, second_c, live = run({"mode": "head"})
  np.testing.assert_array_equal(first_a.frames, first_c.frames)
  assert first_c.mode == "upper" and second_c.mode == live.mode == "head"
  assert second_c.frames.shape == (16, 64, 64, 3) and second_c.first_frame == 16
  assert second_c.sample_start == 8533
  with pytest.raises(LiveError, match="not served") as e:
    LiveStream(LiveModels({"head": models.models["head"]}), portrait, mode="upper")
  assert e.value.code == "bad_mode"


def test_a_reference_video_is_annotated_off_the_stream(models, portrait, speech, tmp_path):
  video = require(media_dir() / "videos" / "LivePortrait__assets_examples_driving_d0.mp4", "video")
  copy = tmp_path / "reference.mp4"  # a path this process has not annotated (the cache keys on the path)
  shutil.copy(video, copy)
  plain, live = LiveStream(models, portrait, mode="head"), LiveStream(models, portrait, mode="head")
  for s in (plain, live):
    s.feed(speech[:8533])
    s.step()
  gate = threading.Event()
  busy = live_module._REFERENCE_POOL.submit(gate.wait)  # the annotation queues behind this: still pending
  try:
    live.request(style=Style(reference_video=str(copy)))
    assert live.reference_pending and live.stats()["reference_pending"]
    for s in (plain, live):
      s.feed(speech[8533:17067])
    a, b = plain.step(), live.step()
    # The block is made at once, with the style the stream had (no stall on the annotation).
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.asarray(live._session.state["reference_valid"]).any()
  finally:
    gate.set()
  busy.result(timeout=60)
  live._reference_job.result(timeout=600)
  for s in (plain, live):
    s.feed(speech[17067:])
  a, b = plain.flush(), live.flush()  # the first block after the annotation has the reference's motion
  assert not live.reference_pending and np.asarray(live._session.state["reference_valid"]).all()
  assert np.abs(a.frames.astype(np.int16) - b.frames).mean() > 0.2

  # A missing video is refused on the request; an unreadable one at the next step, and the stream goes on.
  with pytest.raises(LiveError, match="cannot use reference video") as e:
    live.request(style=Style(reference_video=str(tmp_path / "missing.mp4")))
  assert e.value.code == "bad_style"
  bad = tmp_path / "bad.mp4"
  bad.write_bytes(b"not a video")
  live.request(style=Style(reference_video=str(bad)))
  live._reference_job.exception(timeout=60)
  live.feed(speech[:8533])
  with pytest.raises(LiveError, match="cannot use reference video") as e:
    live.step()
  assert e.value.code == "bad_style" and live.step() is not None and not live.reference_pending


def test_backlog_is_bounded(models, portrait, speech):
  audio = np.tile(speech, 2)[:4 * 8533 + 100]  # four windows and a bit, at once
  live = LiveStream(models, portrait, mode="head", overflow="drop", max_backlog=1)
  dropped = live.feed(audio)
  # Live input: the oldest windows are dropped (their frames leave a gap), one complete window waits.
  assert live.dropped_windows == 3 and dropped == 3 * 8533 and live.backlog == 1
  block = live.step()
  assert block.first_frame == 48 and block.sample_start == dropped and not live.ready()
  assert live.stats()["dropped_frames"] == 48
  # A producer that can wait: nothing is dropped, backlog_full says when to stop reading.
  live = LiveStream(models, portrait, mode="head", overflow="wait", max_backlog=2)
  assert live.feed(audio) == 0 and live.backlog == 4 and live.backlog_full
  for _ in range(3):
    live.step()
  assert not live.backlog_full and live.backlog == 1
  # Input kept while a session started (the WebRTC handler's): its latency counts from when it arrived.
  live = LiveStream(models, portrait, mode="head")
  live.feed(speech[:8533], arrived=time.monotonic() - 5.0)
  block = live.step()
  assert 5.0 <= block.latency_s < 60 and live.stats()["first_frame_latency_s"] >= 5.0
  with pytest.raises(LiveError, match="1-D") as e:
    live.feed(np.zeros((2, 100), np.float32))
  assert e.value.code == "bad_audio"
  with pytest.raises(LiveError, match="finite"):
    live.feed(np.array([0.0, np.nan], np.float32))


def _block(index, first_frame, frames, audio, sample_start):
  return Block(index, first_frame, frames, audio, sample_start, 0, "head", 0.0, 0.0)


def test_timeline_keeps_frames_and_audio_on_the_same_units():
  s = OUTPUT_RATE // 30
  idle = np.zeros((4, 4, 3), np.uint8)
  timeline = Timeline(idle, lead=2, max_ahead=30)
  tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(3 * 8533) / SR)).astype(np.float32)
  windows = [tone[:8533], tone[8533:17066]]  # two contiguous windows of input
  frames = np.arange(1, 17, dtype=np.uint8)[:, None, None, None] * np.ones((16, 4, 4, 3), np.uint8)
  # Both tracks have read units 0-2 (idle, silence): the block starts two units later.
  assert np.array_equal(timeline.video(0), idle) and not np.any(timeline.audio(0, 3 * s))
  assert timeline.put(_block(0, 0, frames, windows[0], 0)) == 5
  assert np.array_equal(timeline.video(4), idle) and np.array_equal(timeline.video(5), frames[0])
  audio = timeline.audio(5 * s, 10 * s)  # the block's units: its audio, upsampled (38 samples late)
  assert not np.any(timeline.audio(4 * s, s))
  expected = 0.5 * np.sin(2 * np.pi * 440 * (np.arange(10 * s) - 38) / OUTPUT_RATE)
  np.testing.assert_allclose(audio[100:], expected[100:], atol=0.01)
  # A contiguous block follows without a gap or a click; after it, the last frame stays, and silence.
  assert timeline.put(_block(1, 16, frames[::-1], windows[1], 8533)) == 21
  joined = timeline.audio(19 * s, 4 * s)
  expected = 0.5 * np.sin(2 * np.pi * 440 * (np.arange(14 * s, 18 * s) - 38) / OUTPUT_RATE)
  np.testing.assert_allclose(joined, expected, atol=0.01)  # the same tone across the blocks' seam
  assert np.array_equal(timeline.video(21), frames[-1]) and np.array_equal(timeline.video(36), frames[0])
  assert np.array_equal(timeline.video(39), frames[0]) and not np.any(timeline.audio(37 * s, 3 * s))
  # Bounded: a block that would end more than max_ahead units ahead of the reads is dropped.
  timeline.put(_block(2, 32, frames, windows[0], 17066))
  assert timeline.put(_block(3, 48, frames, windows[0], 25599)) is None and timeline.dropped_blocks == 1
  assert [p for p, _ in timeline.placed] == [5, 21, 42]


def test_upsampler_is_continuous_across_calls():
  x = np.random.default_rng(0).normal(0, 0.1, 4000).astype(np.float32)
  whole = Upsampler()(x)
  up = Upsampler()
  parts = np.concatenate([up(x[:1234]), up(x[1234:1235]), up(x[1235:])])
  assert whole.shape == (12000,)
  np.testing.assert_allclose(parts, whole, atol=1e-6)


def test_portrait_cache_annotates_once_and_reports_no_face():
  cache = PortraitCache(capacity=2)
  data = ASSETS_PORTRAIT.read_bytes()
  key = cache.add(data)
  assert cache.add(data) == key and cache.annotations == 1
  np.testing.assert_array_equal(cache.get(key).image, read_image(ASSETS_PORTRAIT))
  gradient = np.broadcast_to(np.linspace(0, 255, 128, dtype=np.uint8)[None, :, None], (128, 128, 3))
  buf = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(gradient)).save(buf, format="PNG")
  for _ in range(2):  # the second answer comes from the cache
    with pytest.raises(LiveError, match="no face found") as e:
      cache.add(buf.getvalue())
    assert e.value.code == "no_face"
  with pytest.raises(LiveError) as e:
    cache.add(b"not an image")
  assert e.value.code == "bad_image"
  with pytest.raises(LiveError) as e:
    cache.get("0123")
  assert e.value.code == "unknown_portrait"
