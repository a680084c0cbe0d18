"""Hands: coefficients (round trip, layout, PCA) and the soft-capsule renderer, synthetic and real."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax.motion.upper_body_motion import HAND_DIM, UpperBodyLayout
from chatanyone_jax.template import hands as hd
from tests.helpers import enable_x64, media_dir, require

REAL_CLIP = "LivePortrait__assets_examples_source_s20.mp4"  # both hands in front of the chest, every frame
REAL_FRAMES = 5
RADIUS_FRACTION = 0.12  # capsule radius / palm size for the real-frame renders (finger-like thickness)
# Measured on the first 5 frames of REAL_CLIP (908 × 480 and 484 × 256), radius 0.12 × palm:
# - fraction of mask pixels (> 0.5) inside the landmark boxes grown by radius + 1 px: 0.997-1.000.
#   Capsules lie within a hand's box + radius by construction; only the soft union of two faint
#   neighbouring edges can push a pixel past 0.5 outside. 0.98 fails for any misalignment of a few px.
# - fraction of each hand's tight landmark box covered by the mask: 0.63-0.81 (a splayed hand drawn as
#   finger-thick bones fills most of its box). 0.5 fails for a box-sized shift or a swapped x / y: the
#   negative control in the test, both hands one box height lower, gives 0.010-0.045 (bound 0.1).
# - IoU of the 256-wide mask with the full-resolution mask resized to 256 wide: 0.949-0.953; 0.9.
MIN_INSIDE, MIN_COVERAGE, MAX_SHIFTED_COVERAGE, MIN_RESIZE_IOU = 0.98, 0.5, 0.1, 0.9


@functools.partial(jax.jit, static_argnames=("height", "width", "sharpness"))
def _render(landmarks, presence, radius, height, width, sharpness=1.0):
  return hd.render_hands(landmarks, presence, height, width, radius_px=radius, sharpness=sharpness,
                         return_mask=True)


_encode = jax.jit(hd.encode_hands, static_argnums=2)
_decode = jax.jit(hd.decode_hands, static_argnums=1)


def _spread_hand(cx: float, cy: float, size: float, z: float = 0.0) -> np.ndarray:
  """(21, 3) an open right-ish hand pointing up: wrist at (cx, cy), MCPs `size` px away, fingers fanned."""
  angles = np.deg2rad([-70.0, -25.0, -8.0, 8.0, 25.0])
  pts = [np.array([cx, cy, z])]
  for f, a in enumerate(angles):
    d = np.array([np.sin(a), -np.cos(a), 0.0])
    base = 0.45 * size if f == 0 else size
    pts += [pts[0] + d * (base + 0.35 * size * j) for j in range(4)]
  return np.stack(pts).astype(np.float32)


def _line_hand(start, end, z: float = 0.0) -> np.ndarray:
  """(21, 3) all 21 landmarks evenly on the segment start -> end in index order (a collapsed hand)."""
  s = np.linspace(0.0, 1.0, hd.NUM_HAND_LANDMARKS)[:, None]
  pts = np.asarray(start, np.float32) + s * (np.asarray(end, np.float32) - np.asarray(start, np.float32))
  return np.concatenate([pts, np.full((hd.NUM_HAND_LANDMARKS, 1), z)], -1).astype(np.float32)


def _segment_distance(h: int, w: int, a, b) -> np.ndarray:
  """(H, W) distance of each pixel centre (integer + 0.5) to the segment a-b."""
  yy, xx = np.mgrid[:h, :w] + 0.5
  p = np.stack([xx, yy], -1)
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  t = np.clip(((p - a) @ (b - a)) / np.dot(b - a, b - a), 0, 1)
  return np.linalg.norm(p - (a + t[..., None] * (b - a)), axis=-1)


def test_layout_matches_upper_body_motion():
  assert hd.HANDS_DIM == HAND_DIM == UpperBodyLayout().sizes["hands"] == 130
  assert len(hd.HAND_BONES) == 23 and {c for _, _, c in hd.HAND_BONES} == set(range(6))
  assert len(np.unique(hd.FINGER_COLORS, axis=0)) == 6


def test_encode_decode_round_trip_and_resolution_invariance():
  rng = np.random.default_rng(0)
  h, w = 300, 200
  lm = rng.uniform([0, 0, -40], [w, h, 40], (6, 2, 21, 3)).astype(np.float32)
  present = rng.random((6, 2)) < 0.6
  present[0] = [True, False]
  present[1] = [False, False]
  coeffs = np.asarray(_encode(lm, present, (h, w)))
  assert coeffs.shape == (6, 130)
  per_hand = coeffs.reshape(6, 2, 65)
  np.testing.assert_array_equal(per_hand[..., 0], present.astype(np.float32))
  assert np.all(per_hand[~present] == 0.0)  # absent hands are all zeros
  assert np.all(np.abs(per_hand[present][:, 1:3]) <= 1.0)  # wrist x, y normalised to [-1, 1]
  lm_back, present_back = _decode(coeffs, (h, w))
  np.testing.assert_array_equal(np.asarray(present_back), present)
  np.testing.assert_allclose(np.asarray(lm_back)[present], lm[present], atol=2e-3)
  assert np.all(np.asarray(lm_back)[~present] == 0.0)

  # The same hands in the frame resized uniformly to (150, 100) give the same coefficients.
  small = np.asarray(hd.scale_landmarks(lm, (h, w), (150, 100)))
  np.testing.assert_allclose(np.asarray(_encode(small, present, (150, 100))), coeffs, atol=1e-5)
  # Decoding at another size gives the landmarks of the resized frame.
  np.testing.assert_allclose(np.asarray(_decode(coeffs, (150, 100))[0])[present], small[present], atol=2e-3)

  # Scaling a hand about its wrist doubles only its scale coefficient.
  big = lm.copy()
  big[0, 0] = lm[0, 0, :1] + 2.0 * (lm[0, 0] - lm[0, 0, :1])
  c2 = np.asarray(_encode(big, present, (h, w))).reshape(6, 2, 65)
  np.testing.assert_allclose(c2[0, 0, 4], 2 * per_hand[0, 0, 4], rtol=1e-5)
  np.testing.assert_allclose(c2[0, 0, 5:], per_hand[0, 0, 5:], atol=1e-5)


def test_hand_pca():
  rng = np.random.default_rng(1)
  mean = rng.normal(size=60)
  basis = np.linalg.qr(rng.normal(size=(60, 6)))[0].T  # (6, 60) orthonormal rows
  joints = (mean + rng.normal(size=(200, 6)) * [5, 4, 3, 2, 1, 0.5] @ basis).astype(np.float32)
  m, b = hd.fit_hand_pca(joints, 6)
  assert m.shape == (60,) and b.shape == (6, 60)
  np.testing.assert_allclose(b @ b.T, np.eye(6), atol=1e-5)
  np.testing.assert_allclose(basis @ b.T @ b, basis, atol=1e-4)  # the same subspace

  coeffs = np.zeros((200, 2, 65), np.float32)
  coeffs[:, 0, 0], coeffs[:, 0, 1:5] = 1.0, rng.normal(size=(200, 4))
  coeffs[:, 0, 5:] = joints  # left present, right absent
  coeffs = coeffs.reshape(200, 130)
  pca = np.asarray(hd.hands_to_pca(coeffs, m, b))
  assert pca.shape == (200, 2 * (5 + 6))
  assert np.all(pca.reshape(200, 2, 11)[:, 1] == 0.0)  # absent stays zero
  np.testing.assert_allclose(np.asarray(hd.hands_from_pca(pca, m, b)), coeffs, atol=1e-4)
  with pytest.raises(ValueError):
    hd.fit_hand_pca(joints, 61)


def test_absent_hands_draw_nothing():
  lm = np.stack([_spread_hand(32, 56, 20), _spread_hand(20, 40, 15)])[None]  # (1, 2, 21, 3)
  img, mask = _render(lm, np.zeros((1, 2), bool), 3.0, height=64, width=48)
  assert img.shape == (1, 64, 48, 3) and mask.shape == (1, 64, 48, 1)
  assert np.all(np.asarray(img) == 0.0) and np.all(np.asarray(mask) == 0.0)
  # One present hand: only its pixels light up (the absent one's wrist area stays dark).
  _, mask1 = _render(lm, np.array([[True, False]]), 3.0, height=64, width=48)
  _, mask_left = _render(lm[:, :1].repeat(2, 1), np.array([[True, False]]), 3.0, height=64, width=48)
  np.testing.assert_array_equal(np.asarray(mask1), np.asarray(mask_left))
  assert float(np.asarray(mask1).max()) > 0.9


def test_straight_finger_is_a_capsule_and_bounded():
  h, w, radius, sharp = 40, 64, 4.0, 2.0
  a, b = (10.0, 12.0), (50.0, 30.0)
  lm = np.stack([_line_hand(a, b), np.zeros((21, 3), np.float32)])[None]
  img, mask = _render(lm, np.array([[True, False]]), radius, height=h, width=w, sharpness=sharp)
  mask = np.asarray(mask)[0, ..., 0]
  dist = _segment_distance(h, w, a, b)
  inner, outer = dist < radius - 2.0, dist > radius + 3.0
  assert inner.sum() > 150 and mask[inner].min() > 0.9  # covers the segment (and its round caps)
  assert mask[outer].max() < 0.05  # nothing away from it
  assert mask[dist > 2 * radius + 5].max() < 1e-4
  # Monotone falloff with distance (a capsule, not a box): compare distance bands.
  bands = [mask[(dist >= r) & (dist < r + 1)].mean() for r in range(0, 9)]
  assert all(x >= y for x, y in zip(bands, bands[1:], strict=False))
  # Dozens of bones on top of each other stay in [0, 1].
  img = np.asarray(img)
  assert img.min() >= 0.0 and img.max() <= 1.0 and mask.max() <= 1.0


def test_pixel_alignment_centres_at_half_integers():
  # Non-square frame: a bone along y = 10.5 lights row 10; one along x = 20.5 lights column 20.
  h, w = 24, 40
  lm = np.stack([_line_hand((5.0, 10.5), (35.0, 10.5)), _line_hand((20.5, 14.0), (20.5, 23.0))])[None]
  _, mask = _render(lm, np.ones((1, 2), bool), 0.5, height=h, width=w, sharpness=4.0)
  mask = np.asarray(mask)[0, ..., 0]
  col = mask[:12, 12]  # left hand's bone, away from the other one
  assert int(np.argmax(col)) == 10
  np.testing.assert_allclose(col[9], col[11], atol=1e-6)  # symmetric about the pixel centre 10.5
  assert col[10] > 0.9 and col[10] - col[9] > 0.3
  row = mask[20, :]
  assert int(np.argmax(row)) == 20
  np.testing.assert_allclose(row[19], row[21], atol=1e-6)
  # A resize by 2 maps the bone exactly: y = 21 sits between rows 20 and 21 of the doubled frame.
  lm2 = np.asarray(hd.scale_landmarks(lm, (h, w), (2 * h, 2 * w)))
  _, mask2 = _render(lm2, np.ones((1, 2), bool), 1.0, height=2 * h, width=2 * w, sharpness=2.0)
  col2 = np.asarray(mask2)[0, :24, 24, 0]
  np.testing.assert_allclose(col2[20], col2[21], atol=1e-6)
  assert set(np.argsort(col2)[-2:]) == {20, 21}


def test_finger_colours_and_depth_order():
  h, w = 96, 96
  hand = _spread_hand(48, 88, 36)
  lm = np.stack([hand, hand])[None, :, :, :2]  # 2-D input
  img = np.asarray(_render(lm, np.array([[True, False]]), 3.0, height=h, width=w, sharpness=4.0)[0])[0]
  for f in range(5):  # the middle of each finger's PIP -> DIP bone has the finger's colour
    x, y = (hand[4 * f + 2, :2] + hand[4 * f + 3, :2]) / 2
    np.testing.assert_allclose(img[int(y), int(x)], hd.FINGER_COLORS[f], atol=0.05,
                               err_msg=hd.FINGER_NAMES[f])
  x, y = (hand[9, :2] + hand[13, :2]) / 2
  np.testing.assert_allclose(img[int(y), int(x)], hd.FINGER_COLORS[5], atol=0.05)

  # Two collapsed hands crossing at (24.5, 16.5): the nearer one's colour wins there.
  a = _line_hand((4.5, 16.5), (25.5, 16.5))  # its tip (pinky bones only) at the crossing
  b = _line_hand((24.5, 15.5), (24.5, 36.5))  # its wrist (all fingers mixed) at the crossing
  alone_a = np.asarray(_render(np.stack([a, a])[None], np.array([[1.0, 0.0]]), 2.0, height=40, width=40)[0])
  alone_b = np.asarray(_render(np.stack([b, b])[None], np.array([[1.0, 0.0]]), 2.0, height=40, width=40)[0])
  ca, cb = alone_a[0, 16, 24], alone_b[0, 16, 24]
  assert np.abs(ca - cb).max() > 0.2  # the test can tell them apart
  for za, zb, want in ((-30.0, 30.0, ca), (30.0, -30.0, cb)):
    both = np.stack([a + [0, 0, za], b + [0, 0, zb]])[None]
    img = np.asarray(_render(both, np.ones((1, 2)), 2.0, height=40, width=40)[0])
    np.testing.assert_allclose(img[0, 16, 24], want, atol=0.02)


def test_gradients_finite_nonzero_and_match_finite_differences():
  h, w = 48, 40
  lm = np.stack([_spread_hand(20, 44, 16), _spread_hand(20, 30, 10)])[None]
  presence = np.array([[1.0, 0.0]], np.float32)
  ramp = (np.arange(w, dtype=np.float32) / w)[None, :, None] * np.linspace(0.5, 1.5, h)[:, None, None]

  def loss(x, sharpness=1.0):
    img, mask = hd.render_hands(x, presence, h, w, radius_px=2.0, sharpness=sharpness, return_mask=True)
    return jnp.sum(mask[0] * ramp) + jnp.sum(img[0] ** 2 * ramp)

  for sharpness in (1.0, 30.0):  # soft and nearly hard edges
    g = np.asarray(jax.jit(jax.grad(functools.partial(loss, sharpness=sharpness)))(jnp.asarray(lm)))
    assert np.all(np.isfinite(g))
    assert np.all(g[0, 1] == 0.0)  # the absent hand gets no gradient
  g = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(lm)))
  assert np.all(np.abs(g[0, 0, :, :2]).sum(-1) > 1e-4)  # every landmark of the present hand moves it

  with enable_x64():  # float64 all the way (the renderer keeps the landmarks' precision)
    x64 = jnp.asarray(lm, jnp.float64)
    g64 = np.asarray(jax.jit(jax.grad(loss))(x64))
    loss64 = jax.jit(loss)
    eps = 1e-4
    for j, c in ((8, 0), (8, 1), (0, 0), (12, 1)):  # index tip x / y, wrist x, middle tip y
      e = np.zeros(lm.shape)
      e[0, 0, j, c] = eps
      fd = (float(loss64(x64 + e)) - float(loss64(x64 - e))) / (2 * eps)
      np.testing.assert_allclose(g64[0, 0, j, c], fd, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def real_hands():
  from data.landmarks import extract_video_landmarks

  path = require(media_dir() / "videos" / REAL_CLIP, "shared media clip")
  lm = extract_video_landmarks(path, max_frames=REAL_FRAMES, pose=False)
  assert lm.hand_present.all(), "the clip shows both hands in every frame"
  return lm.hands, lm.hand_present, lm.image_size


def _box_metrics(landmarks: np.ndarray, mask: np.ndarray,
                 radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(T, 2, 21, 3), (T, H, W) -> fraction of mask > 0.5 inside the grown boxes (T,), box coverage (T, 2)."""
  t, h, w = mask.shape
  yy, xx = np.mgrid[:h, :w] + 0.5
  inside, coverage = np.zeros(t), np.zeros((t, 2))
  for i in range(t):
    on, grown = mask[i] > 0.5, np.zeros((h, w), bool)
    for k in range(2):
      (x0, y0), (x1, y1) = landmarks[i, k, :, :2].min(0), landmarks[i, k, :, :2].max(0)
      box = (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)
      m = radius[i, k] + 1.0
      grown |= (xx >= x0 - m) & (xx <= x1 + m) & (yy >= y0 - m) & (yy <= y1 + m)
      coverage[i, k] = (on & box).sum() / box.sum()
    inside[i] = on[grown].sum() / on.sum()
  return inside, coverage


