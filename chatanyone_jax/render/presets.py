"""Hyper-parameters of the LivePortrait renderer networks (F, M, W, G, and the stitching MLPs S).

Field names follow LivePortrait's `models.yaml` so a config reads against the
upstream one and checkpoints map one to one (`chatanyone_jax.convert.liveportrait`).
The dataclass defaults are LivePortrait's own values: `liveportrait` is
`RendererConfig()` plus the stitching MLPs (`StitchingConfig()`), which only
presets with LivePortrait's implicit keypoints have (else `stitching=None`).

Presets (each described at its definition): `liveportrait`, `reference_reduced`,
the CPU-sized `tiny*` (tests) and `small*` (CPU training campaigns) ones, and
ChatAnyone's `head512` (§3.4), `upper512x768` (Eq. 4 / 5) and `face_refine` (Fig. 4), and their
`*_lean` layouts (`lean_full`: about a quarter of the frame's FLOPs).
Keypoint layouts (`keypoint_layout`):
"implicit" (LivePortrait's K keypoints), "hybrid_body" (Eq. 4: explicit head
template keypoints, then M's body keypoints) and "head_offset" (Eq. 2: template
keypoints + M's implicit offsets).
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
  dwconv_kernel: int = 7  # the blocks' depthwise convolution (ConvNeXt-V2: 7x7)


@dataclasses.dataclass(frozen=True)
class DenseMotionConfig:
  """Dense-motion estimator inside W (hourglass over keypoint heatmaps + deformed features)."""
  block_expansion: int = 32
  max_features: int = 1024
  num_blocks: int = 5
  reshape_depth: int = 16
  compress: int = 4
  # The softmax-mask convolution (3-D) over the hourglass output; LivePortrait's is 7x7x7, the costliest
  # layer of a training step on CPU (the `small*` presets use 3x3x3).
  mask_kernel_size: int = 7
  # Channels of the hourglass's last 3x3x3 convolution, which the mask and occlusion heads read: 0 keeps
  # LivePortrait's layout (block_expansion + (K + 1)(1 + compress), the costliest layer of the small
  # presets' training step on CPU: benchmarks/RESULTS.md).
  decoder_features: int = 0


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
  num_middle_blocks: int = 6  # SPADE residual blocks at the input resolution (G_middle_*; 6 upstream)
  # Hand injection (paper Eq. 5; `chatanyone_jax.render.hand_injection`). Off = LivePortrait's G exactly.
  hand_injection: bool = False
  hand_block_expansion: int = 32  # hand encoder channels at the finest (4x) scale, doubled per coarser one
  hand_max_features: int = 128
  hand_hidden: int = 64  # width of each injection's shared conv
  # Source skip (not in LivePortrait or the paper; `spade_generator.SPADEDecoder`): G also predicts a
  # per-pixel alpha and the output is alpha G + (1 - alpha) (the source image warped in 2-D by W's flow).
  # At zero flow the skip is the bilinear upsampling of the source, so training starts from the
  # copy-the-source baseline and learns to move and replace pixels, not to redraw a sharp frame.
  source_skip: bool = False

  @property
  def input_channels(self) -> int:
    return min(self.max_features, self.block_expansion * 2 ** self.num_down_blocks)


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
  """Multi-scale patch discriminator (`chatanyone_jax.render.discriminator`) used for the GAN loss."""
  num_scales: int = 2  # the image, then 2x average-pooled copies
  block_expansion: int = 64
  max_features: int = 512
  num_blocks: int = 4  # conv -> LeakyReLU -> 2x2 pool blocks per scale
  spectral_norm: bool = True


@dataclasses.dataclass(frozen=True)
class StitchingRetargetingConfig:
  """One stitching / retargeting MLP: input_size -> hidden_sizes (ReLU after each) -> output_size."""
  input_size: int
  hidden_sizes: tuple[int, ...]
  output_size: int


@dataclasses.dataclass(frozen=True)
class StitchingConfig:
  """LivePortrait's three MLPs on the K implicit keypoints (`stitching_retargeting_module_params`).

  Sizes follow from K: stitching 6K -> 3K + 2 (keypoint deltas + a 2-D translation), lip retargeting
  3K + 2 -> 3K, eye retargeting 3K + 3 -> 3K. K = 21 gives upstream's 126 -> [128, 128, 64] -> 65,
  65 -> [128, 128, 64] -> 63 and 66 -> [256, 256, 128, 128, 64] -> 63.
  """
  num_kp: int = 21
  stitching_hidden: tuple[int, ...] = (128, 128, 64)
  lip_hidden: tuple[int, ...] = (128, 128, 64)
  eye_hidden: tuple[int, ...] = (256, 256, 128, 128, 64)

  @property
  def stitching(self) -> StitchingRetargetingConfig:
    """x = [kp_source, kp_driving] flattened -> delta (3K + 2)."""
    return StitchingRetargetingConfig(6 * self.num_kp, self.stitching_hidden, 3 * self.num_kp + 2)

  @property
  def lip(self) -> StitchingRetargetingConfig:
    """x = [kp_source flattened, (c_lip_source, c_lip_driving)] -> delta (3K)."""
    return StitchingRetargetingConfig(3 * self.num_kp + 2, self.lip_hidden, 3 * self.num_kp)

  @property
  def eye(self) -> StitchingRetargetingConfig:
    """x = [kp_source flattened, (c_left_eye_source, c_right_eye_source, c_eye_driving)] -> delta (3K)."""
    return StitchingRetargetingConfig(3 * self.num_kp + 3, self.eye_hidden, 3 * self.num_kp)


@dataclasses.dataclass(frozen=True)
class RendererConfig:
  """The networks of one renderer, with the image size they are built for."""
  appearance_feature_extractor: AppearanceFeatureExtractorConfig = AppearanceFeatureExtractorConfig()
  motion_extractor: MotionExtractorConfig = MotionExtractorConfig()
  warping_network: WarpingNetworkConfig = WarpingNetworkConfig()
  spade_generator: SPADEDecoderConfig = SPADEDecoderConfig()
  image_size: tuple[int, int] = (256, 256)  # (H, W) of the source / driving images
  discriminator: DiscriminatorConfig = DiscriminatorConfig()
  num_kp_head: int = 0  # explicit head keypoints among W's num_kp (first in X_full, Eq. 4)
  stitching: StitchingConfig | None = None  # LivePortrait's stitching / retargeting MLPs, if any

  @property
  def output_size(self) -> tuple[int, int]:
    """(H, W) of G's output image: input size / 2^num_down_blocks * 4 * (2 if upscale > 1)."""
    g = self.spade_generator
    r = 4 * (2 if g.upscale is not None and g.upscale > 1 else 1)
    d = 2 ** self.appearance_feature_extractor.num_down_blocks
    return (self.image_size[0] // d * r, self.image_size[1] // d * r)


# The released LivePortrait networks (256x256 in, 512x512 out), with the stitching / retargeting MLPs.
liveportrait = RendererConfig(stitching=StitchingConfig())

# The reduced networks of the PyTorch reference vectors (`shared/data/reference/liveportrait/*.npz`;
# 64x64 images, K = 5), S included.
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
    stitching=StitchingConfig(num_kp=5, stitching_hidden=(16, 16, 8), lip_hidden=(16, 16, 8),
                              eye_hidden=(32, 32, 16, 16, 8)),
)

