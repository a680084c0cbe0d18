"""Per-frame MediaPipe landmarks of a clip: face mesh (+ iris), body pose, hands, segmentation.

All graphs run in tracking (video) mode. Coordinates are pixels of the input frame, with z in the same
pixel scale as x (MediaPipe's z is normalised by the image width), so the points form a roughly metric
3-D shape that the head template (`chatanyone_jax.template`) can align. One identity per clip: the
largest, most central face of the first frame with faces, then on every frame the candidate that
overlaps the previous box best (`select_initial_face`, `match_face`); frames without it are dropped
(`face_valid` false) and counted, and poses / hands far from that person are discarded.

Example:
  lm = extract_video_landmarks("clip.mp4", max_frames=300)
  lm.face        # (T, 478, 3) float32 pixels
  lm.hands[:, 0]  # (T, 21, 3) the person's left hand, lm.hand_present[:, 0] says where it is valid
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator

import numpy as np

from data.media import MediaError, read_video

log = logging.getLogger(__name__)

NUM_FACE_POINTS = 478  # 468 mesh points + 2 x 5 iris points (refine_landmarks=True)
NUM_POSE_POINTS = 33
NUM_HAND_POINTS = 21
LEFT, RIGHT = 0, 1  # hand slots: the person's own left / right hand


class LandmarkError(MediaError):
  """A clip cannot be turned into landmarks (unreadable, or no face at all); the message says why."""


@dataclasses.dataclass
class ClipLandmarks:
  """Landmarks of one clip, all NumPy, one row per input frame.

  Attributes:
    face: (T, 478, 3) float32 face-mesh points of the tracked person (x, y, z pixels); zeros where invalid.
    face_valid: (T,) bool, false on dropped frames (tracked face not found).
    face_box: (T, 4) float32 [x0, y0, x1, y1] pixel box of the tracked face's points (zeros if invalid).
    pose: (T, 33, 4) float32 body landmarks (x, y, z pixels, visibility in [0, 1]); zeros where invalid.
    pose_valid: (T,) bool, a pose of the tracked person was found.
    hands: (T, 2, 21, 3) float32 hand landmarks, slot 0 = the person's left hand, 1 = right.
    hand_present: (T, 2) bool.
    hand_score: (T, 2) float32 handedness confidence (0 where absent).
    segmentation: (T, H, W) uint8 person mask (0..255), or None unless requested.
    image_size: (H, W) of the frames.
    fps: frame rate of the clip (0 if unknown).
    num_dropped: number of frames without the tracked face.
  """

  face: np.ndarray
  face_valid: np.ndarray
  face_box: np.ndarray
  pose: np.ndarray
  pose_valid: np.ndarray
  hands: np.ndarray
  hand_present: np.ndarray
  hand_score: np.ndarray
  segmentation: np.ndarray | None
  image_size: tuple[int, int]
  fps: float
  num_dropped: int

  @property
  def num_frames(self) -> int:
    return int(self.face_valid.shape[0])


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
  """IoU of two [x0, y0, x1, y1] boxes."""
  iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = iw * ih
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return float(inter / union) if union > 0 else 0.0


def _box_size(box: np.ndarray) -> float:
  return float(np.sqrt(max(box[2] - box[0], 1e-6) * max(box[3] - box[1], 1e-6)))


def _centre(box: np.ndarray) -> np.ndarray:
  return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def points_box(points: np.ndarray) -> np.ndarray:
  """(N, >=2) points -> [x0, y0, x1, y1] float32."""
  return np.array([*points[:, :2].min(0), *points[:, :2].max(0)], np.float32)


def select_initial_face(boxes: list[np.ndarray], image_size: tuple[int, int]) -> int:
  """Index of the largest, most central face: size / (1 + centre distance / image diagonal * 2)."""
  h, w = image_size
  diag = float(np.hypot(h, w))
  scores = []
  for box in boxes:
    dist = float(np.linalg.norm(_centre(box) - np.array([w / 2, h / 2])))
    scores.append(_box_size(box) / (1.0 + 2.0 * dist / diag))
  return int(np.argmax(scores))


def match_face(boxes: list[np.ndarray], previous: np.ndarray, max_centre_dist: float = 0.5) -> int | None:
  """Index of the candidate that continues `previous` (best IoU, else nearest centre), or None.

  A candidate whose centre is further than `max_centre_dist` box sizes from the
  previous centre and does not overlap it is another person: the frame is then dropped.
  """
  size = _box_size(previous)
  best, best_key = None, None
  for i, box in enumerate(boxes):
    iou = box_iou(box, previous)
    dist = float(np.linalg.norm(_centre(box) - _centre(previous))) / size
    if iou <= 0.0 and dist > max_centre_dist:
      continue
    key = (iou, -dist)
    if best_key is None or key > best_key:
      best, best_key = i, key
  return best


def _to_pixels(landmarks, w: int, h: int, visibility: bool = False) -> np.ndarray:
  if visibility:
    return np.array([(p.x * w, p.y * h, p.z * w, p.visibility) for p in landmarks], np.float32)
  return np.array([(p.x * w, p.y * h, p.z * w) for p in landmarks], np.float32)


@contextlib.contextmanager
def mediapipe_graphs(*, max_num_faces: int = 4, pose: bool = True, hands: bool = True,
                     segmentation: bool = False, min_confidence: float = 0.5) -> Iterator[dict]:
  """Opens the MediaPipe graphs in tracking mode and closes them on exit.

  Yields a dict name -> solution object ("face", and "pose", "hands", "segmentation" when asked).
  """
  os.environ.setdefault("GLOG_minloglevel", "2")  # quieter C++ logging: must be set before the import
  # mediapipe is imported here, not at module level: its import is slow and the env var above must
  # come first; readers of landmark files (records, tests) never need it.
  from mediapipe.python.solutions import face_mesh as mp_face
  from mediapipe.python.solutions import hands as mp_hands
  from mediapipe.python.solutions import pose as mp_pose
  from mediapipe.python.solutions import selfie_segmentation as mp_seg

  with contextlib.ExitStack() as stack:
    graphs = {"face": stack.enter_context(mp_face.FaceMesh(
        static_image_mode=False, max_num_faces=max_num_faces, refine_landmarks=True,
        min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence))}
    if pose:
      graphs["pose"] = stack.enter_context(mp_pose.Pose(
          static_image_mode=False, model_complexity=1, enable_segmentation=False,
          min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence))
    if hands:
      graphs["hands"] = stack.enter_context(mp_hands.Hands(
          static_image_mode=False, max_num_hands=2, model_complexity=1,
          min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence))
    if segmentation:
      graphs["segmentation"] = stack.enter_context(mp_seg.SelfieSegmentation(model_selection=1))
    yield graphs


def _assign_hands(results, w: int, h: int, face_box: np.ndarray | None, max_wrist_dist: float,
                  mirrored: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Sorts MediaPipe's hands into [left, right] slots of the tracked person.

  MediaPipe labels handedness as if the image were mirrored (selfie camera);
  for ordinary (non-mirrored) video its "Left" is the person's right hand.
  """
  out = np.zeros((2, NUM_HAND_POINTS, 3), np.float32)
  present = np.zeros((2,), bool)
  score = np.zeros((2,), np.float32)
  if not results.multi_hand_landmarks:
    return out, present, score
  cands = []
  for lms, handed in zip(results.multi_hand_landmarks, results.multi_handedness, strict=True):
    pts = _to_pixels(lms.landmark, w, h)
    if face_box is not None:
      dist = float(np.linalg.norm(pts[0, :2] - _centre(face_box))) / _box_size(face_box)
      if dist > max_wrist_dist:  # a hand of someone else
        continue
    cls = handed.classification[0]
    is_left = (cls.label == "Left") == mirrored
    cands.append((LEFT if is_left else RIGHT, float(cls.score), pts))
  if len(cands) == 2 and cands[0][0] == cands[1][0]:
    # Both got the same label: the hand further to the image left is the person's right (non-mirrored).
    order = sorted(cands, key=lambda c: c[2][0, 0])
    first, second = (RIGHT, LEFT) if not mirrored else (LEFT, RIGHT)
    cands = [(first, order[0][1], order[0][2]), (second, order[1][1], order[1][2])]
  for slot, s, pts in cands:
    if not present[slot] or s > score[slot]:
      out[slot], present[slot], score[slot] = pts, True, s
  return out, present, score


