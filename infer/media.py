"""Image, audio and video I/O with clear errors (Pillow and PyAV).

Audio is returned as float32 mono at the requested rate (16 kHz for the
models), whatever the file's rate and channel count; video is written as
h264 (yuv420p) with the audio muxed as AAC.
"""

from __future__ import annotations

import fractions
import os
import pathlib
from collections.abc import Iterable

import numpy as np

PathLike = str | os.PathLike


class MediaError(ValueError):
  """A media file is missing, unreadable or unusable; the message says what to do."""


def read_image(path: PathLike) -> np.ndarray:
  """Reads an image file as (H, W, 3) uint8 RGB."""
  from PIL import Image, UnidentifiedImageError

  path = pathlib.Path(path)
  if not path.is_file():
    raise MediaError(f"image not found: {path}")
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"))
  except (UnidentifiedImageError, OSError) as e:
    raise MediaError(f"cannot read image {path} ({e}); give a PNG or JPEG portrait") from e


def write_image(path: PathLike, image: np.ndarray) -> None:
  from PIL import Image

  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.asarray(image, np.uint8)).save(path)


def read_audio(path: PathLike, sample_rate: int = 16000) -> np.ndarray:
  """Decodes any audio (or a video's audio track) to float32 mono at `sample_rate`.

  Returns:
    (num_samples,) float32 in [-1, 1].
  """
  import av

  path = pathlib.Path(path)
  if not path.is_file():
    raise MediaError(f"audio not found: {path}")
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


def write_video(path: PathLike, frames: Iterable[np.ndarray], fps: int = 30, *,
                audio: np.ndarray | None = None, sample_rate: int = 16000, crf: int = 18) -> int:
  """Writes (H, W, 3) uint8 frames as h264 mp4, muxing mono float audio as AAC.

  Frames are consumed lazily, so a generator (e.g. `infer.stream`) can be
  written while it runs. Returns the number of frames written.
  """
  import av

  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  n = 0
  with av.open(str(path), mode="w") as container:
    vstream = None
    astream = None
    if audio is not None:
      astream = container.add_stream("aac", rate=sample_rate)
      astream.layout = "mono"
    for frame in frames:
      frame = np.ascontiguousarray(frame, dtype=np.uint8)
      if vstream is None:
        h, w = frame.shape[:2]
        if h % 2 or w % 2:
          raise MediaError(f"h264 needs even frame sizes, got {w}x{h}")
        vstream = container.add_stream("h264", rate=fps)
        vstream.width, vstream.height = w, h
        vstream.pix_fmt = "yuv420p"
        vstream.options = {"crf": str(crf)}
      for packet in vstream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        container.mux(packet)
      n += 1
    if vstream is None:
      raise MediaError("no frames to write")
    for packet in vstream.encode():
      container.mux(packet)
    if astream is not None:
      pcm = np.clip(np.asarray(audio, np.float32).reshape(1, -1), -1, 1)
      # Trim the audio to the video length so players do not show a frozen tail.
      pcm = pcm[:, : int(round(n / fps * sample_rate))]
      block = 1024
      pts = 0
      for i in range(0, pcm.shape[1], block):
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, i:i + block]), format="flt",
                                        layout="mono")
        af.sample_rate = sample_rate
        af.pts = pts
        af.time_base = fractions.Fraction(1, sample_rate)
        pts += af.samples
        for packet in astream.encode(af):
          container.mux(packet)
      for packet in astream.encode():
        container.mux(packet)
  return n


def read_video(path: PathLike, max_frames: int | None = None) -> tuple[np.ndarray, float]:
  """Reads a video's frames as (T, H, W, 3) uint8 and its frame rate."""
  import av

  path = pathlib.Path(path)
  if not path.is_file():
    raise MediaError(f"video not found: {path}")
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
