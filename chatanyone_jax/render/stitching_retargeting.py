"""LivePortrait's stitching and retargeting MLPs (S) and the three ways the pipeline uses them.

`StitchingRetargetingNetwork` is upstream's `mlp`: Linear, ReLU, ..., Linear,
with no activation after the last layer. Its Dense layers are named `mlp_0`,
`mlp_2`, ... after the PyTorch indices `mlp.0`, `mlp.2`, ... (ReLUs sit at the
odd ones), so checkpoints map one to one (`chatanyone_jax.convert.liveportrait`).

The functions below take the variables of one network (`{"params": ...}` as
the converter returns them, or the bare params dict) and rebuild the module
from the kernel shapes, so they need no config:
  * `stitch`: driving keypoints -> stitched driving keypoints (B, K, 3);
  * `retarget_lip` / `retarget_eye`: keypoint deltas (B, K, 3) for a lip / eye
    open-close ratio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from chatanyone_jax.render.presets import StitchingRetargetingConfig


class StitchingRetargetingNetwork(nn.Module):
  """x (B, input_size) -> (B, output_size): Dense + ReLU per hidden size, then a plain Dense."""
  input_size: int
  hidden_sizes: tuple[int, ...]
  output_size: int

  @classmethod
  def from_config(cls, config: StitchingRetargetingConfig) -> StitchingRetargetingNetwork:
    return cls(config.input_size, tuple(config.hidden_sizes), config.output_size)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.shape[-1] != self.input_size:
      raise ValueError(f"StitchingRetargetingNetwork expects {self.input_size} input features, got x of "
                       f"shape {x.shape}")
    for i, size in enumerate(self.hidden_sizes):
      x = nn.relu(nn.Dense(size, name=f"mlp_{2 * i}")(x))
    return nn.Dense(self.output_size, name=f"mlp_{2 * len(self.hidden_sizes)}")(x)


def _variables(params: Mapping[str, Any]) -> dict[str, Any]:
  return dict(params) if "params" in params else {"params": params}


def network_from_params(params: Mapping[str, Any]) -> StitchingRetargetingNetwork:
  """The module whose layer sizes match `params` (variables or bare params of one MLP)."""
  p = _variables(params)["params"]
  idx = sorted(int(n[4:]) for n in p if n.startswith("mlp_") and n[4:].isdigit())
  if not idx or len(idx) != len(p) or idx != list(range(0, 2 * len(idx), 2)):
    raise ValueError(f"not the params of a StitchingRetargetingNetwork (mlp_0, mlp_2, ...): {sorted(p)}")
  shapes = [p[f"mlp_{i}"]["kernel"].shape for i in idx]
  return StitchingRetargetingNetwork(shapes[0][0], tuple(s[1] for s in shapes[:-1]), shapes[-1][1])


def _apply(params: Mapping[str, Any], x: jax.Array) -> jax.Array:
  return network_from_params(params).apply(_variables(params), x)


def _flat_kp(kp: jax.Array, name: str) -> jax.Array:
  if kp.ndim != 3 or kp.shape[-1] != 3:
    raise ValueError(f"{name} must be (B, K, 3), got {kp.shape}")
  return kp.reshape(kp.shape[0], -1)


def stitching_delta(params: Mapping[str, Any], kp_source: jax.Array, kp_driving: jax.Array) -> jax.Array:
  """The stitching MLP's raw output (B, 3K + 2) for x = [kp_source, kp_driving] flattened."""
  x = jnp.concatenate([_flat_kp(kp_source, "kp_source"), _flat_kp(kp_driving, "kp_driving")], axis=-1)
  return _apply(params, x)


def stitch(params: Mapping[str, Any], kp_source: jax.Array, kp_driving: jax.Array) -> jax.Array:
  """Stitched driving keypoints (B, K, 3), as LivePortrait's `stitching`.

  kp_driving + delta[:, :3K] as (B, K, 3), then delta[:, 3K:3K + 2] added to x and y of every keypoint.
  """
  b, k = kp_driving.shape[:2]
  delta = stitching_delta(params, kp_source, kp_driving)
  if delta.shape[-1] != 3 * k + 2:
    raise ValueError(f"stitching MLP outputs {delta.shape[-1]} values; K = {k} keypoints need {3 * k + 2}")
  out = kp_driving + delta[:, :3 * k].reshape(b, k, 3)
  return out.at[..., :2].add(delta[:, None, 3 * k:3 * k + 2])


def _retarget(params: Mapping[str, Any], kp_source: jax.Array, ratio: jax.Array, n: int,
              what: str) -> jax.Array:
  if ratio.ndim != 2 or ratio.shape[-1] != n:
    raise ValueError(f"{what} must be (B, {n}), got {ratio.shape}")
  b, k = kp_source.shape[:2]
  delta = _apply(params, jnp.concatenate([_flat_kp(kp_source, "kp_source"), ratio], axis=-1))
  return delta.reshape(b, k, 3)


def retarget_lip(params: Mapping[str, Any], kp_source: jax.Array, lip_close_ratio: jax.Array) -> jax.Array:
  """Keypoint delta (B, K, 3); lip_close_ratio (B, 2) = (source ratio, driving ratio)."""
  return _retarget(params, kp_source, lip_close_ratio, 2, "lip_close_ratio")


def retarget_eye(params: Mapping[str, Any], kp_source: jax.Array, eye_close_ratio: jax.Array) -> jax.Array:
  """Keypoint delta (B, K, 3); eye_close_ratio (B, 3) = (left source, right source, driving ratio)."""
  return _retarget(params, kp_source, eye_close_ratio, 3, "eye_close_ratio")
