"""Builds a `HeadTemplate` from tracked face-mesh frames of several clips (arrays in, arrays out).

Generalised Procrustes alignment to a canonical mean shape (centred, unit RMS
radius, frontal and upright at pose 0), then an identity basis (PCA of the
per-clip mean shapes) and an expression basis (PCA of the within-clip
residuals, `num_exp` = 52 components); the steps are listed in
`build_head_template`. Bases are scaled by their standard deviations so that
the coefficients have unit variance on the training data. File reading lives
in `data/build_head_template.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from chatanyone_jax.template.head_template import (
  KEYPOINT_INDICES,
  NUM_EXP,
  HeadTemplate,
  canonical_frame,
  similarity_procrustes,
)

log = logging.getLogger(__name__)


def normalize_shape(shape: np.ndarray) -> np.ndarray:
  """(N, 3) -> centred copy with unit RMS radius."""
  shape = shape - shape.mean(0, keepdims=True)
  return shape / np.sqrt(np.mean(np.sum(shape**2, -1)))


def generalized_procrustes(shapes: np.ndarray, num_iters: int = 5,
                           reference: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Aligns (F, N, 3) shapes to their common mean by per-shape similarity transforms.

  Args:
    shapes: (F, N, 3) point sets with correspondence.
    num_iters: alignment / re-averaging rounds (converges in a handful).
    reference: optional (N, 3) start shape (default: the first shape).

  Returns:
    aligned (F, N, 3) in the frame of the mean, and the mean (N, 3) (centred, unit RMS radius).
  """
  shapes = np.asarray(shapes, np.float32)
  mean = normalize_shape(shapes[0] if reference is None else np.asarray(reference, np.float32))
  aligned = shapes
  for _ in range(num_iters):
    s, rot, t = similarity_procrustes(jnp.asarray(shapes), jnp.asarray(mean)[None])
    aligned = np.asarray(s[:, None, None] * (jnp.asarray(shapes) @ rot) + t[:, None])
    new_mean = normalize_shape(aligned.mean(0))
    # Keep the mean in the reference's orientation so that it does not drift between rounds.
    s1, r1, t1 = similarity_procrustes(jnp.asarray(new_mean), jnp.asarray(mean))
    mean = normalize_shape(np.asarray(new_mean @ r1))
  s, rot, t = similarity_procrustes(jnp.asarray(shapes), jnp.asarray(mean)[None])
  aligned = np.asarray(s[:, None, None] * (jnp.asarray(shapes) @ rot) + t[:, None])
  return aligned, mean


def similarity_tangent(mean: np.ndarray) -> np.ndarray:
  """(N, 3) shape -> (7, N*3) orthonormal directions of infinitesimal translation, rotation and scale."""
  n = mean.shape[0]
  dirs = [np.tile(np.eye(3)[i], (n, 1)) for i in range(3)]  # translations
  dirs += [np.cross(np.eye(3)[i], mean) for i in range(3)]  # rotations about x, y, z
  dirs.append(mean)  # scale
  q, _ = np.linalg.qr(np.stack([d.reshape(-1) for d in dirs], 1).astype(np.float64))
  return q.T


def _remove(x: np.ndarray, directions: np.ndarray) -> np.ndarray:
  """Removes the components of rows of (M, D) `x` along orthonormal (k, D) `directions`."""
  return x - (x @ directions.T) @ directions


def _pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """(M, D) centred rows -> (k, D) std-scaled directions and (k,) stds."""
  _, sv, vt = np.linalg.svd(x.astype(np.float64), full_matrices=False)
  std = sv[:k] / np.sqrt(max(x.shape[0] - 1, 1))
  return (vt[:k] * std[:, None]).astype(np.float32), std.astype(np.float32)


