import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax.ops import grid_sample, keypoint_flow, make_coordinate_grid


def test_identity_when_keypoints_do_not_move():
  kp = jax.random.uniform(jax.random.key(0), (2, 5, 2), minval=-0.8, maxval=0.8)
  flow = keypoint_flow(kp, kp, (16, 12))
  np.testing.assert_allclose(flow, jnp.broadcast_to(make_coordinate_grid((16, 12)), flow.shape),
                             atol=1e-6)


def test_single_keypoint_translation_moves_content():
  """One keypoint moved right by 0.5: content near it moves right by ~0.5."""
  img = jnp.zeros((1, 33, 33, 1)).at[0, 16, 16, 0].set(1.0)  # a dot at the centre
  src = jnp.array([[[0.0, 0.0]]])
  drv = jnp.array([[[0.5, 0.0]]])
  flow = keypoint_flow(src, drv, (33, 33), background=1e-6)
  out = grid_sample(img, flow, align_corners=True)
  y, x = np.unravel_index(int(jnp.argmax(out[0, ..., 0])), (33, 33))
  assert y == 16 and abs(x - 24) <= 1  # 0.5 in [-1, 1] over 33 px (align_corners) = 8 px


def test_3d_flow_shape():
  kp = jnp.zeros((1, 3, 3))
  assert keypoint_flow(kp, kp + 0.1, (4, 6, 5)).shape == (1, 4, 6, 5, 3)
