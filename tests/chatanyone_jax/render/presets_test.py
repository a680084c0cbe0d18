"""Renderer presets: full sizes checked with jax.eval_shape only (shapes and parameter counts)."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from chatanyone_jax.render import presets, train_step
from chatanyone_jax.render.appearance_feature_extractor import AppearanceFeatureExtractor
from chatanyone_jax.render.discriminator import MultiScaleDiscriminator
from chatanyone_jax.render.motion_extractor import MotionExtractor
from chatanyone_jax.render.spade_generator import SPADEDecoder
from chatanyone_jax.render.warping_network import WarpingNetwork
from tests.chatanyone_jax.render.util import num_params

# name: (volume (D, H, W, C), G input (H, W, C), output (H, W), parameter counts F, M, W, G, hand branch of G)
EXPECTED = {
    # LivePortrait's released networks: 0.84M / 28.12M / 45.53M / 55.37M.
    "liveportrait": ((16, 64, 64, 32), (64, 64, 256), (512, 512),
                     (836_224, 28_118_728, 45_529_829, 55_365_388, 0)),
    # W and M see K = 32 head keypoints instead of 21.
    "head512": ((16, 64, 64, 32), (64, 64, 256), (512, 512),
                (836_224, 28_169_482, 47_329_891, 55_365_388, 0)),
    # 256 wide x 384 high in; W sees 53 keypoints; G has the hand branch (+1.18M).
    "upper512x768": ((16, 96, 64, 32), (96, 64, 256), (768, 512),
                     (836_224, 28_118_728, 52_372_453, 56_548_812, 1_183_424)),
    "face_refine": ((16, 64, 64, 16), (64, 64, 128), (512, 512),
                    (168_480, 4_999_930, 6_158_931, 14_146_284, 296_800)),
}


def _shapes_and_counts(cfg: presets.RendererConfig):
  h, w = cfg.image_size
  k = jax.random.key(0)
  img = jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)
  kp = jax.ShapeDtypeStruct((1, cfg.warping_network.num_kp, 3), jnp.float32)
  f_out, f_v = jax.eval_shape(
      lambda x: AppearanceFeatureExtractor(cfg.appearance_feature_extractor).init_with_output(k, x), img)
  m_out, m_v = jax.eval_shape(lambda x: MotionExtractor(cfg.motion_extractor).init_with_output(k, x), img)
  w_out, w_v = jax.eval_shape(
      lambda f, a, b: WarpingNetwork(cfg.warping_network).init_with_output(k, f, a, b), f_out, kp, kp)
  hand = img if cfg.spade_generator.hand_injection else None
  g_out, g_v = jax.eval_shape(
      lambda f, i: SPADEDecoder(cfg.spade_generator).init_with_output(k, f, i), w_out["out"], hand)
  g_params = g_v["params"]
  hand_count = num_params({n: p for n, p in g_params.items() if n.startswith("hand_")})
  counts = tuple(num_params(v["params"]) for v in (f_v, m_v, w_v, g_v)) + (hand_count,)
  return f_out.shape[1:], w_out["out"].shape[1:], g_out.shape[1:3], counts, m_out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_full_preset_shapes_and_parameter_counts(name):
  cfg = presets.get(name)
  volume, g_in, out, counts, m_out = _shapes_and_counts(cfg)
  want_volume, want_g_in, want_out, want_counts = EXPECTED[name]
  assert (volume, g_in, out) == (want_volume, want_g_in, want_out)
  assert out == cfg.output_size
  assert counts == want_counts
  assert m_out["kp"].shape == (1, 3 * cfg.motion_extractor.num_kp)


def test_paper_sizes():
  up = presets.upper512x768
  assert up.image_size == (384, 256) and up.output_size == (768, 512)  # 256 wide x 384 high -> 512 x 768
  assert up.warping_network.num_kp == presets.K_HEAD + presets.K_BODY == 53  # Eq. 4: X_head + X_body
  assert up.motion_extractor.num_kp == 21 and up.num_kp_head == 32
  assert up.spade_generator.hand_injection and not presets.head512.spade_generator.hand_injection
  assert presets.head512.image_size == (256, 256) and presets.head512.output_size == (512, 512)
  # the existing presets are unchanged: LivePortrait's G has no hand branch
  assert presets.liveportrait.warping_network.num_kp == 21
  assert not presets.liveportrait.spade_generator.hand_injection
  assert not presets.tiny.spade_generator.hand_injection
  with pytest.raises(ValueError, match="known"):
    presets.get("nope")


def test_full_discriminator_shapes():
  cfg = presets.upper512x768.discriminator
  img = jax.ShapeDtypeStruct((1, 768, 512, 3), jnp.float32)
  outs, v = jax.eval_shape(lambda x: MultiScaleDiscriminator(cfg).init_with_output(jax.random.key(0), x), img)
  assert [o["logits"].shape for o in outs] == [(1, 48, 32, 1), (1, 24, 16, 1), (1, 12, 8, 1)]
  assert num_params(v["params"]) == 3 * 1_551_489  # per scale: 3x3 convs 3-64-128-256-512 + 1x1 logit


def test_tiny_presets_are_tiny():
  for cfg in (presets.tiny, presets.tiny_upper):
    assert max(cfg.image_size) <= 64
    assert cfg.spade_generator.input_channels <= 32 and cfg.discriminator.max_features <= 32


def test_depth_counts_shape_the_parameter_trees():
  """`num_middle_blocks` and `dwconv_kernel`: LivePortrait's 6 G_middle blocks and 7x7 depthwise kernels in
  the full presets, the tiny presets' 2 and 3x3 in the parameters, an even kernel refused."""
  full = presets.head512
  assert full.spade_generator.num_middle_blocks == 6 and full.motion_extractor.dwconv_kernel == 7
  g = presets.tiny.spade_generator
  feat = jnp.zeros((1, 8, 8, g.input_channels))
  shapes = jax.eval_shape(lambda: SPADEDecoder(g).init(jax.random.key(0), feat))["params"]
  assert sorted(k for k in shapes if k.startswith("G_middle")) == ["G_middle_0", "G_middle_1"]
  m = presets.tiny.motion_extractor
  image = jnp.zeros((1, 32, 32, 3))
  shapes = jax.eval_shape(lambda: MotionExtractor(m).init(jax.random.key(0), image))["params"]
  assert shapes["stages_0_0"]["dwconv"]["kernel"].shape == (3, 3, 1, m.dims[0])
  even = dataclasses.replace(m, dwconv_kernel=4)
  with pytest.raises(ValueError, match="dwconv_kernel must be odd"):
    MotionExtractor(even).init(jax.random.key(0), image)


