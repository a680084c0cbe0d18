"""Hands as 21 MediaPipe landmarks: coefficients and a differentiable soft-capsule renderer (§2 "Hands").

The paper renders MANO hands; MANO's license keeps it out of the package, so a hand is its 21 landmarks
(wrist + 4 joints × 5 fingers, MediaPipe order) in image-aligned 3-D pixels (x right, y down, z in the
scale of x, as `data.landmarks` gives them). Slots are [left, right] of the person. Pixel (row i, column
j) has its centre at (x, y) = (j + 0.5, i + 0.5), so resizing an image by (sx, sy) maps a landmark exactly
to (x·sx, y·sy).

Coefficients (65 per hand, 130 for [left, right]; `UpperBodyLayout.hand_dim`; absent hand = all zeros):
  [presence (1) | wrist (3) | scale (1) | joints (60)]
  wrist: (2x/W − 1, 2y/H − 1, 2z/W); scale: 2·palm/W, palm = mean 3-D length wrist→MCP of the 4 fingers;
  joints: (p_k − p_wrist) / palm for k = 1..20. They do not depend on the image resolution.
Optional PCA (`fit_hand_pca`, `hands_to_pca` / `hands_from_pca`) swaps the 60 joint values for K codes.
`render_hands` draws the bones as soft capsules; jit-able and differentiable w.r.t. the landmarks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

NUM_HAND_LANDMARKS = 21
NUM_JOINTS = 20  # landmarks 1..20, relative to the wrist
HAND_COEFF_DIM = 1 + 3 + 1 + NUM_JOINTS * 3  # 65 per hand
HANDS_DIM = 2 * HAND_COEFF_DIM  # 130 for [left, right]; UpperBodyMotion's hand output
PALM_MCP = (5, 9, 13, 17)  # index, middle, ring, pinky MCP

FINGER_NAMES = ("thumb", "index", "middle", "ring", "pinky")
# (bone start, bone end, colour index): per finger wrist -> MCP (CMC for the thumb) -> PIP -> DIP -> TIP,
# colour = finger index 0..4; then the palm line across the MCPs, colour 5.
HAND_BONES = tuple(
    (a, b, f) for f in range(5) for a, b in zip((0, 4 * f + 1, 4 * f + 2, 4 * f + 3),
                                               (4 * f + 1, 4 * f + 2, 4 * f + 3, 4 * f + 4), strict=True)
) + ((5, 9, 5), (9, 13, 5), (13, 17, 5))
NUM_BONES = len(HAND_BONES)  # 23
FINGER_COLORS = np.array([
    [1.00, 0.25, 0.25],  # thumb: red
    [1.00, 0.80, 0.15],  # index: yellow
    [0.25, 0.90, 0.30],  # middle: green
    [0.20, 0.55, 1.00],  # ring: blue
    [0.80, 0.30, 1.00],  # pinky: purple
    [0.90, 0.90, 0.90],  # palm line: light grey
], np.float32)


def palm_size(landmarks: jax.Array) -> jax.Array:
  """(..., 21, 3) pixels -> (...,) mean 3-D wrist-to-MCP length of index..pinky, pixels."""
  d = landmarks[..., PALM_MCP, :] - landmarks[..., :1, :]
  return jnp.mean(jnp.sqrt(jnp.sum(d * d, -1) + 1e-12), -1)


def encode_hands(landmarks: jax.Array, presence: jax.Array, image_size: tuple[int, int]) -> jax.Array:
  """Hand landmarks in pixels -> coefficients (layout in the module docstring).

  The palm length (mean 3-D wrist -> MCP length of landmarks 5, 9, 13, 17) is robust to one noisy joint
  and, being 3-D, only mildly shrunk when the palm tilts. Joints are divided isotropically by it, so a
  hand's shape does not change with its size, position or the image aspect. `decode_hands` inverts
  this exactly (to float rounding) for present hands, at any image size (the landmarks of the uniformly
  resized frame).

  Args:
    landmarks: (..., 2, 21, 3) [left, right] hands, x, y, z pixels of an image of `image_size`.
    presence: (..., 2) bool or {0, 1}; absent hands encode to zeros whatever their landmarks.
    image_size: (H, W) of the image the landmarks refer to.

  Returns:
    (..., 130) float32: per hand [presence, wrist xyz, scale, 20 × xyz joints], left hand first.
  """
  h, w = image_size
  lm = jnp.asarray(landmarks, jnp.float32)
  present = jnp.asarray(presence).astype(bool)
  wrist_px = lm[..., 0, :]  # (..., 2, 3)
  wrist = jnp.stack([2.0 * wrist_px[..., 0] / w - 1.0, 2.0 * wrist_px[..., 1] / h - 1.0,
                     2.0 * wrist_px[..., 2] / w], -1)
  palm = jnp.maximum(palm_size(lm), 1e-6)  # (..., 2) pixels
  joints = (lm[..., 1:, :] - wrist_px[..., None, :]) / palm[..., None, None]  # (..., 2, 20, 3)
  coeffs = jnp.concatenate([
      jnp.ones(present.shape + (1,), jnp.float32), wrist, (2.0 * palm / w)[..., None],
      joints.reshape(joints.shape[:-2] + (NUM_JOINTS * 3,))], -1)  # (..., 2, 65)
  coeffs = jnp.where(present[..., None], coeffs, 0.0)
  return coeffs.reshape(coeffs.shape[:-2] + (HANDS_DIM,))


def decode_hands(coeffs: jax.Array, image_size: tuple[int, int],
                 threshold: float = 0.5) -> tuple[jax.Array, jax.Array]:
  """Coefficients -> (landmarks (..., 2, 21, 3) pixels of an image of `image_size`, presence (..., 2) bool).

  A hand is present where its presence value exceeds `threshold` (so noisy predictions decode too);
  absent hands get zero landmarks. Any (H, W) works: the coefficients are resolution independent.
  """
  h, w = image_size
  c = jnp.asarray(coeffs, jnp.float32)
  c = c.reshape(c.shape[:-1] + (2, HAND_COEFF_DIM))
  present = c[..., 0] > threshold  # (..., 2)
  wn = c[..., 1:4]
  wrist = jnp.stack([(wn[..., 0] + 1.0) * w / 2.0, (wn[..., 1] + 1.0) * h / 2.0, wn[..., 2] * w / 2.0],
                    -1)  # (..., 2, 3)
  palm = c[..., 4] * w / 2.0
  joints = c[..., 5:].reshape(c.shape[:-1] + (NUM_JOINTS, 3)) * palm[..., None, None]
  lm = jnp.concatenate([wrist[..., None, :], wrist[..., None, :] + joints], -2)  # (..., 2, 21, 3)
  return jnp.where(present[..., None, None], lm, 0.0), present


def fit_hand_pca(joints: np.ndarray, num_components: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """PCA of the 60 normalised joint values of present hands (NumPy, offline).

  Args:
    joints: (N, 60) or (N, 20, 3) joint values (coefficient columns 5:65 of present hands only; mirror
      left hands first if one basis should serve both, e.g. x -> −x).
    num_components: K ≤ min(N, 60); None keeps all (a lossless rotation).

  Returns:
    mean (60,) float32 and basis (K, 60) float32 with orthonormal rows, largest variance first.
  """
  x = np.asarray(joints, np.float64).reshape(len(joints), -1)
  if x.shape[1] != NUM_JOINTS * 3:
    raise ValueError(f"expected 60 joint values per hand, got {x.shape[1:]}")
  k = min(x.shape) if num_components is None else num_components
  if not 0 < k <= min(x.shape):
    raise ValueError(f"num_components must be in 1..{min(x.shape)}, got {num_components}")
  mean = x.mean(0)
  _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
  return mean.astype(np.float32), vt[:k].astype(np.float32)


def hands_to_pca(coeffs: jax.Array, mean: jax.Array, basis: jax.Array) -> jax.Array:
  """(..., 130) coefficients -> (..., 2·(5 + K)): each hand's 60 joint values replaced by K PCA codes.

  Absent hands stay all zeros (their codes are zero, not the projection of −mean).
  """
  c = jnp.asarray(coeffs, jnp.float32)
  c = c.reshape(c.shape[:-1] + (2, HAND_COEFF_DIM))
  codes = (c[..., 5:] - mean) @ basis.T  # (..., 2, K)
  codes = jnp.where(c[..., :1] > 0.5, codes, 0.0)
  out = jnp.concatenate([c[..., :5], codes], -1)
  return out.reshape(out.shape[:-2] + (-1,))


def hands_from_pca(pca_coeffs: jax.Array, mean: jax.Array, basis: jax.Array) -> jax.Array:
  """(..., 2·(5 + K)) -> (..., 130): inverse of `hands_to_pca` (exact when K = 60)."""
  c = jnp.asarray(pca_coeffs, jnp.float32)
  c = c.reshape(c.shape[:-1] + (2, -1))
  joints = jnp.where(c[..., :1] > 0.5, c[..., 5:] @ basis + mean, 0.0)  # (..., 2, 60)
  out = jnp.concatenate([c[..., :5], joints], -1)
  return out.reshape(out.shape[:-2] + (HANDS_DIM,))


def scale_landmarks(landmarks: jax.Array, from_size: tuple[int, int], to_size: tuple[int, int]) -> jax.Array:
  """(..., 21, 2 or 3) pixels of a (H, W) frame -> pixels of the frame resized to `to_size` (z like x)."""
  (h0, w0), (h1, w1) = from_size, to_size
  s = jnp.array([w1 / w0, h1 / h0, w1 / w0][:landmarks.shape[-1]], jnp.float32)
  return jnp.asarray(landmarks, jnp.float32) * s


def render_hands(landmarks: jax.Array, presence: jax.Array, height: int, width: int, *,
                 radius_px: float | jax.Array = 4.0, sharpness: float = 1.0,
                 depth_scale_px: float | None = None,
                 return_mask: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Draws hands as soft, per-finger coloured capsules.

  The 23 bones (`HAND_BONES`: wrist -> each finger's MCP, MCP -> PIP -> DIP -> TIP, and the palm line
  5-9-13-17) are capsules with alpha = presence · sigmoid(sharpness · (radius − d)), d the distance from
  the pixel centre to the bone segment. The mask is the soft union 1 − Π(1 − alpha) ∈ [0, 1]; the colour
  is a convex mix of the bones' colours (`FINGER_COLORS`, the palm line its own) weighted by alpha and,
  with 3-D input, by depth (weight ∝ alpha · exp(−z / depth_scale_px), z interpolated along the bone), so
  overlaps stay bounded. All pixels × bones are evaluated at once: (B, H, W, 46) floats per
  intermediate, fine up to ~512² × a few frames.

  Args:
    landmarks: (B, 2, 21, 2 or 3) pixels of the (height, width) frame; pixel centres at integer + 0.5.
      With z (3-D), nearer bones (smaller z) cover farther ones where they overlap.
    presence: (B, 2) bool or float in [0, 1]; it scales each hand's alpha (0 draws nothing).
    height, width: output size (static under jit).
    radius_px: capsule radius in pixels, a scalar or anything broadcastable to (B, 2) (e.g. per hand
      proportional to `palm_size`). Scale it with the resolution for a resolution-independent drawing.
    sharpness: slope of the edge sigmoid in 1/pixel; the edge is ~4 / sharpness pixels wide.
    depth_scale_px: z difference (pixels) that makes a bone e× more visible in overlaps; default radius.
    return_mask: also return the soft coverage mask.

  Returns:
    image (B, H, W, 3) in [0, 1], colour premultiplied by the mask (black where no hand), and with
    `return_mask` the mask (B, H, W, 1).
  """
  lm = jnp.asarray(landmarks)
  lm = lm.astype(jnp.promote_types(lm.dtype, jnp.float32))  # float32, or float64 under x64
  dtype, b = lm.dtype, lm.shape[0]
  bones = np.array(HAND_BONES, np.int32)
  start, end = lm[:, :, bones[:, 0]], lm[:, :, bones[:, 1]]  # (B, 2, 23, D)
  radius = jnp.broadcast_to(jnp.asarray(radius_px, dtype), (b, 2))
  weight = jnp.broadcast_to(jnp.asarray(presence, dtype), (b, 2))

  def flat(x):  # (B, 2, 23) -> (B, 1, 1, 46): bones of both hands along the last axis
    return x.reshape(b, 1, 1, 2 * NUM_BONES)

  ax, ay = flat(start[..., 0]), flat(start[..., 1])
  abx, aby = flat(end[..., 0] - start[..., 0]), flat(end[..., 1] - start[..., 1])
  inv_len2 = 1.0 / (abx * abx + aby * aby + 1e-6)
  dx = (jnp.arange(width, dtype=dtype) + 0.5)[None, None, :, None] - ax  # (B, 1, W, 46)
  dy = (jnp.arange(height, dtype=dtype) + 0.5)[None, :, None, None] - ay  # (B, H, 1, 46)
  t = jnp.clip((dx * abx + dy * aby) * inv_len2, 0.0, 1.0)  # (B, H, W, 46) closest point on the bone
  ex, ey = dx - t * abx, dy - t * aby
  dist = jnp.sqrt(ex * ex + ey * ey + 1e-6)
  bone_radius = flat(jnp.broadcast_to(radius[:, :, None], (b, 2, NUM_BONES)))
  bone_weight = flat(jnp.broadcast_to(weight[:, :, None], (b, 2, NUM_BONES)))
  logit = sharpness * (bone_radius - dist)
  alpha = bone_weight * jax.nn.sigmoid(logit)  # (B, H, W, 46)
  mask = 1.0 - jnp.prod(1.0 - alpha, -1, keepdims=True)  # soft union, (B, H, W, 1)

  # Colour: convex mix by alpha × depth weight, computed in log space so it stays finite far from bones.
  # Absent hands get a score so low that exp underflows to exactly 0: no colour and no gradient from them.
  score = jax.nn.log_sigmoid(logit) + jnp.where(bone_weight > 0, jnp.log(jnp.where(bone_weight > 0,
                                                                                    bone_weight, 1.0)), -1e4)
  if lm.shape[-1] >= 3:
    az, abz = flat(start[..., 2]), flat(end[..., 2] - start[..., 2])
    depth = depth_scale_px if depth_scale_px is not None else bone_radius
    score = score - (az + t * abz) / depth
  mix = jax.nn.softmax(score, -1)
  colors = jnp.asarray(FINGER_COLORS[np.tile(bones[:, 2], 2)], dtype)  # (46, 3)
  image = mask * (mix @ colors)  # (B, H, W, 3)
  return (image, mask) if return_mask else image
