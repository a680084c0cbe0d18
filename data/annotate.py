"""Per-clip annotation: landmarks of a run of face frames -> the arrays of one preprocessed clip.

`annotate_clip` fits the head template (coefficients in body units), takes the stable head and body
boxes (`data.crops.clip_boxes`), converts the head-template keypoints, the 21 body keypoints and the hand
landmarks into the crops' coordinates, renders the hands and encodes the body / head crops, the hand
image and the masks (face, hands, person). The jitted parts live in `Annotator`, built once per process.
`face_runs` cuts a segment's frames into clips (runs of consecutive frames with a face).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from chatanyone_jax import template as ht
from chatanyone_jax.motion.upper_body_motion import NUM_BODY_KP
from chatanyone_jax.template import hands as hd
from data.crops import clip_boxes, crop, face_mask, to_crop_pixels, to_grid
from data.encoding import encode_image, pack_bytes
from data.landmarks import ClipLandmarks
from data.preprocess_config import PreprocessConfig

# MediaPipe pose landmarks kept as the 21 body keypoints: nose, eyes, ears, mouth corners, then
# shoulders, elbows, wrists, pinky / index / thumb knuckles and hips (ARCHITECTURE.md §2, K_b = 21).
BODY_POSE_INDICES = np.array([0, 2, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24],
                             np.int32)
assert len(BODY_POSE_INDICES) == NUM_BODY_KP


@dataclasses.dataclass
class Annotator:
  """The jitted JAX parts of `annotate_clip`, compiled once per process and reused for every clip.

  `fit` fits the head template to a clip's face-mesh points (`chatanyone_jax.template.fit_clip`: one
  identity, per-frame pose, scale and 52 expression coefficients) and projects its keypoints; `hands`
  encodes the hand landmarks as coefficients and renders the hand image and mask (`render_hands`).
  Inputs are padded to multiples of 64 frames, so clips of any length need few compilations.

  Attributes:
    config: the sizes of the body crop (hand images) and the hand radius are read from it.
    template: the head template (`chatanyone_jax.template.load_head_template`).
  """

  config: PreprocessConfig

  def __post_init__(self):
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

    # The jitted programs (public so that benchmarks can time each stage).
    self.fit_program, self.render_program, self.encode_program = fit, render, encode

  def fit(self, points: np.ndarray) -> tuple:
    """Template fit on (T, 478, 3) frame-pixel points, padded to a multiple of 64 frames (few compiles)."""
    n = points.shape[0]
    pad = (-n) % 64
    pts = np.concatenate([points, np.repeat(points[-1:], pad, 0)]) if pad else points
    valid = np.arange(n + pad) < n
    res, kp, err = self.fit_program(pts, valid)
    res = type(res)(*(np.asarray(x)[:n] for x in res))
    return res, np.asarray(kp)[:n], float(err)

  def hands(self, lm_px: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, 2, 21, 3) body-crop pixels -> coefficients (T, 130), images (T, H, W, 3) uint8, masks uint8."""
    t = lm_px.shape[0]
    pad = (-t) % 64  # padded like `fit`: few compiles over clips of any length
    lm_padded = np.concatenate([lm_px, np.zeros((pad,) + lm_px.shape[1:], np.float32)])
    present_padded = np.concatenate([present, np.zeros((pad, 2), bool)])
    coeffs = np.asarray(self.encode_program(lm_padded, present_padded))[:t]
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
      img, mask = self.render_program(lm, pr)
      images[sel] = np.asarray(np.clip(np.asarray(img[:sel.size]) * 255 + 0.5, 0, 255), np.uint8)
      masks[sel] = np.asarray(np.clip(np.asarray(mask[:sel.size]) * 255 + 0.5, 0, 255), np.uint8)
    return coeffs, images, masks


def annotate_clip(frames: np.ndarray, lm: ClipLandmarks, sel: np.ndarray, audio: np.ndarray, name: str,
                  annotator: Annotator) -> dict[str, np.ndarray]:
  """One clip: frames[sel] of a segment with landmarks `lm` -> the arrays of its `clip_*.npz` file.

  Args:
    frames: (N, H, W, 3) uint8 frames of a segment; `lm` holds their landmarks (N rows).
    sel: (T,) indices of the clip's frames in the segment (consecutive frames with a face).
    audio: (round(T · sample_rate / fps),) float32 samples of exactly those frames.

  Returns:
    name, fps, sample_rate, audio (int16), source_frame (T,); template coefficients in body units:
    exp (T, 52), pose (T, 6), scale (T,), identity (n_id,), fit_error_px; keypoints in grid units:
    head_kp, head_kp_head (T, 32, 3), body_kp (T, 21, 3), body_visibility (T, 21); hands (T, 2, 21, 3)
    body-crop pixels, hand_present (T, 2), hand_coeffs (T, 130); face, face_head (T, 478, 3) crop
    pixels; head_box, body_box (T, 4) frame pixels; and the packed (`data.encoding.pack_bytes`) JPEG
    body / head crops and hand images and PNG masks (face, hands, person) as `<key>` + `<key>_offsets`
    for body_jpeg, head_jpeg, hand_jpeg, mask_png.
  """
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
