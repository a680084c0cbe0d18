"""`control_keypoints` (paper Eq. 2-4): W's control keypoints for each renderer keypoint layout."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax.render import presets
from chatanyone_jax.render.keypoints import control_keypoints


def _m_out(b, k, seed=0):
  rng = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(rng.normal(size=s).astype(np.float32))
  return {"kp": f(b, 3 * k), "exp": f(b, 3 * k), "scale": f(b, 1) ** 2 + 0.5, "t": f(b, 3),
          **{a: f(b, 66) for a in ("pitch", "yaw", "roll")}}


def test_control_keypoint_layouts():
  """Eq. 2 (head + offset), Eq. 4 (head first, then body with R = I), LivePortrait (rotated implicit)."""
  b = 2
  head = jnp.asarray(np.random.default_rng(1).normal(size=(b, presets.K_HEAD, 3)).astype(np.float32))
  cfg = presets.tiny_head512
  assert presets.keypoint_layout(cfg) == "head_offset"
  m = _m_out(b, presets.K_HEAD)
  control, implicit, delta = control_keypoints(cfg, m, head)
  np.testing.assert_allclose(control, head + m["exp"].reshape(b, -1, 3), rtol=1e-6)
  np.testing.assert_array_equal(implicit, delta)

  cfg = presets.tiny_upper512x768
  assert presets.keypoint_layout(cfg) == "hybrid_body"
  m = _m_out(b, presets.K_BODY)
  control, kp, delta = control_keypoints(cfg, m, head)
  assert control.shape == (b, presets.K_HEAD + presets.K_BODY, 3)
  np.testing.assert_array_equal(control[:, :presets.K_HEAD], head)
  # R = I: x = s (x_c + delta) + (t_x, t_y, 0) whatever the pose bins say.
  t_xy = m["t"].at[:, 2].set(0.0)[:, None]
  want = m["scale"][:, None] * (m["kp"].reshape(b, -1, 3) + m["exp"].reshape(b, -1, 3)) + t_xy
  np.testing.assert_allclose(kp, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(control[:, presets.K_HEAD:], want, rtol=1e-5, atol=1e-6)

  cfg = presets.tiny
  assert presets.keypoint_layout(cfg) == "implicit"
  m = _m_out(b, cfg.motion_extractor.num_kp)
  control, kp, _ = control_keypoints(cfg, m)
  np.testing.assert_array_equal(control, kp)
  unrotated = m["scale"][:, None] * (m["kp"].reshape(b, -1, 3) + m["exp"].reshape(b, -1, 3))
  assert not np.allclose(kp, unrotated + m["t"].at[:, 2].set(0.0)[:, None], atol=1e-3)  # rotated

  bad = dataclasses.replace(cfg, num_kp_head=5)
  with pytest.raises(ValueError, match="inconsistent keypoint counts"):
    presets.keypoint_layout(bad)
