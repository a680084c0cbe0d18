"""Head pose from binned logits, rotation matrices and keypoint transforms.

Conventions of LivePortrait's motion extractor (rotation applied to row
vectors on the right; angles pitch -> x, yaw -> y, roll -> z).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def headpose_from_bins(logits: jax.Array, bin_width: float = 3.0, offset: float = 97.5) -> jax.Array:
  """Expected angle in degrees from (B, 66) bin logits: 3 * E[bin] - 97.5 -> (B, 1)."""
  idx = jnp.arange(logits.shape[-1], dtype=jnp.float32)
  p = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  return (jnp.sum(p * idx, axis=-1, keepdims=True) * bin_width - offset)


def rotation_matrix(pitch: jax.Array, yaw: jax.Array, roll: jax.Array) -> jax.Array:
  """R = (Rz(roll) Ry(yaw) Rx(pitch))^T from angles in degrees, each (B,) or (B, 1) -> (B, 3, 3)."""
  p, y, r = (jnp.deg2rad(jnp.reshape(a, (-1,))) for a in (pitch, yaw, roll))
  one, zero = jnp.ones_like(p), jnp.zeros_like(p)
  rx = jnp.stack([one, zero, zero, zero, jnp.cos(p), -jnp.sin(p), zero, jnp.sin(p), jnp.cos(p)], -1)
  ry = jnp.stack([jnp.cos(y), zero, jnp.sin(y), zero, one, zero, -jnp.sin(y), zero, jnp.cos(y)], -1)
  rz = jnp.stack([jnp.cos(r), -jnp.sin(r), zero, jnp.sin(r), jnp.cos(r), zero, zero, zero, one], -1)
  rx, ry, rz = (m.reshape(-1, 3, 3) for m in (rx, ry, rz))
  return jnp.swapaxes(rz @ ry @ rx, -1, -2)


def transform_keypoints(
    kp: jax.Array, rotation: jax.Array, exp: jax.Array, scale: jax.Array, t: jax.Array
) -> jax.Array:
  """Implicit keypoints x = s (x_c R + delta) + [t_x, t_y, 0]  (paper Eq. 3).

  Args:
    kp: (B, K, 3) canonical keypoints x_c.
    rotation: (B, 3, 3); the identity for the body.
    exp: (B, K, 3) deformation delta.
    scale: (B, 1) or (B,).
    t: (B, 3); t_z is ignored.
  """
  out = jnp.reshape(scale, (-1, 1, 1)) * (kp @ rotation + exp)
  return out.at[..., :2].add(t[:, None, :2])
