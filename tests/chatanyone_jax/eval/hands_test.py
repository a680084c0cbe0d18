"""HKC back-end on real shared portraits (MediaPipe Hands from the mediapipe wheel)."""

import numpy as np
import pytest

from chatanyone_jax.eval import hands
from data import media
from tests.helpers import media_dir, require

WITH_HAND = "LivePortrait__assets_examples_driving_d30.jpg"     # hand on the chin
WITHOUT_HAND = "GeneFace__deep_3drecon_datasets_examples_000002.jpg"  # head shot, no hands


@pytest.fixture(scope="module")
def detector():
  with hands.HandConfidence() as d:
    yield d


def _image(name):
  return media.read_image(require(media_dir() / "portraits" / name, "shared portrait"))


def test_scores_a_visible_hand_high_and_no_hand_empty(detector):
  assert detector.scores(_image(WITH_HAND))[0] > 0.8
  assert detector.scores(_image(WITHOUT_HAND)) == []
  assert detector.scores(np.full((64, 48, 3), 0.5, np.float32)) == []  # float input, upscaled


def test_hkc_averages_over_frames_whose_ground_truth_has_hands(detector):
  hand, none = _image(WITH_HAND), _image(WITHOUT_HAND)
  frames = [hand, none, hand]
  present = np.array([[True, False], [True, False], [False, False]])
  value, n = hands.hand_keypoint_confidence(detector, frames, present)
  s = detector.scores(hand)[0]
  assert n == 2
  np.testing.assert_allclose(value, s / 2, rtol=1e-5)  # second frame: no hand found -> 0
  # Two ground-truth hands, one found: half the score.
  value2, _ = hands.hand_keypoint_confidence(detector, [hand], np.array([[True, True]]))
  np.testing.assert_allclose(value2, s / 2, rtol=1e-5)
  assert np.isnan(hands.hand_keypoint_confidence(detector, frames, np.zeros((3, 2), bool))[0])