# <= 64 channels everywhere, for CPU tests. Also shallower than LivePortrait where depth is only a count
# (one F residual block, 3x3 depthwise kernels in M, two G_middle blocks): test programs are dominated by
# XLA compile time, which grows with the number of layers (render_upper512x768:tiny's train step compiles
# in 7.7 s instead of 11.4 s, its init in 5.6 s instead of 8.8 s; 2-core Xeon, most XLA optimisations off).
tiny = RendererConfig(
    appearance_feature_extractor=AppearanceFeatureExtractorConfig(
        block_expansion=8, num_down_blocks=2, max_features=32, reshape_channel=8, reshape_depth=4,
        num_resblocks=1),
    motion_extractor=MotionExtractorConfig(num_kp=4, depths=(1, 1, 1, 1), dims=(8, 16, 16, 32),
                                           dwconv_kernel=3),
    warping_network=WarpingNetworkConfig(
        num_kp=4, block_expansion=4, max_features=32, num_down_blocks=2, reshape_channel=8,
        dense_motion=DenseMotionConfig(block_expansion=4, max_features=16, num_blocks=2, reshape_depth=4,
                                       compress=2)),
    spade_generator=SPADEDecoderConfig(upscale=2, block_expansion=4, max_features=16, num_down_blocks=2,
                                       out_channels=8, spade_hidden=16, num_middle_blocks=2),
    image_size=(32, 32),
    discriminator=DiscriminatorConfig(num_scales=2, block_expansion=8, max_features=32, num_blocks=2),
)

