"""Gaussian diffusion for the stage-1 motion models: cosine schedule, ε-loss, DDIM sampling.

Forward process q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I), t = 0 .. T-1,
with Nichol & Dhariwal's cosine schedule (T = 1000, β clipped at 0.999). The
network predicts the noise (paper Eq. 1: E ||ε - ε_θ(x_t, t, c)||²).

Denoiser API used by `ddim_sample`: `denoise_fn(x_t, t)` with x_t (B, ...) and
t (B,) int32, closing over its conditioning (params, audio tokens, history,
style). It returns either one array ε (B, ...) (no guidance) or a pair
(ε_cond, ε_uncond) for classifier-free guidance, ε = ε_cond + (s - 1)(ε_cond -
ε_uncond), so that s = 1 gives ε_cond exactly. A model typically makes the
pair in one call by stacking the batch with the conditions dropped
(`sampling.make_denoise_fn`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array | tuple[jax.Array, jax.Array]]


class NoiseSchedule(NamedTuple):
  """Per-step arrays, each (T,) float32 (a pytree; pass it through jit as an argument or a constant)."""
  betas: jax.Array
  alphas: jax.Array  # 1 - β_t
  alpha_bars: jax.Array  # ᾱ_t = Π_{s<=t} α_s

  @property
  def num_steps(self) -> int:
    return self.betas.shape[0]


def cosine_schedule(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
  """Nichol & Dhariwal (2021) cosine schedule.

  f(t) = cos(((t / T) + s) / (1 + s) · π / 2)², β_t = min(1 - f(t + 1) / f(t), max_beta),
  ᾱ_t = Π (1 - β). Computed in float64, stored float32. ᾱ_0 ≈ 1 - 4e-5,
  ᾱ_{T-1} ≈ 2.4e-9 for the defaults.
  """
  t = np.arange(num_steps + 1, dtype=np.float64) / num_steps
  f = np.cos((t + s) / (1 + s) * np.pi / 2) ** 2
  betas = np.minimum(1.0 - f[1:] / f[:-1], max_beta)
  alphas = 1.0 - betas
  alpha_bars = np.cumprod(alphas)
  return NoiseSchedule(*(jnp.asarray(a, jnp.float32) for a in (betas, alphas, alpha_bars)))


def _expand(v: jax.Array, x: jax.Array) -> jax.Array:
  """(B,) -> (B, 1, ..., 1) to broadcast against x."""
  return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def q_sample(schedule: NoiseSchedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
  """x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε.

  Args:
    x0: (B, ...) clean data; t: (B,) integer steps in [0, T); noise: like x0.

  Returns:
    (B, ...) x_t.
  """
  ab = _expand(schedule.alpha_bars[t], x0)
  return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise


def epsilon_mse(eps_pred: jax.Array, eps: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Paper Eq. 1: mean squared error of the predicted noise.

  Args:
    eps_pred, eps: (B, T, D) (any shape).
    mask: optional weights broadcastable to eps (e.g. (B, T, 1) valid frames,
      1 = counted); the loss is the mean over counted elements.

  Returns:
    () float32.
  """
  err = jnp.square(eps_pred.astype(jnp.float32) - eps.astype(jnp.float32))
  if mask is None:
    return jnp.mean(err)
  w = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), err.shape)
  return jnp.sum(err * w) / jnp.maximum(jnp.sum(w), 1.0)


PREDICTIONS = ("epsilon", "x0")  # what the network outputs: the noise (paper Eq. 1) or the clean sample


def diffusion_loss(schedule: NoiseSchedule, eps_fn: Callable[[jax.Array, jax.Array], jax.Array],
                   x0: jax.Array, key: jax.Array, mask: jax.Array | None = None,
                   prediction: str = "epsilon", x0_loss: Callable | None = None) -> jax.Array:
  """One Monte-Carlo sample of Eq. 1: t ~ U{0..T-1}, ε ~ N(0, I), ||ε - eps_fn(x_t, t)||².

  Args:
    eps_fn: (x_t (B, ...), t (B,) int32) -> ε prediction (B, ...), closing over
      params and conditions (with condition dropout already applied for CFG).
    x0: (B, ...) clean motion; key: PRNG key; mask: as `epsilon_mse`.
    x0_loss: optional (predicted x0, x0, mask) -> () term added to the loss (prediction "x0" only), e.g.
      `chatanyone_jax.motion.train_step.curve_loss` of the mouth opening.

  Returns:
    () float32.
  """
  k_t, k_eps = jax.random.split(key)
  t = jax.random.randint(k_t, (x0.shape[0],), 0, schedule.num_steps, dtype=jnp.int32)
  eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
  if prediction not in PREDICTIONS:
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
  # "x0": the network predicts the clean sample, ||x0 - f(x_t, t)||² (MDM, EDGE). Against ε-prediction this
  # weights the high-noise steps up by (1 - ᾱ_t) / ᾱ_t, exactly where only the conditions (the audio) can
  # tell the network what x0 is.
  if x0_loss is not None and prediction != "x0":
    raise ValueError(f"x0_loss needs prediction='x0' (the network's clean sample), got {prediction!r}")
  target = x0 if prediction == "x0" else eps
  pred = eps_fn(q_sample(schedule, x0, t, eps), t)
  loss = epsilon_mse(pred, target, mask)
  return loss if x0_loss is None else loss + x0_loss(pred, x0, mask)


