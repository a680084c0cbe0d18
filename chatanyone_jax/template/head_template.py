"""Linear 3-D head template over MediaPipe's 478 face-mesh points, and its per-frame fit.

The template replaces the paper's FaceVerse 3DMM (ARCHITECTURE.md §2):

  X = s · (μ + B_id·α + B_exp·β) @ R(pose) + t          # (N, 3), N = 478

with row-vector points as in LivePortrait (`chatanyone_jax.ops.pose`): R is
`rotation_matrix(pitch, yaw, roll)` (degrees), t = (t_x, t_y, t_z); image axes
(x right, y down, z away from the camera); μ centred with unit RMS radius, so
`s` is the face size in the units of the fitted points; pose 0 a frontal,
upright face. The bases are pre-multiplied by their PCA standard deviations
(α, β of roughly unit variance). Stage 1 predicts β (52) and pose (6) per
frame plus one α per avatar; `project_keypoints` gives the K_h = 32 head
keypoints (`KEYPOINT_NAMES`); `fit_frames` / `fit_clip` fit it (jit-able).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax.ops.pose import rotation_matrix

NUM_POINTS = 478
NUM_EXP = 52

# K_h = 32 head keypoints picked from the MediaPipe face-mesh topology
# (person's own left/right; the right eye appears on the image's left).
KEYPOINT_NAMES: tuple[tuple[str, int], ...] = (
    # eyes: outer corner, inner corner, upper lid centre, lower lid centre
    ("right_eye_outer", 33), ("right_eye_inner", 133), ("right_eye_top", 159), ("right_eye_bottom", 145),
    ("left_eye_outer", 263), ("left_eye_inner", 362), ("left_eye_top", 386), ("left_eye_bottom", 374),
    # eyebrows: outer, middle, inner (upper edge)
    ("right_brow_outer", 70), ("right_brow_middle", 105), ("right_brow_inner", 107),
    ("left_brow_outer", 300), ("left_brow_middle", 334), ("left_brow_inner", 336),
    # mouth: corners, outer lip centres and mid-points, inner lip centres
    ("mouth_right", 61), ("mouth_left", 291), ("upper_lip_top", 0), ("lower_lip_bottom", 17),
    ("upper_lip_inner", 13), ("lower_lip_inner", 14), ("upper_lip_right", 37), ("upper_lip_left", 267),
    ("lower_lip_right", 84), ("lower_lip_left", 314),
    # nose tip
    ("nose_tip", 1),
    # face contour: cheeks at eye level, jaw, jaw near chin, chin
    ("contour_right_cheek", 234), ("contour_left_cheek", 454), ("contour_right_jaw", 58),
    ("contour_left_jaw", 288), ("contour_right_chin", 136), ("contour_left_chin", 365), ("chin", 152),
)
KEYPOINT_INDICES = np.array([i for _, i in KEYPOINT_NAMES], np.int32)  # (32,)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)
# Eye corners that fix the canonical eye line.
_RIGHT_EYE, _LEFT_EYE = (33, 133), (263, 362)


class HeadTemplate(NamedTuple):
  """The linear head model (a pytree of arrays).

  The 10 iris points (468..477) are kept: they carry gaze, which the expression basis models like any
  other motion.

  Attributes:
    mean: (N, 3) μ, centred, unit RMS radius, frontal and upright.
    id_basis: (n_id, N, 3) identity directions scaled by their std.
    exp_basis: (n_exp, N, 3) expression directions scaled by their std (n_exp = 52 by default).
    keypoint_indices: (K_h,) int32 indices of the semantic head keypoints into the N points.
  """

  mean: jax.Array
  id_basis: jax.Array
  exp_basis: jax.Array
  keypoint_indices: jax.Array

  @property
  def num_id(self) -> int:
    return self.id_basis.shape[0]

  @property
  def num_exp(self) -> int:
    return self.exp_basis.shape[0]


class FitResult(NamedTuple):
  """Per-frame template coefficients.

  Attributes:
    pose: (B, 6) pitch, yaw, roll in degrees, then t_x, t_y, t_z in the units of the points.
    scale: (B,) s.
    exp: (B, n_exp) β.
    identity: (B, n_id) α (the same row for every frame of a clip after `fit_clip`).
  """

  pose: jax.Array
  scale: jax.Array
  exp: jax.Array
  identity: jax.Array


# ---------------------------------------------------------------- geometry


def rotation_to_euler(rot: jax.Array) -> jax.Array:
  """Inverse of `rotation_matrix`: (..., 3, 3) row-vector rotation -> (..., 3) pitch, yaw, roll degrees."""
  rc = jnp.swapaxes(rot, -1, -2)  # column form Rz(roll) Ry(yaw) Rx(pitch)
  yaw = jnp.arcsin(jnp.clip(-rc[..., 2, 0], -1.0, 1.0))
  pitch = jnp.arctan2(rc[..., 2, 1], rc[..., 2, 2])
  roll = jnp.arctan2(rc[..., 1, 0], rc[..., 0, 0])
  return jnp.rad2deg(jnp.stack([pitch, yaw, roll], axis=-1))


def euler_to_rotation(angles: jax.Array) -> jax.Array:
  """(..., 3) pitch, yaw, roll degrees -> (..., 3, 3) row-vector rotation (LivePortrait convention)."""
  lead = angles.shape[:-1]
  flat = jnp.reshape(angles, (-1, 3))
  rot = rotation_matrix(flat[:, 0], flat[:, 1], flat[:, 2])
  return jnp.reshape(rot, (*lead, 3, 3))


def similarity_procrustes(src: jax.Array, dst: jax.Array, weights: jax.Array | None = None,
                          ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Least-squares similarity (Umeyama 1991) with dst ≈ s · src @ R + t, batched over leading dims.

  Args:
    src, dst: (..., N, 3) corresponding points.
    weights: optional (..., N) non-negative point weights.

  Returns:
    s (...,), R (..., 3, 3) proper rotation (row-vector convention), t (..., 3).
  """
  if weights is None:
    weights = jnp.ones(src.shape[:-1], src.dtype)
  w = weights[..., None] / jnp.maximum(jnp.sum(weights, -1)[..., None, None], 1e-12)
  mu_s = jnp.sum(w * src, -2, keepdims=True)
  mu_d = jnp.sum(w * dst, -2, keepdims=True)
  a, b = src - mu_s, dst - mu_d
  cov = jnp.einsum("...ni,...nj->...ij", w * a, b)  # (..., 3, 3)
  u, sv, vt = jnp.linalg.svd(cov)
  d = jnp.sign(jnp.linalg.det(u @ vt))
  d = jnp.where(d == 0, 1.0, d)
  diag = jnp.stack([jnp.ones_like(d), jnp.ones_like(d), d], -1)
  rot = (u * diag[..., None, :]) @ vt  # row form: b ≈ s a @ R
  var = jnp.sum(w[..., 0] * jnp.sum(a * a, -1), -1)
  s = jnp.sum(sv * diag, -1) / jnp.maximum(var, 1e-12)
  t = mu_d[..., 0, :] - s[..., None] * jnp.einsum("...i,...ij->...j", mu_s[..., 0, :], rot)
  return s, rot, t


