"""Renderer training losses as pure functions (paper Eq. 6, following LivePortrait / FOMM).

  L = L_E + L_L + L_D + L_Per + L_GAN + L_Recon + L_lms + L_Per^Hand

(the face-refine network swaps L_Per^Hand for L_Per^Face and drops L_lms).
Every function returns a scalar float32 and is jit- and grad-safe; weights
are applied by the trainer. Images are (B, H, W, C) in [0, 1]; keypoints
(B, K, 2 or 3) in the normalised frame of `grid_sample` ((x, y[, z]) in [-1, 1]).
Masks are (B, H, W, 1) (or broadcastable) in [0, 1].

The random affine + thin-plate-spline transform of the equivariance loss is
FOMM's `Transform`: a sampling grid T(p) = A p + b + sum_k w_k U(|p - c_k|_1)
with U(r) = r^2 log(r + 1e-6) and control points c_k on a regular grid; the
warped image is X'(p) = X(T(p)), so a keypoint found at p' in X' lies at T(p')
in X.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from chatanyone_jax.layers.blocks import avg_pool
from chatanyone_jax.ops.grid_sample import grid_sample
from chatanyone_jax.ops.heatmaps import make_coordinate_grid

EPS = 1e-8

# ---- equivariance: random affine + TPS warp --------------------------------------------------------


def random_tps_transform(key: jax.Array, batch: int, *, sigma_affine: float = 0.05, sigma_tps: float = 0.005,
                         points_tps: int = 5) -> dict[str, jax.Array]:
  """A random affine + TPS transform per sample (FOMM's defaults).

  Returns {"theta": (B, 2, 3) affine = [I | 0] + N(0, sigma_affine^2),
  "control_points": (P, 2) regular points_tps^2 grid in [-1, 1],
  "control_params": (B, P) ~ N(0, sigma_tps^2)}.
  """
  k_aff, k_tps = jax.random.split(key)
  theta = jnp.eye(2, 3)[None] + sigma_affine * jax.random.normal(k_aff, (batch, 2, 3))
  control_points = make_coordinate_grid((points_tps, points_tps)).reshape(-1, 2)
  control_params = sigma_tps * jax.random.normal(k_tps, (batch, points_tps ** 2))
  return {"theta": theta, "control_points": control_points, "control_params": control_params}


def warp_coordinates(transform: dict[str, jax.Array], coords: jax.Array) -> jax.Array:
  """T(coords): (B, N, 2) (x, y) -> (B, N, 2), affine then the TPS term."""
  theta = transform["theta"].astype(coords.dtype)
  out = jnp.einsum("bij,bnj->bni", theta[:, :, :2], coords) + theta[:, None, :, 2]
  diff = coords[:, :, None, :] - transform["control_points"].astype(coords.dtype)[None, None]  # (B, N, P, 2)
  r = jnp.sum(jnp.abs(diff), axis=-1)  # FOMM's L1 radius
  u = r ** 2 * jnp.log(r + 1e-6)
  return out + jnp.einsum("bnp,bp->bn", u, transform["control_params"].astype(coords.dtype))[..., None]


def warp_image(image: jax.Array, transform: dict[str, jax.Array]) -> jax.Array:
  """X'(p) = X(T(p)) for (B, H, W, C), bilinear, zero outside (grid with endpoints at -1 and 1)."""
  b, h, w, _ = image.shape
  grid = jnp.broadcast_to(make_coordinate_grid((h, w), image.dtype).reshape(1, -1, 2), (b, h * w, 2))
  return grid_sample(image, warp_coordinates(transform, grid).reshape(b, h, w, 2), align_corners=True)


def equivariance_loss(kp: jax.Array, kp_warped: jax.Array, transform: dict[str, jax.Array]) -> jax.Array:
  """L_E: mean |kp_xy - T(kp_warped_xy)|, kp from X and kp_warped from `warp_image(X, transform)`.

  kp, kp_warped: (B, K, 2 or 3); only (x, y) take part (the warp is 2-D).
  """
  back = warp_coordinates(transform, kp_warped[..., :2])
  return jnp.mean(jnp.abs(kp[..., :2] - back)).astype(jnp.float32)


# ---- keypoint and deformation priors ---------------------------------------------------------------


def keypoint_prior_loss(kp: jax.Array, *, dist_threshold: float = 0.1,
                        depth_target: float = 0.33) -> jax.Array:
  """L_L (face-vid2vid / LivePortrait): keypoints spread out, mean depth at `depth_target`.

  sum_{i != j} max(0, D_t - |x_i - x_j|^2) + |mean_k z_k - z_t|, averaged over the batch.
  kp: (B, K, 3).
  """
  d2 = jnp.sum(jnp.square(kp[:, :, None, :] - kp[:, None, :, :]), axis=-1)  # (B, K, K)
  off_diag = 1.0 - jnp.eye(kp.shape[1], dtype=kp.dtype)
  spread = jnp.sum(jax.nn.relu(dist_threshold - d2) * off_diag, axis=(1, 2))
  depth = jnp.abs(jnp.mean(kp[..., 2], axis=1) - depth_target)
  return jnp.mean(spread + depth).astype(jnp.float32)


def deformation_prior_loss(delta: jax.Array) -> jax.Array:
  """L_D: mean |delta| of the expression / body deformation (B, K, 3)."""
  return jnp.mean(jnp.abs(delta)).astype(jnp.float32)


# ---- pixel, landmark and adversarial terms ---------------------------------------------------------


def _masked_mean(err: jax.Array, mask: jax.Array | None) -> jax.Array:
  if mask is None:
    return jnp.mean(err)
  mask = jnp.broadcast_to(mask.astype(err.dtype), err.shape)
  return jnp.sum(err * mask) / jnp.maximum(jnp.sum(mask), EPS)


def l1_loss(x: jax.Array, y: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """L_Recon: mean |x - y|, over the mask's support when given (mask-weighted mean)."""
  return _masked_mean(jnp.abs(x - y), mask).astype(jnp.float32)


def landmark_loss(kp_2d: jax.Array, landmarks: jax.Array, visibility: jax.Array | None = None) -> jax.Array:
  """L_lms: mean Euclidean distance between projected implicit keypoints and 2-D landmarks.

  kp_2d, landmarks: (B, N, 2) in the same normalised frame; visibility (B, N) in [0, 1] weights each
  point (e.g. 0 for landmarks the detector missed). The sqrt is smoothed at 0 so the gradient is finite.
  """
  dist = jnp.sqrt(jnp.sum(jnp.square(kp_2d - landmarks), axis=-1) + EPS) - jnp.sqrt(EPS)
  return _masked_mean(dist, visibility).astype(jnp.float32)


def _logits(outputs) -> list[jax.Array]:
  """Logits per scale from a `MultiScaleDiscriminator` output list, or a list of arrays."""
  return [o["logits"] if isinstance(o, dict) else o for o in outputs]


def gan_generator_loss(fake_outputs: Sequence) -> jax.Array:
  """Hinge L_GAN for G: mean over scales of -mean(D(fake))."""
  return jnp.mean(jnp.stack([-jnp.mean(f) for f in _logits(fake_outputs)])).astype(jnp.float32)


def gan_discriminator_loss(real_outputs: Sequence, fake_outputs: Sequence) -> jax.Array:
  """Hinge loss for D: mean over scales of mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))."""
  terms = [jnp.mean(jax.nn.relu(1 - r)) + jnp.mean(jax.nn.relu(1 + f))
           for r, f in zip(_logits(real_outputs), _logits(fake_outputs), strict=True)]
  return jnp.mean(jnp.stack(terms)).astype(jnp.float32)


def feature_matching_loss(real_features, fake_features) -> jax.Array:
  """Discriminator feature matching (pix2pixHD): mean over layers of mean |stop_grad(real) - fake|.

  Both arguments are matching pytrees of arrays, e.g. `[o["features"] for o in D(x)]`. Replaces the
  VGG perceptual loss when no VGG weights are supplied.
  """
  real, fake = jax.tree.leaves(real_features), jax.tree.leaves(fake_features)
  if len(real) != len(fake):
    raise ValueError(f"{len(real)} real vs {len(fake)} fake feature maps")
  terms = [jnp.mean(jnp.abs(jax.lax.stop_gradient(r) - f)) for r, f in zip(real, fake, strict=True)]
  return jnp.mean(jnp.stack(terms)).astype(jnp.float32)


# ---- perceptual ------------------------------------------------------------------------------------

VGG_LAYER_WEIGHTS = (10.0, 10.0, 10.0, 10.0, 10.0)  # FOMM / LivePortrait: relu1_1 ... relu5_1


def perceptual_loss(features_x: Sequence[jax.Array], features_y: Sequence[jax.Array],
                    weights: Sequence[float] = VGG_LAYER_WEIGHTS) -> jax.Array:
  """sum_i w_i mean |phi_i(x) - stop_grad(phi_i(y))| over matching feature lists (y is the target)."""
  if not len(features_x) == len(features_y) == len(weights):
    raise ValueError(f"{len(features_x)} / {len(features_y)} features for {len(weights)} weights")
  total = sum(w * jnp.mean(jnp.abs(fx - jax.lax.stop_gradient(fy)))
              for w, fx, fy in zip(weights, features_x, features_y, strict=True))
  return jnp.asarray(total, jnp.float32)


def vgg_perceptual_loss(features_fn: Callable[[jax.Array], Sequence[jax.Array]], x: jax.Array, y: jax.Array,
                        mask: jax.Array | None = None, *, num_scales: int = 1,
                        weights: Sequence[float] = VGG_LAYER_WEIGHTS) -> jax.Array:
  """L_Per: `perceptual_loss` of `features_fn` (e.g. a bound `VGG19Features`) on an image pyramid.

  x: generated, y: target, (B, H, W, 3). With `mask` (the hand mask for L_Per^Hand, the face mask for
  L_Per^Face) both images are multiplied by it first, so anything outside the region cannot change the
  loss. Scale s uses 2^s x average-pooled images (LivePortrait's pyramid), summed over scales.
  """
  if mask is not None:
    x, y = x * mask, y * mask
  total = 0.0
  for s in range(num_scales):
    if s:
      x, y = avg_pool(x, (2, 2)), avg_pool(y, (2, 2))
    total = total + perceptual_loss(features_fn(x), features_fn(y), weights)
  return jnp.asarray(total, jnp.float32)


def region_perceptual_loss(features_fn: Callable[[jax.Array], Sequence[jax.Array]], x: jax.Array,
                           y: jax.Array, mask: jax.Array, **kwargs) -> jax.Array:
  """L_Per^Hand / L_Per^Face: `vgg_perceptual_loss` restricted to a region mask (B, H, W, 1)."""
  return vgg_perceptual_loss(features_fn, x, y, mask, **kwargs)
