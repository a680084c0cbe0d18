"""Raw talking videos -> annotated clips -> TFDS ArrayRecord records (ARCHITECTURE.md §2, §6).

  python -m data.preprocess --videos DIR --out DIR [--workers N] [--body-size 768x512] [--head-size 512]
                            [--max-seconds S] [--val-fraction F] [--retry-failed]

Two stages, both resumable:

1. Per video (`process_video`, in `--workers` processes): decode with PyAV, resample to 30 fps
   (nearest frame by timestamp) and the audio to 16 kHz mono; MediaPipe landmarks per frame in tracking
   mode (`data.landmarks`: face mesh + iris, pose, hands, selfie segmentation; one tracked identity);
   frames without the face are dropped and counted, and every run of consecutive face frames of at least
   `min_frames` becomes one clip. Per clip: a stable upper-body box (2:3, width:height) and head box (1:1)
   per frame (size: the clip's median, centre: Gaussian-smoothed over time), the head-template fit
   (`chatanyone_jax.template.fit_clip`; one identity, per-frame pose + scale + 52 expression
   coefficients), 21 body keypoints, hand landmarks and their 130 coefficients, and per frame JPEG crops
   (body, head), the rendered hand image (`render_hands`) and a PNG with three masks (face, hands,
   person). Results go to `OUT/work/<video stem>/` with a `status.json`; a finished video (or one that
   failed, unless `--retry-failed`) is skipped when the command runs again. A bad video (unreadable, no
   audio, silent, no face, too short) is reported in `OUT/summary.json` and never stops the run.
2. Records (`data.records.ChatAnyoneRecords`): a TFDS `GeneratorBasedBuilder` writes two configs of
   ArrayRecord shards under `OUT/records/`: `clips` (one record per clip: coefficients, keypoints, audio)
   and `frames` (one record per frame: crops, masks, hand image, keypoints), read back with
   `tfds.data_source` / `data.records.data_source`. The records are rebuilt only when the set of finished
   clips changed.

Coordinates. Template coefficients live in *body units*: origin at the body crop's centre, 1 = half the
crop width, x right, y down, z like x (isotropic, so Procrustes fits stay similarities). The renderer's
keypoints (`head_kp`, `body_kp`) are in *grid units* of their crop: x, y in [-1, 1] across the crop (as
`grid_sample` reads them), z = 2·z_px / crop width. Hand landmarks are body-crop pixels.

Scaling out: stage 1 is embarrassingly parallel per video (`--workers`, or run several machines on
disjoint `--videos` folders writing the same `--out` on shared storage); stage 2 is a plain TFDS builder,
so for very large corpora `tfds build` with `--beam_pipeline_options` (Apache Beam, installed separately)
distributes the writing without code changes here.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import io
import json
import logging
import multiprocessing
import os
import pathlib
import sys
import time
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw

from infer.media import MediaError, read_audio

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")
# MediaPipe pose landmarks kept as the 21 body keypoints: nose, eyes, ears, mouth corners, then
# shoulders, elbows, wrists, pinky / index / thumb knuckles and hips (ARCHITECTURE.md §2, K_b = 21).
BODY_POSE_INDICES = np.array([0, 2, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24],
                             np.int32)
NUM_BODY_KP = len(BODY_POSE_INDICES)
STATUS_FILE = "status.json"


class VideoFailure(Exception):
  """A video that cannot become training data; `reason` is one of the summary's categories."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
  """Preprocessing settings (sizes are (height, width) in pixels).

  Attributes:
    fps: output frame rate.
    sample_rate: output audio rate.
    body_size: upper-body crop size, 2:3 (the renderer's output size, 768 × 512 for upper512x768).
    head_size: head crop side (the face-refine / head512 output size).
    min_frames: shortest clip kept (T + H = 50 frames of stage 1).
    max_seconds: only the first seconds of each video (None: all).
    segment_frames: frames decoded and annotated at once (bounds memory on long videos).
    max_side: frames are scaled on decode so that their longer side is at most this.
    head_scale: head box side / face size (face-mesh extent).
    body_scale: body box width / face size.
    body_face_y: the face centre's height in the body box, as a fraction of its height from the top.
    smooth_sigma: Gaussian smoothing of box centres over time, in frames.
    jpeg_quality: of the stored crops.
    min_audio_rms: quieter audio counts as silent.
    hand_radius: capsule radius of the rendered hands as a fraction of the palm size.
  """

  fps: float = 30.0
  sample_rate: int = 16000
  body_size: tuple[int, int] = (768, 512)
  head_size: int = 512
  min_frames: int = 50
  max_seconds: float | None = None
  segment_frames: int = 900
  max_side: int = 1280
  head_scale: float = 1.9
  body_scale: float = 3.6
  body_face_y: float = 0.28
  smooth_sigma: float = 5.0
  jpeg_quality: int = 90
  min_audio_rms: float = 1e-3
  hand_radius: float = 0.12

  def __post_init__(self):
    h, w = self.body_size
    if 2 * h != 3 * w:
      raise ValueError(f"body_size must be 2:3 (width:height), got height {h} width {w}")

  def samples_per_frame(self) -> float:
    return self.sample_rate / self.fps


