"""Crop boxes, crops and the coordinate conversions between frame, crop, grid and body units.

Template coefficients live in *body units*: origin at the body crop's centre, 1 = half the crop width,
x right, y down, z like x (isotropic, so Procrustes fits stay similarities). The renderer's keypoints
(`head_kp`, `body_kp`) are in *grid units* of their crop: x, y in [-1, 1] across the crop (as
`grid_sample` reads them), z = 2·z_px / crop width. Hand landmarks are body-crop pixels.

Per clip the upper-body box (2:3, width:height) and the head box (1:1) have the clip's median size and
time-smoothed centres (`clip_boxes`), so the crops neither breathe nor jitter.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter1d
from scipy.spatial import ConvexHull

from data.preprocess_config import PreprocessConfig


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
  if sigma <= 0 or x.shape[0] < 2:
    return x
  return gaussian_filter1d(x, sigma, axis=0, mode="nearest")


def clip_boxes(face_box: np.ndarray, config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
  """Per-frame face boxes (T, 4) -> stable head (T, 4) and body (T, 4) boxes [x0, y0, x1, y1], in pixels.

  Box sizes are the clip's median (so the crop scale does not breathe) and centres are smoothed over
  time; boxes may extend past the frame (the crop pads with black). Coordinates are rounded to whole
  pixels so crops are exact.
  """
  size = np.maximum(face_box[:, 2] - face_box[:, 0], face_box[:, 3] - face_box[:, 1])
  centre = np.stack([(face_box[:, 0] + face_box[:, 2]) / 2, (face_box[:, 1] + face_box[:, 3]) / 2], -1)
  centre = _smooth(centre.astype(np.float64), config.smooth_sigma)
  f = float(np.median(size))
  hs = max(2.0, round(config.head_scale * f))
  bh_px, bw_px = config.body_size
  bw = max(2.0, round(config.body_scale * f))
  bh = round(bw * bh_px / bw_px)
  hx0 = np.round(centre[:, 0] - hs / 2)
  hy0 = np.round(centre[:, 1] - 0.08 * f - hs / 2)  # hair above the mesh, chin below
  head = np.stack([hx0, hy0, hx0 + hs, hy0 + hs], -1)
  bx0 = np.round(centre[:, 0] - bw / 2)
  by0 = np.round(centre[:, 1] - config.body_face_y * bh)
  body = np.stack([bx0, by0, bx0 + bw, by0 + bh], -1)
  return head.astype(np.float32), body.astype(np.float32)


PADS = ("black", "extend")
EXTEND_BLUR = 0.5  # `crop(pad="extend")`: Gaussian sigma per pixel of distance from the picture's border


def _extend(arr: np.ndarray, before: int, after: int, axis: int) -> np.ndarray:
  """`arr` (H, W, ...) grown by `before` / `after` lines along `axis` (0: rows, 1: columns): the border line
  carried outwards, blurred along its length with sigma EXTEND_BLUR * distance (so structure dissolves into
  its colours instead of streaking)."""
  def strip(edge: np.ndarray, n: int) -> np.ndarray:  # lines at distance n, ..., 1 from the border
    lines = [gaussian_filter1d(edge, EXTEND_BLUR * d, axis=0, mode="nearest") for d in range(n, 0, -1)]
    return np.stack(lines, axis=axis)
  x = np.moveaxis(arr, axis, 0).astype(np.float32)
  parts = [np.moveaxis(x, 0, axis)]
  if before:
    parts.insert(0, strip(x[0], before))
  if after:
    parts.append(np.flip(strip(x[-1], after), axis=axis))
  return np.concatenate(parts, axis=axis)


def crop(image: np.ndarray | Image.Image, box: np.ndarray, size: tuple[int, int],
         resample: int = Image.Resampling.BILINEAR, pad: str = "black") -> np.ndarray:
  """Crops `box` (whole pixels, may leave the image) and resizes to (H, W).

  Where the box leaves the image `pad` fills it: "black" (the training records' crops) or "extend" (the
  picture's border carried outwards, more blurred the farther out: a portrait whose body box leaves the
  picture keeps its wall and shirt there instead of a black band, which the renderer would copy into every
  frame; far out, as below a head shot, the border's colours without its streaks).
  """
  if pad not in PADS:
    raise ValueError(f"pad must be one of {PADS}, got {pad!r}")
  x0, y0, x1, y1 = (int(v) for v in box)
  if pad == "extend":
    arr = np.asarray(image)
    h, w = arr.shape[:2]
    top, left, bottom, right = max(0, -y0), max(0, -x0), max(0, y1 - h), max(0, x1 - w)
    if top or left or bottom or right:
      grown = _extend(_extend(arr, top, bottom, axis=0), left, right, axis=1)
      image = np.clip(np.round(grown), 0, 255).astype(arr.dtype)
      x0, x1, y0, y1 = x0 + left, x1 + left, y0 + top, y1 + top
  img = image if isinstance(image, Image.Image) else Image.fromarray(image)
  out = img.crop((x0, y0, x1, y1)).resize((size[1], size[0]), resample, reducing_gap=3.0)
  return np.asarray(out)


def to_crop_pixels(points: np.ndarray, box: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """(..., 3) frame pixels (z like x) -> pixels of the crop `box` resized to `size` (H, W).

  `box` (..., 4) broadcasts against `points[..., 0]` (e.g. (T, 1, 4) boxes for (T, N, 3) points).
  """
  box = np.asarray(box, np.float32)
  sx = size[1] / (box[..., 2] - box[..., 0])
  sy = size[0] / (box[..., 3] - box[..., 1])
  out = np.empty_like(points, dtype=np.float32)
  out[..., 0] = (points[..., 0] - box[..., 0]) * sx
  out[..., 1] = (points[..., 1] - box[..., 1]) * sy
  out[..., 2] = points[..., 2] * sx
  return out


def to_grid(points_px: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """(..., 3) crop pixels -> grid units: x, y in [-1, 1] across the crop, z = 2 z / width."""
  h, w = size
  scale = np.array([2.0 / w, 2.0 / h, 2.0 / w], np.float32)
  shift = np.array([-1.0, -1.0, 0.0], np.float32)
  return (points_px * scale + shift).astype(np.float32)


def body_units_to_grid(points: np.ndarray, body_size: tuple[int, int]) -> np.ndarray:
  """(..., 3) body units (origin at the crop centre, 1 = half the width) -> the body crop's grid units."""
  h, w = body_size
  return (points * np.array([1.0, w / h, 1.0], np.float32)).astype(np.float32)


# MediaPipe face mesh: the outer lip contour (FACEMESH_LIPS' outer ring).
MOUTH_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
MOUTH_MASK_SCALE = 1.6  # the lip hull grown about its centre: the lips, teeth, chin crease and cheeks beside


def face_mask(points_px: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """(478, 3) crop-pixel face-mesh points -> (H, W) uint8 mask of their 2-D convex hull (the face oval)."""
  return _hull_mask(points_px[:, :2], size)


def mouth_mask(points_px: np.ndarray, size: tuple[int, int], scale: float = MOUTH_MASK_SCALE) -> np.ndarray:
  """(478, 3) crop-pixel face-mesh points -> (H, W) uint8 mask of the outer-lip hull grown `scale` times
  about the lips' centre (the renderer's mouth-region term)."""
  lips = points_px[list(MOUTH_OUTER), :2].astype(np.float64)
  centre = lips.mean(axis=0)
  return _hull_mask(centre + scale * (lips - centre), size)


def _hull_mask(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """(N, 2) crop pixels -> (H, W) uint8 mask (255 inside) of their convex hull; empty when degenerate."""
  pts = np.asarray(points, np.float64)
  mask = Image.new("L", (size[1], size[0]), 0)
  if not np.isfinite(pts).all():
    return np.asarray(mask)
  try:
    hull = pts[ConvexHull(pts).vertices]
  except Exception:  # degenerate (collinear) points: nothing to draw
    return np.asarray(mask)
  ImageDraw.Draw(mask).polygon([tuple(p) for p in hull], fill=255)
  return np.asarray(mask)
