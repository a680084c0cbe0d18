"""Stage 1: UpperBodyMotion (with its own AudioEncoder) on motion windows (paper §3.3, Fig. 3 top).

  python -m train.main --workdir=DIR --config=train/configs/motion_body.py --config.data_dir=PREPROCESSED
"""

from __future__ import annotations

import ml_collections

from train.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.task = "motion_body"
  c.window, c.history, c.stride = 40, 10, 5  # T (UpperBodyConfig.window); H frames are read but unused
  c.model = ml_collections.ConfigDict({
      "variant": "base",  # sizes of UpperBodyMotion and its AudioEncoder: upper_body_motion.VARIANTS
      "diffusion_steps": 1000,
  })
  if arg == "tiny":
    common.shrink_for_cpu(c)
    c.window, c.history, c.stride = 16, 4, 2
    c.model.variant = "tiny"
  elif arg in ("small", "small_x0"):
    common.small_motion_for_cpu(c)
    c.model.variant = "small"
    if arg == "small_x0":
      # The network predicts the clean window (UpperBodyConfig.prediction): an ε-trained small model's
      # samples jumped from frame to frame at the x̂0 clip (RESULTS.md).
      c.model.body = {"prediction": "x0"}
  elif arg:
    raise ValueError(f"unknown motion_body variant {arg!r} (have: tiny, small, small_x0)")
  return c