# ---------------------------------------------------------------- decoding


def iter_frames(path: str | os.PathLike, fps: float = 30.0, max_side: int = 1280,
                max_frames: int | None = None) -> Iterator[np.ndarray]:
  """Decodes a video resampled to `fps` (nearest source frame by timestamp), (H, W, 3) uint8 frames.

  Raises:
    VideoFailure("unreadable"): the file cannot be opened or decoded, or has no video stream.
  """
  import av

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
  import av

  try:
    with av.open(str(path)) as container:
      if not container.streams.video:
        raise VideoFailure("unreadable", f"{path} has no video stream")
  except (av.error.FFmpegError, OSError) as e:
    raise VideoFailure("unreadable", f"cannot open {path} as a video ({e}); re-encode it, e.g. "
                       "`ffmpeg -i in -c:v libx264 -c:a aac out.mp4`") from e


def stream_start_offset(path: str | os.PathLike) -> float:
  """Seconds by which the first video frame starts after the first audio sample (0 if unknown)."""
  import av

  with av.open(str(path)) as container:
    def start(stream):
      if stream.start_time is None or stream.time_base is None:
        return None
      return float(stream.start_time * stream.time_base)

    v = start(container.streams.video[0]) if container.streams.video else None
    a = start(container.streams.audio[0]) if container.streams.audio else None
  return 0.0 if v is None or a is None else v - a


def load_audio(path: str | os.PathLike, config: PreprocessConfig) -> np.ndarray:
  """The video's audio track, 16 kHz mono float32; VideoFailure("no_audio" / "unreadable")."""
  try:
    return read_audio(path, config.sample_rate)
  except MediaError as e:
    reason = "no_audio" if "no audio" in str(e) else "unreadable"
    raise VideoFailure(reason, f"{e}; training needs the speech that goes with the video") from e


def audio_span(start_frame: int, num_frames: int, samples_per_frame: float) -> tuple[int, int]:
  """Sample range [a, b) of frames [start, start + num): a = round(start · spf), b = a + round(num · spf)."""
  a = int(round(start_frame * samples_per_frame))
  return a, a + int(round(num_frames * samples_per_frame))


# ---------------------------------------------------------------- boxes and crops


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
  if sigma <= 0 or x.shape[0] < 2:
    return x
  from scipy.ndimage import gaussian_filter1d

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


def crop(image: np.ndarray | Image.Image, box: np.ndarray, size: tuple[int, int],
         resample: int = Image.Resampling.BILINEAR) -> np.ndarray:
  """Crops `box` (whole pixels, may leave the image: black padding) and resizes to (H, W)."""
  img = image if isinstance(image, Image.Image) else Image.fromarray(image)
  x0, y0, x1, y1 = (int(v) for v in box)
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


# ---------------------------------------------------------------- encoding


