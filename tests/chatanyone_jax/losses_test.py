"""Renderer losses (paper Eq. 6): zero for identical inputs, positive otherwise, masks, gradients; VGG-19."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax import losses
from chatanyone_jax.ops.heatmaps import kp2gaussian, make_coordinate_grid
from chatanyone_jax.vgg19 import CONV_INDICES, VGG19Features, convert_vgg19


def _finite_nonzero(g):
  leaves = jax.tree.leaves(g)
  return all(np.all(np.isfinite(x)) for x in leaves) and any(float(jnp.abs(x).max()) > 0 for x in leaves)


def _soft_argmax(heat):
  """(B, H, W, K) heatmaps -> (B, K, 2) centres of mass in the grid frame."""
  grid = make_coordinate_grid(heat.shape[1:3])  # (H, W, 2)
  p = heat / jnp.sum(heat, axis=(1, 2), keepdims=True)
  return jnp.einsum("bhwk,hwn->bkn", p, grid)


# ---- equivariance ----------------------------------------------------------------------------------

def test_tps_identity_and_image_consistency():
  key = jax.random.key(0)
  kp = jax.random.uniform(key, (2, 6, 2), minval=-0.5, maxval=0.5)
  zero = losses.random_tps_transform(key, 2, sigma_affine=0.0, sigma_tps=0.0)
  t = losses.random_tps_transform(jax.random.key(1), 2, sigma_affine=0.1, sigma_tps=0.01)
  other = losses.random_tps_transform(jax.random.key(2), 2, sigma_affine=0.1, sigma_tps=0.01)
  kp3 = jnp.concatenate([kp, jnp.ones_like(kp[..., :1])], -1)

  @jax.jit
  def run(kp):
    heat = kp2gaussian(kp, (64, 64), 0.003)  # one keypoint per channel: an image whose keypoints we know
    kp_warped = _soft_argmax(losses.warp_image(heat, t))  # "detector" on the warped image
    kp_warped3 = jnp.concatenate([kp_warped, jnp.zeros_like(kp[..., :1])], -1)
    grad = jax.grad(lambda k: losses.equivariance_loss(kp3, k, other))(kp_warped3)
    return {"identity_kp": losses.warp_coordinates(zero, kp), "heat": heat,
            "identity_heat": losses.warp_image(heat, zero), "kp_warped": kp_warped,
            "baseline": jnp.abs(_soft_argmax(heat) - kp).max(),  # the detector's own discretisation error
            "loss": losses.equivariance_loss(kp, kp_warped, t),
            "loss_other": losses.equivariance_loss(kp, kp_warped, other), "grad": grad}

  r = run(kp)
  np.testing.assert_allclose(r["identity_kp"], kp, atol=1e-6)
  np.testing.assert_allclose(r["identity_heat"], r["heat"], atol=1e-5)
  assert float(jnp.abs(r["kp_warped"] - kp).max()) > 0.02, "the transform must move the keypoints"
  # keypoints of the warped image mapped back with T equal the original ones
  assert float(r["loss"]) < 0.005 + float(r["baseline"])
  assert float(r["loss_other"]) > 0.02
  # 3-D keypoints: z is ignored; differentiable in kp_warped (through T)
  assert _finite_nonzero(r["grad"]) and not np.any(r["grad"][..., 2])


# ---- priors ----------------------------------------------------------------------------------------

def test_keypoint_prior():
  xy = make_coordinate_grid((3, 3)).reshape(1, 9, 2) * 0.5  # spacing 0.5: |d|^2 >= 0.25 > D_t = 0.1
  spread = jnp.concatenate([xy, jnp.full((1, 9, 1), 0.33)], -1)
  assert float(losses.keypoint_prior_loss(spread)) == pytest.approx(0.0, abs=1e-6)
  collapsed = spread * 0.1
  assert float(losses.keypoint_prior_loss(collapsed)) > 1.0
  # depth term alone
  assert float(losses.keypoint_prior_loss(spread.at[..., 2].set(0.5))) == pytest.approx(0.17, abs=1e-5)
  assert _finite_nonzero(jax.grad(losses.keypoint_prior_loss)(collapsed))


def test_deformation_prior():
  assert float(losses.deformation_prior_loss(jnp.zeros((2, 4, 3)))) == 0.0
  d = jnp.full((2, 4, 3), -0.2)
  assert float(losses.deformation_prior_loss(d)) == pytest.approx(0.2)
  assert _finite_nonzero(jax.grad(losses.deformation_prior_loss)(d))


# ---- pixel / landmark / GAN ------------------------------------------------------------------------

def test_l1_with_mask():
  x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
  mask = jnp.zeros((2, 8, 8, 1)).at[:, 2:5, 2:5].set(1.0)
  assert float(losses.l1_loss(x, x)) == 0.0
  y_out = x + 0.5 * (1 - mask)  # differs only outside the mask
  assert float(losses.l1_loss(x, y_out, mask)) == 0.0
  assert float(losses.l1_loss(x, y_out)) > 0
  y_in = x + 0.5 * mask
  assert float(losses.l1_loss(x, y_in, mask)) == pytest.approx(0.5, rel=1e-5)  # mean over the region
  assert _finite_nonzero(jax.grad(losses.l1_loss)(y_in, x, mask))


def test_landmark_loss():
  kp = jax.random.normal(jax.random.key(0), (2, 5, 2))
  assert float(losses.landmark_loss(kp, kp)) == pytest.approx(0.0, abs=1e-7)
  moved = kp.at[:, 0].add(jnp.array([0.3, 0.4]))  # distance 0.5 on point 0
  assert float(losses.landmark_loss(moved, kp)) == pytest.approx(0.1, abs=1e-4)
  vis = jnp.ones((2, 5)).at[:, 0].set(0.0)
  assert float(losses.landmark_loss(moved, kp, vis)) == pytest.approx(0.0, abs=1e-7)
  g = jax.grad(losses.landmark_loss)(kp, kp)  # finite at zero distance
  assert np.all(np.isfinite(g))
  assert _finite_nonzero(jax.grad(losses.landmark_loss)(moved, kp))


def test_hinge_gan_and_feature_matching():
  big = [{"logits": jnp.full((2, 4, 4, 1), 2.0)}, {"logits": jnp.full((2, 2, 2, 1), 2.0)}]
  small = [{"logits": -d["logits"]} for d in big]
  assert float(losses.gan_discriminator_loss(big, small)) == 0.0  # confident and right: no loss
  assert float(losses.gan_discriminator_loss(small, big)) == pytest.approx(6.0)  # 3 + 3
  assert float(losses.gan_generator_loss(big)) == pytest.approx(-2.0)
  zeros = [jnp.zeros((2, 4, 4, 1))]
  assert float(losses.gan_discriminator_loss(zeros, zeros)) == pytest.approx(2.0)
  assert _finite_nonzero(jax.grad(losses.gan_generator_loss)(zeros))
  assert _finite_nonzero(jax.grad(losses.gan_discriminator_loss, argnums=(0, 1))(zeros, zeros))

  feats = [[jax.random.normal(jax.random.key(i), (2, 8 >> i, 8 >> i, 4)) for i in range(2)]] * 2
  assert float(losses.feature_matching_loss(feats, feats)) == 0.0
  other = jax.tree.map(lambda f: f + 1.0, feats)
  assert float(losses.feature_matching_loss(feats, other)) == pytest.approx(1.0)
  g_real, g_fake = jax.grad(losses.feature_matching_loss, argnums=(0, 1))(feats, other)
  assert _finite_nonzero(g_fake) and not any(np.any(x) for x in jax.tree.leaves(g_real))


# ---- VGG-19 and the perceptual terms --------------------------------------------------------------

def _torchvision_state_dict(seed=0):
  """A random state dict with torchvision's vgg19 keys and shapes (all 16 convs + classifier)."""
  rng = np.random.default_rng(seed)
  sd, cin = {}, 3
  cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"]
  idx = 0
  for c in cfg:
    if c == "M":
      idx += 1
      continue
    sd[f"features.{idx}.weight"] = (rng.standard_normal((c, cin, 3, 3)) / np.sqrt(9 * cin)).astype(np.float32)
    sd[f"features.{idx}.bias"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
    cin, idx = c, idx + 2
  sd["classifier.0.weight"] = np.zeros((4, 4), np.float32)  # ignored
  return sd


@pytest.fixture(scope="module")
def vgg():
  sd = _torchvision_state_dict()
  variables = convert_vgg19(sd)
  return sd, variables, jax.jit(lambda x: VGG19Features().apply(variables, x))


def test_vgg19_converter_mapping_and_shapes(vgg):
  sd, variables, features = vgg
  assert CONV_INDICES == (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28)
  image = jax.random.uniform(jax.random.key(0), (1, 32, 32, 3))
  want = jax.eval_shape(VGG19Features().init, jax.random.key(0), image)["params"]
  got = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), variables["params"])
  assert jax.tree.structure(want) == jax.tree.structure(got)
  assert jax.tree.leaves(want) == jax.tree.leaves(got)
  np.testing.assert_array_equal(variables["params"]["features_5"]["kernel"][1, 2, 7, 9],
                                sd["features.5.weight"][9, 7, 1, 2])  # (out, in, kh, kw) -> (kh, kw, in, out)
  feats = features(image)
  assert [f.shape for f in feats] == [(1, 32, 32, 64), (1, 16, 16, 128), (1, 8, 8, 256), (1, 4, 4, 512),
                                      (1, 2, 2, 512)]
  # relu1_1 at pixel (5, 7) by hand: ImageNet-normalised input, PyTorch's cross-correlation
  x = (np.asarray(image[0]) - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  patch = x[4:7, 6:9]  # (3, 3, 3) = (kh, kw, in)
  ref = np.einsum("ijc,ocij->o", patch, sd["features.0.weight"]) + sd["features.0.bias"]
  np.testing.assert_allclose(feats[0][0, 5, 7], np.maximum(ref, 0), rtol=1e-4, atol=1e-5)
  # the VGG perceptual loss itself: zero for the same image, positive for another one
  assert float(losses.perceptual_loss(feats, feats)) == 0.0
  assert float(losses.perceptual_loss(feats, features(1 - image))) > 0
  bad = dict(sd)
  del bad["features.28.bias"]
  with pytest.raises(ValueError, match="features.28.bias"):
    convert_vgg19(bad)
  with pytest.raises(ValueError, match="wrong shapes"):
    convert_vgg19({**sd, "features.0.weight": np.zeros((64, 1, 3, 3), np.float32)})


def test_perceptual_and_region_losses():
  """Mask / pyramid / gradient semantics, with a cheap 3-level conv stand-in for VGG (fast to compile)."""
  ks = [jax.random.normal(jax.random.key(10 + i), (3, 3, c, 8)) / 3 for i, c in enumerate((3, 8, 8))]

  def features(x):
    out = []
    for k in ks:
      x = jax.nn.relu(jax.lax.conv_general_dilated(x, k, (2, 2), "SAME",
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC")))
      out.append(x)
    return out
  x = jax.random.uniform(jax.random.key(1), (1, 32, 32, 3))
  mask = jnp.zeros((1, 32, 32, 1)).at[:, 8:24, 8:20].set(1.0)  # e.g. a hand box
  y_out = jnp.where(mask > 0, x, 1 - x)  # equal inside the region, different outside
  y_in = jnp.where(mask > 0, 1 - x, x)  # different inside the region only

  @jax.jit
  def run(x):
    fx = features(x)
    vals = (losses.perceptual_loss(fx, fx, (1.0, 1.0, 1.0)),
            losses.vgg_perceptual_loss(features, x, y_out, num_scales=2, weights=(1.0, 1.0, 1.0)),
            losses.region_perceptual_loss(features, x, y_out, mask, weights=(1.0, 1.0, 1.0)))
    region_in, grad = jax.value_and_grad(
        lambda x: losses.region_perceptual_loss(features, x, y_in, mask, weights=(1.0, 1.0, 1.0)))(x)
    return vals + (region_in,), grad

  (same, diff, region_out, region_in), grad = run(x)
  assert float(same) == 0.0 and float(diff) > 0
  assert float(region_in) > 1e-3
  # differences outside the region do not count (up to float rounding of two separately compiled passes)
  assert float(region_out) < 1e-5 * float(region_in)
  assert np.all(np.isfinite(grad)) and float(jnp.abs(grad * mask).max()) > 0
  assert float(jnp.abs(grad * (1 - mask)).max()) == 0.0