K_HEAD = 32  # explicit head-template keypoints (ARCHITECTURE.md §2)
K_BODY = 21  # implicit body keypoints

# `tiny` shaped like `upper512x768` (64 high x 32 wide in, K = 3 head + 4 body keypoints, hand injection
# on), for CPU train steps.
tiny_upper = dataclasses.replace(
    tiny,
    warping_network=dataclasses.replace(tiny.warping_network, num_kp=7),
    spade_generator=dataclasses.replace(tiny.spade_generator, hand_injection=True, hand_block_expansion=4,
                                        hand_max_features=16, hand_hidden=8),
    image_size=(64, 32),
    num_kp_head=3,
)

# `tiny_head512`, `tiny_upper512x768`, `tiny_face_refine`: `tiny` widths with the keypoint layout of the
# full preset of the same name (32 head keypoints from the data, 21 body keypoints for the landmark loss),
# for the tiny training configs (`train/configs/render_*.py:tiny`, `face_refine.py:tiny`).
tiny_head512 = dataclasses.replace(
    tiny,
    motion_extractor=dataclasses.replace(tiny.motion_extractor, num_kp=K_HEAD),
    warping_network=dataclasses.replace(tiny.warping_network, num_kp=K_HEAD),
    num_kp_head=K_HEAD,
)

tiny_upper512x768 = dataclasses.replace(
    tiny_upper,
    motion_extractor=dataclasses.replace(tiny.motion_extractor, num_kp=K_BODY),
    warping_network=dataclasses.replace(tiny.warping_network, num_kp=K_HEAD + K_BODY),
    image_size=(48, 32),  # 2:3 like 384x256
    num_kp_head=K_HEAD,
)

tiny_face_refine = dataclasses.replace(
    tiny_head512,
    spade_generator=tiny_upper.spade_generator,  # injection branch on (the face-masked head crop)
)

# ChatAnyone's head renderer (paper §3.4, "face animation version"): LivePortrait's networks driven by
# the K_h = 32 head-template keypoints (+ implicit offsets, keypoint layout "head_offset", Eq. 2) instead
# of 21 implicit ones; 256x256 in, 512x512 out.
head512 = RendererConfig(
    motion_extractor=MotionExtractorConfig(num_kp=K_HEAD),  # kp / exp heads give the offsets dX_head
    warping_network=WarpingNetworkConfig(num_kp=K_HEAD),
    num_kp_head=K_HEAD,
)

# The upper-body renderer: 256 wide x 384 high in, volume 32 x 16 x 96 x 64 (C x D x H x W), 512 x 768
# out, W driven by X_full = X_head (32) + X_body (21) = 53 keypoints (Eq. 4, layout "hybrid_body": M's
# body keypoints with R = I), M detecting the 21 body keypoints, G with hand injection (Eq. 5).
upper512x768 = RendererConfig(
    motion_extractor=MotionExtractorConfig(num_kp=K_BODY),
    warping_network=WarpingNetworkConfig(num_kp=K_HEAD + K_BODY),
    spade_generator=SPADEDecoderConfig(hand_injection=True),
    image_size=(384, 256),
    discriminator=DiscriminatorConfig(num_scales=3),
    num_kp_head=K_HEAD,
)

