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
from chatanyone_jax.motion.face_motion_dit import FaceMotionConfig, FaceMotionDiT, style_controls
from chatanyone_jax.motion.sampling import (
    FaceConditions,
    face_motion_loss,
    generate_long,
    join_window,
    make_denoise_fn,
    sample_window,
    seam_statistic,
)
from chatanyone_jax.motion.upper_body_motion import UpperBodyConfig, UpperBodyLayout, UpperBodyMotion

__all__ = [
    "NoiseSchedule", "cosine_schedule", "ddim_sample", "ddim_timesteps", "diffusion_loss", "epsilon_mse",
    "q_sample", "FaceConditions", "FaceMotionConfig", "FaceMotionDiT", "UpperBodyConfig", "UpperBodyLayout",
    "UpperBodyMotion", "face_motion_loss", "generate_long", "join_window", "make_denoise_fn", "sample_window",
    "seam_statistic", "style_controls",
]