def canonical_shape(template: HeadTemplate, alpha: jax.Array | None, beta: jax.Array | None) -> jax.Array:
  """μ + B_id·α + B_exp·β: α (B, n_id) or None, β (B, n_exp) or None -> (B, N, 3) (or (N, 3) if both None)."""
  shape = template.mean
  if alpha is not None:
    shape = shape + jnp.einsum("bk,knd->bnd", alpha, template.id_basis)
  if beta is not None:
    shape = shape + jnp.einsum("bk,knd->bnd", beta, template.exp_basis)
  return shape


def lip_gap_vectors(template: HeadTemplate) -> tuple:
  """(mean (3,), id (n_id, 3), exp (n_exp, 3)): the upper minus the lower inner-lip centre of the mean
  shape and of each identity / expression direction, so that the canonical inner-lip vector of (α, β) is
  mean + α @ id + β @ exp (the shape is linear in both). Arrays of the template's kind (NumPy for the
  shipped one: the data workers use them without JAX)."""
  names = dict(KEYPOINT_NAMES)
  u, lo = names["upper_lip_inner"], names["lower_lip_inner"]
  return (template.mean[u] - template.mean[lo], template.id_basis[:, u] - template.id_basis[:, lo],
          template.exp_basis[:, u] - template.exp_basis[:, lo])


def mouth_opening(template: HeadTemplate, exp: jax.Array, identity: jax.Array | None = None) -> jax.Array:
  """Inner-lip gap of the canonical (pose-free) shape: the lip-sync curve of expression coefficients.

  Args:
    exp: (..., n_exp) β.
    identity: (n_id,) or (..., n_id) α; None = the mean identity.

  Returns:
    (...,) distance between the upper and lower inner-lip centres, in template units.
  """
  mean, id_dir, exp_dir = lip_gap_vectors(template)
  gap = mean + jnp.asarray(exp) @ exp_dir
  if identity is not None:
    gap = gap + jnp.asarray(identity) @ id_dir
  return jnp.linalg.norm(gap, axis=-1)