def encode_image(image: np.ndarray, fmt: str = "JPEG", quality: int = 90) -> bytes:
  buf = io.BytesIO()
  kwargs = {"quality": quality} if fmt == "JPEG" else {"compress_level": 1}
  Image.fromarray(np.ascontiguousarray(image)).save(buf, format=fmt, **kwargs)
  return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(data)))


def pack_bytes(items: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
  """Byte strings -> (flat uint8, (n + 1,) int64 offsets) for np.savez (no pickling)."""
  offsets = np.zeros(len(items) + 1, np.int64)
  offsets[1:] = np.cumsum([len(b) for b in items])
  return np.frombuffer(b"".join(items), np.uint8).copy(), offsets


def unpack_bytes(flat: np.ndarray, offsets: np.ndarray) -> list[bytes]:
  return [flat[offsets[i]:offsets[i + 1]].tobytes() for i in range(len(offsets) - 1)]


def face_mask(points_px: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """(478, 3) crop-pixel face-mesh points -> (H, W) uint8 mask of their 2-D convex hull (the face oval)."""
  from scipy.spatial import ConvexHull

  pts = points_px[:, :2].astype(np.float64)
  mask = Image.new("L", (size[1], size[0]), 0)
  try:
    hull = pts[ConvexHull(pts).vertices]
  except Exception:  # degenerate (collinear) points: nothing to draw
    return np.asarray(mask)
  ImageDraw.Draw(mask).polygon([tuple(p) for p in hull], fill=255)
  return np.asarray(mask)


# ---------------------------------------------------------------- per clip


@dataclasses.dataclass
class _Annotator:
  """Jitted JAX parts (template fit, keypoint projection, hand rendering), compiled once per process."""

  config: PreprocessConfig

  def __post_init__(self):
    import jax
    import jax.numpy as jnp

    from chatanyone_jax import template as ht
    from chatanyone_jax.template import hands as hd

    self.template = ht.load_head_template()
    tmpl = self.template
    h, w = self.config.body_size
    radius_frac = self.config.hand_radius

    @jax.jit
    def fit(points, valid):
      res = ht.fit_clip(tmpl, points, valid)
      pred = ht.project(tmpl, res.pose, res.scale, res.exp, res.identity)
      err = ht.landmark_error(pred, points, valid)
      kp = ht.project_keypoints(tmpl, res.pose, res.scale, res.exp, res.identity)
      return res, kp, err

    @jax.jit
    def render(lm, present):
      radius = jnp.maximum(radius_frac * hd.palm_size(lm), 1.5)
      img, mask = hd.render_hands(lm, present, h, w, radius_px=radius, return_mask=True)
      return img, mask[..., 0]

    @jax.jit
    def encode(lm, present):
      return hd.encode_hands(lm, present, (h, w))

    self._fit, self._render, self._encode = fit, render, encode

  def fit(self, points: np.ndarray) -> tuple:
    """Template fit on (T, 478, 3) frame-pixel points, padded to a multiple of 64 frames (few compiles)."""
    n = points.shape[0]
    pad = (-n) % 64
    pts = np.concatenate([points, np.repeat(points[-1:], pad, 0)]) if pad else points
    valid = np.arange(n + pad) < n
    res, kp, err = self._fit(pts, valid)
    res = type(res)(*(np.asarray(x)[:n] for x in res))
    return res, np.asarray(kp)[:n], float(err)

  def hands(self, lm_px: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, 2, 21, 3) body-crop pixels -> coefficients (T, 130), images (T, H, W, 3) uint8, masks uint8."""
    t = lm_px.shape[0]
    pad = (-t) % 64  # padded like `fit`: few compiles over clips of any length
    coeffs = np.asarray(self._encode(np.concatenate([lm_px, np.zeros((pad,) + lm_px.shape[1:], np.float32)]),
                                     np.concatenate([present, np.zeros((pad, 2), bool)])))[:t]
    h, w = self.config.body_size
    images = np.zeros((t, h, w, 3), np.uint8)
    masks = np.zeros((t, h, w), np.uint8)
    idx = np.flatnonzero(present.any(-1))
    chunk = 4
    for i in range(0, idx.size, chunk):
      sel = idx[i:i + chunk]
      pad = chunk - sel.size
      lm = np.concatenate([lm_px[sel], np.zeros((pad,) + lm_px.shape[1:], np.float32)])
      pr = np.concatenate([present[sel], np.zeros((pad, 2), bool)])
      img, mask = self._render(lm, pr)
      images[sel] = np.asarray(np.clip(np.asarray(img[:sel.size]) * 255 + 0.5, 0, 255), np.uint8)
      masks[sel] = np.asarray(np.clip(np.asarray(mask[:sel.size]) * 255 + 0.5, 0, 255), np.uint8)
    return coeffs, images, masks


def annotate_clip(frames: np.ndarray, lm, sel: np.ndarray, audio: np.ndarray, name: str,
                  annotator: _Annotator) -> dict[str, np.ndarray]:
  """One clip: frames[sel] of a segment with landmarks `lm` (ClipLandmarks) -> arrays for `save_clip`."""
  cfg = annotator.config
  bsize, hsize = cfg.body_size, (cfg.head_size, cfg.head_size)
  face = lm.face[sel]
  head_box, body_box = clip_boxes(lm.face_box[sel], cfg)
  res, head_kp_px, fit_err = annotator.fit(face)

  # Template coefficients in body units: X_frame = s R-posed shape + t, so shift / scale t and s.
  half = (body_box[:, 2] - body_box[:, 0]) / 2  # (T,) pixels per body unit
  cx, cy = (body_box[:, 0] + body_box[:, 2]) / 2, (body_box[:, 1] + body_box[:, 3]) / 2
  pose = res.pose.astype(np.float32).copy()
  pose[:, 3] = (pose[:, 3] - cx) / half
  pose[:, 4] = (pose[:, 4] - cy) / half
  pose[:, 5] = pose[:, 5] / half
  scale = (res.scale / half).astype(np.float32)

  head_kp = to_grid(to_crop_pixels(head_kp_px, body_box[:, None], bsize), bsize)
  head_kp_head = to_grid(to_crop_pixels(head_kp_px, head_box[:, None], hsize), hsize)
  pose_pts = lm.pose[sel][:, BODY_POSE_INDICES]  # (T, 21, 4)
  body_kp = to_grid(to_crop_pixels(pose_pts[..., :3], body_box[:, None], bsize), bsize)
  body_vis = np.where(lm.pose_valid[sel][:, None], pose_pts[..., 3], 0.0).astype(np.float32)
  body_kp = np.where(lm.pose_valid[sel][:, None, None], body_kp, 0.0)
  hands_px = to_crop_pixels(lm.hands[sel], body_box[:, None, None], bsize)
  hand_present = lm.hand_present[sel]
  hand_coeffs, hand_images, hand_masks = annotator.hands(hands_px, hand_present)
  face_body_px = to_crop_pixels(face, body_box[:, None], bsize)
  face_head_px = to_crop_pixels(face, head_box[:, None], hsize)

  body_jpg, head_jpg, hand_jpg, mask_png = [], [], [], []
  for i, f in enumerate(sel):
    img = Image.fromarray(frames[f])
    body_jpg.append(encode_image(crop(img, body_box[i], bsize), quality=cfg.jpeg_quality))
    head_jpg.append(encode_image(crop(img, head_box[i], hsize), quality=cfg.jpeg_quality))
    hand_jpg.append(encode_image(hand_images[i], quality=cfg.jpeg_quality))
    person = (crop(lm.segmentation[f], body_box[i], bsize) if lm.segmentation is not None
              else np.zeros(bsize, np.uint8))
    masks = np.stack([face_mask(face_body_px[i], bsize), hand_masks[i], person], -1)
    mask_png.append(encode_image(masks, fmt="PNG"))

  out = {
      "name": np.array(name), "fps": np.float32(cfg.fps), "sample_rate": np.int32(cfg.sample_rate),
      "audio": np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16),
      "source_frame": sel.astype(np.int32),
      "exp": res.exp.astype(np.float32), "pose": pose, "scale": scale,
      "identity": res.identity[0].astype(np.float32), "fit_error_px": np.float32(fit_err),
      "head_kp": head_kp, "head_kp_head": head_kp_head, "body_kp": body_kp, "body_visibility": body_vis,
      "hands": hands_px.astype(np.float32), "hand_present": hand_present, "hand_coeffs": hand_coeffs,
      "face": face_body_px, "face_head": face_head_px,
      "head_box": head_box, "body_box": body_box,
  }
  for key, items in (("body_jpeg", body_jpg), ("head_jpeg", head_jpg), ("hand_jpeg", hand_jpg),
                     ("mask_png", mask_png)):
    out[key], out[key + "_offsets"] = pack_bytes(items)
  return out


def face_runs(valid: np.ndarray, min_frames: int) -> list[np.ndarray]:
  """Index arrays of the runs of consecutive True values that are at least `min_frames` long."""
  runs, start = [], None
  for i, v in enumerate(list(valid) + [False]):
    if v and start is None:
      start = i
    elif not v and start is not None:
      if i - start >= min_frames:
        runs.append(np.arange(start, i))
      start = None
  return runs


def process_video(path: str | os.PathLike, work_dir: str | os.PathLike, config: PreprocessConfig,
                  annotator: _Annotator | None = None) -> dict:
  """Annotates one video into `work_dir/<stem>/clip_*.npz`; returns its status dict (also written).

  Raises:
    VideoFailure: the video cannot be used (the status file records the reason too).
  """
  from data.landmarks import LandmarkError, extract_landmarks

  path = pathlib.Path(path)
  out = pathlib.Path(work_dir) / path.stem
  out.mkdir(parents=True, exist_ok=True)
  for old in out.glob("clip_*.npz"):
    old.unlink()
  t_start = time.perf_counter()
  status = {"video": str(path), "status": "failed", "clips": [], "frames": 0, "frames_kept": 0,
            "frames_dropped_no_face": 0, "frames_dropped_short": 0}
  try:
    if annotator is None:
      annotator = _Annotator(config)
    probe_video(path)
    audio = load_audio(path, config)
    # Frame 0 is the first video frame: drop (or pad) audio so that sample 0 plays with it.
    shift = int(round(stream_start_offset(path) * config.sample_rate))
    audio = audio[shift:] if shift >= 0 else np.concatenate([np.zeros(-shift, np.float32), audio])
    if audio.size == 0 or float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) < config.min_audio_rms:
      raise VideoFailure("silent_audio", f"{path}: the audio track is silent (RMS < {config.min_audio_rms}); "
                         "training needs speech")
    spf = config.samples_per_frame()
    max_frames = None if config.max_seconds is None else int(round(config.max_seconds * config.fps))
    # Never more frames than the audio covers (a trailing half frame of audio is padded).
    audio_frames = int(np.floor(audio.size / spf + 0.5))
    max_frames = audio_frames if max_frames is None else min(max_frames, audio_frames)
    total = 0
    segment: list[np.ndarray] = []

    def flush(seg_index: int, frames: list[np.ndarray], first: int) -> None:
      arr = np.stack(frames)
      try:
        lm = extract_landmarks(arr, fps=config.fps, segmentation=True, name=f"{path.name}[{seg_index}]")
      except LandmarkError:
        status["frames_dropped_no_face"] += len(frames)
        return
      status["frames_dropped_no_face"] += int(lm.num_dropped)
      runs = face_runs(lm.face_valid, config.min_frames)
      kept = sum(r.size for r in runs)
      status["frames_dropped_short"] += int(lm.face_valid.sum()) - kept
      for r_i, sel in enumerate(runs):
        a, b = audio_span(first + int(sel[0]), sel.size, spf)
        clip_audio = np.zeros(b - a, np.float32)
        avail = audio[a:b]
        clip_audio[:avail.size] = avail
        name = f"{path.stem}__{seg_index:03d}_{r_i:02d}"
        arrays = annotate_clip(arr, lm, sel, clip_audio, name, annotator)
        np.savez(out / f"clip_{seg_index:03d}_{r_i:02d}.npz", **arrays)
        status["clips"].append({"name": name, "frames": int(sel.size),
                                "fit_error_px": float(arrays["fit_error_px"])})
        status["frames_kept"] += int(sel.size)

    seg_index = 0
    for frame in iter_frames(path, config.fps, config.max_side, max_frames):
      segment.append(frame)
      total += 1
      if len(segment) == config.segment_frames:
        flush(seg_index, segment, total - len(segment))
        seg_index, segment = seg_index + 1, []
    if segment:
      flush(seg_index, segment, total - len(segment))
    status["frames"] = total
    if not status["clips"]:
      if status["frames_dropped_no_face"] == total:
        raise VideoFailure("no_face", f"{path}: no face found in any of its {total} frames; give videos "
                           "where one face is clearly visible")
      raise VideoFailure("too_short", f"{path}: no run of {config.min_frames} consecutive frames "
                         f"({config.min_frames / config.fps:.2f} s) with a visible face among {total} frames")
    status["status"] = "done"
  except VideoFailure as e:
    status["reason"], status["message"] = e.reason, str(e)
    raise
  finally:
    status["seconds"] = round(time.perf_counter() - t_start, 2)
    (out / STATUS_FILE).write_text(json.dumps(status, indent=1))
  return status


def read_status(work_dir: str | os.PathLike, stem: str) -> dict | None:
  p = pathlib.Path(work_dir) / stem / STATUS_FILE
  return json.loads(p.read_text()) if p.is_file() else None


def list_videos(videos: str | os.PathLike) -> list[pathlib.Path]:
  root = pathlib.Path(videos)
  if root.is_file():
    return [root]
  if not root.is_dir():
    raise FileNotFoundError(f"--videos {root} is neither a folder nor a video file")
  found = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
  stems = [p.stem for p in found]
  dup = {s for s in stems if stems.count(s) > 1}
  if dup:
    raise ValueError(f"video names must be unique (they name the clips); duplicates: {sorted(dup)[:5]}")
  return found


# ---------------------------------------------------------------- the run

_WORKER_ANNOTATOR: _Annotator | None = None


def _worker(args: tuple[str, str, PreprocessConfig]) -> dict:
  global _WORKER_ANNOTATOR
  path, work, config = args
  if _WORKER_ANNOTATOR is None or _WORKER_ANNOTATOR.config != config:
    _WORKER_ANNOTATOR = _Annotator(config)
  try:
    return process_video(path, work, config, _WORKER_ANNOTATOR)
  except VideoFailure:
    return read_status(work, pathlib.Path(path).stem) or {"video": path, "status": "failed"}
  except Exception as e:  # a bug or an unexpected file must not end a long run: report it
    log.exception("unexpected error on %s", path)
    status = {"video": path, "status": "failed", "reason": "error", "message": f"{type(e).__name__}: {e}"}
    d = pathlib.Path(work) / pathlib.Path(path).stem
    d.mkdir(parents=True, exist_ok=True)
    (d / STATUS_FILE).write_text(json.dumps(status, indent=1))
    return status


def run(videos: str | os.PathLike, out: str | os.PathLike, config: PreprocessConfig = PreprocessConfig(),
        *, workers: int = 1, retry_failed: bool = False, val_fraction: float = 0.0,
        build_records: bool = True, progress: bool = True) -> dict:
  """Preprocesses every video under `videos` into `out` (resumable); returns the summary (also written)."""
  from tqdm import tqdm

  out = pathlib.Path(out)
  work = out / "work"
  work.mkdir(parents=True, exist_ok=True)
  (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=1))
  paths = list_videos(videos)
  todo, skipped = [], 0
  for p in paths:
    st = read_status(work, p.stem)
    if st is not None and (st.get("status") == "done" or (st.get("status") == "failed" and not retry_failed)):
      skipped += 1
      continue
    todo.append(p)
  log.info("%d videos: %d to do, %d already processed", len(paths), len(todo), skipped)
  t0 = time.perf_counter()
  jobs = [(str(p), str(work), config) for p in todo]
  bar = tqdm(total=len(jobs), desc="videos", unit="video", disable=not progress)
  if workers <= 1:
    for job in jobs:
      _worker(job)
      bar.update()
  else:
    ctx = multiprocessing.get_context("spawn")  # JAX and MediaPipe do not survive fork
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
      for _ in pool.map(_worker, jobs):
        bar.update()
  bar.close()
  elapsed = time.perf_counter() - t0

  statuses = [read_status(work, p.stem) or {"video": str(p), "status": "missing"} for p in paths]
  done = [s for s in statuses if s.get("status") == "done"]
  failed = [{"video": s["video"], "reason": s.get("reason", "?"), "message": s.get("message", "")}
            for s in statuses if s.get("status") != "done"]
  new_frames = sum(s.get("frames", 0) for s in statuses if s["video"] in {str(p) for p in todo})
  summary = {
      "videos": len(paths), "done": len(done), "failed": failed, "skipped_already_processed": skipped,
      "clips": sum(len(s["clips"]) for s in done),
      "frames": sum(s["frames"] for s in done), "frames_kept": sum(s["frames_kept"] for s in done),
      "frames_dropped_no_face": sum(s["frames_dropped_no_face"] for s in done),
      "frames_dropped_short": sum(s["frames_dropped_short"] for s in done),
      "mean_fit_error_px": (float(np.mean([c["fit_error_px"] for s in done for c in s["clips"]]))
                            if done else None),
      "this_run": {"videos": len(todo), "seconds": round(elapsed, 2), "frames": new_frames,
                   "workers": workers},
  }
  if build_records and done:
    from data import records

    summary["records"] = records.build(out, val_fraction=val_fraction)
  (out / "summary.json").write_text(json.dumps(summary, indent=1))
  for f in failed:
    log.warning("skipped %s: %s", f["video"], f["message"] or f["reason"])
  return summary


def _size(text: str) -> tuple[int, int]:
  h, _, w = text.lower().partition("x")
  return int(h), int(w)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m data.preprocess", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--videos", required=True, help="folder of videos (searched recursively) or one video")
  parser.add_argument("--out", required=True, help="output folder (work/, records/, summary.json)")
  parser.add_argument("--workers", type=int, default=1, help="processes annotating videos in parallel")
  parser.add_argument("--body-size", type=_size, default=PreprocessConfig.body_size,
                      help="HxW of the upper-body crop, 2:3 (default 768x512)")
  parser.add_argument("--head-size", type=int, default=PreprocessConfig.head_size)
  parser.add_argument("--min-frames", type=int, default=PreprocessConfig.min_frames)
  parser.add_argument("--max-seconds", type=float, default=None,
                      help="use only the first seconds of each video")
  parser.add_argument("--val-fraction", type=float, default=0.0,
                      help="share of videos (by a stable hash of the name) in the validation split")
  parser.add_argument("--retry-failed", action="store_true", help="process videos that failed before again")
  parser.add_argument("--no-records", action="store_true", help="stop after the per-video annotation")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  try:
    config = PreprocessConfig(body_size=args.body_size, head_size=args.head_size, min_frames=args.min_frames,
                              max_seconds=args.max_seconds)
    summary = run(args.videos, args.out, config, workers=args.workers, retry_failed=args.retry_failed,
                  val_fraction=args.val_fraction, build_records=not args.no_records)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps({k: v for k, v in summary.items() if k != "failed"}, indent=1))
  for f in summary["failed"]:
    print(f"skipped {f['video']}: {f['reason']}: {f['message']}", file=sys.stderr)
  return 0 if summary["done"] else 1


if __name__ == "__main__":
  sys.exit(main())
