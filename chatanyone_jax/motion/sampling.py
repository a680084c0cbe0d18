"""FaceMotionDiT training loss and sampling: CFG denoiser, one window, audio of any length.

Long audio is generated window by window (`generate_long`). Windows do NOT
overlap: window i covers frames [iT, (i+1)T) and each frame is generated once,
which is what streaming needs (every call emits T new frames). Continuity
comes from the paper's history cross-attention (the last H frames of window i
are the history of window i + 1; the first window uses the learned null
history) and from `join_window`, a backward-looking decaying offset on the
first `seam_frames` frames of each new window.

`seam_statistic` compares the frame-to-frame change across window boundaries
with that inside windows (benchmarks/motion_style.py reports it, RESULTS.md).
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from chatanyone_jax.motion.diffusion import DenoiseFn, NoiseSchedule, ddim_sample, diffusion_loss

# Classifier-free guidance scale of FaceMotionDiT at inference (infer.stream, the CLI, infer.evaluate).
# Chosen with benchmarks/motion_style.py (numbers in RESULTS.md): on a model trained on real clips,
# unguided 10-step DDIM leaves more frame-to-frame jitter than the data has, which puts a floor under the
# pose range and weakens the reference's pull; at 2 the jitter is that of the data and the pose-range and
# reference controls take effect. The price: one extra (batched) model call per step and somewhat calmer
# motion at amplitude 1.
GUIDANCE_SCALE = 2.0
# DDIM steps of the motion samplers at inference (the stream, the CLI, the demo).
DDIM_STEPS = 10
# Clip of the samplers' x̂0 estimate at inference, in normalised (std) units. With the cosine schedule
# ᾱ_T is ~0, so the first steps' x̂0 = (x_t - √(1-ᾱ_t) ε̂) / √ᾱ_t multiplies any error of ε̂ by up to
# 1/√ᾱ_T: unclipped, a trained motion_face (small, CPU campaign) sampled values thousands of std out,
# with or without guidance; clipped at 4 std (the data's range) it samples motion of the data's spread.
CLIP_X0 = 4.0
# Scale of the face-motion samplers' starting noise at inference (`ddim_sample`'s noise_scale; 1 = the
# plain sample). Smaller scales raised the bundled face model's held-out lip sync with whole windows (0.306
# / 0.325 / 0.341 at 1 / 0.5 / 0 on 58 clips, within about one standard error) but not with the low-latency
# hop (0.197 / 0.193), at a cost in motion: at 0 the expression's spread is 0.33 against the truth's 0.52
# (0.50 at 1) and its frame-to-frame change a third of the truth's (44 held-out windows): 1 stays
# (benchmarks/RESULTS.md).
NOISE_SCALE = 1.0
# Frames over which each new face-motion window is joined to the motion before it at inference
# (`join_window`; the stream, the CLI, `generate_long`).
SEAM_FRAMES = 8


class FaceConditions(NamedTuple):
  """Conditions of one FaceMotionDiT window (a pytree; None fields are absent).

  audio: (B, T, audio_dim) tokens of the window's frames.
  history: (B, H, 58) the H frames before the window.
  style: (B, num_style) style controls.
  reference: optional (B, T_ref, ref_dim) reference expression sequence.
  history_valid: optional (B,) bool; False = no history (first window).
  reference_valid: optional (B,) bool; False = no reference video (the null reference is used).
  audio_valid: optional (B, T) bool; False = that frame's audio not heard yet (the null audio is used).
  """
  audio: jax.Array
  history: jax.Array
  style: jax.Array
  reference: jax.Array | None = None
  history_valid: jax.Array | None = None
  reference_valid: jax.Array | None = None
  audio_valid: jax.Array | None = None


def _apply(model: nn.Module, params, x: jax.Array, t: jax.Array, cond: FaceConditions,
           drop: jax.Array) -> jax.Array:
  return model.apply({"params": params}, x, t, cond.audio, cond.history, cond.style, cond.reference,
                     drop=drop, history_valid=cond.history_valid, reference_valid=cond.reference_valid,
                     audio_valid=cond.audio_valid)


def make_denoise_fn(model: nn.Module, params, cond: FaceConditions, *, guidance: bool = True) -> DenoiseFn:
  """Builds `denoise_fn(x_t, t)` for `ddim_sample`.

  With guidance, the conditional and the unconditional (all conditions
  dropped) predictions come from ONE model call on the batch stacked twice
  (2B), returned as the pair (ε_cond, ε_uncond); without, only ε_cond (B).
  """
  def denoise_fn(x: jax.Array, t: jax.Array):
    b = x.shape[0]
    if not guidance:
      return _apply(model, params, x, t, cond, jnp.zeros((b,), bool))
    two = lambda a: jnp.concatenate([a, a], axis=0)
    drop = jnp.concatenate([jnp.zeros((b,), bool), jnp.ones((b,), bool)])
    eps = _apply(model, params, two(x), two(t), jax.tree.map(two, cond), drop)  # (2B, T, 58)
    return eps[:b], eps[b:]
  return denoise_fn


def sample_window(model: nn.Module, params, cond: FaceConditions, key: jax.Array, *,
                  schedule: NoiseSchedule, num_steps: int = 10, guidance_scale: float | jax.Array = 1.0,
                  eta: float | jax.Array = 0.0, clip_x0: float | None = None,
                  guidance: bool | None = None, x_T: jax.Array | None = None,
                  noise_scale: float | jax.Array = 1.0) -> jax.Array:
  """Samples one window of face motion with DDIM.

  Args:
    model: a `FaceMotionDiT`; params: its parameters.
    cond: the window's conditions (batch B, window T from cond.audio).
    key: PRNG key.
    schedule, num_steps, eta, clip_x0, x_T, noise_scale: as `ddim_sample`.
    guidance_scale: CFG scale s (1 = conditional only).
    guidance: stack the unconditional pair; default: unless guidance_scale is the Python number 1.

  Returns:
    (B, T, motion_dim) float32.
  """
  if guidance is None:
    guidance = isinstance(guidance_scale, jax.Array) or guidance_scale != 1.0
  b, n = cond.audio.shape[:2]
  shape = (b, n, model.config.motion_dim)
  return ddim_sample(make_denoise_fn(model, params, cond, guidance=guidance), schedule, shape, key,
                     num_steps=num_steps, eta=eta, guidance_scale=guidance_scale, clip_x0=clip_x0,
                     prediction=model.config.prediction, x_T=x_T, noise_scale=noise_scale)


def anchored_noise(key: jax.Array, first_frame: jax.Array | int, num_frames: int, dim: int) -> jax.Array:
  """(1, num_frames, dim) N(0, 1) starting noise of the frames first_frame, first_frame + 1, ...: frame f's
  noise is normal(fold_in(key, f)) whatever window it is in, so overlapping windows (a stream with hop < T)
  start their shared frames from the same noise. first_frame may be traced."""
  frames = first_frame + jnp.arange(num_frames)
  return jax.vmap(lambda f: jax.random.normal(jax.random.fold_in(key, f), (dim,)))(frames)[None]


def join_window(history: jax.Array, window: jax.Array, seam_frames: int,
                valid: jax.Array | None = None) -> jax.Array:
  """Removes the jump between a window and the motion before it with a decaying offset.

  With p = history[:, -1], the velocities v_in = history[:, -1] - history[:, -2] and
  v_out = window[:, 1] - window[:, 0], the first frame should be p + (v_in + v_out) / 2; the offset
  o = that - window[:, 0] is added to frame f with weight (1 + cos(π f / K)) / 2 for f < K = seam_frames
  (1 at f = 0, falling smoothly to 0), frames from K on are unchanged. It looks only backwards (no
  latency, no cross-fade of two samples, which would damp motion) and leaves the rest of the window,
  and so the next window's history, untouched.

  Args:
    history: (B, H >= 2, D) the frames just before the window (as emitted).
    window: (B, T, D) the new window, T >= 2.
    seam_frames: K (static); 0 returns the window unchanged.
    valid: optional (B,) bool, False = nothing before the window (returned unchanged).

  Returns:
    (B, T, D) float32.
  """
  if seam_frames <= 0:
    return window
  if history.shape[1] < 2 or window.shape[1] < 2:
    raise ValueError(f"join_window needs >= 2 history and window frames, got {history.shape[1]} and "
                     f"{window.shape[1]}")
  v_in = history[:, -1] - history[:, -2]
  v_out = window[:, 1] - window[:, 0]
  offset = history[:, -1] + 0.5 * (v_in + v_out) - window[:, 0]  # (B, D)
  f = jnp.arange(window.shape[1], dtype=jnp.float32)
  w = jnp.where(f < seam_frames, 0.5 * (1.0 + jnp.cos(jnp.pi * f / seam_frames)), 0.0)  # (T,)
  if valid is not None:
    offset = jnp.where(jnp.asarray(valid, bool)[:, None], offset, 0.0)
  return (window + w[None, :, None] * offset[:, None]).astype(jnp.float32)


def generate_long(model: nn.Module, params, audio: jax.Array, style: jax.Array, key: jax.Array, *,
                  schedule: NoiseSchedule, reference: jax.Array | None = None,
                  history: jax.Array | None = None, num_steps: int = 10,
                  guidance_scale: float | jax.Array = 1.0, eta: float | jax.Array = 0.0,
                  clip_x0: float | None = None, shuffle_history: bool | jax.Array = False,
                  seam_frames: int = SEAM_FRAMES, reference_valid: jax.Array | None = None,
                  noise_scale: float | jax.Array = 1.0) -> jax.Array:
  """Face motion for audio of any length, one `lax.scan` over non-overlapping windows.

  ceil(N / T) windows; the audio is edge-padded to a whole number of windows
  and the output cut back to N frames. Window i + 1 attends to the last H
  frames generated for window i (module docstring). Jit the caller: the model
  is traced once, whatever N.

  Args:
    model, params: a `FaceMotionDiT` (window T = model.config.window, H = .history).
    audio: (B, N, audio_dim) audio tokens at the video frame rate, any N >= 1.
    style: (B, num_style) style controls, held for the whole clip.
    key: PRNG key (window i uses fold_in(key, i)).
    schedule, num_steps, guidance_scale, eta, clip_x0, noise_scale: as `sample_window`.
    reference: optional (B, T_ref, ref_dim) reference sequence, shared by all windows.
    history: optional (B, H, motion_dim) motion before the clip (e.g. the end of
      the previous utterance); None = the first window has no history.
    shuffle_history: diagnostic only (may be traced): feed window i + 1 the history
      of another batch element (rolled by one), to measure what history buys.
    seam_frames: `join_window` length (static; 0 = raw windows).
    reference_valid: optional (B,) bool, False = the null reference (a model with the
      reference branch and no reference video: pass zeros as `reference`).

  Returns:
    (B, N, motion_dim) float32.
  """
  cfg = model.config
  b, n, _ = audio.shape
  t_win, h = cfg.window, cfg.history
  num_win = -(-n // t_win)
  audio = jnp.pad(audio, ((0, 0), (0, num_win * t_win - n), (0, 0)), mode="edge")
  windows = audio.reshape(b, num_win, t_win, -1).swapaxes(0, 1)  # (W, B, T, Da)
  if history is None:
    hist0 = jnp.zeros((b, h, cfg.motion_dim), jnp.float32)
    valid0 = jnp.zeros((b,), bool)
  else:
    hist0, valid0 = jnp.asarray(history, jnp.float32), jnp.ones((b,), bool)

  def step(carry, inputs):
    hist, valid = carry
    i, audio_w = inputs
    cond = FaceConditions(audio_w, hist, style, reference, valid, reference_valid)
    x = sample_window(model, params, cond, jax.random.fold_in(key, i), schedule=schedule,
                      num_steps=num_steps, guidance_scale=guidance_scale, eta=eta, clip_x0=clip_x0,
                      noise_scale=noise_scale)
    x = join_window(hist, x, min(seam_frames, t_win), valid)
    new_hist = x[:, -h:]  # (B, H, 58)
    new_hist = jnp.where(shuffle_history, jnp.roll(new_hist, 1, axis=0), new_hist)
    return (new_hist, jnp.ones((b,), bool)), x

  _, out = jax.lax.scan(step, (hist0, valid0), (jnp.arange(num_win), windows))  # (W, B, T, 58)
  return out.swapaxes(0, 1).reshape(b, num_win * t_win, -1)[:, :n]


def seam_statistic(motion: jax.Array, window: int) -> tuple[jax.Array, jax.Array]:
  """Mean absolute frame-to-frame change across window boundaries and inside windows.

  Args:
    motion: (B, N, D) generated motion, windows of `window` frames from frame 0.
    window: T.

  Returns:
    (boundary, inside): () float32 each; boundary averages |x_{kT} - x_{kT-1}|
    over the k >= 1 with kT < N, inside averages all other consecutive pairs.
  """
  diff = jnp.mean(jnp.abs(jnp.diff(motion.astype(jnp.float32), axis=1)), axis=(0, 2))  # (N - 1,)
  is_seam = (jnp.arange(1, motion.shape[1]) % window) == 0  # pair (f - 1, f) with f = 1 .. N - 1
  boundary = jnp.sum(jnp.where(is_seam, diff, 0.0)) / jnp.maximum(jnp.sum(is_seam), 1)
  inside = jnp.sum(jnp.where(is_seam, 0.0, diff)) / jnp.maximum(jnp.sum(~is_seam), 1)
  return boundary, inside


def face_motion_loss(params, batch: dict, rng: jax.Array, *, model: nn.Module,
                     schedule: NoiseSchedule, x0_loss=None) -> jax.Array:
  """Paper Eq. 1 for FaceMotionDiT with condition dropout (bind model / schedule with functools.partial).

  Args:
    params: FaceMotionDiT parameters.
    batch: "motion" (B, T, 58) clean target window, "audio" (B, T, audio_dim),
      "history" (B, H, 58), "style" (B, num_style); optional "reference"
      (B, T_ref, ref_dim), "history_valid" (B,) bool (False at clip starts), "audio_valid" (B, T)
      bool (False: audio not heard yet) and "mask" (B, T) valid frames.
    rng: PRNG key; each sample drops all its conditions with probability
      model.config.p_drop.
    x0_loss: optional extra term on the predicted clean motion (`diffusion_loss`).

  Returns:
    () float32 loss.
  """
  k_drop, k_diff = jax.random.split(rng)
  x0 = batch["motion"]
  drop = jax.random.bernoulli(k_drop, model.config.p_drop, (x0.shape[0],))
  cond = FaceConditions(batch["audio"], batch["history"], batch["style"], batch.get("reference"),
                        batch.get("history_valid"), batch.get("reference_valid"), batch.get("audio_valid"))
  mask = batch.get("mask")
  return diffusion_loss(schedule, lambda x, t: _apply(model, params, x, t, cond, drop), x0, k_diff,
                        None if mask is None else mask[..., None], prediction=model.config.prediction,
                        x0_loss=x0_loss)