def project(template: HeadTemplate, pose: jax.Array, scale: jax.Array, exp: jax.Array,
            identity: jax.Array | None = None, indices: jax.Array | None = None) -> jax.Array:
  """Posed 3-D template points X = s · shape @ R + t.

  Args:
    pose: (B, 6) pitch, yaw, roll (degrees), t_x, t_y, t_z.
    scale: (B,) or (B, 1).
    exp: (B, n_exp) β.
    identity: (B, n_id) α, or None for the mean identity.
    indices: optional (K,) point subset (e.g. `template.keypoint_indices`).

  Returns:
    (B, N, 3), or (B, K, 3) with `indices`.
  """
  tmpl = template
  if indices is not None:
    tmpl = HeadTemplate(template.mean[indices], template.id_basis[:, indices],
                        template.exp_basis[:, indices], template.keypoint_indices)
  shape = canonical_shape(tmpl, identity, exp)
  rot = euler_to_rotation(pose[:, :3])
  s = jnp.reshape(scale, (-1, 1, 1))
  return s * (shape @ rot) + pose[:, None, 3:]


def project_keypoints(template: HeadTemplate, pose: jax.Array, scale: jax.Array, exp: jax.Array,
                      identity: jax.Array | None = None) -> jax.Array:
  """The K_h = 32 head keypoints (B, 32, 3) from coefficients; what stage 1 feeds the body model."""
  return project(template, pose, scale, exp, identity, indices=template.keypoint_indices)


# ---------------------------------------------------------------- fitting


def _solve_ridge(basis: jax.Array, ridge: float) -> jax.Array:
  """(K, N, 3) basis -> (K, N*3) matrix P with coefficients = P @ residual (ridge least squares)."""
  b = jnp.reshape(basis, (basis.shape[0], -1))  # (K, D)
  gram = b @ b.T + ridge * jnp.eye(b.shape[0], dtype=b.dtype)
  return jnp.linalg.solve(gram, b)


def _to_canonical(points: jax.Array, s: jax.Array, rot: jax.Array, t: jax.Array) -> jax.Array:
  """Undo X = s · Y @ R + t: (B, N, 3) -> (B, N, 3)."""
  return ((points - t[:, None]) @ jnp.swapaxes(rot, -1, -2)) / s[:, None, None]


@functools.partial(jax.jit, static_argnames=("num_iters",))
def fit_frames(template: HeadTemplate, points: jax.Array, identity: jax.Array | None = None,
               *, num_iters: int = 10, ridge: float = 1e-5) -> FitResult:
  """Fits pose, scale and expression per frame with a known identity.

  Args:
    points: (B, N, 3) observed face-mesh points (any consistent units, e.g. pixels with z scaled as x).
    identity: (B, n_id) identity coefficients, or None for the mean identity.
    num_iters: alternating Procrustes / least-squares rounds.
    ridge: Tikhonov weight on the (unit-variance) coefficients, in canonical units² (μ has unit RMS).

  Returns:
    FitResult with (B, 6) pose, (B,) scale, (B, n_exp) exp, (B, n_id) identity.
  """
  b = points.shape[0]
  alpha = jnp.zeros((b, template.num_id), points.dtype) if identity is None else identity
  base = canonical_shape(template, alpha, None)  # (B, N, 3)
  solve_exp = _solve_ridge(template.exp_basis, ridge)

  def body(_, beta):
    shape = base + jnp.einsum("bk,knd->bnd", beta, template.exp_basis)
    s, rot, t = similarity_procrustes(shape, points)
    resid = _to_canonical(points, s, rot, t) - base
    return jnp.reshape(resid, (b, -1)) @ solve_exp.T

  beta = jax.lax.fori_loop(0, num_iters, body, jnp.zeros((b, template.num_exp), points.dtype))
  shape = base + jnp.einsum("bk,knd->bnd", beta, template.exp_basis)
  s, rot, t = similarity_procrustes(shape, points)
  pose = jnp.concatenate([rotation_to_euler(rot), t], -1)
  return FitResult(pose=pose, scale=s, exp=beta, identity=alpha)


