"""Video writing: h264 round trip through `data.media.read_video`."""

import numpy as np

from data.media import read_video
from infer.media import write_video


def test_video_round_trip(tmp_path):
  yy, xx = np.mgrid[0:32, 0:48]
  base = np.stack([xx * 5, yy * 7, (xx + yy) * 3], -1).astype(np.uint8)[None]  # smooth colours
  frames = np.repeat(base, 10, 0)
  n = write_video(tmp_path / "v.mp4", iter(frames), 30)
  back, fps = read_video(tmp_path / "v.mp4")
  assert n == 10 and back.shape == frames.shape and fps == 30
  assert np.abs(back.astype(int) - frames).mean() < 4  # lossy h264, yuv420