def build_head_template(clips: Sequence[np.ndarray], valids: Sequence[np.ndarray] | None = None, *,
                        num_exp: int = NUM_EXP, max_id: int = 8, gpa_iters: int = 5,
                        keypoint_indices: np.ndarray = KEYPOINT_INDICES,
                        ) -> tuple[HeadTemplate, dict[str, np.ndarray]]:
  """Builds the linear head template from face-mesh frames of several clips.

  Steps: 1. generalised Procrustes analysis: every frame is aligned by a similarity transform to a
  common mean shape, iterated; 2. the mean is centred, scaled to unit RMS radius and rotated to the
  clips' average view with a level eye line (`canonical_frame`), so pose 0 is a frontal, upright face;
  3. identity basis: PCA of the per-clip mean shapes around their average (up to `max_id`); 4.
  expression basis: PCA of the within-clip residuals, the first `num_exp`. Variation that a similarity
  transform explains to first order is removed before both PCAs, and the identity directions are made
  orthogonal to the expression span, so that pose, identity and expression are identifiable and the
  alternating fit converges in a few rounds. The price: with few training identities, β also absorbs
  the part of a new face's shape that lies in the expression span (a constant offset over a clip);
  subtract the clip's mean β where an identity-free expression is needed.

  Args:
    clips: per clip, (T_c, N, 3) face-mesh points of one person (e.g. `ClipLandmarks.face`).
    valids: per clip, (T_c,) bool frame masks (default all valid).
    num_exp: expression components (52); needs more valid frames than clips + num_exp.
    max_id: identity components, capped at len(clips) - 1 (0 with a single clip).
    gpa_iters: Procrustes rounds.
    keypoint_indices: (K_h,) head keypoint indices stored with the template.

  Returns:
    the template (NumPy float32 arrays) and stats: "exp_std" (num_exp,), "id_std" (n_id,),
    "exp_explained" (fraction of within-clip variance kept).
  """
  if valids is None:
    valids = [np.ones(len(c), bool) for c in clips]
  frames = [np.asarray(c, np.float32)[np.asarray(v, bool)] for c, v in zip(clips, valids, strict=True)]
  frames = [f for f in frames if len(f)]
  if not frames:
    raise ValueError("no valid frames to build a head template from")
  counts = [len(f) for f in frames]
  total = sum(counts)
  if total - len(frames) < num_exp:
    raise ValueError(f"{total} valid frames in {len(frames)} clips cannot give {num_exp} expression "
                     "components; give more frames (max_frames) or more clips")
  allf = np.concatenate(frames)
  _, mean = generalized_procrustes(allf, gpa_iters)
  # Canonical frame: the average view of the clips as the camera saw them (each frame centred and
  # scaled, not rotated; clips weigh equally), then the eye line levelled. Realign every frame to it.
  view = np.mean([np.mean([normalize_shape(x) for x in f], 0) for f in frames], 0)
  _, to_view, _ = similarity_procrustes(jnp.asarray(mean), jnp.asarray(view))
  mean = np.asarray(mean @ np.asarray(to_view))
  mean = np.asarray(mean @ np.asarray(canonical_frame(mean)))
  aligned, _ = generalized_procrustes(allf, 0, reference=mean)

  splits = np.cumsum(counts)[:-1]
  per_clip = np.split(aligned, splits)
  clip_means = np.stack([c.mean(0) for c in per_clip])  # (C, N, 3)
  mu = normalize_shape(clip_means.mean(0))
  n_pts = mu.shape[0]
  # Variation that a similarity transform already explains (to first order) is removed before the
  # PCAs, so that pose/scale and the coefficients do not compete and the alternating fit converges.
  tangent = similarity_tangent(mu)
  resid = np.concatenate([c - m for c, m in zip(per_clip, clip_means, strict=True)]).reshape(total, -1)
  resid = _remove(resid, tangent)
  exp_basis, exp_std = _pca(resid, num_exp)
  # Identity directions are kept orthogonal to the expression span: α and β then decouple and
  # `fit_clip` converges in a few rounds; α adds shape variation that expressions cannot make.
  exp_dirs = np.linalg.qr(exp_basis.T.astype(np.float64))[0].T
  n_id = min(max_id, len(frames) - 1)
  if n_id > 0:
    id_data = _remove(_remove((clip_means - mu).reshape(len(frames), -1), tangent), exp_dirs)
    id_basis, id_std = _pca(id_data, n_id)
  else:
    id_basis, id_std = np.zeros((0, n_pts * 3), np.float32), np.zeros((0,), np.float32)
  kept = np.sum(exp_std.astype(np.float64) ** 2) * (total - 1)
  explained = float(kept / np.sum(resid.astype(np.float64) ** 2))
  log.info("head template: %d clips, %d frames, %d id / %d exp components, %.4f of expression variance",
           len(frames), total, n_id, num_exp, explained)
  template = HeadTemplate(
      mean=mu.astype(np.float32),
      id_basis=id_basis.reshape(n_id, n_pts, 3),
      exp_basis=exp_basis.reshape(num_exp, n_pts, 3),
      keypoint_indices=np.asarray(keypoint_indices, np.int32))
  stats = {"exp_std": exp_std, "id_std": id_std, "exp_explained": np.float32(explained)}
  return template, stats