# The lighter face-refine renderer (Fig. 4): half the channels of `head512`, driven by the 32 head
# keypoints, G's injection branch fed with the head crop whose face is masked out; 256x256 crop in,
# 512x512 out.
face_refine = RendererConfig(
    appearance_feature_extractor=AppearanceFeatureExtractorConfig(
        block_expansion=32, max_features=256, reshape_channel=16, reshape_depth=16, num_resblocks=3),
    # Not part of the refine pass (its head keypoints come from the main renderer); a light detector if one
    # is trained for the face crop alone.
    motion_extractor=MotionExtractorConfig(num_kp=K_HEAD, depths=(2, 2, 6, 2), dims=(48, 96, 192, 384)),
    warping_network=WarpingNetworkConfig(
        num_kp=K_HEAD, block_expansion=32, max_features=256, reshape_channel=16,
        dense_motion=DenseMotionConfig(block_expansion=16, max_features=512, num_blocks=4, reshape_depth=16,
                                       compress=4)),
    spade_generator=SPADEDecoderConfig(block_expansion=32, max_features=256, out_channels=32, spade_hidden=64,
                                       hand_injection=True, hand_block_expansion=16, hand_max_features=64,
                                       hand_hidden=32),
    discriminator=DiscriminatorConfig(num_scales=2, block_expansion=32, max_features=256),
    num_kp_head=K_HEAD,
)

# CPU-scale members of the same three families: the networks, keypoint layouts, hand injection and refine
# of `upper512x768`, `head512` and `face_refine`, with 1/4 (F) to 1/8 (W, G) of their channels, a 4-deep
# volume, a single compressed channel per keypoint and a 3x3x3 mask convolution in W (the 7x7x7 one was
# two thirds of a step), and smaller inputs: `small_upper` 144x96 in (2:3), 288x192 out; `small_head` and
# `small_face_refine` 128x128 in, 256x256 out. Sized for renderer campaigns on a 2-core CPU (parameters,
# FLOPs and ms per step at batch 4 in benchmarks/RESULTS.md).
_small = RendererConfig(
    appearance_feature_extractor=AppearanceFeatureExtractorConfig(
        block_expansion=16, num_down_blocks=2, max_features=64, reshape_channel=16, reshape_depth=4,
        num_resblocks=2),
    motion_extractor=MotionExtractorConfig(num_kp=K_HEAD, depths=(1, 1, 2, 1), dims=(16, 32, 64, 128)),
    warping_network=WarpingNetworkConfig(
        num_kp=K_HEAD, block_expansion=8, max_features=64, num_down_blocks=2, reshape_channel=16,
        dense_motion=DenseMotionConfig(block_expansion=8, max_features=64, num_blocks=2, reshape_depth=4,
                                       compress=1, mask_kernel_size=3)),
    spade_generator=SPADEDecoderConfig(upscale=2, block_expansion=8, max_features=32, num_down_blocks=2,
                                       out_channels=16, spade_hidden=16),
    image_size=(128, 128),
    discriminator=DiscriminatorConfig(num_scales=2, block_expansion=16, max_features=64, num_blocks=3),
    num_kp_head=K_HEAD,
)
_small_injection = dataclasses.replace(_small.spade_generator, hand_injection=True, hand_block_expansion=8,
                                       hand_max_features=32, hand_hidden=16)

small_head = _small

small_upper = dataclasses.replace(
    _small,
    motion_extractor=dataclasses.replace(_small.motion_extractor, num_kp=K_BODY),
    warping_network=dataclasses.replace(_small.warping_network, num_kp=K_HEAD + K_BODY),
    spade_generator=_small_injection,
    image_size=(144, 96),
)

