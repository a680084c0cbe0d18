"""Head template: Procrustes, build, fit, shipped asset and its error on a held-back real clip."""

from __future__ import annotations

import numpy as np
import pytest

from chatanyone_jax import template as ht
from tests.helpers import media_dir, require

# Measured when the asset was built (python -m data.build_head_template --default): mean 2-D error
# after fit_clip on the first 150 frames of the held-back clips, pixels at a 256² face crop:
# RD_Radio10 0.35, d19 0.30, face_2 0.30 (a rigid fit of the mean shape: 5.0 / 3.4 / 3.4 px).
# The test fits the first 30 frames of RD_Radio10; 0.6 px leaves room for MediaPipe/XLA version
# noise while staying an order of magnitude below what a broken template (rigid-only) gives.
HELD_OUT_CLIP = "V-Express__scripts_prepare_dataset_RD_Radio10_0_clip_0.mp4"
MAX_HELD_OUT_ERROR_PX = 0.6


@pytest.fixture(scope="module")
def template() -> ht.HeadTemplate:
  return ht.load_head_template()


def _random_rotation(rng, n):
  return np.asarray(ht.euler_to_rotation(rng.uniform(-40, 40, (n, 3)).astype(np.float32)))


def test_euler_round_trip():
  angles = np.random.default_rng(0).uniform(-60, 60, (32, 3)).astype(np.float32)
  rot = ht.euler_to_rotation(angles)
  np.testing.assert_allclose(np.asarray(ht.rotation_to_euler(rot)), angles, atol=1e-3)
  np.testing.assert_allclose(np.linalg.det(np.asarray(rot)), 1.0, atol=1e-5)


def test_procrustes_recovers_known_similarity():
  rng = np.random.default_rng(1)
  src = rng.normal(size=(5, 40, 3)).astype(np.float32)
  rot = _random_rotation(rng, 5)
  s = rng.uniform(0.5, 3.0, 5).astype(np.float32)
  t = rng.normal(size=(5, 3)).astype(np.float32) * 10
  dst = s[:, None, None] * (src @ rot) + t[:, None]
  s_hat, rot_hat, t_hat = ht.similarity_procrustes(src, dst)
  np.testing.assert_allclose(np.asarray(s_hat), s, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(rot_hat), rot, atol=1e-4)
  np.testing.assert_allclose(np.asarray(t_hat), t, atol=1e-3)
  # A mirror image is not a rotation: the result stays proper (det +1).
  _, rot_m, _ = ht.similarity_procrustes(src, dst * np.array([-1, 1, 1], np.float32))
  np.testing.assert_allclose(np.linalg.det(np.asarray(rot_m)), 1.0, atol=1e-5)


def test_generalized_procrustes_removes_similarities():
  rng = np.random.default_rng(2)
  base = rng.normal(size=(60, 3)).astype(np.float32)
  n = 12
  rot = _random_rotation(rng, n)
  shapes = (rng.uniform(0.5, 2, (n, 1, 1)) * ((base + 0.01 * rng.normal(size=(n, 60, 3))) @ rot)
            + rng.normal(size=(n, 1, 3)) * 5).astype(np.float32)
  aligned, mean = ht.generalized_procrustes(shapes)
  assert np.sqrt(np.mean(np.sum(mean**2, -1))) == pytest.approx(1.0, abs=1e-4)
  np.testing.assert_allclose(mean.mean(0), 0.0, atol=1e-5)
  # All copies land on the mean, which is the base shape up to a similarity.
  assert np.abs(aligned - mean).max() < 0.05
  s, r, t = ht.similarity_procrustes(ht.normalize_shape(base), mean)
  fitted = np.asarray(s * (ht.normalize_shape(base) @ r) + t)
  assert np.abs(fitted - mean).max() < 0.01