def extract_landmarks(frames: np.ndarray, *, fps: float = 0.0, pose: bool = True, hands: bool = True,
                      segmentation: bool = False, max_num_faces: int = 4, mirrored: bool = False,
                      max_hand_distance: float = 8.0, min_confidence: float = 0.5,
                      name: str = "clip") -> ClipLandmarks:
  """Runs the MediaPipe graphs over consecutive frames of one clip.

  Args:
    frames: (T, H, W, 3) uint8 RGB, consecutive frames of one clip.
    fps: frame rate, stored as is.
    pose, hands, segmentation: which extra graphs to run (segmentation is the costly one).
    max_num_faces: faces the mesh looks for per frame; >1 so the tracked identity can be told apart.
    mirrored: the video is mirrored (selfie); decides how handedness labels map to left/right.
    max_hand_distance: hands whose wrist is further than this many face sizes from the tracked face
      belong to someone else and are dropped.
    name: used in messages.

  Raises:
    LandmarkError: if no frame has a face.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise LandmarkError(f"{name}: expected (T, H, W, 3) uint8 RGB frames, got {frames.dtype} "
                        f"{frames.shape}")
  t, h, w, _ = frames.shape
  face = np.zeros((t, NUM_FACE_POINTS, 3), np.float32)
  face_valid = np.zeros((t,), bool)
  face_box = np.zeros((t, 4), np.float32)
  pose_arr = np.zeros((t, NUM_POSE_POINTS, 4), np.float32)
  pose_valid = np.zeros((t,), bool)
  hand_arr = np.zeros((t, 2, NUM_HAND_POINTS, 3), np.float32)
  hand_present = np.zeros((t, 2), bool)
  hand_score = np.zeros((t, 2), np.float32)
  seg = np.zeros((t, h, w), np.uint8) if segmentation else None

  tracked: np.ndarray | None = None  # last box of the tracked face
  with mediapipe_graphs(max_num_faces=max_num_faces, pose=pose, hands=hands, segmentation=segmentation,
                        min_confidence=min_confidence) as graphs:
    for i in range(t):
      image = np.ascontiguousarray(frames[i])
      res = graphs["face"].process(image)
      cands = [_to_pixels(f.landmark, w, h) for f in (res.multi_face_landmarks or [])]
      boxes = [points_box(c) for c in cands]
      k = None
      if cands:
        k = select_initial_face(boxes, (h, w)) if tracked is None else match_face(boxes, tracked)
      if k is not None:
        face[i], face_valid[i], face_box[i] = cands[k], True, boxes[k]
        tracked = boxes[k]
      ref_box = face_box[i] if face_valid[i] else tracked
      if pose:
        res = graphs["pose"].process(image)
        if res.pose_landmarks:
          pts = _to_pixels(res.pose_landmarks.landmark, w, h, visibility=True)
          if ref_box is None or _inside(pts[0, :2], ref_box, margin=0.5):  # nose on the tracked face
            pose_arr[i], pose_valid[i] = pts, True
      if hands:
        res = graphs["hands"].process(image)
        hand_arr[i], hand_present[i], hand_score[i] = _assign_hands(
            res, w, h, ref_box, max_hand_distance, mirrored)
      if segmentation:
        res = graphs["segmentation"].process(image)
        seg[i] = np.clip(np.round(res.segmentation_mask * 255), 0, 255).astype(np.uint8)

  if not face_valid.any():
    raise LandmarkError(f"{name}: no face found in any of its {t} frames; give a clip where one face is "
                        "clearly visible (frontal or near-frontal, at least ~64 px wide)")
  num_dropped = int(t - face_valid.sum())
  if num_dropped:
    log.info("%s: dropped %d of %d frames without the tracked face", name, num_dropped, t)
  return ClipLandmarks(face=face, face_valid=face_valid, face_box=face_box, pose=pose_arr,
                       pose_valid=pose_valid, hands=hand_arr, hand_present=hand_present,
                       hand_score=hand_score, segmentation=seg, image_size=(h, w), fps=float(fps),
                       num_dropped=num_dropped)


def _inside(p: np.ndarray, box: np.ndarray, margin: float) -> bool:
  mw, mh = (box[2] - box[0]) * margin, (box[3] - box[1]) * margin
  return bool(box[0] - mw <= p[0] <= box[2] + mw and box[1] - mh <= p[1] <= box[3] + mh)


def extract_video_landmarks(path: str | os.PathLike, max_frames: int | None = None,
                            **kwargs) -> ClipLandmarks:
  """Reads a video and runs `extract_landmarks` on its first `max_frames` frames.

  Raises:
    LandmarkError: unreadable video or no face in it (a `ValueError`).
  """
  try:
    frames, fps = read_video(path, max_frames=max_frames)
  except MediaError as e:
    raise LandmarkError(f"cannot read video {path}: {e}. Check the path, or re-encode the file "
                        "(e.g. `ffmpeg -i in.mp4 -c:v libx264 -pix_fmt yuv420p out.mp4`)") from e
  return extract_landmarks(frames, fps=fps, name=str(path), **kwargs)


def to_arrays(lm: ClipLandmarks) -> dict[str, np.ndarray]:
  """A flat dict of NumPy arrays (for np.savez or a record writer)."""
  out = {f.name: getattr(lm, f.name) for f in dataclasses.fields(lm)}
  if out["segmentation"] is None:
    del out["segmentation"]
  out["image_size"] = np.asarray(lm.image_size, np.int32)
  out["fps"] = np.float32(lm.fps)
  out["num_dropped"] = np.int32(lm.num_dropped)
  return out
