"""Preprocessed records of one real clip, shared by the training tests (built once per session)."""

from __future__ import annotations

import shutil

import pytest

from tests.helpers import media_dir, require

CLIP = "V-Express__test_samples_short_case_AOC_gt.mp4"


@pytest.fixture(scope="session")
def motion_records(tmp_path_factory):
  """Records of the first 3 s (90 frames) of one speech clip, small crops: the `data_dir` of the configs."""
  from data.preprocess import PreprocessConfig, run

  clip = require(media_dir() / "videos" / CLIP, "shared media clip")
  root = tmp_path_factory.mktemp("train_records")
  videos = root / "videos"
  videos.mkdir()
  shutil.copy(clip, videos / CLIP)
  out = root / "out"
  summary = run(videos, out, PreprocessConfig(body_size=(192, 128), head_size=128, max_seconds=3.0,
                                              min_frames=50), progress=False)
  assert summary["clips"] == 1, summary
  return out
