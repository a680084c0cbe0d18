"""Fréchet distance between Gaussians fitted to feature sets: FID (Inception-V3 pool features) and FVD
(I3D features) are both this distance on different features.

    d² = |mu1 - mu2|² + Tr(S1 + S2 - 2 (S1 S2)^½)

Computed in float64. pytorch-fid / the TTUR reference code take SciPy's `sqrtm` of S1 S2 and then only its
trace; `trace_sqrt_product` gets the same trace from symmetric eigendecompositions (faster, and never
complex); a test checks it against `sqrtm`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Stats(NamedTuple):
  mu: np.ndarray     # (D,)
  sigma: np.ndarray  # (D, D)
  count: int


def feature_stats(features: np.ndarray) -> Stats:
  """Mean and unbiased covariance (np.cov's default, as pytorch-fid) of features (N, D), N >= 2."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2:
    raise ValueError(f"features must be (N, D), got shape {f.shape}")
  if f.shape[0] < 2:
    raise ValueError(f"a covariance needs at least 2 feature vectors, got {f.shape[0]}")
  return Stats(f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False)), f.shape[0])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
  """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
    raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2, eps))


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh((s + s.T) / 2)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray, eps: float = 1e-6) -> float:
  """Tr((S1 S2)^½) for covariance matrices S1, S2.

  S1 S2 is similar to the symmetric PSD matrix S1^½ S2 S1^½ (both are S1^½ (S1^½ S2 S1^½) S1^-½ apart),
  so its square root's trace is the sum of the square roots of that matrix's eigenvalues: two symmetric
  eigendecompositions instead of SciPy's general `sqrtm` (the same value to rounding, faster, never
  complex). Eigenvalues that rounding pushes below 0 count as 0; a non-finite input gets
  the `eps` identity offset of the reference code.
  """
  if not (np.isfinite(s1).all() and np.isfinite(s2).all()):
    raise ValueError("covariance matrices contain NaN or inf")
  r = _psd_sqrt(s1)
  w = np.linalg.eigvalsh(r @ s2 @ r)
  if not np.isfinite(w).all():
    offset = np.eye(s1.shape[0]) * eps
    r = _psd_sqrt(s1 + offset)
    w = np.linalg.eigvalsh(r @ (s2 + offset) @ r)
  return float(np.sum(np.sqrt(np.clip(w, 0, None))))


def frechet_distance_features(a: np.ndarray, b: np.ndarray) -> float:
  """Fréchet distance between the Gaussians fitted to two feature sets (N, D) and (M, D)."""
  sa, sb = feature_stats(a), feature_stats(b)
  return frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