small_face_refine = dataclasses.replace(_small, spade_generator=_small_injection)


def with_source_skip(config: RendererConfig) -> RendererConfig:
  """`config` with G's source skip on (`SPADEDecoderConfig.source_skip`)."""
  return dataclasses.replace(config, spade_generator=dataclasses.replace(config.spade_generator,
                                                                         source_skip=True))


# The small presets with the source skip: the renderers of the second round of CPU campaigns (the
# `small` variants of the training configs). The plain ones stay for the checkpoints trained with them.
small_head_skip = with_source_skip(small_head)
small_upper_skip = with_source_skip(small_upper)
small_face_refine_skip = with_source_skip(small_face_refine)  # both: the masked-crop injection and the skip


def with_dense_motion(config: RendererConfig, *, mask_kernel_size: int, compress: int,
                      decoder_features: int = 0) -> RendererConfig:
  """`config` with W's dense-motion head changed: the mask convolution's kernel, the compressed channels
  per deformed volume (K + 1 of them) and the hourglass's last channels (0: LivePortrait's layout)."""
  wn = config.warping_network
  return dataclasses.replace(config, warping_network=dataclasses.replace(
      wn, dense_motion=dataclasses.replace(wn.dense_motion, mask_kernel_size=mask_kernel_size,
                                           compress=compress, decoder_features=decoder_features)))


def with_narrow_decoder(config: RendererConfig, features: int = 16) -> RendererConfig:
  """`config` with W's hourglass ending in `features` channels (`DenseMotionConfig.decoder_features`)."""
  dm = config.warping_network.dense_motion
  return with_dense_motion(config, mask_kernel_size=dm.mask_kernel_size, compress=dm.compress,
                           decoder_features=features)


small_head_skip_narrow = with_narrow_decoder(small_head_skip)
small_upper_skip_narrow = with_narrow_decoder(small_upper_skip)


