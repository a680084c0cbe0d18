"""MediaPipe landmark extraction on real clips (a few frames each)."""

from __future__ import annotations

import numpy as np
import pytest

from data import landmarks as lmk
from data.media import read_image
from infer.media import write_video
from tests.helpers import media_dir, require

NUM_FRAMES = 12


def _video(name: str):
  return require(media_dir() / "videos" / name, f"shared clip {name}")


@pytest.fixture(scope="module")
def talking_head() -> lmk.ClipLandmarks:
  return lmk.extract_video_landmarks(_video("LivePortrait__assets_examples_driving_d0.mp4"),
                                     max_frames=NUM_FRAMES)


def test_talking_head_shapes_and_validity(talking_head):
  lm = talking_head
  t = NUM_FRAMES
  h, w = lm.image_size
  assert (h, w) == (512, 512) and lm.fps == pytest.approx(25.0)
  assert lm.face.shape == (t, 478, 3) and lm.face.dtype == np.float32
  assert lm.face_valid.shape == (t,) and lm.face_valid.dtype == bool
  assert lm.pose.shape == (t, 33, 4) and lm.hands.shape == (t, 2, 21, 3)
  assert lm.hand_present.shape == (t, 2) and lm.hand_score.shape == (t, 2)
  assert lm.segmentation is None
  assert lm.face_valid.all() and lm.num_dropped == 0
  # Pixel coordinates inside the frame; the person's right eye (33) is on the image's left.
  assert (lm.face[..., 0] > 0).all() and (lm.face[..., 0] < w).all()
  assert (lm.face[..., 1] > 0).all() and (lm.face[..., 1] < h).all()
  assert (lm.face[:, 33, 0] < lm.face[:, 263, 0]).all()
  size = lm.face_box[:, 2:] - lm.face_box[:, :2]
  assert (size > 100).all() and (size < 400).all()
  # A talking head barely moves between consecutive frames.
  assert np.abs(np.diff(lm.face[..., :2], axis=0)).mean() < 5.0
  # Pose of the same person: its nose lies on the tracked face; visibility is a probability.
  assert lm.pose_valid.all()
  nose = lm.pose[:, 0, :2]
  assert ((nose > lm.face_box[:, :2]) & (nose < lm.face_box[:, 2:])).all()
  assert ((lm.pose[..., 3] >= 0) & (lm.pose[..., 3] <= 1)).all()
  arrays = lmk.to_arrays(lm)
  assert arrays["num_dropped"] == 0 and "segmentation" not in arrays


def test_hands_detected_and_sorted_left_right():
  lm = lmk.extract_video_landmarks(_video("LivePortrait__assets_examples_source_s20.mp4"),
                                   max_frames=NUM_FRAMES, pose=False)
  assert lm.hand_present.any()
  both = lm.hand_present.all(1)
  assert both.any()
  # Non-mirrored video: the person's left hand (slot 0) is right of their right hand in the image.
  left, right = lm.hands[both, lmk.LEFT, 0, 0], lm.hands[both, lmk.RIGHT, 0, 0]
  assert (left > right).all()
  assert (lm.hand_score[lm.hand_present] > 0.5).all()
  assert (lm.hands[~lm.hand_present] == 0).all()


def test_segmentation_flag():
  frames = read_image(require(media_dir() / "portraits" / "AniTalker__test_demos_portraits_sad.jpg",
                               "portrait"))[None].repeat(2, 0)
  lm = lmk.extract_landmarks(frames, pose=False, hands=False, segmentation=True)
  assert lm.segmentation.shape == frames.shape[:3] and lm.segmentation.dtype == np.uint8
  # The person covers the face box; the top-left corner is background.
  x0, y0, x1, y1 = lm.face_box[0].astype(int)
  assert lm.segmentation[0, y0:y1, x0:x1].mean() > 200


def _two_person_sequence(image: np.ndarray, n: int = 8, width: int = 1300) -> tuple[np.ndarray, np.ndarray]:
  """Crops that slide right across the portrait, so the central face changes over the sequence."""
  offsets = np.linspace(0, image.shape[1] - width, n).astype(int)
  return np.stack([image[:, o:o + width] for o in offsets]), offsets


def test_two_people_keep_one_identity():
  image = read_image(require(media_dir() / "portraits" / "3DDFA_V2__examples_inputs_trump_hillary.jpg",
                              "two-person portrait"))
  frames, offsets = _two_person_sequence(image)
  with lmk.mediapipe_graphs(pose=False, hands=False) as graphs:
    found = graphs["face"].process(np.ascontiguousarray(frames[-1])).multi_face_landmarks
  assert len(found) == 2  # both people are visible, so identity can switch
  forward = lmk.extract_landmarks(frames, pose=False, hands=False)
  backward = lmk.extract_landmarks(frames[::-1].copy(), pose=False, hands=False)
  assert forward.face_valid.all() and backward.face_valid.all()
  # Face centres in the original image's coordinates: constant along each sequence.
  fwd = (forward.face_box[:, 0] + forward.face_box[:, 2]) / 2 + offsets
  bwd = (backward.face_box[:, 0] + backward.face_box[:, 2]) / 2 + offsets[::-1]
  assert np.ptp(fwd) < 20 and np.ptp(bwd) < 20
  # The first frame decides: forward starts on the left person, backward on the right one.
  assert bwd[0] - fwd[0] > 500


def test_tracking_helpers():
  a = np.array([0, 0, 100, 100], np.float32)
  assert lmk.box_iou(a, a) == pytest.approx(1.0)
  assert lmk.box_iou(a, a + 200) == 0.0
  boxes = [np.array([400, 10, 500, 110], np.float32), np.array([5, 5, 95, 95], np.float32)]
  assert lmk.match_face(boxes, a) == 1
  assert lmk.match_face([boxes[0]], a) is None  # only someone else in view: drop the frame
  # Largest, most central first: a big central face beats a small corner one.
  big = np.array([300, 200, 700, 600], np.float32)
  assert lmk.select_initial_face([a, big], (800, 1000)) == 1


def test_unreadable_video_raises(tmp_path):
  bad = tmp_path / "corrupt.mp4"
  bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
  with pytest.raises(lmk.LandmarkError, match="cannot read video") as info:
    lmk.extract_video_landmarks(bad, max_frames=4)
  assert isinstance(info.value, ValueError)
  with pytest.raises(ValueError, match="not found"):
    lmk.extract_video_landmarks(tmp_path / "missing.mp4")


def test_clip_without_face_raises(tmp_path):
  path = tmp_path / "noface.mp4"
  rng = np.random.default_rng(0)
  write_video(path, (rng.integers(90, 110, (64, 64, 3), dtype=np.uint8) for _ in range(4)), fps=25)
  with pytest.raises(lmk.LandmarkError, match="no face"):
    lmk.extract_video_landmarks(path, hands=False, pose=False)
