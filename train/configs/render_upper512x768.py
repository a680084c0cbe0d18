"""Stage 2: the upper-body renderer (paper §3.1, §3.4, Fig. 2; Table 1).

W driven by X_head (32 explicit template keypoints) ⊕ X_body (M's 21 implicit body keypoints, R = I),
G with the rendered-hand injection (Eq. 5); 256 wide x 384 high in, 512x768 out. Losses (Eq. 6): L1,
GAN + feature matching, equivariance, keypoint and deformation priors, 2-D landmark loss of the body
keypoints, hand-region term (L_Per^Hand with VGG weights, else L1 in the hand mask).

  python -m train.main --workdir=DIR --config=train/configs/render_upper512x768.py --config.data_dir=...
  python -m train.main --workdir=DIR --config=train/configs/render_upper512x768.py:lean --config.data_dir=...
"""

from __future__ import annotations

import ml_collections

from train.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.render_config("upper512x768", crop="body", region="hand", face_refine=False)
  if arg == "lean":  # the full-size lean layout (render.presets.lean_full: about 1/3 of the frame's FLOPs)
    c.model.preset = "upper512x768_lean"
  elif arg == "tiny":
    common.shrink_render_for_cpu(c, "tiny_upper512x768")
  elif arg == "small":  # with G's source skip (render.presets.with_source_skip)
    common.small_render_for_cpu(c, "small_upper_skip")
  elif arg == "small_narrow":  # small, with W's hourglass ending in 16 channels (presets.with_narrow_decoder)
    common.small_render_for_cpu(c, "small_upper_skip_narrow")
  elif arg == "small_lean":  # small_narrow with 2 G_middle blocks, SPADE hidden 8, one D scale (presets.lean)
    common.small_render_for_cpu(c, "small_upper_skip_lean")
  elif arg == "small_plain":  # LivePortrait's G (the first round of CPU campaigns; the skip's ablation)
    common.small_render_for_cpu(c, "small_upper")
  elif arg == "small_no_hands":  # the hand-injection ablation: `small` with nothing injected into G
    common.small_render_for_cpu(c, "small_upper_skip_no_hands")
  elif arg:
    raise ValueError(f"unknown render_upper512x768 variant {arg!r} "
                     f"(have: lean, tiny, small, small_narrow, small_lean, small_plain, "
                     f"small_no_hands)")
  return c
