"""LipRegressor: each frame's expression regressed from the speech around it, and the mouth of a sampled
expression replaced by it.

FaceMotionDiT samples plausible motion; how far its mouth follows the speech is limited by the sampler's
noise and by a diffusion loss that hardly sees the few mouth dimensions (benchmarks/RESULTS.md, "A lip
regressor"). A regression of the expression on the speech features is the conditional mean, the best
guess for the mouth under squared error and deterministic, as SadTalker's ExpNet predicts the lip
coefficients while a generative model does the rest: on held-out speakers a linear map of ±2 frames of
Whisper features beats the DiT's mouth by a wide margin. So stage 1 keeps the DiT for everything (head
pose, eyes, brows, blinks, style, reference) and takes the mouth from the regressor:

  features (B, n, D) of the window (the face model's frozen speech encoder, its final output or the
    output of one of its blocks: `LipRegressor.speech_layer`) ─► video frame rate
    (`whisper.features_to_frames`) ─► standardised (norm "feature_mean" / "feature_std") ─► LipRegressor
    (a 1-D convolution over 2 · context + 1 frames; linear unless `hidden`; with `gate`, eased into a
    rest expression where it hears no speech) ─► normalised expression
    ─► de-normalised ("exp_mean" / "exp_std")

`blend_mouth` then puts the regressed mouth into the sampled expression by least squares on the head
template's keypoints: the expression whose mouth and jaw keypoints (`MOUTH_KEYPOINTS`) are closest to the
regressed expression's and whose other keypoints (eyes, brows, nose, cheeks) are closest to the sampled
one's. It is linear: exp = exp_s + (exp_l - exp_s) @ B with B = `mouth_blend_matrix(template)` (52 x 52).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax.audio import whisper
from chatanyone_jax.template.head_template import KEYPOINT_NAMES, NUM_EXP, HeadTemplate

# The head keypoints that a lip regressor drives: the mouth, and the jaw and chin, which move with it.
_LIPS = ("mouth_", "upper_lip", "lower_lip")
MOUTH_KEYPOINTS = tuple(n for n, _ in KEYPOINT_NAMES if n.startswith(_LIPS)) + (
    "contour_right_jaw", "contour_left_jaw", "contour_right_chin", "contour_left_chin", "chin")
BLEND_RIDGE = 1e-4  # `mouth_blend_matrix`'s ridge, relative to the mean diagonal


class LipRegressor(nn.Module):
  """Normalised speech features (B, T, D) at the video frame rate -> normalised expression (B, T, out_dim).

  Attributes:
    context: frames of speech on each side of a frame (kernel 2 · context + 1; zero padding at the edges
      of the window, the features' mean after standardisation).
    hidden: width of one hidden GELU layer after the convolution; 0 = a linear map (the default: on
      about 2,000 training clips a nonlinear map overfits, benchmarks/RESULTS.md).
    out_dim: expression coefficients (the head template's 52).
    speech_layer: which of the speech encoder's outputs it reads (`whisper.encoder_layers`): None = the
      final one (what the face model reads), k = the residual stream after the first k blocks (the
      stream computes both in one pass of the encoder).
    gate: a speech gate: one more output s = clip(·, 0, 1) of the same map, how surely the frame is heard
      speech (fitted on the silence spans of silence augmentation, `train.fit_lip`), and a learned "rest"
      expression (the closed mouth of those spans); the output is rest + s · (y - rest). A linear map that
      must also close the mouth in pauses trades lip sync for it (benchmarks/RESULTS.md, "Whisper layers
      for the lip regressor, and a speech gate").
  """
  context: int = 2
  hidden: int = 0
  out_dim: int = NUM_EXP
  speech_layer: int | None = None
  gate: bool = False

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    k = (2 * self.context + 1,)
    n = self.out_dim + int(self.gate)
    if self.hidden:
      x = nn.gelu(nn.Conv(self.hidden, k, padding="SAME", name="conv")(features))
      h = nn.Dense(n, name="out")(x)
    else:
      h = nn.Conv(n, k, padding="SAME", name="conv")(features)
    if not self.gate:
      return h
    rest = self.param("rest", nn.initializers.zeros, (self.out_dim,))
    speech = jnp.clip(h[..., self.out_dim:], 0.0, 1.0)
    return rest + speech * (h[..., :self.out_dim] - rest)


def frame_features(features: jax.Array, fps: float, num_frames: int, norm: dict) -> jax.Array:
  """Speech-encoder features (B, n, D) at 50 Hz of a window -> (B, num_frames, D) standardised with
  norm["feature_mean"] / norm["feature_std"] (the regressor's input)."""
  x = whisper.features_to_frames(features, fps, num_frames)
  return (x - norm["feature_mean"]) / norm["feature_std"]


def predict_exp(model: LipRegressor, params: dict, features: jax.Array, fps: float, num_frames: int,
                norm: dict) -> jax.Array:
  """The regressed expression (B, num_frames, out_dim) in template units from a window's features (B, n, D)
  at 50 Hz (`frame_features`); params: the regressor's {"params": ...} tree."""
  y = model.apply({"params": params}, frame_features(features, fps, num_frames, norm))
  return y * norm["exp_std"] + norm["exp_mean"]


def mouth_blend_matrix(template: HeadTemplate, mouth: tuple[str, ...] = MOUTH_KEYPOINTS,
                       ridge: float = BLEND_RIDGE) -> np.ndarray:
  """B (n_exp, n_exp) of `blend_mouth`: argmin_e ||J_m (e - e_l)||² + ||J_o (e - e_s)||² (+ a small ridge
  towards e_s) = e_s + (e_l - e_s) @ B, where J_m / J_o are the expression basis at the `mouth` keypoints
  / at the other head keypoints (canonical, pose-free shape)."""
  basis = np.asarray(template.exp_basis, np.float64)[:, np.asarray(template.keypoint_indices)]  # (E, K, 3)
  names = [n for n, _ in KEYPOINT_NAMES]
  unknown = sorted(set(mouth) - set(names))
  if unknown:
    raise ValueError(f"unknown head keypoints {unknown}: choose from {names}")
  m = np.asarray([n in mouth for n in names], np.float64)
  g_m = np.einsum("aki,bki,k->ab", basis, basis, m)
  g = g_m + np.einsum("aki,bki,k->ab", basis, basis, 1.0 - m)
  g += ridge * np.trace(g) / g.shape[0] * np.eye(g.shape[0])
  return np.linalg.solve(g, g_m).T.astype(np.float32)


def blend_mouth(exp: jax.Array, exp_lip: jax.Array, matrix: jax.Array) -> jax.Array:
  """The sampled expression (..., n_exp) with the mouth of exp_lip (`mouth_blend_matrix`)."""
  return exp + (exp_lip - exp) @ matrix


def mouth_from_speech(model: LipRegressor, lip: dict, motion_norm: dict, features: jax.Array,
                      motion_n: jax.Array, fps: float, gain: jax.Array | float = 1.0) -> jax.Array:
  """Normalised face motion (B, T, 58) (FaceMotionDiT's, de-normalised with motion_norm["motion_mean"] /
  ["motion_std"]) with each frame's mouth from the regressor run on the window's speech-encoder features
  (B, n, D) at 50 Hz: `blend_mouth` with lip["blend"] (`mouth_blend_matrix`); lip: {"params", "norm",
  "blend"}. gain: the style's expression-amplitude multiplier (B,) or a scalar, applied to the regressed
  expression about its training mean (the DiT gets it through its style controls)."""
  mean, std = motion_norm["motion_mean"], motion_norm["motion_std"]
  exp_lip = predict_exp(model, lip["params"], features, fps, motion_n.shape[1], lip["norm"])
  exp_lip = lip["norm"]["exp_mean"] + jnp.reshape(gain, (-1, 1, 1)) * (exp_lip - lip["norm"]["exp_mean"])
  motion = motion_n * std + mean
  exp = blend_mouth(motion[..., :NUM_EXP], exp_lip, lip["blend"])
  return (motion.at[..., :NUM_EXP].set(exp) - mean) / std
