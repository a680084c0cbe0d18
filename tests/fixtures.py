"""Synthetic preprocessed data for tests that need records but do not test annotation.

`write_records` writes what `python -m data.preprocess` leaves in its output folder (`config.json` and
`work/<video>/clip_000_00.npz` + `status.json`, with every array `data.annotate.annotate_clip` writes)
from random but consistent values, then builds the ArrayRecord records with `data.records.build`, in a
second or two and without MediaPipe. Consistent means: the head keypoints and face points are the head
template (`chatanyone_jax.template`) posed by the clip's coefficients, the crops are crops of one
synthetic frame per clip through the real boxes and coordinate conversions (`data.crops`), the hand
coefficients are `encode_hands` of the hand landmarks and the masks cover what they should.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
from collections.abc import Sequence

import jax
import numpy as np
from PIL import Image, ImageDraw

from chatanyone_jax import template as ht
from chatanyone_jax.template import hands as hd
from data import records
from data.crops import clip_boxes, crop, face_mask, to_crop_pixels, to_grid
from data.decode import audio_span
from data.encoding import encode_image, pack_bytes
from data.preprocess_config import PreprocessConfig

# Finger directions (degrees from "up") and joint spacing of a synthetic open hand, MediaPipe order:
# wrist, then thumb, index, middle, ring, pinky with 4 joints each.
_FINGER_ANGLES = (-60.0, -25.0, -5.0, 15.0, 35.0)
_JOINT_STEPS = (0.45, 0.3, 0.25, 0.2)


def _smooth_noise(rng: np.random.Generator, t: int, shape: tuple[int, ...], scale: float) -> np.ndarray:
  """(t, *shape) float32: a few random sinusoids per entry, so values move smoothly over frames."""
  k = 3
  freq = rng.uniform(0.02, 0.2, (k,) + shape)
  phase = rng.uniform(0, 2 * np.pi, (k,) + shape)
  amp = rng.normal(0, scale / np.sqrt(k), (k,) + shape)
  time = np.arange(t, dtype=np.float64).reshape((t, 1) + (1,) * len(shape))
  return np.sum(amp * np.sin(2 * np.pi * freq * time + phase), axis=1).astype(np.float32)


def _hand(centre: np.ndarray, size: float, angle: float) -> np.ndarray:
  """(21, 3) pixel landmarks of an open hand with its wrist at `centre`, fingers up (rotated by `angle`)."""
  pts = [np.zeros(3)]
  for a in _FINGER_ANGLES:
    rad = np.deg2rad(a + angle)
    d = np.array([np.sin(rad), -np.cos(rad), 0.0])
    r = 0.35
    for step in _JOINT_STEPS:
      r += step
      pts.append(d * r)
  return (np.asarray(pts) * size + centre).astype(np.float32)


def _draw_hands(lm: np.ndarray, present: np.ndarray, size: tuple[int, int],
                radius_frac: float) -> tuple[np.ndarray, np.ndarray]:
  """(2, 21, 3) pixel landmarks -> hand image (H, W, 3) and mask (H, W) uint8: the bones of
  `chatanyone_jax.template.hands.HAND_BONES` as capsules in their finger colours (like `render_hands`)."""
  img = Image.new("RGB", (size[1], size[0]))
  mask = Image.new("L", (size[1], size[0]))
  for slot in np.flatnonzero(present):
    palm = np.mean(np.linalg.norm(lm[slot, list(hd.PALM_MCP)] - lm[slot, 0], axis=-1))
    radius = max(radius_frac * palm, 1.5)  # as `data.annotate.Annotator.hands`
    width = max(1, round(2 * radius))
    for a, b, f in hd.HAND_BONES:
      line = [tuple(lm[slot, a, :2]), tuple(lm[slot, b, :2])]
      colour = tuple(int(255 * c) for c in hd.FINGER_COLORS[f])
      for draw, fill in ((ImageDraw.Draw(img), colour), (ImageDraw.Draw(mask), 255)):
        draw.line(line, fill=fill, width=width, joint="curve")
        for x, y in line:
          draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill)
  return np.asarray(img), np.asarray(mask)


@functools.partial(jax.jit, static_argnums=7)
def _geometry(template, pose, scale, exp, identity, hands, present, body_size):
  """One compiled call for all frames of all clips: face points (N, 478, 3) and head keypoints (N, 32, 3)
  in body units, hand coefficients (N, 130)."""
  return (ht.project(template, pose, scale, exp, identity),
          ht.project_keypoints(template, pose, scale, exp, identity),
          hd.encode_hands(hands, present, body_size))


def _frame(rng: np.random.Generator, size: tuple[int, int], face_centre: np.ndarray,
           face_size: float) -> tuple[np.ndarray, np.ndarray]:
  """A synthetic body-crop frame (H, W, 3) uint8 (smooth noise, a face and a torso) and its person mask."""
  h, w = size
  low = rng.uniform(40, 200, (6, 4, 3)).astype(np.uint8)
  img = Image.fromarray(low).resize((w, h), Image.Resampling.BILINEAR)
  person = Image.new("L", (w, h), 0)
  cx, cy = face_centre
  r = face_size / 2
  torso = [cx - 2.2 * r, cy + 1.6 * r, cx + 2.2 * r, cy + 6 * r]
  for draw, fill_face, fill_torso in ((ImageDraw.Draw(img), (220, 180, 150), (60, 80, 140)),
                                      (ImageDraw.Draw(person), 255, 255)):
    draw.ellipse(torso, fill=fill_torso)
    draw.ellipse([cx - 0.8 * r, cy - r, cx + 0.8 * r, cy + r], fill=fill_face)
  return np.asarray(img), np.asarray(person)


def _motion(rng: np.random.Generator, t: int, cfg: PreprocessConfig, template: ht.HeadTemplate,
            hands: bool) -> dict[str, np.ndarray]:
  """Random, smooth per-frame coefficients of one clip (body units, as `annotate_clip` stores them)."""
  bh, bw = cfg.body_size
  # The frame is the body crop itself (body box [0, 0, W, H]); the face sits where `clip_boxes` puts it.
  face_px = bw / cfg.body_scale
  face_centre = np.array([bw / 2, cfg.body_face_y * bh])
  face_box = np.tile(np.concatenate([face_centre - face_px / 2, face_centre + face_px / 2]), (t, 1))
  head_box, body_box = clip_boxes(face_box.astype(np.float32), cfg)
  half = bw / 2
  pose = _smooth_noise(rng, t, (6,), 1.0) * np.array([5, 5, 3, 0.01, 0.01, 0.0], np.float32)
  pose[:, 3:5] += (face_centre - np.array([bw / 2, bh / 2])) / half
  extent = float(np.max(np.ptp(np.asarray(template.mean), axis=0)[:2]))
  scale = np.full(t, face_px / half / extent, np.float32) + _smooth_noise(rng, t, (), 0.002)
  identity = rng.normal(0, 0.5, template.id_basis.shape[0]).astype(np.float32)

  base = np.concatenate([rng.uniform(-0.5, 0.5, (7, 2)) * [0.3, 0.2] + [0, -0.45],  # face points
                         rng.uniform(-0.8, 0.8, (14, 2)) * [1, 0.5] + [0, 0.4]], 0)  # arms, hips
  body_kp = np.concatenate([base, rng.uniform(-0.5, 0.5, (21, 1))], -1).astype(np.float32)
  vis = np.concatenate([np.full(11, 0.95), np.full(10, 0.3)])  # face and arms seen, hips hardly
  hand_lm = np.zeros((t, 2, 21, 3), np.float32)
  present = np.zeros((t, 2), bool)
  if hands:  # the person's right hand (slot 1) raised in the second half of the clip
    present[t // 2:, 1] = True
    for i in range(t // 2, t):
      hand_lm[i, 1] = _hand(np.array([0.3 * bw + 2 * np.sin(i / 4), 0.85 * bh, 0.0]), 0.08 * bw,
                            10 * np.sin(i / 7))
  return {
      "exp": _smooth_noise(rng, t, (ht.NUM_EXP,), 1.0), "pose": pose.astype(np.float32),
      "scale": scale.astype(np.float32), "identity": identity,
      "body_kp": body_kp + _smooth_noise(rng, t, (21, 3), 0.02),
      "body_visibility": np.clip(vis + _smooth_noise(rng, t, (21,), 0.05), 0, 1).astype(np.float32),
      "hands": hand_lm, "hand_present": present, "head_box": head_box, "body_box": body_box,
  }


def _clip(rng: np.random.Generator, name: str, motion: dict[str, np.ndarray], face_bu: np.ndarray,
          kp_bu: np.ndarray, hand_coeffs: np.ndarray, cfg: PreprocessConfig) -> dict[str, np.ndarray]:
  """The arrays of one clip file (the keys of `annotate_clip`) from its `_motion` and `_geometry`."""
  bsize, hsize = cfg.body_size, (cfg.head_size, cfg.head_size)
  bh, bw = bsize
  t = motion["exp"].shape[0]
  head_box, body_box = motion["head_box"], motion["body_box"]
  to_px = lambda p: p * (bw / 2) + np.array([bw / 2, bh / 2, 0.0], np.float32)  # body units -> frame
  face_body_px = to_crop_pixels(to_px(face_bu), body_box[:, None], bsize)
  face_head_px = to_crop_pixels(to_px(face_bu), head_box[:, None], hsize)
  face_px = bw / cfg.body_scale
  frame, person = _frame(rng, bsize, np.array([bw / 2, cfg.body_face_y * bh]), face_px)
  blobs = {"body_jpeg": [], "head_jpeg": [], "hand_jpeg": [], "mask_png": []}
  for i in range(t):
    shifted = np.roll(frame, i % 5, axis=1)  # a little motion between frames
    hand_image, hand_mask = _draw_hands(motion["hands"][i], motion["hand_present"][i], bsize,
                                         cfg.hand_radius)
    blobs["body_jpeg"].append(encode_image(crop(shifted, body_box[i], bsize), quality=cfg.jpeg_quality))
    blobs["head_jpeg"].append(encode_image(crop(shifted, head_box[i], hsize), quality=cfg.jpeg_quality))
    blobs["hand_jpeg"].append(encode_image(hand_image, quality=cfg.jpeg_quality))
    masks = np.stack([face_mask(face_body_px[i], bsize), hand_mask, person], -1)
    blobs["mask_png"].append(encode_image(masks, fmt="PNG"))

  a, b = audio_span(0, t, cfg.samples_per_frame())
  n = np.arange(b - a) / cfg.sample_rate
  audio = 0.3 * np.sin(2 * np.pi * 180 * n) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * n))  # a voiced tone
  audio = audio + rng.normal(0, 0.02, n.size)
  out = {
      "name": np.array(name), "fps": np.float32(cfg.fps), "sample_rate": np.int32(cfg.sample_rate),
      "audio": np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16),
      "source_frame": np.arange(t, dtype=np.int32), "fit_error_px": np.float32(rng.uniform(0.2, 0.4)),
      "head_kp": to_grid(to_crop_pixels(to_px(kp_bu), body_box[:, None], bsize), bsize),
      "head_kp_head": to_grid(to_crop_pixels(to_px(kp_bu), head_box[:, None], hsize), hsize),
      "hand_coeffs": hand_coeffs.astype(np.float32), "face": face_body_px, "face_head": face_head_px,
  } | motion
  for key, items in blobs.items():
    out[key], out[key + "_offsets"] = pack_bytes(items)
  return out


def write_records(out: str | os.PathLike, *, num_clips: int = 2, num_frames: int | Sequence[int] = 60,
                  body_size: tuple[int, int] = (192, 128), head_size: int = 128, hands: bool = True,
                  val_fraction: float = 0.0, seed: int = 0, split_file: str | os.PathLike | None = None,
                  heldout_tail: float = 0.0) -> dict:
  """Writes a synthetic preprocessed dataset under `out` and builds its records; returns their meta.

  Args:
    out: the folder `python -m data.preprocess --out` would fill (config.json, work/, records/).
    num_clips: clips, one per synthetic video (`synthetic_000`, ...), so `val_fraction` splits them.
    num_frames: frames per clip, one number or one per clip.
    body_size, head_size: the crop sizes (body 2:3, as `PreprocessConfig`).
    hands: one hand in the second half of every clip (else no hands at all).
    val_fraction: as `records.build`: videos whose name hashes below it go to the validation split.
    split_file, heldout_tail: as `records.build` (a `data.splits` file naming synthetic_000, ...).
    seed: everything is a function of it.

  Returns:
    `records.build`'s meta (splits, clip_frames, sizes); read the records with `records.data_source(out,
    ...)` or the `data.pipelines` loaders.
  """
  lengths = [num_frames] * num_clips if isinstance(num_frames, int) else list(num_frames)
  if len(lengths) != num_clips:
    raise ValueError(f"num_frames has {len(lengths)} entries for {num_clips} clips")
  out = pathlib.Path(out)
  cfg = PreprocessConfig(body_size=tuple(body_size), head_size=head_size, min_frames=min(lengths))
  out.mkdir(parents=True, exist_ok=True)
  (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
  template = ht.load_head_template()
  rng = np.random.default_rng(seed)
  motions = [_motion(rng, t, cfg, template, hands) for t in lengths]
  cat = lambda k: np.concatenate([m[k] for m in motions])
  ids = np.concatenate([np.broadcast_to(m["identity"], (t, m["identity"].size))
                        for m, t in zip(motions, lengths, strict=True)])
  geometry = [np.asarray(x) for x in _geometry(template, cat("pose"), cat("scale"), cat("exp"), ids,
                                               cat("hands"), cat("hand_present"), cfg.body_size)]
  ends = np.cumsum(lengths)[:-1]
  for c, parts in enumerate(zip(*(np.split(g, ends) for g in geometry), strict=True)):
    stem = f"synthetic_{c:03d}"
    d = out / "work" / stem
    d.mkdir(parents=True, exist_ok=True)
    arrays = _clip(rng, f"{stem}__000_00", motions[c], *parts, cfg)
    np.savez(d / "clip_000_00.npz", **arrays)
    t = lengths[c]
    clip = {"name": str(arrays["name"]), "frames": t, "fit_error_px": float(arrays["fit_error_px"])}
    status = {"video": f"{stem}.mp4", "status": "done", "clips": [clip],
              "frames": t, "frames_kept": t, "frames_dropped_no_face": 0, "frames_dropped_short": 0,
              "seconds": 0.0}
    (d / records.STATUS_FILE).write_text(json.dumps(status, indent=1))
  return records.build(out, val_fraction=val_fraction, split_file=split_file, heldout_tail=heldout_tail)
