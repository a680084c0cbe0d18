"""Linear 3-D head template (the FaceVerse stand-in of ARCHITECTURE.md §2) and its fit.

The shipped default, `assets/head_template.npz`, was built by
`python -m data.build_head_template` from 20 real clips of the shared media
set (first 150 frames each; see the asset's "clips" entry) and holds back
V-Express RD_Radio10_0_clip_0, LivePortrait driving d19 and video-retalking
face_2. Mean 2-D landmark error after `fit_clip` (10 rounds, ridge 1e-5) on
the first 150 frames of those held-back clips, in pixels at a 256² crop of the
tight face box: 0.35, 0.30 and 0.30, mean 0.32 px (a rigid fit of the mean
shape alone: 3.4-5.0 px). The asset stores these as "heldout_error_px".
Sizes: mean (478, 3), id_basis (8, 478, 3), exp_basis (52, 478, 3),
keypoint_indices (32,); 0.32 MB compressed.
"""

from __future__ import annotations

import importlib.resources
import io

import numpy as np

from chatanyone_jax.template.build import build_head_template, generalized_procrustes, normalize_shape
from chatanyone_jax.template.hands import (
  FINGER_COLORS,
  FINGER_NAMES,
  HAND_BONES,
  HAND_COEFF_DIM,
  HANDS_DIM,
  decode_hands,
  encode_hands,
  fit_hand_pca,
  hands_from_pca,
  hands_to_pca,
  palm_size,
  render_hands,
  scale_landmarks,
)
from chatanyone_jax.template.head_template import (
  KEYPOINT_INDICES,
  KEYPOINT_NAMES,
  NUM_EXP,
  NUM_KEYPOINTS,
  NUM_POINTS,
  FitResult,
  HeadTemplate,
  canonical_shape,
  euler_to_rotation,
  fit_clip,
  fit_frames,
  landmark_error,
  lip_gap_vectors,
  mouth_opening,
  project,
  project_keypoints,
  rotation_to_euler,
  similarity_procrustes,
)

DEFAULT_ASSET = "assets/head_template.npz"
_TEMPLATE_KEYS = HeadTemplate._fields


def template_to_arrays(template: HeadTemplate) -> dict[str, np.ndarray]:
  """The template as a dict of NumPy float32 / int32 arrays (what the .npz asset holds)."""
  return {k: np.asarray(getattr(template, k)) for k in _TEMPLATE_KEYS}


def template_from_arrays(arrays) -> HeadTemplate:
  """A dict-like of arrays (e.g. an opened .npz) -> HeadTemplate of float32 / int32 NumPy arrays."""
  missing = [k for k in _TEMPLATE_KEYS if k not in arrays]
  if missing:
    raise ValueError(f"not a head template: missing {missing}; rebuild it with data.build_head_template")
  t = HeadTemplate(*(np.asarray(arrays[k]) for k in _TEMPLATE_KEYS))
  return HeadTemplate(t.mean.astype(np.float32), t.id_basis.astype(np.float32),
                      t.exp_basis.astype(np.float32), t.keypoint_indices.astype(np.int32))


def load_head_template_arrays() -> dict[str, np.ndarray]:
  """All arrays of the shipped asset, metadata included ("clips", "heldout_clips", "heldout_error_px")."""
  data = importlib.resources.files(__name__).joinpath(DEFAULT_ASSET).read_bytes()
  with np.load(io.BytesIO(data), allow_pickle=False) as z:
    return {k: z[k] for k in z.files}


def load_head_template() -> HeadTemplate:
  """The default template shipped with the package (mean (478, 3), id (n_id, 478, 3), exp (52, 478, 3))."""
  return template_from_arrays(load_head_template_arrays())


__all__ = [
    "DEFAULT_ASSET", "KEYPOINT_INDICES", "KEYPOINT_NAMES", "NUM_EXP", "NUM_KEYPOINTS", "NUM_POINTS",
    "FitResult", "HeadTemplate", "build_head_template", "canonical_shape", "euler_to_rotation", "fit_clip",
    "fit_frames", "generalized_procrustes", "landmark_error", "lip_gap_vectors", "load_head_template",
    "load_head_template_arrays", "mouth_opening", "normalize_shape", "project", "project_keypoints",
    "rotation_to_euler", "similarity_procrustes", "template_from_arrays", "template_to_arrays",
]

__all__ += [
    "FINGER_COLORS", "FINGER_NAMES", "HAND_BONES", "HAND_COEFF_DIM", "HANDS_DIM", "decode_hands",
    "encode_hands", "fit_hand_pca", "hands_from_pca", "hands_to_pca", "palm_size", "render_hands",
    "scale_landmarks",
]
