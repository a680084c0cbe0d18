"""grid_sample against PyTorch reference vectors and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax.layers.torch_compat import nchw_to_nhwc, nhwc_to_nchw
from chatanyone_jax.ops import grid_sample, make_coordinate_grid
from tests.helpers import enable_x64

# Op-by-op (eager) dispatch of the many small ops is slow on CPU; tests call
# the jitted op, as all users do.
gs = jax.jit(grid_sample, static_argnames="align_corners")

CASES = [
    ("grid_sample5d_alignFalse", False),
    ("grid_sample5d_alignTrue", True),
    ("grid_sample4d_alignFalse", False),
    ("grid_sample4d_alignTrue", True),
    ("grid_sample5d_coordinate_grid", False),
]


def _rel_err(a, b):
  return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


@pytest.mark.parametrize("case,align", CASES)
def test_matches_torch(ops_ref, case, align):
  x = nchw_to_nhwc(ops_ref[f"{case}/input"])
  grid = ops_ref[f"{case}/grid"]
  want = ops_ref[f"{case}/output"]
  got = nhwc_to_nchw(jax.jit(grid_sample, static_argnames="align_corners")(
      jnp.asarray(x), jnp.asarray(grid), align_corners=align))
  assert got.shape == want.shape
  assert _rel_err(got, want) < 1e-5
  np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-5)


def test_matches_torch_warping_network_deform_input(load_ref):
  """The real use: W warps feature_3d (B,C,D,H,W) with the dense deformation."""
  ref = load_ref("W_warping_network")
  feat = nchw_to_nhwc(ref["input/feature_3d"])  # (B, D, H, W, C)
  deformation = ref["intermediate/dense_motion_network/deformation"]  # (B, D, H, W, 3)
  want = ref["intermediate/deform_input"]
  got = nhwc_to_nchw(gs(jnp.asarray(feat), jnp.asarray(deformation)))
  assert _rel_err(got, want) < 1e-5


def test_coordinate_grid_matches_torch(ops_ref):
  np.testing.assert_allclose(make_coordinate_grid((4, 6, 5)), ops_ref["make_coordinate_grid/output"],
                             atol=1e-7)


def test_align_corners_true_identity_is_exact():
  x = jax.random.normal(jax.random.key(0), (2, 3, 5, 7, 4))
  grid = make_coordinate_grid((3, 5, 7))
  np.testing.assert_allclose(gs(x, grid, align_corners=True), x, atol=1e-6)
  x2 = x[:, 0]
  np.testing.assert_allclose(gs(x2, make_coordinate_grid((5, 7)), align_corners=True), x2,
                             atol=1e-6)


def test_outside_is_zero_and_half_pixel_border():
  x = jnp.ones((1, 4, 4, 2))
  far = jnp.full((1, 1, 1, 2), 3.0)
  assert float(jnp.abs(gs(x, far)).max()) == 0.0
  # align_corners=False: x = 1 sits on the outer edge of the last pixel, so half
  # of the bilinear footprint falls on zero padding.
  edge = jnp.array([[[[1.0, 0.0]]]])
  np.testing.assert_allclose(gs(x, edge), 0.5 * jnp.ones((1, 1, 1, 2)), atol=1e-6)


def test_translation_by_whole_pixels():
  x = jax.random.normal(jax.random.key(1), (1, 6, 8, 3))
  grid = make_coordinate_grid((6, 8))
  shift = 2 * 2.0 / 7  # two pixels in x with align_corners=True spacing
  out = gs(x, grid.at[..., 0].add(shift), align_corners=True)
  np.testing.assert_allclose(out[:, :, :6], x[:, :, 2:], atol=1e-5)
  np.testing.assert_allclose(out[:, :, 6:], 0.0, atol=1e-6)


def test_unbatched_grid_broadcasts():
  x = jax.random.normal(jax.random.key(2), (3, 4, 5, 6, 2))
  g = jax.random.uniform(jax.random.key(3), (2, 3, 4, 3), minval=-1, maxval=1)
  np.testing.assert_allclose(gs(x, g), gs(x, jnp.broadcast_to(g, (3, 2, 3, 4, 3))),
                             atol=0)


def test_bfloat16_input_keeps_dtype_and_accuracy():
  x = jax.random.normal(jax.random.key(4), (2, 4, 8, 8, 4))
  g = jax.random.uniform(jax.random.key(5), (2, 4, 8, 8, 3), minval=-1, maxval=1)
  out = gs(x.astype(jnp.bfloat16), g)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(jnp.float32), gs(x, g), atol=5e-2)


@pytest.mark.parametrize("bad", [
    dict(x=(2, 4, 4), g=(2, 3, 3, 2)),  # 3-D input
    dict(x=(2, 4, 4, 1), g=(2, 3, 3, 3)),  # coordinate count mismatch
    dict(x=(2, 4, 4, 1), g=(3, 3, 3, 2)),  # batch mismatch
])
def test_bad_shapes_raise(bad):
  with pytest.raises(ValueError):
    gs(jnp.zeros(bad["x"]), jnp.zeros(bad["g"]))


def _fd_check(nsp, align, seed):
  """Central differences in float64 vs autodiff for both input and grid."""
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  spatial = (3, 4, 5)[-nsp:]
  x = jax.random.normal(k1, (2, *spatial, 3), jnp.float64)
  # Random float64 positions land on a kink of the piecewise-linear map (an
  # integer pixel position) within the +-1e-6 step with negligible probability.
  g = jax.random.uniform(k2, (2, *(3, 2, 2)[:nsp], nsp), jnp.float64, -1.1, 1.1)
  ct = jax.random.normal(k3, gs(x, g, align_corners=align).shape, jnp.float64)

  @jax.jit
  def loss(x, g):
    return jnp.sum(gs(x, g, align_corners=align) * ct)

  gx, gg = jax.grad(loss, argnums=(0, 1))(x, g)
  eps = 1e-6
  rng = np.random.default_rng(seed)
  for arr, grad, which in ((x, gx, 0), (g, gg, 1)):
    flat = np.asarray(arr).ravel()
    for i in rng.choice(flat.size, size=min(flat.size, 24), replace=False):
      d = np.zeros_like(flat)
      d[i] = eps
      d = jnp.asarray(d.reshape(arr.shape))
      if which == 0:
        fd = (loss(x + d, g) - loss(x - d, g)) / (2 * eps)
      else:
        fd = (loss(x, g + d) - loss(x, g - d)) / (2 * eps)
      np.testing.assert_allclose(np.asarray(grad).ravel()[i], fd, rtol=1e-5, atol=1e-7)
  return gx, gg


@pytest.mark.parametrize("nsp", [2, 3])
@pytest.mark.parametrize("align", [False, True])
def test_gradients_match_finite_differences(nsp, align):
  with enable_x64():
    gx, gg = _fd_check(nsp, align, seed=10 * nsp + int(align))
    assert float(jnp.abs(gx).max()) > 0 and float(jnp.abs(gg).max()) > 0


def test_gradients_with_jax_check_grads():
  from jax.test_util import check_grads
  with enable_x64():
    x = jax.random.normal(jax.random.key(7), (1, 3, 4, 5, 2), jnp.float64)
    g = jax.random.uniform(jax.random.key(8), (1, 2, 2, 3, 3), jnp.float64, -0.9, 0.9)
    check_grads(lambda x, g: gs(x, g), (x, g), order=2, modes=("fwd", "rev"),
                eps=1e-5)


def test_input_gradient_conserves_mass_inside():
  """d/dx sum(out) = how much each input voxel is sampled; inside the volume
  the corner weights sum to 1, so the input gradient sums to the point count."""
  x = jnp.zeros((1, 6, 7, 8, 1))
  g = jax.random.uniform(jax.random.key(9), (1, 4, 5, 6, 3), minval=-0.7, maxval=0.7)
  gx = jax.grad(lambda x: gs(x, g).sum())(x)
  np.testing.assert_allclose(gx.sum(), 4 * 5 * 6, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("case,align", CASES[:4])
def test_matches_torch_on_accelerator(ops_ref, case, align):
  """Same parity on the default accelerator (run with JAX_PLATFORMS unset on a GPU machine)."""
  dev = jax.devices()[0]
  x = jax.device_put(nchw_to_nhwc(ops_ref[f"{case}/input"]), dev)
  grid = jax.device_put(ops_ref[f"{case}/grid"], dev)
  with jax.default_matmul_precision("highest"):
    got = nhwc_to_nchw(gs(x, grid, align_corners=align))
  assert _rel_err(got, ops_ref[f"{case}/output"]) < 1e-5
