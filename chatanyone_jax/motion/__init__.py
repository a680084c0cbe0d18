"""Stage 1 (audio -> motion): diffusion utilities and the motion diffusion transformers."""

from chatanyone_jax.motion.diffusion import (
                                             NoiseSchedule,
                                             cosine_schedule,
                                             ddim_sample,
                                             ddim_timesteps,
                                             diffusion_loss,
                                             epsilon_mse,
                                             q_sample,
)

__all__ = [
    "NoiseSchedule", "cosine_schedule", "ddim_sample", "ddim_timesteps", "diffusion_loss", "epsilon_mse",
    "q_sample",
]
