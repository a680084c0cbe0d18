"""LivePortrait PyTorch weights -> Flax variables of F, M, W, G and the stitching / retargeting MLPs S.

Each `convert_*` takes a flat state dict (`chatanyone_jax.convert.state_dict.load_state_dict`) and a
network config of `chatanyone_jax.render.presets`, and returns {"params", ["batch_stats"]} NumPy trees of
the matching `chatanyone_jax.render` module (layout transposes, BatchNorm renaming, spectral-norm
folding). Keys and shapes are checked strictly by `check_state_dict`, with the torch shape of every key
derived from the Flax module's own (`jax.eval_shape`, no FLOPs), so a checkpoint of another config fails
with a ValueError naming the keys instead of a silent mismatch. `convert_weights_file` maps one file of
LivePortrait's weights folder onto a renderer preset; `python -m train.convert liveportrait` converts the
whole folder into the checkpoint that renderer training can start from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax.convert.state_dict import check_state_dict, strip_module
from chatanyone_jax.layers import torch_compat as tc
from chatanyone_jax.render.appearance_feature_extractor import AppearanceFeatureExtractor
from chatanyone_jax.render.motion_extractor import MotionExtractor
from chatanyone_jax.render.presets import (
  AppearanceFeatureExtractorConfig,
  MotionExtractorConfig,
  RendererConfig,
  SPADEDecoderConfig,
  StitchingRetargetingConfig,
  WarpingNetworkConfig,
)
from chatanyone_jax.render.spade_generator import SPADEDecoder
from chatanyone_jax.render.stitching_retargeting import StitchingRetargetingNetwork
from chatanyone_jax.render.warping_network import WarpingNetwork

StateDict = Mapping[str, np.ndarray]
Variables = dict[str, Any]
Shape = tuple[int, ...]


class _Layout(NamedTuple):
  to_flax: Callable[[np.ndarray], np.ndarray]  # PyTorch array -> Flax array
  torch_shape: Callable[[Shape], Shape]        # Flax shape -> the PyTorch shape it comes from


_SAME = _Layout(np.asarray, tuple)
_CONV = _Layout(tc.conv_kernel, lambda s: (s[-1], s[-2], *s[:-2]))  # (O, I, *k) <-> (*k, I, O)
_DENSE = _Layout(tc.dense_kernel, lambda s: (s[1], s[0]))           # (O, I) <-> (I, O)
_GRN = _Layout(np.ravel, lambda s: (1, 1, 1, *s))                   # ConvNeXt-V2 GRN (1, 1, 1, C) <-> (C,)


class _Entry(NamedTuple):
  value: np.ndarray
  key: str  # the PyTorch key it came from
  torch_shape: Callable[[Shape], Shape]


class _Reader:
  """Reads PyTorch keys, recording which were used and which are missing."""

  def __init__(self, sd: StateDict):
    self.sd, self.used, self.missing = sd, set(), []

  def __call__(self, key: str, layout: _Layout = _SAME) -> _Entry:
    if key not in self.sd:
      self.missing.append(key)
      return _Entry(np.zeros((0,), np.float32), key, layout.torch_shape)
    self.used.add(key)
    return _Entry(np.asarray(layout.to_flax(np.asarray(self.sd[key])), np.float32), key, layout.torch_shape)

  def raw(self, key: str) -> np.ndarray | None:
    """The array under `key` (marked used), or None when missing (recorded)."""
    if key not in self.sd:
      self.missing.append(key)
      return None
    self.used.add(key)
    return np.asarray(self.sd[key], np.float32)


# ---- building blocks ---------------------------------------------------------------------------------

def _conv(r: _Reader, prefix: str, bias: bool = True) -> dict:
  out = {"kernel": r(f"{prefix}.weight", _CONV)}
  if bias:
    out["bias"] = r(f"{prefix}.bias")
  return out


def _dense(r: _Reader, prefix: str) -> dict:
  return {"kernel": r(f"{prefix}.weight", _DENSE), "bias": r(f"{prefix}.bias")}


def _layer_norm(r: _Reader, prefix: str) -> dict:
  return {"scale": r(f"{prefix}.weight"), "bias": r(f"{prefix}.bias")}


def _bn(r: _Reader, prefix: str) -> tuple[dict, dict]:
  return ({"scale": r(f"{prefix}.weight"), "bias": r(f"{prefix}.bias")},
          {"mean": r(f"{prefix}.running_mean"), "var": r(f"{prefix}.running_var")})


def _conv_bn(r: _Reader, prefix: str) -> tuple[dict, dict]:
  """LivePortrait's {conv, norm} blocks: SameBlock2d, DownBlock2d/3d, UpBlock3d."""
  bn_p, bn_s = _bn(r, f"{prefix}.norm")
  return {"conv": _conv(r, f"{prefix}.conv"), "norm": bn_p}, {"norm": bn_s}


