"""The mouth curves' comparisons (`infer.evaluation.mouth`): correlation and scale over the frames where both
curves are defined."""

from __future__ import annotations

import numpy as np
import pytest

from infer.evaluation.mouth import MIN_FRAMES, curve_correlation, curve_scale


def test_a_mouth_at_a_fraction_of_the_size_correlates_fully_but_scales_by_that_fraction():
  rng = np.random.default_rng(0)
  real = 0.1 + 0.05 * np.abs(np.sin(np.linspace(0, 12, 90))) + 0.01 * rng.standard_normal(90)
  damped = 0.12 + 0.4 * (real - real.mean())
  assert curve_correlation(damped, real) == pytest.approx(1.0)
  assert curve_scale(damped, real) == pytest.approx(0.4)
  assert curve_scale(real, damped) == pytest.approx(2.5)
  wide_noise = real.mean() + 2 * real.std() * rng.standard_normal(90)
  assert abs(curve_correlation(wide_noise, real)) < 0.3 and curve_scale(wide_noise, real) > 1.5


def test_only_frames_where_both_curves_have_a_face_count():
  real = np.array([0.1, 0.2] * 10)
  gen = 0.5 * real
  gen[:4] = [np.nan, 5.0, np.nan, -3.0]  # frames 0 and 2 without a face; 1 and 3 outliers
  real_gaps = real.copy()
  real_gaps[[1, 3]] = np.nan  # the outliers' real frames have no face either
  assert curve_scale(gen, real_gaps) == pytest.approx(0.5)
  assert curve_correlation(gen, real_gaps) == pytest.approx(1.0)
  assert curve_scale(gen[:30], real_gaps[:12]) == pytest.approx(0.5)  # the shorter length


def test_too_few_frames_or_a_still_curve_give_none():
  real = np.linspace(0, 1, MIN_FRAMES - 1)
  assert curve_scale(real, real) is None and curve_correlation(real, real) is None
  still = np.full(20, 0.1)
  moving = np.linspace(0, 1, 20)
  assert curve_scale(still, moving) is None and curve_scale(moving, still) is None
  assert curve_scale(moving, np.full(20, np.nan)) is None
