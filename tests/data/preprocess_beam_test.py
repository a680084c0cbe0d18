"""`preprocess.run(beam_runner="DirectRunner", workers=2)`: both stages as Apache Beam pipelines on the
DirectRunner's worker processes give the same records, bad-video report and resumption as the plain run."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from data import preprocess, records
from tests.helpers import REPO, media_dir, require, require_module

CLIP = "V-Express__scripts_prepare_dataset_RD_Radio10_0_clip_0.mp4"
CONFIG = preprocess.PreprocessConfig(body_size=(192, 128), head_size=128, max_seconds=0.6, min_frames=16)


def _same_records(a, b) -> None:
  for config in ("clips", "frames"):
    x, y = records.data_source(a, config), records.data_source(b, config)
    assert len(x) == len(y), config
    for i in range(len(x)):
      ex, ey = x[i], y[i]
      assert set(ex) == set(ey)
      for k in ex:
        np.testing.assert_array_equal(np.asarray(ex[k]), np.asarray(ey[k]), err_msg=f"{config}[{i}].{k}")


@pytest.mark.slow
def test_beam_pipeline_equals_single_process(tmp_path, monkeypatch):
  require_module("apache_beam", 'pip install -e ".[beam]"')
  src = require(media_dir() / "videos", "shared media videos (CHATANYONE_MEDIA_DIR)") / CLIP
  videos = tmp_path / "videos"
  videos.mkdir()
  for name in ("copy_a.mp4", "copy_b.mp4"):
    shutil.copy(src, videos / name)
  (videos / "broken.mp4").write_bytes(b"not a video")
  monkeypatch.setenv("PYTHONPATH", str(REPO))  # the DirectRunner's worker processes import `data` from here
  monkeypatch.chdir(REPO)

  plain = preprocess.run(videos, tmp_path / "plain", CONFIG, workers=1, progress=False)
  beam = preprocess.run(videos, tmp_path / "beam", CONFIG, workers=2, beam_runner="DirectRunner",
                        progress=False)
  assert beam["this_run"]["engine"] == "beam:DirectRunner" and beam["this_run"]["videos"] == 3
  keys = ("videos", "done", "clips", "frames", "frames_kept", "frames_dropped_no_face",
          "frames_dropped_short")
  assert {k: beam[k] for k in keys} == {k: plain[k] for k in keys} == {
      "videos": 3, "done": 2, "clips": 2, "frames": 36, "frames_kept": 36, "frames_dropped_no_face": 0,
      "frames_dropped_short": 0}
  # The bad video is reported, the same way, and does not stop the run.
  assert [(f["video"].split("/")[-1], f["reason"]) for f in beam["failed"]] == \
      [(f["video"].split("/")[-1], f["reason"]) for f in plain["failed"]] == [("broken.mp4", "unreadable")]
  assert beam["records"]["splits"] == plain["records"]["splits"] == {"clips": {"train": 2},
                                                                     "frames": {"train": 36}}
  _same_records(tmp_path / "plain", tmp_path / "beam")

  # Resumable: a second run skips every video (done or failed) and reuses the records.
  again = preprocess.run(videos, tmp_path / "beam", CONFIG, workers=2, beam_runner="DirectRunner",
                         progress=False)
  assert again["skipped_already_processed"] == 3 and again["this_run"]["videos"] == 0
  assert again["records"]["fingerprint"] == beam["records"]["fingerprint"]
