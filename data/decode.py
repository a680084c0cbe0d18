"""Decoding a raw talking video for preprocessing: frames resampled to a fixed rate, and its audio.

`iter_frames` yields frames at the output frame rate (nearest source frame by timestamp), scaled down to
a maximum side; `load_audio` decodes the audio track to mono float32 at the output sample rate (the
runner then aligns sample 0 with frame 0 using `stream_start_offset`). Failures are `VideoFailure`s
whose `reason` is one of the categories of the run's summary.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from data.media import MediaError, import_av, read_audio
from data.preprocess_config import PreprocessConfig


class VideoFailure(Exception):
  """A video that cannot become training data; `reason` is one of the summary's categories."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


def iter_frames(path: str | os.PathLike, fps: float = 30.0, max_side: int = 1280,
                max_frames: int | None = None) -> Iterator[np.ndarray]:
  """Decodes a video resampled to `fps` (nearest source frame by timestamp), (H, W, 3) uint8 frames.

  Raises:
    VideoFailure("unreadable"): the file cannot be opened or decoded, or has no video stream.
  """
  av = import_av()
  try:
    container = av.open(str(path))
  except (av.error.FFmpegError, OSError) as e:
    raise VideoFailure("unreadable", f"cannot open {path} ({e}); re-encode it, e.g. "
                       "`ffmpeg -i in -c:v libx264 -c:a aac out.mp4`") from e
  with container:
    if not container.streams.video:
      raise VideoFailure("unreadable", f"{path} has no video stream")
    stream = container.streams.video[0]
    src_fps = float(stream.average_rate or stream.guessed_rate or fps)
    w, h = stream.codec_context.width, stream.codec_context.height
    scale = min(1.0, max_side / max(w, h, 1))
    size = {"width": max(2, int(round(w * scale / 2)) * 2), "height": max(2, int(round(h * scale / 2)) * 2)}
    if scale == 1.0:
      size = {}
    k, t0, n_src = 0, None, 0
    try:
      for frame in container.decode(video=0):
        t = frame.time if frame.time is not None else n_src / src_fps
        n_src += 1
        t0 = t if t0 is None else t0
        t -= t0
        image = None
        while k / fps < t + 0.5 / src_fps:  # this source frame is the nearest one for output frame k
          if image is None:
            image = frame.to_ndarray(format="rgb24", **size)
          yield image
          k += 1
          if max_frames is not None and k >= max_frames:
            return
    except av.error.FFmpegError as e:
      raise VideoFailure("unreadable", f"corrupt video stream in {path} ({e})") from e
    if n_src == 0:
      raise VideoFailure("unreadable", f"{path} decoded to no frames")


def probe_video(path: str | os.PathLike) -> None:
  """Opens the container and checks for a video stream; VideoFailure("unreadable") otherwise."""
  av = import_av()
  try:
    with av.open(str(path)) as container:
      if not container.streams.video:
        raise VideoFailure("unreadable", f"{path} has no video stream")
  except (av.error.FFmpegError, OSError) as e:
    raise VideoFailure("unreadable", f"cannot open {path} as a video ({e}); re-encode it, e.g. "
                       "`ffmpeg -i in -c:v libx264 -c:a aac out.mp4`") from e


def stream_start_offset(path: str | os.PathLike) -> float:
  """Seconds by which the first video frame starts after the first audio sample (0 if unknown)."""
  av = import_av()
  with av.open(str(path)) as container:
    def start(stream):
      if stream.start_time is None or stream.time_base is None:
        return None
      return float(stream.start_time * stream.time_base)

    v = start(container.streams.video[0]) if container.streams.video else None
    a = start(container.streams.audio[0]) if container.streams.audio else None
  return 0.0 if v is None or a is None else v - a


def load_audio(path: str | os.PathLike, config: PreprocessConfig) -> np.ndarray:
  """The video's audio track, mono float32 at `config.sample_rate`.

  Raises:
    VideoFailure("no_audio" / "unreadable"): no audio stream, or it cannot be decoded.
  """
  try:
    return read_audio(path, config.sample_rate)
  except MediaError as e:
    reason = "no_audio" if "no audio" in str(e) else "unreadable"
    raise VideoFailure(reason, f"{e}; training needs the speech that goes with the video") from e


def audio_span(start_frame: int, num_frames: int, samples_per_frame: float) -> tuple[int, int]:
  """Sample range [a, b) of frames [start, start + num): a = round(start · spf), b = a + round(num · spf)."""
  a = int(round(start_frame * samples_per_frame))
  return a, a + int(round(num_frames * samples_per_frame))
