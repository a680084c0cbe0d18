"""UpperBodyMotion: face motion -> head-keypoint offsets, body keypoints, hands; paper §3.3 (Fig. 3 top).

A small diffusion transformer (paper: 2 layers) that predicts the noise (or,
with `UpperBodyConfig.prediction` "x0", the clean window) of a per-frame target
vector (B, T, D_target) packed as (`UpperBodyLayout`):

  ΔX_head (K_h × 3) | body δ (K_b × 3) | s (1) | t (3) | hand coefficients (hand_dim)

Conditions:
- head keypoints (B, T, K_h, 3) projected from the predicted face coefficients
  through the head template (done by the caller), added per frame to the tokens;
- audio tokens (B, T, audio_dim) and an appearance embedding of the source image
  (B, N_app, app_dim) by cross-attention (one block each);
- the diffusion timestep by AdaLN-Zero (zero-initialised gates and final layer,
  so ε_θ ≡ 0 at init, as FaceMotionDiT).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from chatanyone_jax.layers import AdaLNZeroFinal
from chatanyone_jax.motion.diffusion import PREDICTIONS
from chatanyone_jax.motion.face_motion_dit import DiTBlock, TimestepEmbedder, variant_sizes
from chatanyone_jax.ops import sinusoidal_positions
from chatanyone_jax.template.hands import HANDS_DIM

HAND_DIM = HANDS_DIM  # 2 hands × (presence, wrist xyz, scale, 20 joints xyz) = 130 (`template.hands`)
NUM_BODY_KP = 21  # K_b: body keypoints per frame


@dataclasses.dataclass(frozen=True)
class UpperBodyLayout:
  """Sizes of the per-frame target; `pack` / `unpack` convert between the vector and named parts."""
  num_head_kp: int = 32  # K_h
  num_body_kp: int = NUM_BODY_KP  # K_b
  hand_dim: int = HAND_DIM

  @property
  def sizes(self) -> dict[str, int]:
    return {"head_offset": 3 * self.num_head_kp, "body_delta": 3 * self.num_body_kp, "scale": 1,
            "translation": 3, "hands": self.hand_dim}

  @property
  def dim(self) -> int:
    return sum(self.sizes.values())

  def unpack(self, x: jax.Array) -> dict[str, jax.Array]:
    """(..., dim) -> head_offset (..., K_h, 3), body_delta (..., K_b, 3), scale (..., 1),
    translation (..., 3), hands (..., hand_dim)."""
    if x.shape[-1] != self.dim:
      raise ValueError(f"expected last dim {self.dim}, got {x.shape[-1]}")
    out, i = {}, 0
    for name, size in self.sizes.items():
      out[name] = x[..., i:i + size]
      i += size
    lead = x.shape[:-1]
    out["head_offset"] = out["head_offset"].reshape(lead + (self.num_head_kp, 3))
    out["body_delta"] = out["body_delta"].reshape(lead + (self.num_body_kp, 3))
    return out

  def pack(self, parts: dict[str, jax.Array]) -> jax.Array:
    """Inverse of `unpack`: the five named parts -> (..., dim)."""
    lead = parts["scale"].shape[:-1]
    return jnp.concatenate([parts[name].reshape(lead + (size,)) for name, size in self.sizes.items()],
                           axis=-1)


@dataclasses.dataclass(frozen=True)
class UpperBodyConfig:
  """UpperBodyMotion hyper-parameters (paper: 2-layer transformer; width and heads are ours).

  Attributes:
    layout: the target vector layout (K_h, K_b, hand_dim).
    num_layers / width / num_heads / mlp_ratio: the transformer.
    window: T frames per window (as FaceMotionDiT).
    audio_dim: width of the audio tokens; app_dim: width of the appearance tokens.
    time_embed_dim: width of the sinusoidal timestep features.
    prediction: what the network outputs, "epsilon" (the paper's Eq. 1) or "x0" (the clean window, as
      FaceMotionConfig's); the samplers read it from here. With "epsilon" a briefly trained model's x̂0
      at the noisy steps is its ε error times up to 1/√ᾱ_T: the first bundled CPU-scale body model sampled
      every frame near the x̂0 clip in a random direction (17.7x the true frame-to-frame body motion on
      held-out people; `benchmarks.body_motion`).
  """
  layout: UpperBodyLayout = UpperBodyLayout()
  num_layers: int = 2
  width: int = 512
  num_heads: int = 8
  mlp_ratio: int = 4
  window: int = 40
  audio_dim: int = 256
  app_dim: int = 256
  time_embed_dim: int = 256
  prediction: str = "epsilon"

  def __post_init__(self):
    if self.prediction not in PREDICTIONS:
      raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")

  @classmethod
  def tiny(cls, **overrides) -> UpperBodyConfig:
    """CPU-test preset: the "tiny" variant (same layout)."""
    return cls(**{**decode_variant("tiny")["body"], **overrides})


# Named model sizes (big_vision's `decode_variant`): a training config names a variant, this table owns
# the widths and depths. "body": UpperBodyConfig fields; "audio": the body model's own AudioEncoder (its
# width is audio_dim). base = UpperBodyConfig's and AudioEncoder's defaults (the paper's 2 layers).
VARIANTS: dict[str, dict[str, dict[str, int]]] = {
    "base": {"body": dict(num_layers=2, width=512, num_heads=8, mlp_ratio=4, audio_dim=256, app_dim=256,
                          time_embed_dim=256),
             "audio": dict(num_layers=2, num_heads=4, mlp_ratio=4, num_conv=2)},
    "small": {"body": dict(num_layers=2, width=128, num_heads=4, mlp_ratio=4, audio_dim=64, app_dim=64,
                           time_embed_dim=64),
              "audio": dict(num_layers=1, num_heads=4, mlp_ratio=4, num_conv=2)},
    "tiny": {"body": dict(num_layers=2, width=64, num_heads=4, mlp_ratio=2, audio_dim=32, app_dim=16,
                          time_embed_dim=32),
             "audio": dict(num_layers=1, num_heads=4, mlp_ratio=2, num_conv=2)},
}


def decode_variant(variant: str | None) -> dict[str, dict[str, int]]:
  """{"body": UpperBodyConfig sizes, "audio": AudioEncoder sizes} of a named variant (`VARIANTS`).

  None gives {} (a config that spells every size out itself, as configs written before variants did).
  """
  return variant_sizes(VARIANTS, variant, "UpperBodyMotion")


class UpperBodyMotion(nn.Module):
  """ε_θ(x_t, t, head keypoints, audio, appearance) for the upper-body target. See the module docstring."""
  config: UpperBodyConfig
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x_t: jax.Array, t: jax.Array, head_kp: jax.Array, audio: jax.Array,
               appearance: jax.Array) -> jax.Array:
    """Predicts the noise of one window.

    Args:
      x_t: (B, T, layout.dim) noisy packed target.
      t: (B,) int diffusion steps.
      head_kp: (B, T, K_h, 3) head keypoints from the face motion.
      audio: (B, T, audio_dim) audio tokens.
      appearance: (B, N_app, app_dim) source-image appearance tokens.

    Returns:
      (B, T, layout.dim) float32 ε prediction (exactly 0 at init).
    """
    cfg = self.config
    b, n, _ = x_t.shape
    d = cfg.width
    dense = lambda name: nn.Dense(d, name=name, dtype=self.dtype)
    pos = sinusoidal_positions(n, d)  # (T, D)
    c = TimestepEmbedder(d, cfg.time_embed_dim, dtype=self.dtype, name="t_embed")(t)  # (B, D)
    x = dense("input_proj")(x_t) + dense("head_kp_proj")(head_kp.reshape(b, n, -1)) + pos  # (B, T, D)
    a = dense("audio_proj")(audio) + pos  # (B, T, D)
    app = dense("app_proj")(appearance)  # (B, N_app, D)
    for i in range(cfg.num_layers):
      x = DiTBlock(cfg.num_heads, cfg.mlp_ratio, 2, dtype=self.dtype, name=f"block{i}")(x, c, (a, app))
    return AdaLNZeroFinal(cfg.layout.dim, dtype=self.dtype, name="final")(x, c).astype(jnp.float32)


def dummy_upper_body_inputs(cfg: UpperBodyConfig, batch: int = 1, num_app: int = 4) -> tuple:
  """Zero inputs of the right shapes: (x_t, t, head_kp, audio, appearance)."""
  z = lambda *s: jnp.zeros(s, jnp.float32)
  n = cfg.window
  return (z(batch, n, cfg.layout.dim), jnp.zeros((batch,), jnp.int32), z(batch, n, cfg.layout.num_head_kp, 3),
          z(batch, n, cfg.audio_dim), z(batch, num_app, cfg.app_dim))
