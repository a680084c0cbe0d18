"""The warping network's control keypoints (paper Eq. 2-4): M's outputs + explicit head keypoints.

One function, `control_keypoints`, assembles the keypoints the warping network W moves the appearance
volume with, for each renderer family (`presets.keypoint_layout`). The training step
(`render.train_step`) and the streaming step (`chatanyone_jax.stream_step`) both use it, so that the
renderer sees the same keypoints when it is trained and when it is driven by generated motion.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from chatanyone_jax.ops import pose
from chatanyone_jax.render.presets import RendererConfig, keypoint_layout


def _keypoints(m_out: dict[str, jax.Array], num_kp: int, *, rotate: bool) -> tuple[jax.Array, jax.Array]:
  """(x, delta): M's implicit keypoints x = s (x_c R + delta) + t (B, K, 3) and their deformation delta.

  Args:
    m_out: the motion extractor M's outputs: "kp" (B, 3K) canonical keypoints x_c, "exp" (B, 3K) delta,
      "scale" (B, 1), "t" (B, 3) (only t_x, t_y are used), "pitch" / "yaw" / "roll" (B, bins).
    num_kp: K.
    rotate: True: R from M's head-pose bins (LivePortrait); False: R = I (upper body, paper Eq. 3).
  """
  b = m_out["kp"].shape[0]
  kp_c = m_out["kp"].reshape(b, num_kp, 3)
  delta = m_out["exp"].reshape(b, num_kp, 3)
  if rotate:
    angles = [pose.headpose_from_bins(m_out[a]) for a in ("pitch", "yaw", "roll")]
    rotation = pose.rotation_matrix(*angles)
  else:  # upper body: R = I (paper Eq. 3)
    rotation = jnp.broadcast_to(jnp.eye(3, dtype=kp_c.dtype), (b, 3, 3))
  return pose.transform_keypoints(kp_c, rotation, delta, m_out["scale"], m_out["t"]), delta


def control_keypoints(config: RendererConfig, m_out: dict[str, jax.Array],
                      kp_head: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """W's control keypoints from M's outputs (and the explicit head keypoints), per `keypoint_layout`.

  Layouts (`presets.keypoint_layout(config)`):
    * "implicit" (LivePortrait): M's keypoints with M's rotation; `kp_head` is unused;
    * "hybrid_body" (upper body, Eq. 3-4): X_full = the explicit head-template keypoints `kp_head`
      (B, K_head, 3), then M's body keypoints with R = I;
    * "head_offset" (head512, face refine, Eq. 2): `kp_head` + M's implicit offsets ΔX_head (M's "exp"
      output, K_head x 3).

  Args:
    config: the renderer's preset.
    m_out: M's outputs (`_keypoints`).
    kp_head: (B, K_head, 3) explicit head keypoints in the crop's grid units (the "hybrid_body" and
      "head_offset" layouts).

  Returns:
    (control (B, K_W, 3), implicit (B, K_M, 3), delta (B, K_M, 3)): for "implicit" / "hybrid_body"
    `implicit` are M's keypoints x = s (x_c R + delta) + t and `delta` their deformation; for
    "head_offset" `implicit` is ΔX_head and `delta` too (the offsets are the deformation there).
  """
  layout = keypoint_layout(config)
  num_kp = config.motion_extractor.num_kp
  if layout == "head_offset":
    offset = m_out["exp"].reshape(m_out["exp"].shape[0], num_kp, 3)
    return kp_head + offset, offset, offset
  kp, delta = _keypoints(m_out, num_kp, rotate=layout == "implicit")
  if layout == "hybrid_body":
    return jnp.concatenate([kp_head, kp], axis=1), kp, delta
  return kp, kp, delta