def _res_block(r: _Reader, prefix: str) -> tuple[dict, dict]:
  n1p, n1s = _bn(r, f"{prefix}.norm1")
  n2p, n2s = _bn(r, f"{prefix}.norm2")
  params = {"norm1": n1p, "norm2": n2p, "conv1": _conv(r, f"{prefix}.conv1"),
            "conv2": _conv(r, f"{prefix}.conv2")}
  return params, {"norm1": n1s, "norm2": n2s}


def _spade(r: _Reader, prefix: str) -> dict:
  return {"mlp_shared": _conv(r, f"{prefix}.mlp_shared.0"), "mlp_gamma": _conv(r, f"{prefix}.mlp_gamma"),
          "mlp_beta": _conv(r, f"{prefix}.mlp_beta")}


def spectral_sigma(weight_orig: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.float32:
  """PyTorch's eval-mode sigma = u . (W v), W = weight_orig reshaped to (out, -1)."""
  w = np.asarray(weight_orig, np.float32)
  return np.float32(np.dot(np.asarray(u, np.float32), w.reshape(w.shape[0], -1) @ np.asarray(v, np.float32)))


def _spectral_conv(r: _Reader, prefix: str, bias: bool, spectral_norm: bool) -> tuple[dict, dict]:
  """A spectral-normed conv: effective kernel (default) or weight_orig + u, v in batch_stats."""
  key = f"{prefix}.weight_orig"
  w, u, v = r.raw(key), r.raw(f"{prefix}.weight_u"), r.raw(f"{prefix}.weight_v")
  params, stats = {}, {}
  if w is not None and u is not None and v is not None:
    if spectral_norm:
      params["kernel"] = _Entry(tc.conv_kernel(w), key, _CONV.torch_shape)
      stats = {"u": _Entry(u, f"{prefix}.weight_u", tuple), "v": _Entry(v, f"{prefix}.weight_v", tuple)}
    else:
      if u.shape != (w.shape[0],) or v.shape != (w[0].size,):
        raise ValueError(
            f"{prefix}: weight_u {u.shape} / weight_v {v.shape} do not fit weight_orig {w.shape}")
      params["kernel"] = _Entry(tc.conv_kernel(w / spectral_sigma(w, u, v)), key, _CONV.torch_shape)
  if bias:
    params["bias"] = r(f"{prefix}.bias")
  return params, stats


# ---- validation ----------------------------------------------------------------------------------------

def _finish(r: _Reader, tree: dict, module: nn.Module, init_args: tuple, what: str) -> Variables:
  """Checks the state dict against `module` (`check_state_dict`), then returns plain NumPy variables."""
  want = jax.eval_shape(lambda: module.init(jax.random.key(0), *init_args))
  want = {c: v for c, v in want.items() if c in ("params", "batch_stats")}
  want = {jax.tree_util.keystr(p): tuple(s.shape) for p, s in jax.tree_util.tree_leaves_with_path(want)}
  tree = {c: v for c, v in tree.items() if v}
  is_entry = lambda x: isinstance(x, _Entry)
  got = {jax.tree_util.keystr(p): e for p, e in jax.tree_util.tree_leaves_with_path(tree, is_leaf=is_entry)}
  # Every key read, with the PyTorch shape its Flax array needs; a key without a Flax array of its own
  # (a folded spectral norm's u / v, checked against weight_orig when read) keeps its shape; of a missing
  # key only the name matters.
  expected = {k: np.shape(v) for k, v in r.sd.items() if k in r.used}
  expected.update({e.key: e.torch_shape(want[p]) for p, e in got.items() if p in want and e.key in r.used})
  expected.update({k: () for k in r.missing})
  check_state_dict(r.sd, expected, f"a LivePortrait {what} state dict of this config")
  if set(got) != set(want):  # the converter and the module disagree: a bug, not a checkpoint problem
    raise ValueError(f"{what}: converter/module mismatch; only converted: {sorted(set(got) - set(want))}; "
                     f"only in the module: {sorted(set(want) - set(got))}")
  return jax.tree.map(lambda e: e.value, tree, is_leaf=is_entry)


def _merge(pairs: dict[str, tuple[dict, dict]]) -> tuple[dict, dict]:
  params = {k: p for k, (p, _) in pairs.items()}
  stats = {k: s for k, (_, s) in pairs.items() if s}
  return params, stats


# ---- the four networks ---------------------------------------------------------------------------------

def convert_appearance_feature_extractor(
    sd: StateDict, config: AppearanceFeatureExtractorConfig) -> Variables:
  """F (LivePortrait `appearance_feature_extractor`) -> variables of `AppearanceFeatureExtractor(config)`."""
  r = _Reader(sd)
  blocks = {"first": _conv_bn(r, "first")}
  for i in range(config.num_down_blocks):
    blocks[f"down_blocks_{i}"] = _conv_bn(r, f"down_blocks.{i}")
  blocks["second"] = (_conv(r, "second"), {})
  for i in range(config.num_resblocks):
    blocks[f"resblocks_3d_{i}"] = _res_block(r, f"resblocks_3d.3dr{i}")
  params, stats = _merge(blocks)
  s = 2 ** config.num_down_blocks
  image = jnp.zeros((1, s, s, config.image_channel), jnp.float32)
  return _finish(r, {"params": params, "batch_stats": stats}, AppearanceFeatureExtractor(config), (image,),
                 "appearance_feature_extractor")


def convert_motion_extractor(
    sd: StateDict, config: MotionExtractorConfig) -> Variables:
  """M (LivePortrait `motion_extractor`, keys `detector.*`) -> variables of `MotionExtractor(config)`."""
  r = _Reader(sd)
  d = "detector"
  params = {"stem_conv": _conv(r, f"{d}.downsample_layers.0.0"),
            "stem_norm": _layer_norm(r, f"{d}.downsample_layers.0.1")}
  for i in range(1, len(config.dims)):
    params[f"downsample_{i}_norm"] = _layer_norm(r, f"{d}.downsample_layers.{i}.0")
    params[f"downsample_{i}_conv"] = _conv(r, f"{d}.downsample_layers.{i}.1")
  for i, depth in enumerate(config.depths):
    for j in range(depth):
      p = f"{d}.stages.{i}.{j}"
      params[f"stages_{i}_{j}"] = {
          "dwconv": _conv(r, f"{p}.dwconv"),  # (C, 1, 7, 7) -> (7, 7, 1, C): grouped conv kernel
          "norm": _layer_norm(r, f"{p}.norm"),
          "pwconv1": _dense(r, f"{p}.pwconv1"),
          "grn": {"gamma": r(f"{p}.grn.gamma", _GRN), "beta": r(f"{p}.grn.beta", _GRN)},
          "pwconv2": _dense(r, f"{p}.pwconv2"),
      }
  params["norm"] = _layer_norm(r, f"{d}.norm")
  for head in ("kp", "scale", "pitch", "yaw", "roll", "t", "exp"):
    params[f"fc_{head}"] = _dense(r, f"{d}.fc_{head}")
  image = jnp.zeros((1, 32, 32, config.image_channel), jnp.float32)
  return _finish(r, {"params": params}, MotionExtractor(config), (image,), "motion_extractor")


def convert_warping_network(
    sd: StateDict, config: WarpingNetworkConfig) -> Variables:
  """W (LivePortrait `warping_module`) -> variables of `WarpingNetwork(config)`."""
  r = _Reader(sd)
  dm, n = "dense_motion_network", config.dense_motion.num_blocks
  hg = {}
  for i in range(n):
    hg[f"encoder_down_blocks_{i}"] = _conv_bn(r, f"{dm}.hourglass.encoder.down_blocks.{i}")
  for j in range(n):
    hg[f"decoder_up_blocks_{j}"] = _conv_bn(r, f"{dm}.hourglass.decoder.up_blocks.{j}")
  hg["decoder_conv"] = (_conv(r, f"{dm}.hourglass.decoder.conv"), {})
  hg["decoder_norm"] = _bn(r, f"{dm}.hourglass.decoder.norm")
  dense = {"hourglass": _merge(hg), "compress": (_conv(r, f"{dm}.compress"), {}),
           "norm": _bn(r, f"{dm}.norm"), "mask": (_conv(r, f"{dm}.mask"), {})}
  if config.estimate_occlusion_map:
    dense["occlusion"] = (_conv(r, f"{dm}.occlusion"), {})
  params, stats = _merge({dm: _merge(dense), "third": _conv_bn(r, "third"),
                          "fourth": (_conv(r, "fourth"), {})})
  s, depth = 2 ** n, config.dense_motion.reshape_depth
  feature = jnp.zeros((1, depth, s, s, config.reshape_channel), jnp.float32)
  kp = jnp.zeros((1, config.num_kp, 3), jnp.float32)
  return _finish(r, {"params": params, "batch_stats": stats}, WarpingNetwork(config), (feature, kp, kp),
                 "warping_network")


def convert_spade_decoder(sd: StateDict, config: SPADEDecoderConfig, *,
                          spectral_norm: bool = False) -> Variables:
  """G (LivePortrait `spade_generator`) -> variables of `SPADEDecoder(config, spectral_norm)`.

  spectral_norm=False folds each spectral norm into an effective kernel
  weight_orig / sigma (PyTorch's eval forward); True keeps weight_orig as the
  kernel and weight_u / weight_v in `batch_stats` for training.
  """
  r = _Reader(sd)
  blocks = {"fc": (_conv(r, "fc"), {})}
  middle = [f"G_middle_{i}" for i in range(config.num_middle_blocks)]  # LivePortrait's: 6
  names = middle + ["up_0", "up_1"]
  cin = config.input_channels
  fins = {**{n: 2 * cin for n in middle}, "up_0": 2 * cin, "up_1": cin}
  fouts = {**{n: 2 * cin for n in middle}, "up_0": cin, "up_1": config.out_channels}
  for name in names:
    convs = {c: _spectral_conv(r, f"{name}.{c}", True, spectral_norm) for c in ("conv_0", "conv_1")}
    params = {"norm_0": _spade(r, f"{name}.norm_0"), "norm_1": _spade(r, f"{name}.norm_1")}
    if fins[name] != fouts[name]:
      convs["conv_s"] = _spectral_conv(r, f"{name}.conv_s", False, spectral_norm)
      params["norm_s"] = _spade(r, f"{name}.norm_s")
    cp, cs = _merge(convs)
    blocks[name] = ({**params, **cp}, cs)
  img_key = "conv_img" if config.upscale is None or config.upscale <= 1 else "conv_img.0"
  blocks["conv_img"] = (_conv(r, img_key), {})
  params, stats = _merge(blocks)
  feature = jnp.zeros((1, 4, 4, cin), jnp.float32)
  return _finish(r, {"params": params, "batch_stats": stats}, SPADEDecoder(config, spectral_norm),
                 (feature,), "spade_generator")


def convert_stitching_retargeting(sd: StateDict, config: StitchingRetargetingConfig,
                                  what: str = "stitching_retargeting") -> Variables:
  """One S MLP (keys `mlp.{0,2,4,...}.weight/bias`) -> variables of `StitchingRetargetingNetwork`.

  `config` is one of a `StitchingConfig`'s `stitching`, `lip` or `eye`; the LivePortrait file holds all
  three (`split_stitching_state_dict`). Linear weights (out, in) become Dense kernels (in, out).
  """
  r = _Reader(sd)
  params = {f"mlp_{2 * i}": _dense(r, f"mlp.{2 * i}") for i in range(len(config.hidden_sizes) + 1)}
  x = jnp.zeros((1, config.input_size), jnp.float32)
  return _finish(r, {"params": params}, StitchingRetargetingNetwork.from_config(config), (x,), what)


def strip_prefix(sd: StateDict, prefix: str) -> dict[str, np.ndarray]:
  """{key[len(prefix):]: value for keys starting with prefix}, e.g. "param/" or "module."."""
  return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


# ---- LivePortrait's weights folder ---------------------------------------------------------------------

# Checkpoint tree name -> LivePortrait file stem (under liveportrait/base_models/ of the HuggingFace repo
# KwaiVGI/LivePortrait).
BASE_MODEL_FILES = {
    "appearance_feature_extractor": "appearance_feature_extractor",
    "motion_extractor": "motion_extractor",
    "warping_network": "warping_module",
    "spade_generator": "spade_generator",
}
STITCHING = "stitching_retargeting"  # tree name of the (optional) stitching file
STITCHING_FILE = "stitching_retargeting_module"  # under liveportrait/retargeting_models/
# LivePortrait's stitching file: our name -> its top-level key.
STITCHING_KEYS = {"stitching": "retarget_shoulder", "lip": "retarget_mouth", "eye": "retarget_eye"}


def split_stitching_state_dict(sd: StateDict) -> dict[str, dict[str, np.ndarray]]:
  """`stitching_retargeting_module` -> {"stitching": sd, "lip": sd, "eye": sd} (flat "outer.inner" keys)."""
  prefixes = tuple(outer + "." for outer in STITCHING_KEYS.values())
  check_state_dict(sd, {}, "a LivePortrait stitching_retargeting_module state dict (expected keys under "
                   f"{', '.join(STITCHING_KEYS.values())})", ignore=lambda k: k.startswith(prefixes))
  out = {name: {strip_module(k[len(outer) + 1:]): v for k, v in sd.items() if k.startswith(outer + ".")}
         for name, outer in STITCHING_KEYS.items()}
  empty = [STITCHING_KEYS[name] for name, part in out.items() if not part]
  if empty:
    raise ValueError(f"not a LivePortrait stitching_retargeting_module state dict: nothing under "
                     f"{', '.join(empty)}")
  return out


def convert_weights_file(name: str, sd: StateDict, renderer: RendererConfig) -> dict[str, Variables]:
  """One file of LivePortrait's weights folder, by its tree name -> {tree name: variables} of `renderer`.

  name: a key of BASE_MODEL_FILES (-> {name: variables}; G's spectral norms folded into effective kernels,
  the inference layout) or STITCHING (-> {"stitching": ..., "lip": ..., "eye": ...}).
  """
  if name == STITCHING:
    if renderer.stitching is None:
      raise ValueError("the renderer config has no stitching / retargeting MLPs")
    parts = split_stitching_state_dict(sd)
    return {k: convert_stitching_retargeting(parts[k], getattr(renderer.stitching, k),
                                             f"{STITCHING_KEYS[k]} ({k})") for k in parts}
  converters = {
      "appearance_feature_extractor": lambda: convert_appearance_feature_extractor(
          sd, renderer.appearance_feature_extractor),
      "motion_extractor": lambda: convert_motion_extractor(sd, renderer.motion_extractor),
      "warping_network": lambda: convert_warping_network(sd, renderer.warping_network),
      "spade_generator": lambda: convert_spade_decoder(sd, renderer.spade_generator),
  }
  if name not in converters:
    raise ValueError(f"unknown LivePortrait weights file {name!r}: expected one of "
                     f"{', '.join([*BASE_MODEL_FILES, STITCHING])}")
  return {name: converters[name]()}