def test_build_on_synthetic_clips_finds_the_model():
  rng = np.random.default_rng(3)
  n_pts = 478
  mean = rng.normal(size=(n_pts, 3))
  exp_dirs = rng.normal(size=(3, n_pts, 3)) * 0.05
  clips = []
  for _ in range(4):
    ident = mean + rng.normal(size=(n_pts, 3)) * 0.02
    beta = rng.normal(size=(30, 3))
    shapes = ident + np.einsum("tk,knd->tnd", beta, exp_dirs)
    rot = _random_rotation(rng, 30)
    clips.append((rng.uniform(50, 100, (30, 1, 1)) * (shapes @ rot) + rng.normal(size=(30, 1, 3)) * 20)
                 .astype(np.float32))
  valid = [np.ones(30, bool) for _ in clips]
  valid[0][:5] = False
  tmpl, stats = ht.build_head_template(clips, valid, num_exp=6, max_id=8)
  assert tmpl.mean.shape == (n_pts, 3) and tmpl.exp_basis.shape == (6, n_pts, 3)
  assert tmpl.id_basis.shape == (3, n_pts, 3)  # capped at clips - 1
  # Three true expression directions hold (nearly) all within-clip variance.
  assert float(np.sum(stats["exp_std"][:3] ** 2) / np.sum(stats["exp_std"] ** 2)) > 0.97
  assert stats["exp_explained"] > 0.97
  with pytest.raises(ValueError, match="expression"):
    ht.build_head_template([c[:10] for c in clips], num_exp=52)


def test_fit_recovers_synthetic_pose_and_coefficients(template):
  rng = np.random.default_rng(4)
  b = 16
  angles = rng.uniform(-30, 30, (b, 3)).astype(np.float32)
  trans = (rng.uniform(-50, 50, (b, 3)) + [256, 256, 0]).astype(np.float32)
  pose = np.concatenate([angles, trans], -1)
  scale = rng.uniform(60, 140, b).astype(np.float32)
  exp = rng.normal(size=(b, ht.NUM_EXP)).astype(np.float32)
  ident = np.repeat(rng.normal(size=(1, template.num_id)), b, 0).astype(np.float32)
  points = ht.project(template, pose, scale, exp, ident)

  fit = ht.fit_clip(template, points, num_iters=10, ridge=0.0)
  np.testing.assert_allclose(np.asarray(fit.pose[:, :3]), angles, atol=1e-2)
  np.testing.assert_allclose(np.asarray(fit.pose[:, 3:]), trans, atol=1e-2)
  np.testing.assert_allclose(np.asarray(fit.scale), scale, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(fit.exp), exp, atol=1e-3)
  np.testing.assert_allclose(np.asarray(fit.identity), ident, atol=1e-3)

  # Per-frame fit with a known identity; the default small ridge keeps points within 0.2 px.
  fit = ht.fit_frames(template, points, ident)
  np.testing.assert_allclose(np.asarray(fit.pose[:, :3]), angles, atol=1e-2)
  rec = ht.project(template, fit.pose, fit.scale, fit.exp, fit.identity)
  assert float(np.abs(rec - points).max()) < 0.2

  kp = ht.project_keypoints(template, pose, scale, exp, ident)
  assert kp.shape == (b, ht.NUM_KEYPOINTS, 3)
  np.testing.assert_allclose(np.asarray(kp), np.asarray(points)[:, template.keypoint_indices], atol=1e-3)


