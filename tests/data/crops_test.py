"""`data.crops.crop`: boxes inside the image, and boxes that leave it (black, or the border carried out)."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from data.crops import EXTEND_BLUR, crop


def _image() -> np.ndarray:
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)


@pytest.mark.parametrize("pad", ["black", "extend"])
def test_a_box_inside_the_image_is_the_same_crop_with_either_padding(pad):
  image = _image()
  out = crop(image, np.array([5, 8, 25, 38]), (30, 20), pad=pad)
  np.testing.assert_array_equal(out, image[8:38, 5:25])  # same size: no resampling


def test_a_box_leaving_the_image_is_padded_black_or_with_the_border_carried_out_and_blurred():
  image = _image()
  box = np.array([0, -12, 30, 40])  # 12 rows above the image, none at the sides
  black = crop(image, box, (52, 30))
  extend = crop(image, box, (52, 30), pad="extend")
  assert not black[:12].any()
  np.testing.assert_array_equal(extend[12:], image)
  for d in (1, 6, 12):  # the row d above the picture: its top row blurred with sigma EXTEND_BLUR * d
    want = gaussian_filter1d(image[0].astype(np.float32), EXTEND_BLUR * d, axis=0, mode="nearest")
    np.testing.assert_allclose(extend[12 - d], np.round(want), atol=1)
  spread = extend[:12].astype(np.float32).std(axis=1).mean(axis=-1)  # detail along each row
  assert np.all(np.diff(spread) > 0), spread  # dissolves with distance (the rows run outward to inward)
  # Every side and the corners: no black, a flat border stays exactly flat.
  flat = np.full((20, 10, 3), (30, 120, 200), np.uint8)
  out = crop(flat, np.array([-5, -5, 15, 25]), (30, 20), pad="extend")
  np.testing.assert_array_equal(out, np.broadcast_to(flat[0, 0], out.shape))


def test_an_unknown_padding_says_which_exist():
  with pytest.raises(ValueError, match="black"):
    crop(_image(), np.array([0, 0, 10, 10]), (10, 10), pad="mirror")