def ddim_timesteps(num_train_steps: int, num_steps: int) -> np.ndarray:
  """Evenly spaced "trailing" steps, descending, starting at T - 1 (e.g. 999, 899, ..., 99).

  Trailing spacing (Lin et al. 2024) starts sampling at the last training step,
  where x_T really is pure noise; DDIM's original "leading" spacing would start
  at 900 with a few-step sampler. Returns (num_steps,) int32.
  """
  if not 1 <= num_steps <= num_train_steps:
    raise ValueError(f"num_steps must be in [1, {num_train_steps}], got {num_steps}")
  ts = np.round(num_train_steps - np.arange(num_steps) * (num_train_steps / num_steps)) - 1
  return ts.astype(np.int32)


def _guided_eps(out, guidance_scale) -> jax.Array:
  if isinstance(out, tuple | list):
    eps_c, eps_u = out
    return eps_c + (guidance_scale - 1.0) * (eps_c - eps_u)
  if not isinstance(guidance_scale, jax.Array) and guidance_scale != 1.0:
    raise ValueError("guidance_scale != 1 needs denoise_fn to return (eps_cond, eps_uncond)")
  return out


def ddim_sample(denoise_fn: DenoiseFn, schedule: NoiseSchedule, shape: tuple[int, ...], key: jax.Array, *,
                num_steps: int = 10, eta: float | jax.Array = 0.0, guidance_scale: float | jax.Array = 1.0,
                x_T: jax.Array | None = None, clip_x0: float | None = None,
                prediction: str = "epsilon", noise_scale: float | jax.Array = 1.0) -> jax.Array:
  """DDIM (Song et al. 2021) with classifier-free guidance, as one `lax.scan` over the steps.

  For the step pair t -> t' (t' = -1 after the last step, with ᾱ_{-1} = 1):
    x̂0 = (x_t - sqrt(1 - ᾱ_t) ε) / sqrt(ᾱ_t)
    σ = η sqrt((1 - ᾱ_t') / (1 - ᾱ_t)) sqrt(1 - ᾱ_t / ᾱ_t')
    x_t' = sqrt(ᾱ_t') x̂0 + sqrt(1 - ᾱ_t' - σ²) ε + σ z.
  η = 0 is deterministic DDIM, η = 1 matches DDPM's posterior variance. The
  result is a deterministic function of `key` (x_T from it unless given, the
  per-step z from fold_in(key, step)). `denoise_fn` is traced once whatever
  num_steps is. Jit the caller; eta, guidance_scale and x_T may be traced.

  Args:
    denoise_fn: (x_t (B, ...), t (B,) int32) -> ε or (ε_cond, ε_uncond); see the
      module docstring.
    schedule: the training schedule.
    shape: (B, ...) sample shape, e.g. (B, T, 58) face motion.
    key: PRNG key.
    num_steps: sampler steps (static), trailing spacing (`ddim_timesteps`).
    eta: stochasticity η.
    guidance_scale: CFG scale s; 1 = conditional only.
    x_T: optional (B, ...) starting noise; drawn from `key` when None.
    clip_x0: optional static bound |x̂0| <= clip_x0 (ε is then recomputed from
      the clipped x̂0); tames the first steps where sqrt(ᾱ_t) ~ 5e-5.
    prediction: what denoise_fn returns, "epsilon" (ε̂) or "x0" (x̂0; ε̂ follows from it).
    noise_scale: the starting noise's scale ("temperature": x_T = noise_scale · x_T, drawn or given);
      below 1 the sample moves towards the condition's most likely motion, away from its variety.

  Returns:
    (B, ...) float32 sample x_0.
  """
  if prediction not in PREDICTIONS:
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
  k_init, k_steps = jax.random.split(key)
  x = jax.random.normal(k_init, shape, jnp.float32) if x_T is None else jnp.asarray(x_T, jnp.float32)
  x = x * noise_scale
  ts = ddim_timesteps(schedule.num_steps, num_steps)  # (S,) descending
  t_prev = np.concatenate([ts[1:], [-1]]).astype(np.int32)
  ab = schedule.alpha_bars
  ab_t = ab[ts]  # (S,)
  ab_prev = jnp.where(t_prev >= 0, ab[np.maximum(t_prev, 0)], 1.0)
  batch = shape[0]

  def step(x, inputs):
    i, t, a_t, a_prev = inputs
    out = _guided_eps(denoise_fn(x, jnp.full((batch,), t, jnp.int32)), guidance_scale).astype(jnp.float32)
    if prediction == "x0":
      x0 = out
      eps = (x - jnp.sqrt(a_t) * x0) / jnp.sqrt(1.0 - a_t)
    else:
      eps = out
      x0 = (x - jnp.sqrt(1.0 - a_t) * eps) / jnp.sqrt(a_t)
    if clip_x0 is not None:
      x0 = jnp.clip(x0, -clip_x0, clip_x0)
      eps = (x - jnp.sqrt(a_t) * x0) / jnp.sqrt(1.0 - a_t)
    sigma = eta * jnp.sqrt((1.0 - a_prev) / (1.0 - a_t)) * jnp.sqrt(1.0 - a_t / a_prev)
    z = jax.random.normal(jax.random.fold_in(k_steps, i), x.shape, jnp.float32)
    x = (jnp.sqrt(a_prev) * x0 + jnp.sqrt(jnp.maximum(1.0 - a_prev - sigma**2, 0.0)) * eps + sigma * z)
    return x, None

  x, _ = jax.lax.scan(step, x, (jnp.arange(num_steps), jnp.asarray(ts), ab_t, ab_prev))
  return x
