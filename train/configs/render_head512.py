"""Stage 2: the head renderer (paper §3.4 "face animation version", Table 1 rows marked *).

LivePortrait's F / M / W / G driven by the 32 head-template keypoints plus M's implicit offsets ΔX_head
(Eq. 2), 256x256 head crops in, 512x512 out, with the multi-scale discriminator.

  python -m train.main --workdir=DIR --config=train/configs/render_head512.py --config.data_dir=PREPROCESSED
  python -m train.main --workdir=DIR --config=train/configs/render_head512.py:lean --config.data_dir=...
  python -m train.main --workdir=DIR --config=train/configs/render_head512.py:tiny --config.data_dir=...
"""

from __future__ import annotations

import ml_collections

from train.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.render_config("head512", crop="head", region=None, face_refine=False)
  if arg == "lean":  # the full-size lean layout (render.presets.lean_full: about 1/3 of the frame's FLOPs)
    c.model.preset = "head512_lean"
    c.region = "mouth"  # the lean W shows the mouth less without it (benchmarks/RESULTS.md)
  elif arg == "tiny":
    common.shrink_render_for_cpu(c, "tiny_head512")
  elif arg == "small":  # with G's source skip (render.presets.with_source_skip)
    common.small_render_for_cpu(c, "small_head_skip")
  elif arg == "small_narrow":  # small, with W's hourglass ending in 16 channels (presets.with_narrow_decoder)
    common.small_render_for_cpu(c, "small_head_skip_narrow")
  elif arg == "small_lean":  # small_narrow with 2 G_middle blocks, SPADE hidden 8, one D scale (presets.lean)
    common.small_render_for_cpu(c, "small_head_skip_lean")
  elif arg == "small_lean_mouth":  # small_lean with a mouth-region L1 term (render.train_step.REGIONS)
    common.small_render_for_cpu(c, "small_head_skip_lean")
    c.region = "mouth"
  elif arg == "small_lpmotion_mouth":  # small_lean_mouth's baseline: the full presets' layout at small scale
    common.small_render_for_cpu(c, "small_head_skip_lpmotion")  # (LivePortrait's dense motion, 6 G_middle)
    c.region = "mouth"
  elif arg == "small_plain":  # LivePortrait's G (the first round of CPU campaigns; the skip's ablation)
    common.small_render_for_cpu(c, "small_head")
  elif arg:
    raise ValueError(f"unknown render_head512 variant {arg!r} "
                     f"(have: lean, tiny, small, small_narrow, small_lean, small_lean_mouth, "
                     f"small_lpmotion_mouth, small_plain)")
  return c
