"""Writing images and videos (Pillow and PyAV): h264 (yuv420p) with the mono audio muxed as AAC.

Reading media (images, audio, videos) and `MediaError` are `data.media`.
"""

from __future__ import annotations

import fractions
import pathlib
from collections.abc import Iterable

import av
import numpy as np
from PIL import Image

from data.media import MediaError, PathLike


def write_image(path: PathLike, image: np.ndarray) -> None:
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.asarray(image, np.uint8)).save(path)


def write_animation(path: PathLike, frames: Iterable[np.ndarray], fps: float) -> None:
  """A looping animated image (.webp or .gif, by the suffix) of (H, W, 3) uint8 frames: small previews."""
  path = pathlib.Path(path)
  if path.suffix.lower() not in (".webp", ".gif"):
    raise ValueError(f"animation must be .webp or .gif, got {path.name}")
  images = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
  if not images:
    raise ValueError("no frames for the animation")
  path.parent.mkdir(parents=True, exist_ok=True)
  extra = {"quality": 70, "method": 4} if path.suffix.lower() == ".webp" else {}
  images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0, **extra)


def write_video(path: PathLike, frames: Iterable[np.ndarray], fps: int = 30, *,
                audio: np.ndarray | None = None, sample_rate: int = 16000, crf: int = 18) -> int:
  """Writes (H, W, 3) uint8 frames as h264 mp4, muxing mono float audio as AAC.

  Frames are consumed lazily, so a generator (e.g. `infer.stream`) can be
  written while it runs. Returns the number of frames written.
  """
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
