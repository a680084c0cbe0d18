"""Cosine schedule, q_sample, ε-loss and the DDIM sampler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax.motion import diffusion
from chatanyone_jax.motion.diffusion import cosine_schedule, ddim_sample, q_sample

SCHED = cosine_schedule()
SHAPE = (2, 40, 58)  # (B, T, 52 exp + 6 pose)


def _x0():
  return jax.random.normal(jax.random.key(42), SHAPE) * 0.7 + 0.3


def _oracle(x0):
  """Returns the exact noise of x_t for a known x0: the ideal ε-network."""
  def eps_fn(x, t):
    ab = SCHED.alpha_bars[t][:, None, None]
    return (x - jnp.sqrt(ab) * x0) / jnp.sqrt(1.0 - ab)
  return eps_fn


def test_cosine_schedule():
  betas, ab = np.asarray(SCHED.betas), np.asarray(SCHED.alpha_bars)
  assert betas.shape == ab.shape == (1000,)
  assert np.all(np.diff(betas) >= 0) and np.all(np.diff(ab) < 0)  # monotonic
  assert betas.min() > 0 and betas.max() == np.float32(0.999)  # clipped at the last step
  assert ab[0] > 0.9999 and ab[-1] < 1e-6
  np.testing.assert_allclose(SCHED.alphas, 1.0 - betas, atol=1e-7)
  # Closed form away from the clipped tail: ᾱ_t = f(t + 1) / f(0).
  f = lambda t: np.cos((t / 1000 + 0.008) / 1.008 * np.pi / 2) ** 2
  t = np.array([0, 100, 500, 900])
  np.testing.assert_allclose(ab[t], f(t + 1) / f(0), rtol=1e-5)


def test_q_sample_statistics():
  x0 = jnp.full((4096, 8), 2.0)
  noise = jax.random.normal(jax.random.key(0), x0.shape)
  for step in (0, 300, 999):
    t = jnp.full((4096,), step)
    xt = np.asarray(jax.jit(q_sample)(SCHED, x0, t, noise))
    ab = float(SCHED.alpha_bars[step])
    assert abs(xt.mean() - 2.0 * np.sqrt(ab)) < 0.03
    assert abs(xt.std() - np.sqrt(1 - ab)) < 0.03
  np.testing.assert_allclose(q_sample(SCHED, x0, jnp.zeros(4096, int), noise), x0, atol=0.05)  # σ_0 = 6e-3
  # Per-example steps broadcast over the remaining axes.
  t = jnp.array([0, 999])
  xt = q_sample(SCHED, x0[:2], t, noise[:2])
  np.testing.assert_allclose(xt[1], np.sqrt(SCHED.alpha_bars[999]) * 2.0 + np.sqrt(1 - SCHED.alpha_bars[999])
                             * noise[1], atol=1e-6)


def test_epsilon_mse_and_mask():
  eps = jnp.zeros((2, 3, 4))
  pred = eps.at[0, 0].set(2.0).at[1, 2].set(1.0)
  np.testing.assert_allclose(diffusion.epsilon_mse(pred, eps), (4 * 4 + 4 * 1) / 24, rtol=1e-6)
  mask = jnp.array([[1, 1, 1], [1, 1, 0]], jnp.float32)[..., None]  # last frame of item 1 is padding
  np.testing.assert_allclose(diffusion.epsilon_mse(pred, eps, mask), 16 / 20, rtol=1e-6)


def test_diffusion_loss_zero_for_oracle_one_for_zero_predictor():
  x0 = _x0()
  zero = lambda x, t: jnp.zeros_like(x)
  losses = jax.jit(lambda k: (diffusion.diffusion_loss(SCHED, _oracle(x0), x0, k),
                              diffusion.diffusion_loss(SCHED, zero, x0, k)))
  oracle_loss, zero_loss = losses(jax.random.key(0))
  assert float(oracle_loss) < 1e-6
  assert abs(float(zero_loss) - 1.0) < 0.05  # E||ε||² = 1


def test_ddim_timesteps():
  np.testing.assert_array_equal(diffusion.ddim_timesteps(1000, 10), np.arange(999, 0, -100))
  np.testing.assert_array_equal(diffusion.ddim_timesteps(1000, 1000), np.arange(999, -1, -1))
  ts = diffusion.ddim_timesteps(1000, 7)
  assert len(ts) == 7 and ts[0] == 999 and np.all(np.diff(ts) < 0) and ts[-1] >= 0
  with pytest.raises(ValueError):
    diffusion.ddim_timesteps(1000, 0)


def test_ddim_with_oracle_recovers_x0():
  x0 = _x0()
  sample = jax.jit(lambda k, eta: ddim_sample(_oracle(x0), SCHED, SHAPE, k, eta=eta))
  for eta in (0.0, 1.0):  # deterministic DDIM and DDPM-like
    out = sample(jax.random.key(0), eta)
    assert out.shape == SHAPE
    np.testing.assert_allclose(out, x0, atol=1e-4)  # measured 2.4e-7


def test_ddim_samples_a_gaussian_with_its_exact_denoiser():
  """Data N(μ, s²): E[ε | x_t] is closed form; DDIM must map N(0, 1) noise to N(μ, s²)."""
  mu, s = 1.5, 0.5

  def eps_fn(x, t):
    ab = SCHED.alpha_bars[t][:, None]
    return jnp.sqrt(1 - ab) * (x - jnp.sqrt(ab) * mu) / (ab * s * s + 1 - ab)

  x = np.asarray(jax.jit(lambda k: ddim_sample(eps_fn, SCHED, (8192, 1), k, num_steps=50))(jax.random.key(0)))
  assert abs(x.mean() - mu) < 0.02 and abs(x.std() - s) < 0.03  # measured 1.501, 0.490


def _toy_denoiser(x, t):
  """A non-oracle (ε_cond, ε_uncond) pair that depends on x and t."""
  tt = t.astype(jnp.float32)[:, None, None] / 1000.0
  return 0.9 * x + 0.1 * tt, 0.5 * x - 0.2


def test_same_key_same_sample_different_key_different_sample():
  sample = jax.jit(lambda k, eta: ddim_sample(_toy_denoiser, SCHED, SHAPE, k, eta=eta, guidance_scale=2.0))
  for eta in (0.0, 0.5):
    a, b, c = sample(jax.random.key(0), eta), sample(jax.random.key(0), eta), sample(jax.random.key(1), eta)
    np.testing.assert_array_equal(a, b)
    assert float(jnp.abs(a - c).max()) > 1e-2


def test_noise_scale_scales_the_starting_noise():
  """noise_scale s samples from s · x_T (drawn or given); at 0 the sample no longer depends on the key."""
  sample = jax.jit(lambda k, s, x_T=None: ddim_sample(_toy_denoiser, SCHED, SHAPE, k, guidance_scale=2.0,
                                                      noise_scale=s, x_T=x_T))
  x_T = jax.random.normal(jax.random.key(3), SHAPE)
  np.testing.assert_allclose(sample(jax.random.key(0), 0.5, x_T), sample(jax.random.key(0), 1.0, 0.5 * x_T),
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(sample(jax.random.key(0), 0.0), sample(jax.random.key(1), 0.0))
  assert float(jnp.abs(sample(jax.random.key(0), 1.0) - sample(jax.random.key(1), 1.0)).max()) > 1e-2


def test_guidance_scale_one_is_conditional_only():
  x_T = jax.random.normal(jax.random.key(3), SHAPE)
  cond_only = lambda x, t: _toy_denoiser(x, t)[0]
  guided = jax.jit(lambda s: ddim_sample(_toy_denoiser, SCHED, SHAPE, jax.random.key(0), eta=0.3,
                                         guidance_scale=s, x_T=x_T))
  plain = jax.jit(lambda: ddim_sample(cond_only, SCHED, SHAPE, jax.random.key(0), eta=0.3, x_T=x_T))()
  np.testing.assert_array_equal(guided(1.0), plain)
  assert float(jnp.abs(guided(3.0) - plain).max()) > 1e-2
  with pytest.raises(ValueError, match="guidance_scale"):
    jax.eval_shape(lambda: ddim_sample(cond_only, SCHED, SHAPE, jax.random.key(0), guidance_scale=2.0))


def test_sampler_compiles_once_and_scans_over_steps():
  traces = {"denoise": 0, "sample": 0}

  def denoise(x, t):
    traces["denoise"] += 1
    return _toy_denoiser(x, t)

  @jax.jit
  def sample(key, scale):
    traces["sample"] += 1
    return ddim_sample(denoise, SCHED, SHAPE, key, num_steps=10, guidance_scale=scale)

  for seed, scale in [(0, 1.0), (1, 2.0), (2, 4.5)]:
    sample(jax.random.key(seed), jnp.float32(scale))
  assert traces == {"sample": 1, "denoise": 1}  # a Python loop over 10 steps would trace denoise 10 times
  jaxpr = str(jax.make_jaxpr(sample)(jax.random.key(0), jnp.float32(1.0)))
  assert "scan" in jaxpr and "length=10" in jaxpr


def test_clip_x0_bounds_the_prediction():
  zero = lambda x, t: jnp.zeros_like(x)  # x̂0 = x_t / sqrt(ᾱ_t): ~2e4 at t = 999
  run = jax.jit(lambda c: ddim_sample(zero, SCHED, SHAPE, jax.random.key(0), clip_x0=c), static_argnums=0)
  assert float(jnp.abs(run(None)).max()) > 100
  clipped = run(3.0)
  assert float(jnp.abs(clipped).max()) <= 3.0 + 1e-6


def test_x0_prediction_loss_and_sampler():
  """prediction="x0": the loss compares the output with x0 (zero for the oracle x0-network), and DDIM reads
  x̂0 from the network, so the oracle recovers x0 and the Gaussian's exact x0-denoiser samples it; an
  ε-network's output read as x̂0 does not (the option is not a no-op); unknown names are refused."""
  x0 = _x0()
  x0_oracle = lambda x, t: jnp.broadcast_to(x0, x.shape)
  loss = diffusion.diffusion_loss(SCHED, x0_oracle, x0, jax.random.key(1), prediction="x0")
  assert float(loss) == 0.0
  assert float(diffusion.diffusion_loss(SCHED, x0_oracle, x0, jax.random.key(1))) > 0.5  # as ε it is wrong
  for eta in (0.0, 1.0):
    out = ddim_sample(x0_oracle, SCHED, SHAPE, jax.random.key(0), eta=eta, prediction="x0")
    np.testing.assert_allclose(out, x0, atol=1e-4)
  assert not np.allclose(ddim_sample(_oracle(x0), SCHED, SHAPE, jax.random.key(0), prediction="x0"), x0,
                         atol=0.1)
  mu, s = 1.5, 0.5

  def x0_fn(x, t):  # E[x0 | x_t] for data N(μ, s²)
    ab = SCHED.alpha_bars[t][:, None]
    return mu + jnp.sqrt(ab) * s * s * (x - jnp.sqrt(ab) * mu) / (ab * s * s + 1 - ab)

  x = np.asarray(jax.jit(lambda k: ddim_sample(x0_fn, SCHED, (8192, 1), k, num_steps=50,
                                               prediction="x0"))(jax.random.key(0)))
  assert abs(x.mean() - mu) < 0.02 and abs(x.std() - s) < 0.03
  with pytest.raises(ValueError, match="prediction"):
    ddim_sample(x0_oracle, SCHED, SHAPE, jax.random.key(0), prediction="v")
