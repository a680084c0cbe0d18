"""`preprocess.run(workers=2)`: spawned worker processes annotate videos in parallel, with equal results."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from data import preprocess, records
from tests.helpers import REPO, media_dir, require

CLIP = "V-Express__scripts_prepare_dataset_RD_Radio10_0_clip_0.mp4"
CONFIG = preprocess.PreprocessConfig(body_size=(192, 128), head_size=128, max_seconds=1.8, min_frames=50)


@pytest.mark.slow
def test_two_workers_process_copies_identically(tmp_path):
  src = require(media_dir() / "videos", "shared media videos (CHATANYONE_MEDIA_DIR)") / CLIP
  videos = tmp_path / "videos"
  videos.mkdir()
  for name in ("copy_a.mp4", "copy_b.mp4"):
    shutil.copy(src, videos / name)
  t = time.perf_counter()
  summary = preprocess.run(videos, tmp_path / "out", CONFIG, workers=2, progress=False)
  print(f"preprocess.run(workers=2) on 2 x {CONFIG.max_seconds} s: {time.perf_counter() - t:.1f} s wall "
        f"(annotation {summary['this_run']['seconds']} s)")
  assert summary["done"] == 2 and not summary["failed"] and summary["this_run"]["workers"] == 2
  assert summary["clips"] == 2 and summary["frames_kept"] == summary["frames"] == 2 * 54
  assert summary["records"]["splits"] == {"clips": {"train": 2}, "frames": {"train": 108}}
  clips = records.data_source(tmp_path / "out", "clips")
  a, b = clips[0], clips[1]
  assert {str(a["name"]), str(b["name"])} != {str(a["name"])}  # two distinct clips
  assert int(a["num_frames"]) == int(b["num_frames"]) == 54
  np.testing.assert_allclose(a["exp"], b["exp"], atol=1e-4)
  np.testing.assert_allclose(a["pose"], b["pose"], atol=1e-4)
  np.testing.assert_array_equal(a["audio"], b["audio"])
  frames = records.data_source(tmp_path / "out", "frames")
  assert len(frames) == 108 and frames[54]["clip_index"] == 1 and frames[54]["frame_index"] == 0


_PARENT = """
import concurrent.futures, multiprocessing, os, sys, time
from data.preprocess import _die_with_parent
if __name__ == "__main__":
  # fork, not preprocessing's spawn: the same initializer without importing the package twice
  pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"),
                                                initializer=_die_with_parent)
  print(pool.submit(os.getpid).result(), flush=True)
  pool.submit(time.sleep, 120)
  time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_end_when_the_run_is_killed(tmp_path):
  """A killed run leaves no worker annotating on (they would write into the next run's work folder)."""
  script = tmp_path / "parent.py"
  script.write_text(_PARENT)
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  parent = subprocess.Popen([sys.executable, str(script)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            text=True)
  child = int(parent.stdout.readline())
  os.kill(parent.pid, signal.SIGKILL)
  parent.wait()
  end = time.monotonic() + 30
  while time.monotonic() < end and _alive(child):
    time.sleep(0.2)
  assert not _alive(child), "the worker outlived the run that started it"


def _alive(pid: int) -> bool:
  try:
    state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
  except FileNotFoundError:
    return False
  return state != "Z"
