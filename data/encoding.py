"""How preprocessed clips store images and byte strings: encoded JPEG / PNG bytes, packed for np.savez.

`annotate_clip` (`data.annotate`) encodes the crops, hand images and masks and packs them per clip;
`data.records` unpacks them into one record per frame; the grain pipelines (`data.pipelines`) and
evaluation decode them.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image


def encode_image(image: np.ndarray, fmt: str = "JPEG", quality: int = 90) -> bytes:
  """(H, W[, C]) uint8 -> JPEG bytes at `quality`, or PNG bytes (`fmt="PNG"`, fast lossless level 1)."""
  buf = io.BytesIO()
  kwargs = {"quality": quality} if fmt == "JPEG" else {"compress_level": 1}
  Image.fromarray(np.ascontiguousarray(image)).save(buf, format=fmt, **kwargs)
  return buf.getvalue()


def decode_image(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
  """Encoded image -> (H, W, C) uint8, bilinearly resized to `size` (H, W) if given and different.

  A greyscale image gets a channel axis of 1.
  """
  img = Image.open(io.BytesIO(data))
  img.load()
  if size is not None and (img.height, img.width) != tuple(size):
    img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=3.0)
  arr = np.asarray(img)
  return arr[..., None] if arr.ndim == 2 else arr


def pack_bytes(items: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
  """Byte strings -> (flat uint8, (n + 1,) int64 offsets) for np.savez (no pickling)."""
  offsets = np.zeros(len(items) + 1, np.int64)
  offsets[1:] = np.cumsum([len(b) for b in items])
  return np.frombuffer(b"".join(items), np.uint8).copy(), offsets


def unpack_bytes(flat: np.ndarray, offsets: np.ndarray) -> list[bytes]:
  """The inverse of `pack_bytes`."""
  return [flat[offsets[i]:offsets[i + 1]].tobytes() for i in range(len(offsets) - 1)]
