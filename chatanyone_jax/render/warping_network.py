"""W: LivePortrait's warping network with its dense-motion estimator.

The dense-motion network (FOMM / face-vid2vid style) turns K source / driving
keypoint pairs into a dense 3D backward flow: K + 1 candidate motions (the
identity plus one translation per keypoint) are blended by a softmax mask
that an hourglass predicts from keypoint heatmaps and the correspondingly
deformed (compressed) appearance volume. W warps F's volume with that flow,
folds depth into channels and decodes a 2D feature map for G, gated by an
occlusion map. Paper Eq. 4; layouts NDHWC / NHWC.

Channel orders reproduce PyTorch's views: the hourglass input channel is
k * (1 + compress) + j (j = 0 is the heatmap), and folding (f, d) into
channels uses f * D + d.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from chatanyone_jax.layers.blocks import DownBlock3d, SameBlock2d, UpBlock3d, batch_norm, conv
from chatanyone_jax.ops.grid_sample import grid_sample
from chatanyone_jax.ops.heatmaps import kp2gaussian, make_coordinate_grid
from chatanyone_jax.render.appearance_feature_extractor import volume_to_channels
from chatanyone_jax.render.presets import DenseMotionConfig, WarpingNetworkConfig

KP_VARIANCE = 0.01


class Hourglass(nn.Module):
  """3D U-Net: DownBlock3d x n (H, W halved), UpBlock3d x n with skip concat, conv-BN-ReLU.

  (B, D, H, W, Cin) -> (B, D, H, W, block_expansion + Cin); H, W multiples of 2^num_blocks.
  """
  block_expansion: int
  num_blocks: int = 3
  max_features: int = 256
  out_features: int = 0  # channels of the last convolution; 0: block_expansion + Cin (LivePortrait)
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    be, mf, n = self.block_expansion, self.max_features, self.num_blocks
    skips = [x]
    for i in range(n):
      skips.append(DownBlock3d(min(mf, be * 2 ** (i + 1)), name=f"encoder_down_blocks_{i}",
                               dtype=self.dtype)(skips[-1], train=train))
    self.sow("intermediates", "encoder", tuple(skips))
    out = skips.pop()
    for j, i in enumerate(reversed(range(n))):
      out = UpBlock3d(min(mf, be * 2 ** i), name=f"decoder_up_blocks_{j}", dtype=self.dtype)(out, train=train)
      out = jnp.concatenate([out, skips.pop()], axis=-1)
    out = conv(self.out_features or out.shape[-1], 3, 3, name="decoder_conv", dtype=self.dtype)(out)
    return nn.relu(batch_norm(train, "decoder_norm", self.dtype)(out))


def create_sparse_motions(spatial_size, kp_driving: jax.Array, kp_source: jax.Array) -> jax.Array:
  """K + 1 candidate backward flows: identity, then grid - kp_driving_k + kp_source_k.

  Args:
    spatial_size: (D, H, W).
    kp_driving, kp_source: (B, K, 3), (x, y, z) in [-1, 1].

  Returns:
    (B, K + 1, D, H, W, 3) sampling grids.
  """
  grid = make_coordinate_grid(spatial_size, kp_source.dtype)  # (D, H, W, 3)
  expand = (slice(None), slice(None), None, None, None, slice(None))  # (B, K, 1, 1, 1, 3)
  moved = grid - kp_driving[expand] + kp_source[expand]  # PyTorch's operation order
  identity = jnp.broadcast_to(grid, (kp_source.shape[0], 1) + grid.shape)
  return jnp.concatenate([identity, moved], axis=1)


def create_heatmap_representations(spatial_size, kp_driving: jax.Array, kp_source: jax.Array) -> jax.Array:
  """Gaussian(kp_driving) - Gaussian(kp_source) with a zero background channel first.

  Returns (B, D, H, W, K + 1).
  """
  heat = (kp2gaussian(kp_driving, spatial_size, KP_VARIANCE)
          - kp2gaussian(kp_source, spatial_size, KP_VARIANCE))
  return jnp.pad(heat, [(0, 0)] * (heat.ndim - 1) + [(1, 0)])


def create_deformed_feature(feature: jax.Array, sparse_motions: jax.Array) -> jax.Array:
  """Warps the volume with each sparse motion.

  Args:
    feature: (B, D, H, W, C).
    sparse_motions: (B, K + 1, D', H', W', 3).

  Returns:
    (B, D', H', W', K + 1, C).
  """
  b, k1, d, h, w, _ = sparse_motions.shape
  grid = jnp.moveaxis(sparse_motions, 1, 4).reshape(b, d, h, w * k1, 3)  # one gather for all K + 1
  out = grid_sample(feature, grid)  # (B, D', H', W' (K + 1), C)
  return out.reshape(b, d, h, w, k1, feature.shape[-1])


class DenseMotionNetwork(nn.Module):
  """Keypoints + appearance volume -> deformation (B, D, H, W, 3) [+ occlusion map (B, H, W, 1)].

  The number of keypoints K is read from the inputs.
  """
  config: DenseMotionConfig = DenseMotionConfig()
  estimate_occlusion_map: bool = True
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, feature: jax.Array, kp_driving: jax.Array, kp_source: jax.Array, *,
               train: bool = False) -> dict[str, jax.Array]:
    """feature: (B, D, H, W, C); kp_driving, kp_source: (B, K, 3)."""
    cfg = self.config
    b, d, h, w, _ = feature.shape
    if d != cfg.reshape_depth:
      raise ValueError(f"feature depth {d} != dense-motion reshape_depth {cfg.reshape_depth}")
    k1 = kp_driving.shape[1] + 1
    feature = conv(cfg.compress, 3, 1, name="compress", dtype=self.dtype)(feature)
    feature = nn.relu(batch_norm(train, "norm", self.dtype)(feature))  # (B, D, H, W, compress)

    sparse_motion = create_sparse_motions((d, h, w), kp_driving, kp_source)  # (B, K+1, D, H, W, 3)
    deformed = create_deformed_feature(feature, sparse_motion)  # (B, D, H, W, K+1, compress)
    heatmap = create_heatmap_representations((d, h, w), kp_driving, kp_source)  # (B, D, H, W, K+1)
    self.sow("intermediates", "sparse_motion", sparse_motion)
    self.sow("intermediates", "deformed_feature", deformed)
    self.sow("intermediates", "heatmap", heatmap)
    x = jnp.concatenate([heatmap[..., None].astype(deformed.dtype), deformed], axis=-1)
    x = x.reshape(b, d, h, w, -1)  # channel = k (1 + compress) + j

    prediction = Hourglass(cfg.block_expansion, cfg.num_blocks, cfg.max_features, cfg.decoder_features,
                           name="hourglass", dtype=self.dtype)(x, train=train)  # (B, D, H, W, F)
    self.sow("intermediates", "hourglass_out", prediction)
    mask = conv(k1, 3, cfg.mask_kernel_size, name="mask", dtype=self.dtype)(prediction)  # (B, D, H, W, K+1)
    self.sow("intermediates", "mask_logits", mask)
    mask = jax.nn.softmax(mask.astype(jnp.float32), axis=-1)
    deformation = jnp.einsum("bdhwk,bkdhwn->bdhwn", mask, sparse_motion)
    out = {"mask": mask, "deformation": deformation}
    if self.estimate_occlusion_map:
      occ = conv(1, 2, 7, name="occlusion", dtype=self.dtype)(volume_to_channels(prediction))
      self.sow("intermediates", "occlusion_logits", occ)
      out["occlusion_map"] = jax.nn.sigmoid(occ.astype(jnp.float32))  # (B, H, W, 1)
    return out


class WarpingNetwork(nn.Module):
  """Warps the appearance volume by the keypoint motion and decodes a 2D feature map.

  Inputs: feature_3d (B, D, H, W, C), kp_driving and kp_source (B, K, 3).
  Returns dict occlusion_map (B, H, W, 1) (None without occlusion estimation),
  deformation (B, D, H, W, 3), flow (B, H, W, 2): the deformation's (x, y) averaged over depth (the 2-D
  sampling grid of G's source skip), and out (B, H, W, block_expansion * 2^num_down_blocks).
  """
  config: WarpingNetworkConfig = WarpingNetworkConfig()
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, feature_3d: jax.Array, kp_driving: jax.Array, kp_source: jax.Array, *,
               train: bool = False) -> dict[str, jax.Array | None]:
    cfg = self.config
    for name, kp in (("kp_driving", kp_driving), ("kp_source", kp_source)):
      if kp.shape[1:] != (cfg.num_kp, 3):
        raise ValueError(f"{name} has shape {kp.shape}, expected (B, {cfg.num_kp}, 3)")
    dense_motion = DenseMotionNetwork(cfg.dense_motion, cfg.estimate_occlusion_map,
                                      name="dense_motion_network", dtype=self.dtype)(
                                          feature_3d, kp_driving, kp_source, train=train)
    occlusion_map = dense_motion.get("occlusion_map")
    deformation = dense_motion["deformation"]
    out = grid_sample(feature_3d, deformation)  # (B, D, H, W, C): the ORIGINAL volume is warped
    self.sow("intermediates", "deform_input", out)
    out = volume_to_channels(out)  # (B, H, W, C * D), channel = c D + d
    feats = cfg.block_expansion * 2 ** cfg.num_down_blocks
    out = SameBlock2d(feats, lrelu=True, name="third", dtype=self.dtype)(out, train=train)
    out = conv(feats, 2, 1, name="fourth", dtype=self.dtype)(out)
    if cfg.flag_use_occlusion_map and occlusion_map is not None:
      out = out * occlusion_map.astype(out.dtype)
    return {"occlusion_map": occlusion_map, "deformation": deformation,
            "flow": jnp.mean(deformation[..., :2], axis=1), "out": out}