def test_real_frames_mask_matches_detected_hands(real_hands):
  lm, present, (h, w) = real_hands
  radius = RADIUS_FRACTION * np.asarray(hd.palm_size(lm))  # (T, 2)
  coeffs = _encode(lm, present, (h, w))
  dec, dec_present = _decode(coeffs, (h, w))
  np.testing.assert_allclose(np.asarray(dec), lm, atol=1e-2)
  assert np.asarray(dec_present).all()

  _, mask = _render(lm, present, radius, height=h, width=w)
  mask = np.asarray(mask)[..., 0]
  inside, coverage = _box_metrics(lm, mask, radius)
  assert inside.min() >= MIN_INSIDE, inside
  assert coverage.min() >= MIN_COVERAGE, coverage

  # 256 wide: the coefficients decoded at the smaller size give the resized frame's hands.
  hs, ws = round(h * 256 / w), 256
  small, _ = _decode(coeffs, (hs, ws))
  small = np.asarray(small)
  # 908 × 256 / 480 is not an integer: 484 rows make y 0.05 % smaller than x, which the isotropic joints
  # (scaled by width) do not follow; that is < 0.05 px here.
  np.testing.assert_allclose(small, np.asarray(hd.scale_landmarks(lm, (h, w), (hs, ws))), atol=0.05)
  radius_s = radius * ws / w
  _, mask_s = _render(small, present, radius_s, height=hs, width=ws)
  mask_s = np.asarray(mask_s)[..., 0]
  inside_s, coverage_s = _box_metrics(small, mask_s, radius_s)
  assert inside_s.min() >= MIN_INSIDE, inside_s
  assert coverage_s.min() >= MIN_COVERAGE, coverage_s
  resized = np.asarray(jax.image.resize(jnp.asarray(mask), (len(mask), hs, ws), "linear", antialias=True))
  a, b = resized > 0.5, mask_s > 0.5
  iou = (a & b).sum((1, 2)) / (a | b).sum((1, 2))
  assert iou.min() >= MIN_RESIZE_IOU, iou

  # Negative control: hands drawn one box height lower miss the detected boxes.
  shift = 1.0 * (small[..., 1].max(-1) - small[..., 1].min(-1))  # (T, 2)
  shifted = small + np.stack([np.zeros_like(shift), shift, np.zeros_like(shift)], -1)[:, :, None]
  _, mask_x = _render(shifted, present, radius_s, height=hs, width=ws)
  _, coverage_x = _box_metrics(small, np.asarray(mask_x)[..., 0], radius_s)
  assert coverage_x.max() < MAX_SHIFTED_COVERAGE, coverage_x