@functools.partial(jax.jit, static_argnames=("num_iters",))
def fit_clip(template: HeadTemplate, points: jax.Array, valid: jax.Array | None = None, *,
             num_iters: int = 10, ridge: float = 1e-5) -> FitResult:
  """Fits one identity α for a clip plus pose, scale and expression per frame.

  Each round: per-frame closed-form similarity Procrustes (Umeyama), then per-frame β by ridge least
  squares given α, then α by ridge least squares over the valid frames given β; a fixed number of
  rounds inside `lax.fori_loop`.

  Args:
    points: (T, N, 3) face-mesh points of one person.
    valid: (T,) bool; invalid frames (e.g. dropped by `data.landmarks`) do not
      inform α and get the mean shape as a placeholder target (their outputs are finite but meaningless).
    num_iters: rounds.
    ridge: Tikhonov weight on the coefficients (canonical units²).

  Returns:
    FitResult; `identity` repeats the clip's α on every row.
  """
  num = points.shape[0]
  if valid is None:
    valid = jnp.ones((num,), bool)
  placeholder = template.mean[None] * 100.0
  points = jnp.where(valid[:, None, None], points, placeholder)
  wv = valid.astype(points.dtype)
  solve_exp = _solve_ridge(template.exp_basis, ridge)
  b_id = jnp.reshape(template.id_basis, (template.num_id, -1))  # (n_id, D)
  b_exp = jnp.reshape(template.exp_basis, (template.num_exp, -1))

  def body(_, carry):
    alpha, beta = carry
    shape = template.mean[None] + jnp.reshape(alpha @ b_id + beta @ b_exp, (num, -1, 3))
    s, rot, t = similarity_procrustes(shape, points)
    resid = jnp.reshape(_to_canonical(points, s, rot, t) - template.mean[None], (num, -1))  # (T, D)
    beta = (resid - alpha @ b_id) @ solve_exp.T
    r_id = jnp.sum(wv[:, None] * (resid - beta @ b_exp), 0)  # (D,)
    n = jnp.maximum(jnp.sum(wv), 1.0)
    gram = n * (b_id @ b_id.T) + n * ridge * jnp.eye(b_id.shape[0], dtype=points.dtype)
    alpha = jnp.broadcast_to(jnp.linalg.solve(gram, b_id @ r_id), alpha.shape)
    return alpha, beta

  init = (jnp.zeros((num, template.num_id), points.dtype), jnp.zeros((num, template.num_exp), points.dtype))
  alpha, beta = jax.lax.fori_loop(0, num_iters, body, init)
  shape = template.mean[None] + jnp.reshape(alpha @ b_id + beta @ b_exp, (num, -1, 3))
  s, rot, t = similarity_procrustes(shape, points)
  pose = jnp.concatenate([rotation_to_euler(rot), t], -1)
  return FitResult(pose=pose, scale=s, exp=beta, identity=alpha)


def landmark_error(pred: jax.Array, target: jax.Array, valid: jax.Array | None = None,
                   crop_size: float = 256.0) -> jax.Array:
  """Mean 2-D point distance in pixels of a `crop_size`² crop of the target's face box.

  The crop is the square box of the target's x, y extent (side = max(width,
  height)), i.e. the face fills the crop: a strict measure (LivePortrait-style
  crops with margins make the face smaller, and the error smaller).

  Args:
    pred, target: (T, N, >=2) points; only x, y count.
    valid: optional (T,) bool frame mask.

  Returns:
    scalar mean over valid frames and points.
  """
  extent = jnp.max(target[..., :2], -2) - jnp.min(target[..., :2], -2)  # (T, 2)
  side = jnp.maximum(jnp.max(extent, -1), 1e-6)  # (T,)
  dist = jnp.linalg.norm(pred[..., :2] - target[..., :2], axis=-1)  # (T, N)
  per_frame = jnp.mean(dist, -1) * crop_size / side
  if valid is None:
    return jnp.mean(per_frame)
  w = valid.astype(per_frame.dtype)
  return jnp.sum(per_frame * w) / jnp.maximum(jnp.sum(w), 1.0)


def canonical_frame(shape: np.ndarray | jax.Array) -> jax.Array:
  """(N, 3) face-mesh shape seen roughly upright -> (3, 3) row-vector rotation R making `shape @ R` level.

  The new x axis runs along the eye line (right eye to left eye, image left
  to right), which removes roll and yaw; y is the old y axis made orthogonal
  to it (pitch is kept as seen), and z = x × y points away from the camera.
  """
  shape = jnp.asarray(shape)
  eye_r = jnp.mean(shape[jnp.array(_RIGHT_EYE)], 0)
  eye_l = jnp.mean(shape[jnp.array(_LEFT_EYE)], 0)
  x = eye_l - eye_r
  x = x / jnp.linalg.norm(x)
  y = jnp.array([0.0, 1.0, 0.0], shape.dtype)
  y = y - jnp.dot(y, x) * x
  y = y / jnp.linalg.norm(y)
  z = jnp.cross(x, y)
  return jnp.stack([x, y, z], axis=1)  # columns = new axes expressed in old coordinates
