"""The appearance condition of UpperBodyMotion: source-portrait identity -> appearance tokens.

UpperBodyMotion cross-attends to appearance tokens (B, N_app, app_dim) of the source image (paper §3.3).
Until a stage-2 appearance encoder provides them, the tokens are one learned linear projection of the
head-template identity coefficients of the source portrait (what preprocessing fits for every clip and
inference for the portrait): N_app = 1. It is trained with the body model (`train.tasks.MotionBody`,
params["appearance"]) and applied once per portrait at inference.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class AppearanceEmbedding:
  """Appearance tokens (B, 1, app_dim) = Dense(identity coefficients (B, n_id)).

  Params are a plain {"kernel": (n_id, app_dim), "bias": (app_dim,)} dict (flax `nn.Dense`'s, as stored in
  the motion_body checkpoints under params["appearance"]); `init` / `apply` take and return that dict.
  """

  def __init__(self, app_dim: int):
    self.app_dim = app_dim
    self.module = nn.Dense(app_dim)

  def init(self, rng: jax.Array, num_identity: int) -> dict:
    """Parameters for `num_identity` identity coefficients (lecun-normal kernel, zero bias)."""
    return self.module.init(rng, jnp.zeros((1, num_identity)))["params"]

  def apply(self, params: dict, identity: jax.Array) -> jax.Array:
    """identity (B, n_id) -> appearance tokens (B, 1, app_dim)."""
    return self.module.apply({"params": params}, identity)[:, None]
