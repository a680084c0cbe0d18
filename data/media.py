"""Reading raw media with clear errors: images, audio (any file, resampled to mono) and videos.

Used by preprocessing (`data.landmarks`, `data.decode`) and by inference for its inputs (the portrait,
the speech, a reference video). Writing videos (h264 + AAC) is `infer.media`.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
from PIL import Image, UnidentifiedImageError

PathLike = str | os.PathLike


class MediaError(ValueError):
  """A media file is missing, unreadable or unusable; the message says what to do."""


def import_av():
  """PyAV, imported on first use: reading images (and importing the models) does not need FFmpeg."""
  try:
    import av
  except ImportError as e:
    raise ImportError("decoding audio or video needs PyAV: pip install av (a dependency of this "
                      "package)") from e
  return av


def read_image(path: PathLike) -> np.ndarray:
  """Reads an image file as (H, W, 3) uint8 RGB."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise MediaError(f"image not found: {path}")
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"))
  except (UnidentifiedImageError, OSError) as e:
    raise MediaError(f"cannot read image {path} ({e}); give a PNG or JPEG portrait") from e


def read_audio(path: PathLike, sample_rate: int = 16000) -> np.ndarray:
  """Decodes any audio (or a video's audio track) to float32 mono at `sample_rate`.

  The channels are averaged (no -3 dB pan law), whatever the file's rate and channel count.

  Returns:
    (num_samples,) float32 in [-1, 1].
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise MediaError(f"audio not found: {path}")
  av = import_av()
  try:
    container = av.open(str(path))
  except av.error.FFmpegError as e:
    raise MediaError(f"cannot open audio {path} ({e}); give a WAV, MP3, FLAC or video file") from e
  with container:
    if not container.streams.audio:
      raise MediaError(f"{path} has no audio stream")
    resampler = None
    chunks = []
    try:
      for frame in container.decode(audio=0):
        if resampler is None:  # keep the channels; average them below (no -3 dB pan law)
          resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=sample_rate)
        for out in resampler.resample(frame):
          chunks.append(out.to_ndarray().mean(axis=0))
      if resampler is not None:
        for out in resampler.resample(None):  # flush
          chunks.append(out.to_ndarray().mean(axis=0))
    except av.error.FFmpegError as e:
      raise MediaError(f"corrupt audio in {path} ({e})") from e
  if not chunks:
    raise MediaError(f"{path} decoded to no audio samples")
  return np.concatenate(chunks).astype(np.float32)


def read_video(path: PathLike, max_frames: int | None = None) -> tuple[np.ndarray, float]:
  """Reads a video's frames as (T, H, W, 3) uint8 and its frame rate (no resampling)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise MediaError(f"video not found: {path}")
  av = import_av()
  try:
    with av.open(str(path)) as container:
      if not container.streams.video:
        raise MediaError(f"{path} has no video stream")
      stream = container.streams.video[0]
      fps = float(stream.average_rate or stream.guessed_rate or 30)
      frames = []
      for frame in container.decode(video=0):
        frames.append(frame.to_ndarray(format="rgb24"))
        if max_frames is not None and len(frames) >= max_frames:
          break
  except av.error.FFmpegError as e:
    raise MediaError(f"cannot decode video {path} ({e})") from e
  if not frames:
    raise MediaError(f"{path} decoded to no frames")
  return np.stack(frames), fps