@pytest.mark.parametrize("name", ["small_head_skip", "small_upper_skip"])
def test_narrow_decoder_presets_narrow_only_the_hourglass_output(name):
  """`with_narrow_decoder` (the `small_narrow` training configs): W's hourglass ends in 16 channels, the
  mask and occlusion heads read those, and nothing else changes (same module tree, volume and output)."""
  wide, narrow = presets.get(name), presets.get(name + "_narrow")
  assert narrow == presets.with_narrow_decoder(wide, 16)
  assert wide.warping_network.dense_motion.decoder_features == 0  # LivePortrait's layout
  k = jax.random.key(0)
  img = jax.ShapeDtypeStruct((1, *wide.image_size, 3), jnp.float32)
  f = AppearanceFeatureExtractor(wide.appearance_feature_extractor)
  vol, _ = jax.eval_shape(lambda x: f.init_with_output(k, x), img)
  kp = jax.ShapeDtypeStruct((1, wide.warping_network.num_kp, 3), jnp.float32)
  outs, dense = [], []
  for cfg in (wide, narrow):
    w = WarpingNetwork(cfg.warping_network)
    out, v = jax.eval_shape(lambda f, a, b, w=w: w.init_with_output(k, f, a, b), vol, kp, kp)
    outs.append(out["out"].shape)
    dense.append(v["params"]["dense_motion_network"])
  assert outs[0] == outs[1]
  assert jax.tree.structure(dense[0]) == jax.tree.structure(dense[1])
  k_in = dense[0]["hourglass"]["decoder_conv"]["kernel"].shape[-2]
  assert dense[0]["hourglass"]["decoder_conv"]["kernel"].shape[-1] == k_in  # LivePortrait: in = out
  assert dense[1]["hourglass"]["decoder_conv"]["kernel"].shape[-2:] == (k_in, 16)
  assert dense[1]["mask"]["kernel"].shape[-2] == 16
  assert num_params(dense[1]) < num_params(dense[0])


