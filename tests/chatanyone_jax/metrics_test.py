"""PSNR and SSIM against independent NumPy / SciPy formulations (scikit-image's SSIM algorithm)."""

import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from chatanyone_jax import metrics


def _ssim_scipy(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
  """skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False):
  Gaussian filtering (truncate 3.5), then the mean over the region 5 pixels inside the border."""
  x, y = x.astype(np.float64), y.astype(np.float64)
  g = lambda a: ndimage.gaussian_filter(a, sigma=1.5, truncate=3.5)
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  mx, my = g(x), g(y)
  vx, vy, cxy = g(x * x) - mx * mx, g(y * y) - my * my, g(x * y) - mx * my
  s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
  return float(s[5:-5, 5:-5].mean())


def test_ssim_matches_scipy_formulation_and_bounds():
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(2, 32, 40, 3)).astype(np.float32)
  y = np.clip(x + rng.normal(scale=0.1, size=x.shape), 0, 1).astype(np.float32)
  got = np.asarray(metrics.ssim(jnp.asarray(x), jnp.asarray(y), 1.0))
  want = [np.mean([_ssim_scipy(x[b, ..., c], y[b, ..., c], 1.0) for c in range(3)]) for b in range(2)]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  assert 0.3 < got[0] < 0.95
  np.testing.assert_allclose(metrics.ssim(jnp.asarray(x), jnp.asarray(x), 1.0), 1.0, atol=1e-6)
  # A sequence (T, D) as a one-channel image.
  seq = rng.normal(size=(1, 40, 52)).astype(np.float32)
  noisy = seq + 0.5 * rng.normal(size=seq.shape).astype(np.float32)
  r = float(seq.max() - seq.min())
  np.testing.assert_allclose(metrics.sequence_ssim(jnp.asarray(noisy), jnp.asarray(seq)),
                             [_ssim_scipy(noisy[0], seq[0], r)], rtol=1e-4, atol=1e-5)


def test_psnr_known_value():
  x = np.zeros((1, 8, 8, 3), np.float32)
  y = np.full_like(x, 0.1)  # MSE 0.01 -> 20 dB at data range 1
  np.testing.assert_allclose(metrics.psnr(jnp.asarray(x), jnp.asarray(y)), [20.0], rtol=1e-5)


def test_ssim_and_psnr_match_scikit_image_on_real_frames():
  from skimage.metrics import peak_signal_noise_ratio, structural_similarity

  from data import media
  from tests.helpers import media_dir, require

  clip = media_dir() / "videos" / "V-Express__test_samples_short_case_AOC_gt.mp4"
  frames, _ = media.read_video(require(clip, "shared clip"), max_frames=12)
  x, y = frames[0, ::4, ::4] / 255.0, frames[11, ::4, ::4] / 255.0  # two real frames, 128x128
  want = structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                               data_range=1.0, channel_axis=-1)
  got = float(metrics.ssim(jnp.asarray(x[None], jnp.float32), jnp.asarray(y[None], jnp.float32), 1.0)[0])
  np.testing.assert_allclose(got, want, rtol=1e-4)
  assert 0.5 < want < 0.999
  np.testing.assert_allclose(float(metrics.psnr(jnp.asarray(x[None]), jnp.asarray(y[None]))[0]),
                             peak_signal_noise_ratio(x, y, data_range=1.0), rtol=1e-5)


def test_specks_count_isolated_off_colour_pixels_against_scipy_median():
  """`metrics.specks`: pixels more than 0.25 from their 3x3 median in some channel, per 10,000 pixels (SciPy's
  median filter with repeated edges as the reference); a strong edge is not a speck, a one-pixel line of
  strong contrast is one per pixel."""
  yy, xx = np.mgrid[0:50, 0:40] / 50.0
  smooth = np.stack([yy, xx, 0.5 * (yy + xx)], -1).astype(np.float32)  # gradients
  edged = smooth.copy()
  edged[:, 20:] += 0.4  # a strong vertical edge
  specked = edged.copy()
  for y, x in ((5, 5), (30, 33), (44, 12)):
    specked[y, x] = [1.0, 0.0, 1.0]  # three magenta pixels
  lined = smooth.copy()
  lined[10, :, 2] = 1.0  # a one-pixel line across, 0.5 or more above its neighbours from x = 0 to 29
  images = np.clip(np.stack([smooth, edged, specked, lined]), 0, 1)
  got = np.asarray(metrics.specks(jnp.asarray(images)))
  med = ndimage.median_filter(images, size=(1, 3, 3, 1), mode="nearest")
  want = 1e4 * (np.abs(images - med).max(-1) > metrics.SPECK_THRESHOLD).mean(axis=(1, 2))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  per_pixel = 1e4 / (50 * 40)
  np.testing.assert_allclose(got[:3], [0.0, 0.0, 3 * per_pixel], rtol=1e-6)
  assert 20 * per_pixel < got[3] <= 40.5 * per_pixel
