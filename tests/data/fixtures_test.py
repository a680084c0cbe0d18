"""The synthetic records of `tests.fixtures` load like real ones (no MediaPipe: a second or two)."""

from __future__ import annotations

import numpy as np
import pytest

from data import pipelines, records
from data.encoding import decode_image
from tests import fixtures

BODY, HEAD = (192, 128), 128
LENGTHS = (40, 36)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
  out = tmp_path_factory.mktemp("synthetic")
  meta = fixtures.write_records(out, num_clips=2, num_frames=LENGTHS, body_size=BODY, head_size=HEAD)
  return out, meta


def test_meta_and_record_layout(synthetic):
  out, meta = synthetic
  assert meta["splits"] == {"clips": {"train": 2}, "frames": {"train": sum(LENGTHS)}}
  assert meta["clip_frames"] == {"train": list(LENGTHS)}
  assert meta["body_size"] == list(BODY) and meta["head_size"] == HEAD
  clips, frames = records.data_source(out, "clips"), records.data_source(out, "frames")
  offset = 0
  for c, n in enumerate(LENGTHS):
    clip = clips[c]
    assert int(clip["num_frames"]) == n and int(clip["frame_offset"]) == offset
    assert clip["exp"].shape == (n, 52) and clip["pose"].shape == (n, 6) and clip["scale"].shape == (n,)
    assert clip["head_kp"].shape == (n, 32, 3) and clip["body_kp"].shape == (n, 21, 3)
    assert clip["hand_coeffs"].shape == (n, 130) and clip["hand_present"].shape == (n, 2)
    assert clip["audio"].dtype == np.int16 and clip["audio"].shape == (round(n * 16000 / 30),)
    assert np.abs(clip["audio"]).max() > 1000
    last = frames[offset + n - 1]
    assert last["clip_index"] == c and last["frame_index"] == n - 1
    np.testing.assert_array_equal(last["exp"], clip["exp"][-1])
    # One hand in the second half of the clip, encoded with its landmarks.
    np.testing.assert_array_equal(clip["hand_present"][:, 1], np.arange(n) >= n // 2)
    assert not clip["hand_present"][:, 0].any()
    np.testing.assert_array_equal(clip["hand_coeffs"][:, 65], clip["hand_present"][:, 1])
    offset += n
  rec = frames[LENGTHS[0] - 1]
  assert decode_image(rec["body_jpeg"]).shape == BODY + (3,)
  assert decode_image(rec["head_jpeg"]).shape == (HEAD, HEAD, 3)
  masks = decode_image(rec["mask_png"])
  assert masks.shape == BODY + (3,)
  # Head keypoints lie on the face (inside the face points' box in the body crop), the face mask covers
  # the face points and the hand mask the hand.
  face = rec["face"][:, :2]
  kp = (rec["head_kp"][:, :2] + 1) / 2 * np.array([BODY[1], BODY[0]])
  assert np.all(kp >= face.min(0) - 1) and np.all(kp <= face.max(0) + 1)
  x, y = np.round(face.mean(0)).astype(int)
  assert masks[y, x, 0] == 255 and masks[y, x, 2] == 255
  hand = rec["hands"][1][:, :2]
  inside = (masks[..., 1] > 127).sum()
  x0, y0 = np.floor(hand.min(0) - 3).astype(int)
  x1, y1 = np.ceil(hand.max(0) + 3).astype(int)
  assert inside > 10 and (masks[y0:y1, x0:x1, 1] > 127).sum() == inside


def test_pipelines_on_synthetic_records(synthetic):
  out, _ = synthetic
  batch = next(iter(pipelines.render_pairs(out, batch_size=4, seed=0)))
  hi, wi = BODY[0] // 2, BODY[1] // 2
  expect = {"source": (4, hi, wi, 3), "driving": (4, hi, wi, 3), "driving_target": (4,) + BODY + (3,),
            "hand_image": (4, hi, wi, 3), "kp_head_source": (4, 32, 3), "kp_head_driving": (4, 32, 3),
            "body_kp_source": (4, 21, 3), "body_kp_driving": (4, 21, 3), "face_mask": (4,) + BODY + (1,),
            "hand_mask": (4,) + BODY + (1,), "person_mask": (4,) + BODY + (1,), "hand_present": (4, 2)}
  for k, shape in expect.items():
    assert batch[k].shape == shape, k
  assert np.abs(batch["kp_head_driving"][..., :2]).max() < 1.0
  assert batch["person_mask"].mean() > 0.2 and batch["face_mask"].mean() > 0.01

  cfg = pipelines.RenderPairConfig(crop="head", input_size=(64, 64), max_gap=5)
  head = next(iter(pipelines.render_pairs(out, batch_size=2, seed=0, config=cfg)))
  assert head["source"].shape == (2, 64, 64, 3) and head["driving_target"].shape == (2, HEAD, HEAD, 3)
  assert head["face_mask"].shape == (2, HEAD, HEAD, 1) and 0.1 < head["face_mask"].mean() < 0.7

  cfg = pipelines.MotionWindowConfig(window=20, history=5, stride=5)
  win = next(iter(pipelines.motion_windows(out, batch_size=3, seed=0, config=cfg)))
  n = 25
  assert win["motion"].shape == (3, n, 58) and win["exp"].shape == (3, n, 52)
  assert win["head_kp"].shape == (3, n, 32, 3) and win["body_kp"].shape == (3, n, 21, 3)
  assert win["hand_coeffs"].shape == (3, n, 130) and win["hand_present"].shape == (3, n, 2)
  assert win["audio"].shape == (3, round(n * 16000 / 30)) and win["ref_motion"].shape == (3, 20, 58)
  assert win["identity"].shape == (3, 8)


def test_validation_split_and_seed(tmp_path):
  kw = dict(num_clips=6, num_frames=8, val_fraction=0.5, hands=False)
  meta = fixtures.write_records(tmp_path / "a", **kw)
  val = sum(records.is_validation(f"synthetic_{c:03d}", 0.5) for c in range(6))
  assert 0 < val < 6  # both splits are exercised
  assert meta["splits"]["clips"] == {"train": 6 - val, "validation": val}
  fixtures.write_records(tmp_path / "b", **kw)
  a, b = records.data_source(tmp_path / "a", "clips"), records.data_source(tmp_path / "b", "clips")
  np.testing.assert_array_equal(a[0]["exp"], b[0]["exp"])
  assert not a[0]["hand_present"].any()
