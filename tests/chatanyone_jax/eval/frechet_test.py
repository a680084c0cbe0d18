import numpy as np
import pytest

from chatanyone_jax.eval import frechet


def test_identical_sets_are_zero():
  f = np.random.default_rng(0).normal(size=(200, 16))
  assert abs(frechet.frechet_distance_features(f, f)) < 1e-6


def test_closed_form_for_diagonal_gaussians():
  # For commuting (diagonal) covariances d² = |mu1-mu2|² + sum (sqrt(a) - sqrt(b))².
  rng = np.random.default_rng(1)
  mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
  a, b = rng.uniform(0.5, 2, 8), rng.uniform(0.5, 2, 8)
  want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  got = frechet.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
  np.testing.assert_allclose(got, want, rtol=1e-10)


def test_closed_form_for_rotated_full_covariances():
  # Same spectra under one rotation commute too: the distance is rotation invariant.
  rng = np.random.default_rng(2)
  q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
  a, b = rng.uniform(0.5, 2, 6), rng.uniform(0.5, 2, 6)
  mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
  got = frechet.frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
  want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  np.testing.assert_allclose(got, want, rtol=1e-8)


def test_sample_estimate_converges_to_closed_form():
  rng = np.random.default_rng(3)
  x = rng.normal(0.0, 1.0, size=(20000, 4))
  y = rng.normal(0.5, 2.0, size=(20000, 4))
  want = 4 * 0.5 ** 2 + 4 * (1.0 - 2.0) ** 2  # 5.0
  assert abs(frechet.frechet_distance_features(x, y) - want) < 0.15


def test_singular_covariances_are_handled():
  f = np.random.default_rng(4).normal(size=(5, 32))  # N < D: rank-deficient covariance
  g = f + 0.1
  d = frechet.frechet_distance_features(f, g)
  assert np.isfinite(d) and abs(d - 32 * 0.01) < 1e-3


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match="at least 2"):
    frechet.feature_stats(np.zeros((1, 3)))
  with pytest.raises(ValueError, match="mismatched"):
    frechet.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_trace_matches_scipy_sqrtm_on_general_covariances():
  import scipy.linalg
  rng = np.random.default_rng(5)
  a, b = rng.normal(size=(300, 64)), rng.normal(size=(300, 64)) @ rng.normal(size=(64, 64)) * 0.3
  s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  want = np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
  np.testing.assert_allclose(frechet.trace_sqrt_product(s1, s2), want, rtol=1e-8)
