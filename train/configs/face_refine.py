"""Stage 2: the face refine network (paper §3.4, Fig. 4).

A lighter F / W / G on 256x256 head crops, 512x512 out, driven by the head keypoints plus implicit
offsets (Eq. 2); G's injection branch gets the driving head crop with the face masked out, so the network
learns to fill the face in from the source; face-region term instead of the hand one, no landmark loss.

  python -m train.main --workdir=DIR --config=train/configs/face_refine.py --config.data_dir=PREPROCESSED
  python -m train.main --workdir=DIR --config=train/configs/face_refine.py:lean --config.data_dir=...
"""

from __future__ import annotations

import ml_collections

from train.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.render_config("face_refine", crop="head", region="face", face_refine=True)
  if arg == "lean":  # the full-size lean layout (render.presets.lean_full: about 1/3 of the frame's FLOPs)
    c.model.preset = "face_refine_lean"
  elif arg == "tiny":
    common.shrink_render_for_cpu(c, "tiny_face_refine")
  elif arg == "small":  # with G's source skip, as the other renderers' small variants
    common.small_render_for_cpu(c, "small_face_refine_skip")
  elif arg == "small_lean":  # narrow W, 2 G_middle blocks, SPADE hidden 8, one D scale (presets.lean)
    common.small_render_for_cpu(c, "small_face_refine_skip_lean")
  elif arg == "small_plain":  # without the skip
    common.small_render_for_cpu(c, "small_face_refine")
  elif arg:
    raise ValueError(f"unknown face_refine variant {arg!r} "
                     f"(have: lean, tiny, small, small_lean, small_plain)")
  return c
