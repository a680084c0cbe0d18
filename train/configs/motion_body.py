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
      # UpperBodyConfig fields (window comes from above).
      "body": {"num_layers": 2, "width": 512, "num_heads": 8, "mlp_ratio": 4, "audio_dim": 256,
               "app_dim": 256, "time_embed_dim": 256},
      "audio": {"num_layers": 2, "num_heads": 4, "mlp_ratio": 4, "num_conv": 2},
      "diffusion_steps": 1000,
  })
  if arg == "tiny":
    common.shrink_for_cpu(c)
    c.window, c.history, c.stride = 16, 4, 2
    c.model.body.update(width=64, num_heads=4, mlp_ratio=2, audio_dim=32, app_dim=16, time_embed_dim=32)
    c.model.audio.update(num_layers=1, num_heads=4, mlp_ratio=2)
  elif arg:
    raise ValueError(f"unknown motion_body variant {arg!r} (have: tiny)")
  return c