@pytest.mark.parametrize("name", ["small_head_skip", "small_upper_skip"])
def test_lean_presets_thin_g_and_d_of_the_narrow_ones(name):
  """`lean` (the `small_lean` training configs, about 1 s per CPU step): the narrow preset with 2 G_middle
  blocks, SPADE's shared convolutions 8 wide and one discriminator scale; F, M and W unchanged."""
  narrow, lean = presets.with_narrow_decoder(presets.get(name)), presets.get(name + "_lean")
  assert lean == presets.lean(narrow)
  for part in ("appearance_feature_extractor", "motion_extractor", "warping_network"):
    assert getattr(lean, part) == getattr(narrow, part), part
  k = jax.random.key(0)
  gens = [jax.eval_shape(lambda c=c: train_step.init_generator(c, k, c.image_size)) for c in (narrow, lean)]
  g_narrow, g_lean = (g["params"]["G"] for g in gens)
  middle = lambda params: sorted(x for x in params if x.startswith("G_middle"))
  assert middle(g_narrow) == [f"G_middle_{i}" for i in range(6)]
  assert middle(g_lean) == ["G_middle_0", "G_middle_1"]
  widths = {x.shape[-1] for path, x in jax.tree_util.tree_leaves_with_path(g_lean["G_middle_0"])
            if "mlp_shared" in jax.tree_util.keystr(path) and x.ndim == 4}
  assert widths == {8}, widths
  assert all(gens[0][c][p] == gens[1][c][p] for c in gens[0] for p in ("F", "M", "W"))
  image = jnp.zeros((1, *lean.output_size, 3))
  scales = [len(jax.eval_shape(lambda c=c: MultiScaleDiscriminator(c.discriminator).init(k, image))["params"])
            for c in (narrow, lean)]
  assert scales == [2, 1]
  # The face refine's lean preset is the same change to its narrow layout (its G adds the injection branch).
  refine = presets.small_face_refine_skip_lean
  assert refine == presets.lean(presets.with_narrow_decoder(presets.small_face_refine_skip))
  assert refine.spade_generator.hand_injection and refine.discriminator.num_scales == 1


def test_lean_full_presets_are_the_small_lean_layout_at_full_size():
  """`lean_full` (issue: the upper-body frame at <= 1.5 TFLOP): the full presets already have LivePortrait's
  dense motion, and the small campaign pair (`small_head_skip_lpmotion` against `small_head_skip_lean`)
  differs exactly as a full preset differs from its lean one, so the small campaigns measure the layout."""
  for name in ("head512", "upper512x768", "face_refine"):
    full, lean = presets.get(name), presets.get(name + "_lean")
    assert presets.with_liveportrait_motion(full) == full, name
    assert lean == presets.lean_full(full)
    dm = lean.warping_network.dense_motion
    assert (dm.mask_kernel_size, dm.compress, dm.decoder_features) == (3, 1, 2 * dm.block_expansion)
    g, g_full = lean.spade_generator, full.spade_generator
    assert (g.num_middle_blocks, g.spade_hidden) == (2, g_full.spade_hidden // 2)
    assert lean.discriminator.num_scales == 1
    for part in ("appearance_feature_extractor", "motion_extractor"):
      assert getattr(lean, part) == getattr(full, part), (name, part)
    assert (lean.image_size, lean.num_kp_head, lean.warping_network.num_kp, lean.output_size) == (
        full.image_size, full.num_kp_head, full.warping_network.num_kp, full.output_size)
    assert presets.keypoint_layout(lean) == presets.keypoint_layout(full)
  baseline = presets.get("small_head_skip_lpmotion")
  assert presets.lean_full(baseline) == presets.small_head_skip_lean
  assert baseline == presets.with_liveportrait_motion(presets.small_head_skip)
  dm = baseline.warping_network.dense_motion
  assert (dm.mask_kernel_size, dm.compress, dm.decoder_features) == (7, 4, 0)
