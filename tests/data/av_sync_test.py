"""End-to-end audio / video sync of the preprocessing: 25 fps source -> 30 fps frames + 16 kHz audio.

A real talking-head clip is re-timed to 25 fps with three frames strongly brightened, and its audio replaced
by low noise with short 1 kHz tone bursts starting exactly at those frames' times. After preprocessing, the
brightened frames (peaks of the body crop's mean brightness) and the bursts (onsets of the audio envelope)
must line up in the clip record to within one 30 fps frame: this covers the nearest-frame resampling in
`iter_frames`, `audio_span`, AAC encoder priming / decoder trimming and the record writing.
"""

from __future__ import annotations

import numpy as np
import pytest

from data import preprocess, records
from data.encoding import decode_image
from data.media import read_video
from infer.media import write_video
from tests.helpers import media_dir, require

pytestmark = pytest.mark.xdist_group(__name__)  # one worker builds the module fixtures

CLIP = "V-Express__scripts_prepare_dataset_RD_Radio10_0_clip_0.mp4"
SRC_FPS, FPS, SR = 25, 30.0, 16000
NUM_SRC_FRAMES = 58  # 2.32 s at 25 fps -> 69 frames at 30 fps
BRIGHT = (12, 30, 47)  # source (25 fps) frame indices that are brightened and carry a tone burst
GAIN = 1.6
BURST_S = 0.015
CONFIG = preprocess.PreprocessConfig(body_size=(192, 128), head_size=128, min_frames=50)


def _make_video(path) -> None:
  src = require(media_dir() / "videos", "shared media videos (CHATANYONE_MEDIA_DIR)") / CLIP
  frames, _ = read_video(src, max_frames=NUM_SRC_FRAMES)
  frames = frames.astype(np.float32)
  for j in BRIGHT:
    frames[j] = np.clip(frames[j] * GAIN, 0, 255)
  n_samples = int(round(NUM_SRC_FRAMES / SRC_FPS * SR))
  rng = np.random.default_rng(0)
  audio = 0.01 * rng.standard_normal(n_samples)
  t = np.arange(int(round(BURST_S * SR))) / SR
  tone = 0.5 * np.sin(2 * np.pi * 1000 * t)
  for j in BRIGHT:
    a = j * SR // SRC_FPS  # exact: 640 samples per 25 fps frame
    audio[a:a + tone.size] += tone
  write_video(path, frames.astype(np.uint8), fps=SRC_FPS, audio=audio.astype(np.float32), sample_rate=SR)


def _bright_frames(brightness: np.ndarray) -> list[int]:
  """First index of each run of frames clearly brighter than their neighbourhood's median."""
  n = brightness.size
  local = np.array([np.median(brightness[max(0, i - 4):i + 5]) for i in range(n)])
  hot = brightness > local * 1.12
  return [i for i in range(n) if hot[i] and (i == 0 or not hot[i - 1])]


def _burst_onsets(audio: np.ndarray) -> list[int]:
  """Sample index where the 1-ms envelope first crosses a third of the burst amplitude, per burst."""
  env = np.convolve(np.abs(audio), np.ones(16) / 16, mode="same")
  above = env > 0.33 * env.max()
  onsets: list[int] = []
  for i in np.flatnonzero(above):
    if not onsets or i - onsets[-1] > SR // 10:  # a new burst (bursts are >= 0.7 s apart)
      onsets.append(int(i))
  return onsets


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
  videos = tmp_path_factory.mktemp("sync_videos")
  _make_video(videos / "sync25.mp4")
  out = tmp_path_factory.mktemp("sync_out")
  summary = preprocess.run(videos, out, CONFIG, progress=False)
  return out, summary


def test_brightened_frames_keep_the_face(synced):
  _, summary = synced
  assert summary["done"] == 1 and summary["clips"] == 1, summary["failed"]
  # Output frame k exists while k / 30 s is before the end of the last source frame's half interval.
  n_out = int(np.ceil((NUM_SRC_FRAMES - 0.5) / SRC_FPS * FPS))
  assert summary["frames"] == n_out == summary["frames_kept"]
  assert summary["frames_dropped_no_face"] == 0


def test_tone_bursts_line_up_with_bright_frames(synced):
  out, _ = synced
  clip = records.data_source(out, "clips")[0]
  frames = records.data_source(out, "frames")
  n = int(clip["num_frames"])
  assert clip["audio"].shape == (round(n * SR / FPS),)
  brightness = np.array([decode_image(frames[i]["body_jpeg"]).mean() for i in range(n)])
  bright = _bright_frames(brightness)
  onsets = _burst_onsets(clip["audio"].astype(np.float32) / 32768.0)
  spf = SR / FPS
  # Expected 30 fps frames: the first output frame whose nearest 25 fps source frame is the bright one.
  expect = [int(np.ceil((j / SRC_FPS - 0.5 / SRC_FPS) * FPS)) for j in BRIGHT]
  offsets_ms = [1e3 * (o / SR - b / FPS) for o, b in zip(onsets, bright, strict=False)]
  true_ms = [f"{1e3 * (o / SR - j / SRC_FPS):+.1f} ms" for o, j in zip(onsets, BRIGHT, strict=False)]
  print(f"bright frames {bright} (expected {expect}); burst onsets {[round(o / spf, 2) for o in onsets]} "
        f"frames; onset - frame time: {[f'{x:+.1f} ms' for x in offsets_ms]}; "
        f"burst onset - true time: {true_ms}")
  assert bright == expect
  assert len(onsets) == len(BRIGHT)
  for onset, frame in zip(onsets, bright, strict=True):
    assert abs(onset / spf - frame) <= 1.0, (onset / spf, frame)
