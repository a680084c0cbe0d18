"""Hyper-parameters of the four LivePortrait renderer networks (F, M, W, G).

Field names follow LivePortrait's `models.yaml` so a config reads against the
upstream one and checkpoints map one to one (`chatanyone_jax.render.convert`).
The dataclass defaults are LivePortrait's own values, so `liveportrait` below
is simply `RendererConfig()`.

Presets:
  * `liveportrait`: the released LivePortrait networks (256x256 in, 512x512 out).
  * `reference_reduced`: the reduced networks of the PyTorch reference vectors
    (`shared/data/reference/liveportrait/*.npz`; 64x64 images, K = 5).
  * `tiny`: <= 64 channels everywhere, for CPU tests.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class AppearanceFeatureExtractorConfig:
  """F: image -> 3D appearance volume (reshape_channel x reshape_depth = max_features)."""
  image_channel: int = 3
  block_expansion: int = 64
  num_down_blocks: int = 2
  max_features: int = 512
  reshape_channel: int = 32
  reshape_depth: int = 16
  num_resblocks: int = 6


@dataclasses.dataclass(frozen=True)
class MotionExtractorConfig:
  """M: ConvNeXt-V2 keypoint / pose / expression regressor (convnextv2_tiny by default)."""
  num_kp: int = 21
  depths: tuple[int, ...] = (3, 3, 9, 3)
  dims: tuple[int, ...] = (96, 192, 384, 768)
  num_bins: int = 66
  image_channel: int = 3


@dataclasses.dataclass(frozen=True)
class DenseMotionConfig:
  """Dense-motion estimator inside W (hourglass over keypoint heatmaps + deformed features)."""
  block_expansion: int = 32
  max_features: int = 1024
  num_blocks: int = 5
  reshape_depth: int = 16
  compress: int = 4


@dataclasses.dataclass(frozen=True)
class WarpingNetworkConfig:
  """W: keypoints -> dense 3D flow + occlusion, warps F's volume into a 2D feature map."""
  num_kp: int = 21
  block_expansion: int = 64
  max_features: int = 512
  num_down_blocks: int = 2
  reshape_channel: int = 32
  estimate_occlusion_map: bool = True
  flag_use_occlusion_map: bool = True
  dense_motion: DenseMotionConfig = DenseMotionConfig()


@dataclasses.dataclass(frozen=True)
class SPADEDecoderConfig:
  """G: warped features -> image. Cin = min(max_features, block_expansion * 2^num_down_blocks)."""
  upscale: int = 2
  block_expansion: int = 64
  max_features: int = 512
  num_down_blocks: int = 2
  out_channels: int = 64
  spade_hidden: int = 128  # SPADE's shared-conv width (fixed at 128 upstream)

  @property
  def input_channels(self) -> int:
    return min(self.max_features, self.block_expansion * 2 ** self.num_down_blocks)


@dataclasses.dataclass(frozen=True)
class RendererConfig:
  """The four networks of one renderer, with the image size they are built for."""
  appearance_feature_extractor: AppearanceFeatureExtractorConfig = AppearanceFeatureExtractorConfig()
  motion_extractor: MotionExtractorConfig = MotionExtractorConfig()
  warping_network: WarpingNetworkConfig = WarpingNetworkConfig()
  spade_generator: SPADEDecoderConfig = SPADEDecoderConfig()
  image_size: tuple[int, int] = (256, 256)  # (H, W) of the source / driving images


liveportrait = RendererConfig()

reference_reduced = RendererConfig(
    appearance_feature_extractor=AppearanceFeatureExtractorConfig(
        block_expansion=8, num_down_blocks=2, max_features=32, reshape_channel=4, reshape_depth=8,
        num_resblocks=1),
    motion_extractor=MotionExtractorConfig(num_kp=5, depths=(1, 1, 2, 1), dims=(8, 16, 32, 64)),
    warping_network=WarpingNetworkConfig(
        num_kp=5, block_expansion=4, max_features=32, num_down_blocks=2, reshape_channel=4,
        dense_motion=DenseMotionConfig(block_expansion=4, max_features=16, num_blocks=3, reshape_depth=8,
                                       compress=2)),
    spade_generator=SPADEDecoderConfig(upscale=2, block_expansion=4, max_features=16, num_down_blocks=2,
                                       out_channels=8),
    image_size=(64, 64),
)

tiny = RendererConfig(
    appearance_feature_extractor=AppearanceFeatureExtractorConfig(
        block_expansion=8, num_down_blocks=2, max_features=32, reshape_channel=8, reshape_depth=4,
        num_resblocks=2),
    motion_extractor=MotionExtractorConfig(num_kp=4, depths=(1, 1, 1, 1), dims=(8, 16, 16, 32)),
    warping_network=WarpingNetworkConfig(
        num_kp=4, block_expansion=4, max_features=32, num_down_blocks=2, reshape_channel=8,
        dense_motion=DenseMotionConfig(block_expansion=4, max_features=16, num_blocks=2, reshape_depth=4,
                                       compress=2)),
    spade_generator=SPADEDecoderConfig(upscale=2, block_expansion=4, max_features=16, num_down_blocks=2,
                                       out_channels=8, spade_hidden=16),
    image_size=(32, 32),
)

PRESETS: dict[str, RendererConfig] = {
    "liveportrait": liveportrait,
    "reference_reduced": reference_reduced,
    "tiny": tiny,
}


def get(name: str) -> RendererConfig:
  """Preset by name; raises a ValueError listing the known names."""
  if name not in PRESETS:
    raise ValueError(f"unknown renderer preset {name!r}; known: {sorted(PRESETS)}")
  return PRESETS[name]
