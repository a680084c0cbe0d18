"""`data.crops.crop`: boxes inside the image, and boxes that leave it (black or the border repeated)."""

import numpy as np
import pytest

from data.crops import crop


def _image() -> np.ndarray:
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)


@pytest.mark.parametrize("pad", ["black", "edge"])
def test_a_box_inside_the_image_is_the_same_crop_with_either_padding(pad):
  image = _image()
  out = crop(image, np.array([5, 8, 25, 38]), (30, 20), pad=pad)
  np.testing.assert_array_equal(out, image[8:38, 5:25])  # same size: no resampling


def test_a_box_leaving_the_image_is_padded_black_or_with_the_border_repeated():
  image = _image()
  box = np.array([-4, -6, 26, 34])  # 6 rows above the image, 4 columns left of it
  black = crop(image, box, (40, 30))
  edge = crop(image, box, (40, 30), pad="edge")
  assert not black[:6].any() and not black[:, :4].any()
  np.testing.assert_array_equal(edge[6:, 4:], image[:34, :26])
  np.testing.assert_array_equal(edge[:6, 4:], np.broadcast_to(image[0, :26], (6, 26, 3)))  # the top row
  np.testing.assert_array_equal(edge[6:, :4], np.broadcast_to(image[:34, :1], (34, 4, 3)))  # left column
  np.testing.assert_array_equal(edge[:6, :4], np.broadcast_to(image[0, 0], (6, 4, 3)))  # the corner
  right = crop(image, np.array([10, 30, 40, 50]), (20, 30), pad="edge")  # past the right and bottom
  np.testing.assert_array_equal(right[:, 20:], np.broadcast_to(right[:, 19:20], (20, 10, 3)))
  np.testing.assert_array_equal(right[10:], np.broadcast_to(right[9:10], (10, 30, 3)))


def test_an_unknown_padding_says_which_exist():
  with pytest.raises(ValueError, match="black"):
    crop(_image(), np.array([0, 0, 10, 10]), (10, 10), pad="mirror")