def lean(config: RendererConfig) -> RendererConfig:
  """`config` (a narrow-decoder preset) with 2 G_middle blocks, SPADE's shared convolutions half as wide
  (8 in the small presets) and one discriminator scale: the small ones are the CPU campaigns' candidates for
  about 1 s per training step at batch 4 (benchmarks/RESULTS.md)."""
  g = config.spade_generator
  return dataclasses.replace(
      config,
      spade_generator=dataclasses.replace(g, num_middle_blocks=2, spade_hidden=g.spade_hidden // 2),
      discriminator=dataclasses.replace(config.discriminator, num_scales=1))


def lean_full(config: RendererConfig) -> RendererConfig:
  """A full-size preset in the small lean presets' layout: W's mask convolution 3x3x3 over one compressed
  channel per deformed volume, its hourglass ending in 2 x its block_expansion channels, then `lean` (2
  G_middle blocks, SPADE hidden halved, one D scale). F, M, the volume, the keypoints and the image sizes
  are unchanged. `upper512x768_lean` + `face_refine_lean` cost 0.99 TFLOP per frame against 3.71 for
  `upper512x768` + `face_refine` (benchmarks/RESULTS.md); the quality cost of the layout is measured at
  small scale against `with_liveportrait_motion`."""
  dm = config.warping_network.dense_motion
  return lean(with_dense_motion(config, mask_kernel_size=3, compress=1,
                                decoder_features=2 * dm.block_expansion))


def with_liveportrait_motion(config: RendererConfig) -> RendererConfig:
  """A small preset with the full presets' dense-motion head (LivePortrait's 7x7x7 mask convolution over
  K + 1 deformed volumes of 4 compressed channels, the hourglass's LivePortrait layout): the baseline that
  the small campaigns compare the lean layout (`lean_full`) against."""
  return with_dense_motion(config, mask_kernel_size=7, compress=4)


small_head_skip_lean = lean(small_head_skip_narrow)
small_upper_skip_lean = lean(small_upper_skip_narrow)
small_face_refine_skip_lean = lean(with_narrow_decoder(small_face_refine_skip))
# small_head_skip with the full presets' dense motion: the baseline of the lean layout's quality campaign.
small_head_skip_lpmotion = with_liveportrait_motion(small_head_skip)
# The full-size presets in the lean layout (`lean_full`): the upper-body frame with refine at 0.99 TFLOP.
head512_lean = lean_full(head512)
upper512x768_lean = lean_full(upper512x768)
face_refine_lean = lean_full(face_refine)
# The hand-injection ablation (paper Table 1 at CPU scale): small_upper_skip with LivePortrait's G branch
# only, nothing injected; trained with the same recipe and budget and scored by the in-loop hand_l1.
small_upper_skip_no_hands = dataclasses.replace(
    small_upper_skip, spade_generator=dataclasses.replace(small_upper_skip.spade_generator,
                                                          hand_injection=False))
tiny_head512_skip = with_source_skip(tiny_head512)
tiny_upper512x768_skip = with_source_skip(tiny_upper512x768)

PRESETS: dict[str, RendererConfig] = {
    "liveportrait": liveportrait,
    "reference_reduced": reference_reduced,
    "tiny": tiny,
    "tiny_upper": tiny_upper,
    "head512": head512,
    "upper512x768": upper512x768,
    "face_refine": face_refine,
    "tiny_head512": tiny_head512,
    "tiny_upper512x768": tiny_upper512x768,
    "tiny_face_refine": tiny_face_refine,
    "small_upper": small_upper,
    "small_head": small_head,
    "small_face_refine": small_face_refine,
    "small_head_skip": small_head_skip,
    "small_head_skip_narrow": small_head_skip_narrow,
    "small_upper_skip_narrow": small_upper_skip_narrow,
    "small_head_skip_lean": small_head_skip_lean,
    "small_upper_skip_lean": small_upper_skip_lean,
    "small_face_refine_skip_lean": small_face_refine_skip_lean,
    "small_upper_skip": small_upper_skip,
    "small_face_refine_skip": small_face_refine_skip,
    "small_upper_skip_no_hands": small_upper_skip_no_hands,
    "small_head_skip_lpmotion": small_head_skip_lpmotion,
    "head512_lean": head512_lean,
    "upper512x768_lean": upper512x768_lean,
    "face_refine_lean": face_refine_lean,
    "tiny_head512_skip": tiny_head512_skip,
    "tiny_upper512x768_skip": tiny_upper512x768_skip,
}

KEYPOINT_LAYOUTS = ("implicit", "hybrid_body", "head_offset")


def keypoint_layout(config: RendererConfig) -> str:
  """How W's control keypoints are formed (module docstring); raises on an inconsistent config.

  * "implicit": num_kp_head == 0 and M's num_kp == W's num_kp;
  * "hybrid_body": num_kp_head + M's num_kp == W's num_kp (head keypoints first);
  * "head_offset": num_kp_head == M's num_kp == W's num_kp (M's "exp" output is the offset ΔX_head).
  """
  k_head, k_m, k_w = config.num_kp_head, config.motion_extractor.num_kp, config.warping_network.num_kp
  if k_head == 0 and k_m == k_w:
    return "implicit"
  if k_head and k_head + k_m == k_w:
    return "hybrid_body"
  if k_head and k_head == k_m == k_w:
    return "head_offset"
  raise ValueError(f"inconsistent keypoint counts: num_kp_head={k_head}, motion_extractor.num_kp={k_m}, "
                   f"warping_network.num_kp={k_w} (want W = M with no head keypoints, W = head + M, or "
                   f"W = M = head)")


def get(name: str) -> RendererConfig:
  """Preset by name; raises a ValueError listing the known names."""
  if name not in PRESETS:
    raise ValueError(f"unknown renderer preset {name!r}; known: {sorted(PRESETS)}")
  return PRESETS[name]