def test_shipped_asset(template):
  assert template.mean.shape == (ht.NUM_POINTS, 3) and template.mean.dtype == np.float32
  assert template.exp_basis.shape == (ht.NUM_EXP, ht.NUM_POINTS, 3)
  assert 1 <= template.num_id <= 8 and template.id_basis.shape[1:] == (ht.NUM_POINTS, 3)
  idx = template.keypoint_indices
  assert idx.shape == (32,) and len(set(idx.tolist())) == 32 and idx.max() < ht.NUM_POINTS
  np.testing.assert_array_equal(idx, ht.KEYPOINT_INDICES)
  assert ht.NUM_KEYPOINTS == 32
  # Canonical frame: unit RMS radius, y down (eyes above mouth), level eye line, nose towards the camera.
  m = template.mean
  assert np.sqrt(np.mean(np.sum(m**2, -1))) == pytest.approx(1.0, abs=0.02)
  assert m[33, 0] < 0 < m[263, 0] and m[159, 1] < m[13, 1]
  assert abs(m[33, 1] - m[263, 1]) < 0.02 and m[1, 2] < m[33, 2]
  # Left/right keypoints mirror each other about x = 0.
  names = dict(ht.KEYPOINT_NAMES)
  for name, i in ht.KEYPOINT_NAMES:
    if name.startswith("left_") or "_left" in name:
      j = names[name.replace("left", "right")]
      assert np.abs(m[i] * [-1, 1, 1] - m[j]).max() < 0.05, name
  arrays = ht.load_head_template_arrays()
  assert not set(arrays["heldout_clips"]) & set(arrays["clips"])
  assert HELD_OUT_CLIP in set(arrays["heldout_clips"])
  assert arrays["heldout_error_px"].max() < MAX_HELD_OUT_ERROR_PX


def test_asset_file_is_small():
  import importlib.resources

  size = len(importlib.resources.files("chatanyone_jax.template").joinpath(ht.DEFAULT_ASSET).read_bytes())
  assert size < 2 * 1024 * 1024


def test_reconstruction_error_on_held_back_clip(template):
  from data.landmarks import extract_video_landmarks

  path = require(media_dir() / "videos" / HELD_OUT_CLIP, "held-back clip")
  lm = extract_video_landmarks(path, max_frames=30, pose=False, hands=False)
  assert lm.face_valid.all()
  fit = ht.fit_clip(template, lm.face, lm.face_valid)
  pred = ht.project(template, fit.pose, fit.scale, fit.exp, fit.identity)
  err = float(ht.landmark_error(pred, lm.face, lm.face_valid))
  # Rigid mean shape only, as the yardstick the linear bases must beat.
  s, r, t = ht.similarity_procrustes(np.broadcast_to(template.mean, lm.face.shape), lm.face)
  rigid = float(ht.landmark_error(s[:, None, None] * (template.mean @ r) + t[:, None], lm.face))
  assert err < MAX_HELD_OUT_ERROR_PX, err
  assert err < 0.2 * rigid, (err, rigid)
  assert abs(float(np.mean(fit.pose[:, 0]))) < 20  # a talking head facing the camera


def test_mouth_opening_is_the_inner_lip_gap_of_the_canonical_shape(template):
  import jax

  m = template.mean
  assert float(ht.mouth_opening(template, np.zeros(ht.NUM_EXP, np.float32))) == pytest.approx(
      float(np.linalg.norm(m[13] - m[14])), rel=1e-6)  # mesh 13 / 14: upper / lower inner-lip centres
  rng = np.random.default_rng(0)
  beta = rng.normal(size=(2, 3, ht.NUM_EXP)).astype(np.float32)
  alpha = rng.normal(size=(template.num_id,)).astype(np.float32)
  gap = np.asarray(ht.mouth_opening(template, beta, alpha))  # one identity for every frame
  alphas = np.broadcast_to(alpha, (6, alpha.size))
  shape = np.asarray(ht.canonical_shape(template, alphas, beta.reshape(6, -1)))
  assert gap.shape == (2, 3)
  np.testing.assert_allclose(gap.ravel(), np.linalg.norm(shape[:, 13] - shape[:, 14], axis=-1), rtol=1e-5)
  # Expression opens and closes the mouth: along the gap's gradient it grows, against it it shrinks.
  g = np.asarray(jax.grad(lambda b: ht.mouth_opening(template, b))(np.zeros(ht.NUM_EXP, np.float32)))
  base = float(ht.mouth_opening(template, np.zeros(ht.NUM_EXP, np.float32)))
  g = g / np.linalg.norm(g)
  assert float(ht.mouth_opening(template, g)) > base > float(ht.mouth_opening(template, -0.5 * g))
