"""Face refine network (tiny forward / backward) and the soft paste-back (paper Fig. 4)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax.render import presets
from chatanyone_jax.render.face_refine import FaceRefineNetwork, mask_face, paste_back, paste_mask
from tests.chatanyone_jax.render import util

FRAME = np.random.default_rng(0).uniform(size=(2, 32, 24, 3)).astype(np.float32)  # numpy: no jax at import
BOX = np.array([[4.0, 6.0, 20.0, 26.0], [2.0, 2.0, 18.0, 18.0]], np.float32)  # (x0, y0, x1, y1) frame pixels


def test_paste_back_all_ones_face():
  face = jnp.ones((2, 16, 16, 3))

  @jax.jit
  def run(frame, face, box):
    out = paste_back(frame, face, box, feather=0.25)
    grads = jax.grad(lambda f, g, b: util.weighted_sum(paste_back(f, g, b, feather=0.25)),
                     argnums=(0, 1, 2))(frame, face, box)
    return out, paste_mask(frame.shape[1:3], box, 0.25), grads

  out, m, (g_frame, g_face, g_box) = run(FRAME, face, BOX)
  m = np.asarray(m[..., 0])
  outside, inside = m == 0, m == 1
  assert outside.sum() > 100 and inside.sum() > 50 and ((m > 0) & (m < 1)).sum() > 0
  # outside the mask: the frame untouched; inside: the face; in the feather: a blend of the two
  np.testing.assert_array_equal(np.asarray(out)[outside], np.asarray(FRAME)[outside])
  np.testing.assert_allclose(np.asarray(out)[inside], 1.0, atol=1e-6)
  assert np.all(np.asarray(out) >= 0) and np.all(np.asarray(out) <= 1 + 1e-6)  # convex blend of [0, 1] images
  # sample 0's box covers x in [4, 20), y in [6, 26): nothing of it lands elsewhere
  assert m[0, :6].max() == 0 and m[0, 26:].max() == 0 and m[0, :, :4].max() == 0 and m[0, :, 20:].max() == 0
  for g in (g_frame, g_face, g_box):
    assert np.all(np.isfinite(g)) and float(jnp.abs(g).max()) > 0


def test_paste_back_crop_mask_and_mask_face():
  face = jnp.zeros((1, 8, 8, 3))
  crop_mask = jnp.zeros((1, 8, 8, 1))  # an empty face mask pastes nothing
  out = paste_back(FRAME[:1], face, BOX[:1], crop_mask=crop_mask)
  np.testing.assert_array_equal(out, FRAME[:1])
  fm = jnp.zeros((1, 8, 8, 1)).at[:, 2:6, 2:6].set(1.0)
  masked = mask_face(jnp.ones((1, 8, 8, 3)), fm)
  assert float(masked[0, 3, 3].max()) == 0.0 and float(masked[0, 0, 0].min()) == 1.0


def test_tiny_face_refine_forward_backward():
  cfg = dataclasses.replace(presets.tiny, spade_generator=presets.tiny_upper.spade_generator)
  k = cfg.warping_network.num_kp
  model = FaceRefineNetwork(cfg)
  src = jax.random.uniform(jax.random.key(1), (1, 32, 32, 3))
  kp_s = 0.5 * jax.random.uniform(jax.random.key(2), (1, k, 3), minval=-1, maxval=1)
  kp_d = kp_s + 0.05
  background = mask_face(src, jnp.zeros((1, 32, 32, 1)).at[:, 8:24, 8:24].set(1.0))
  v = util.random_variables(model, src, kp_s, kp_d, background)

  @jax.jit
  def run(params):
    def loss(p):
      out, upd = model.apply({"params": p, "batch_stats": v["batch_stats"]}, src, kp_s, kp_d, background,
                             train=True, mutable=["batch_stats"])
      return util.weighted_sum(out), out
    return jax.grad(loss, has_aux=True)(params)

  grads, out = run(v["params"])
  assert out.shape == (1, 64, 64, 3) and np.all(np.isfinite(out))
  assert set(grads) == {"appearance_feature_extractor", "warping_network", "spade_generator"}
  util.assert_gradients_reach_every_parameter(grads)  # random gates are non-zero: the branch learns too
  with pytest.raises(ValueError, match="hand_injection"):
    plain = FaceRefineNetwork(presets.tiny)
    jax.eval_shape(lambda: plain.init(jax.random.key(0), src, kp_s, kp_d, background))
