"""LivePortrait PyTorch weights -> Flax variables for F, M, W, G and the stitching MLPs S.

Input: a mapping PyTorch key -> np.ndarray (a `state_dict()` converted to
NumPy: `load_state_dict` reads .pth / .pt / .ckpt / .model files without PyTorch
(`chatanyone_jax.convert.torch_pickle`), .npz and .safetensors files; the
`param/<key>` entries of the reference npz work too, with the prefix stripped).
Output: {"params": ..., "batch_stats": ...} NumPy trees for the modules of
`chatanyone_jax.render` built from the matching config.

The conversion itself is NumPy (layout transposes, BatchNorm renaming,
spectral-norm folding). It is checked strictly, so a checkpoint of the wrong
config fails with a ValueError instead of a silent mismatch:
  * keys the network needs but the checkpoint lacks, and checkpoint keys the
    network does not use (`num_batches_tracked` is ignored), are listed;
  * every converted array is compared with the shape the Flax module expects
    (`jax.eval_shape` of its init, no FLOPs), naming the PyTorch key.

Command line: convert a LivePortrait weights folder (downloaded by the user
from the HuggingFace repo KwaiVGI/LivePortrait) into one orbax checkpoint,
read back with `load_liveportrait_checkpoint`:

  python -m chatanyone_jax.convert.liveportrait --weights pretrained_weights/liveportrait \
      --out checkpoints/liveportrait [--preset liveportrait]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import pathlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax.convert import torch_pickle
from chatanyone_jax.layers import torch_compat as tc
from chatanyone_jax.render import presets
from chatanyone_jax.render.appearance_feature_extractor import AppearanceFeatureExtractor
from chatanyone_jax.render.motion_extractor import MotionExtractor
from chatanyone_jax.render.presets import (
  AppearanceFeatureExtractorConfig,
  MotionExtractorConfig,
  SPADEDecoderConfig,
  StitchingRetargetingConfig,
  WarpingNetworkConfig,
)
from chatanyone_jax.render.spade_generator import SPADEDecoder
from chatanyone_jax.render.stitching_retargeting import StitchingRetargetingNetwork
from chatanyone_jax.render.warping_network import WarpingNetwork

StateDict = Mapping[str, np.ndarray]
Variables = dict[str, Any]
_IGNORED_SUFFIXES = ("num_batches_tracked",)
_MAX_LISTED = 20


class _Entry(NamedTuple):
  value: np.ndarray
  key: str  # PyTorch key(s) it came from
  source_shape: tuple[int, ...]


class _Reader:
  """Reads PyTorch keys, recording which were used and which are missing."""

  def __init__(self, sd: StateDict):
    self.sd, self.used, self.missing = sd, set(), []

  def __call__(self, key: str, fn: Callable[[np.ndarray], np.ndarray] = np.asarray) -> _Entry:
    if key not in self.sd:
      self.missing.append(key)
      return _Entry(np.zeros((0,), np.float32), key, ())
    self.used.add(key)
    arr = np.asarray(self.sd[key])
    return _Entry(np.asarray(fn(arr), np.float32), key, arr.shape)

  def raw(self, key: str) -> np.ndarray | None:
    """The array under `key` (marked used), or None when missing (recorded)."""
    if key not in self.sd:
      self.missing.append(key)
      return None
    self.used.add(key)
    return np.asarray(self.sd[key], np.float32)


# ---- building blocks ---------------------------------------------------------------------------------

def _conv(r: _Reader, prefix: str, bias: bool = True) -> dict:
  out = {"kernel": r(f"{prefix}.weight", tc.conv_kernel)}
  if bias:
    out["bias"] = r(f"{prefix}.bias")
  return out


def _dense(r: _Reader, prefix: str) -> dict:
  return {"kernel": r(f"{prefix}.weight", tc.dense_kernel), "bias": r(f"{prefix}.bias")}


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
      params["kernel"] = _Entry(tc.conv_kernel(w), key, w.shape)
      stats = {"u": _Entry(u, f"{prefix}.weight_u", u.shape), "v": _Entry(v, f"{prefix}.weight_v", v.shape)}
    else:
      if u.shape != (w.shape[0],) or v.shape != (w[0].size,):
        raise ValueError(
            f"{prefix}: weight_u {u.shape} / weight_v {v.shape} do not fit weight_orig {w.shape}")
      params["kernel"] = _Entry(tc.conv_kernel(w / spectral_sigma(w, u, v)), key, w.shape)
  if bias:
    params["bias"] = r(f"{prefix}.bias")
  return params, stats


# ---- validation ----------------------------------------------------------------------------------------

def _names(keys) -> str:
  keys = sorted(keys)
  more = f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
  return ", ".join(keys[:_MAX_LISTED]) + more


def _finish(r: _Reader, tree: dict, module: nn.Module, init_args: tuple, what: str) -> Variables:
  """Checks keys and shapes against `module`, then returns plain NumPy variables."""
  unexpected = [k for k in r.sd if k not in r.used and not k.endswith(_IGNORED_SUFFIXES)]
  if r.missing or unexpected:
    msg = [f"{what}: the checkpoint does not match the config."]
    if r.missing:
      msg.append(f"Missing keys ({len(r.missing)}): {_names(r.missing)}.")
    if unexpected:
      msg.append(f"Unexpected keys ({len(unexpected)}): {_names(unexpected)}.")
    raise ValueError(" ".join(msg))

  expected = jax.eval_shape(lambda: module.init(jax.random.key(0), *init_args))
  expected = {c: v for c, v in expected.items() if c in ("params", "batch_stats")}
  tree = {c: v for c, v in tree.items() if v}
  is_entry = lambda x: isinstance(x, _Entry)
  got = {jax.tree_util.keystr(p): e for p, e in jax.tree_util.tree_leaves_with_path(tree, is_leaf=is_entry)}
  want = {jax.tree_util.keystr(p): s for p, s in jax.tree_util.tree_leaves_with_path(expected)}
  if set(got) != set(want):  # the converter and the module disagree: a bug, not a checkpoint problem
    raise ValueError(f"{what}: converter/module mismatch; only converted: {_names(set(got) - set(want))}; "
                     f"only in the module: {_names(set(want) - set(got))}")
  bad = [f"{e.key} {e.source_shape} -> Flax {path} {e.value.shape}, expected {want[path].shape}"
         for path, e in got.items() if e.value.shape != want[path].shape]
  if bad:
    raise ValueError(f"{what}: {len(bad)} shape mismatch(es) (wrong config for this checkpoint?): "
                     + "; ".join(bad[:_MAX_LISTED]))
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
          "grn": {"gamma": r(f"{p}.grn.gamma", np.ravel), "beta": r(f"{p}.grn.beta", np.ravel)},
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
  names = [f"G_middle_{i}" for i in range(6)] + ["up_0", "up_1"]
  cin = config.input_channels
  fins = {**{n: 2 * cin for n in names[:6]}, "up_0": 2 * cin, "up_1": cin}
  fouts = {**{n: 2 * cin for n in names[:6]}, "up_0": cin, "up_1": config.out_channels}
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


# ---- reading state dicts -------------------------------------------------------------------------------

# In the order `find_weights` prefers them when a folder holds one stem in several formats (torch.save files
# last: the others hold plain arrays).
WEIGHT_SUFFIXES = (".safetensors", ".npz", ".pth", ".pt", ".ckpt", ".model")
# torch.save files (".model": SyncNet's syncnet_v2.model), read by `torch_pickle`.
_TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".model")
_MODULE_PREFIX = "module."  # DataParallel / DDP wrappers


def _strip_module(key: str) -> str:
  return key[len(_MODULE_PREFIX):] if key.startswith(_MODULE_PREFIX) else key


def _flatten(tree: Mapping, to_numpy: Callable[[Any], np.ndarray | None], prefix: str = "",
             out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
  """Nested dicts -> "outer.inner" keys, dropping a leading `module.` at every level."""
  out = {} if out is None else out
  for k, v in tree.items():
    key = prefix + _strip_module(str(k))
    if isinstance(v, Mapping):
      _flatten(v, to_numpy, key + ".", out)
    elif (arr := to_numpy(v)) is not None:
      out[key] = arr
  return out


def _import_torch(path: pathlib.Path, why: torch_pickle.UnsupportedFormatError):
  try:
    return importlib.import_module("torch")
  except ImportError as e:
    raise ImportError(
        f"{why} -- so reading {path} needs PyTorch's own torch.load, and PyTorch is not installed. Either "
        f"`pip install torch` (the CPU build is enough), or convert the file to .npz / .safetensors on a "
        f"machine that has torch (nested dicts as 'outer.inner' keys) and pass that instead.") from e


def _torch_loader(path: pathlib.Path) -> tuple[Any, Callable[[Any], np.ndarray | None]]:
  """Our torch-free reader; torch.load(weights_only=True) only for what it reports as unsupported."""
  def numpy_leaf(v):
    return np.asarray(v) if isinstance(v, np.ndarray | np.generic | int | float) else None  # drop str, None

  try:
    return torch_pickle.load(path), numpy_leaf
  except torch_pickle.UnsupportedFormatError as e:
    torch = _import_torch(path, e)
  raw = torch.load(path, map_location="cpu", weights_only=True)

  def to_numpy(v):
    if isinstance(v, torch.Tensor):
      v = v.detach().cpu()
      return (v.float() if v.dtype == torch.bfloat16 else v).numpy()
    return np.asarray(v) if isinstance(v, int | float | np.ndarray) else None  # drop strings, None, ...

  return raw, to_numpy


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """A flat {key: np.ndarray} state dict from a torch.save (.pth .pt .ckpt .model), .npz or .safetensors file.

  torch.save files are read without PyTorch by `torch_pickle.load` (the zip and the legacy format; pickled
  code is refused). Only files it reports as unsupported (TorchScript archives, quantized tensors, ...) go
  to `torch.load(weights_only=True)`, which needs PyTorch installed.

  Nested dicts (LivePortrait's stitching file: {'retarget_shoulder': {...}, ...}) are flattened to
  "outer.inner" keys; a leading `module.` is stripped from every key (and every nesting level).
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"state dict file {path} does not exist")
  suffix = path.suffix.lower()
  to_numpy: Callable[[Any], np.ndarray | None] = np.asarray
  if suffix in _TORCH_SUFFIXES:
    raw, to_numpy = _torch_loader(path)
  elif suffix == ".npz":
    with np.load(path, allow_pickle=False) as z:
      raw = {k: z[k] for k in z.files}
  elif suffix == ".safetensors":
    try:
      from safetensors.numpy import load_file
    except ImportError as e:
      raise ImportError(f"reading {path} needs the `safetensors` package: `pip install safetensors`") from e
    raw = load_file(str(path))
  else:
    raise ValueError(f"{path}: unsupported weights format {suffix!r}; use one of "
                     f"{', '.join(WEIGHT_SUFFIXES)}")
  if not isinstance(raw, Mapping):
    raise ValueError(f"{path}: expected a state dict (a dict of tensors), got {type(raw).__name__}")
  return _flatten(raw, to_numpy)


# LivePortrait's stitching file: our name -> its top-level key.
STITCHING_KEYS = {"stitching": "retarget_shoulder", "lip": "retarget_mouth", "eye": "retarget_eye"}


def split_stitching_state_dict(sd: StateDict) -> dict[str, dict[str, np.ndarray]]:
  """`stitching_retargeting_module` -> {"stitching": sd, "lip": sd, "eye": sd} (flat "outer.inner" keys)."""
  out, missing = {}, []
  for name, outer in STITCHING_KEYS.items():
    out[name] = {_strip_module(k[len(outer) + 1:]): v for k, v in sd.items() if k.startswith(outer + ".")}
    if not out[name]:
      missing.append(outer)
  unexpected = [k for k in sd if not k.startswith(tuple(o + "." for o in STITCHING_KEYS.values()))]
  if missing or unexpected:
    msg = ["not a LivePortrait stitching_retargeting_module state dict "
           f"(expected keys under {', '.join(STITCHING_KEYS.values())}):"]
    if missing:
      msg.append(f"nothing under {', '.join(missing)}.")
    if unexpected:
      msg.append(f"Unexpected keys ({len(unexpected)}): {_names(unexpected)}.")
    raise ValueError(" ".join(msg))
  return out


# ---- a LivePortrait weights folder -> one orbax checkpoint ----------------------------------------------

HF_REPO = "KwaiVGI/LivePortrait"
META_FILE = "liveportrait_meta.json"
# checkpoint tree name -> LivePortrait file stem (under liveportrait/base_models/ in the HF repo)
BASE_MODEL_FILES = {
    "appearance_feature_extractor": "appearance_feature_extractor",
    "motion_extractor": "motion_extractor",
    "warping_network": "warping_module",
    "spade_generator": "spade_generator",
}
STITCHING_FILE = "stitching_retargeting_module"  # under liveportrait/retargeting_models/; optional


def _search_folders(weights_dir: pathlib.Path, stitching: bool) -> list[pathlib.Path]:
  """`weights_dir` may be liveportrait/ (holding base_models/, retargeting_models/) or base_models/ itself."""
  if not stitching:
    return [weights_dir, weights_dir / "base_models"]
  folders = [weights_dir / "retargeting_models", weights_dir]
  if weights_dir.name == "base_models":
    folders.append(weights_dir.parent / "retargeting_models")
  return folders


def _find(folders: Sequence[pathlib.Path], stem: str) -> pathlib.Path | None:
  for folder in folders:
    for suffix in WEIGHT_SUFFIXES:
      if (folder / f"{stem}{suffix}").is_file():
        return folder / f"{stem}{suffix}"
  return None


def find_weights(weights_dir: str | os.PathLike) -> dict[str, pathlib.Path]:
  """Tree name -> weights file for the four base models (required) and the stitching file (if present)."""
  d = pathlib.Path(weights_dir)
  if not d.is_dir():
    raise FileNotFoundError(f"LivePortrait weights folder {d} does not exist or is not a folder")
  found = {name: _find(_search_folders(d, False), stem) for name, stem in BASE_MODEL_FILES.items()}
  missing = [BASE_MODEL_FILES[name] for name, path in found.items() if path is None]
  if missing:
    looked = ", ".join(str(f) for f in _search_folders(d, False))
    raise FileNotFoundError(
        f"missing LivePortrait weights: {', '.join(m + '.pth' for m in missing)} (looked in {looked} for "
        f"{' / '.join(WEIGHT_SUFFIXES)}). LivePortrait publishes them in the HuggingFace repo {HF_REPO} "
        f"under liveportrait/base_models/ (and liveportrait/retargeting_models/{STITCHING_FILE}.pth); "
        f"download them yourself and point --weights at that folder (this converter never downloads).")
  stitching = _find(_search_folders(d, True), STITCHING_FILE)
  if stitching is not None:
    found["stitching_retargeting"] = stitching
  return found


def _num_params(variables: Variables) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables.get("params", {})))


def convert_liveportrait(weights_dir: str | os.PathLike, preset: str = "liveportrait"
                         ) -> tuple[dict[str, Variables], dict[str, Any]]:
  """(tree, meta): the converted variables of every network found in `weights_dir`, and a summary.

  tree: {"appearance_feature_extractor", "motion_extractor", "warping_network", "spade_generator"} and,
  when the stitching file is there, {"stitching", "lip", "eye"}; each {"params": ..., ["batch_stats"]}.
  G's spectral norms are folded into effective kernels (inference layout).
  """
  cfg = presets.get(preset)
  d = pathlib.Path(weights_dir)
  files = find_weights(d)
  converters = {
      "appearance_feature_extractor": lambda sd: convert_appearance_feature_extractor(
          sd, cfg.appearance_feature_extractor),
      "motion_extractor": lambda sd: convert_motion_extractor(sd, cfg.motion_extractor),
      "warping_network": lambda sd: convert_warping_network(sd, cfg.warping_network),
      "spade_generator": lambda sd: convert_spade_decoder(sd, cfg.spade_generator),
  }
  if "stitching_retargeting" in files:
    if cfg.stitching is None:
      raise ValueError(f"preset {preset!r} has no stitching / retargeting MLPs, but "
                       f"{files['stitching_retargeting']} exists (use --preset liveportrait)")
    st = cfg.stitching

    def convert_stitching(sd):
      parts = split_stitching_state_dict(sd)
      return {name: convert_stitching_retargeting(parts[name], getattr(st, name),
                                                  f"{STITCHING_KEYS[name]} ({name})") for name in parts}

    converters["stitching_retargeting"] = convert_stitching

  tree: dict[str, Variables] = {}
  for name, convert in converters.items():
    path = files[name]
    sd = load_state_dict(path)
    try:
      out = convert(sd)
    except ValueError as e:
      raise ValueError(f"{path} does not match preset {preset!r} (wrong --preset for these weights?): {e}") \
          from e
    tree.update(out if name == "stitching_retargeting" else {name: out})
  meta = {
      "format": "chatanyone_jax LivePortrait checkpoint (orbax), 1",
      "preset": preset,
      "weights_dir": str(d.resolve()),
      "sources": {name: os.path.relpath(path, d) for name, path in files.items()},
      "num_parameters": {name: _num_params(v) for name, v in tree.items()},
      "spade_generator_spectral_norm": "folded into effective kernels",
      "preset_config": dataclasses.asdict(cfg),
  }
  return tree, meta


def _check_out(out: pathlib.Path, overwrite: bool) -> None:
  if out.exists() and (out.is_file() or any(out.iterdir())):
    if not overwrite:
      raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    if not (out / META_FILE).is_file():
      raise FileExistsError(f"{out} exists and is not a checkpoint written by this converter "
                            f"(no {META_FILE}); refusing to overwrite it")


def save_liveportrait_checkpoint(out: str | os.PathLike, tree: Mapping[str, Variables],
                                 meta: Mapping[str, Any], overwrite: bool = False) -> pathlib.Path:
  """Writes `tree` as one orbax checkpoint at `out` and `meta` beside it as `out/liveportrait_meta.json`."""
  import orbax.checkpoint as ocp

  out = pathlib.Path(out).resolve()  # orbax wants absolute paths
  _check_out(out, overwrite)
  if out.is_dir() and not any(out.iterdir()):
    out.rmdir()
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(out, dict(tree), force=overwrite)
    ckptr.wait_until_finished()
  (out / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
  return out


def load_liveportrait_meta(path: str | os.PathLike) -> dict[str, Any]:
  """The JSON sidecar of a checkpoint written by `save_liveportrait_checkpoint`."""
  meta = pathlib.Path(path) / META_FILE
  if not meta.is_file():
    raise FileNotFoundError(f"{path} is not a LivePortrait checkpoint of this converter (no {META_FILE}); "
                            "write one with `python -m chatanyone_jax.convert.liveportrait`")
  return json.loads(meta.read_text())


def load_liveportrait_checkpoint(path: str | os.PathLike) -> dict[str, Variables]:
  """The tree written by `save_liveportrait_checkpoint` (NumPy arrays): {network name: variables}."""
  import orbax.checkpoint as ocp

  path = pathlib.Path(path).resolve()
  load_liveportrait_meta(path)  # a clear error for a wrong folder
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(path)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m chatanyone_jax.convert.liveportrait",
      description="Convert LivePortrait's PyTorch weights (downloaded by you from the HuggingFace repo "
                  f"{HF_REPO}) into one orbax checkpoint of chatanyone_jax variables.")
  parser.add_argument("--weights", required=True,
                      help="LivePortrait's pretrained_weights/liveportrait folder (or its base_models/): "
                           + ", ".join(f"{s}.pth" for s in BASE_MODEL_FILES.values())
                           + f", optionally retargeting_models/{STITCHING_FILE}.pth; .pt, .npz and "
                           ".safetensors files with the same names work too")
  parser.add_argument("--out", required=True, help="checkpoint folder to write")
  parser.add_argument("--preset", default="liveportrait",
                      help=f"renderer preset the weights belong to (default liveportrait; known: "
                           f"{', '.join(sorted(presets.PRESETS))})")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --out")
  args = parser.parse_args(argv)
  _check_out(pathlib.Path(args.out).resolve(), args.overwrite)  # fail before the conversion
  tree, meta = convert_liveportrait(args.weights, args.preset)
  out = save_liveportrait_checkpoint(args.out, tree, meta, overwrite=args.overwrite)
  sources = meta["sources"]
  for name, count in meta["num_parameters"].items():
    print(f"{name:<30} {count:>12,d} params  <- {sources.get(name, sources.get('stitching_retargeting'))}")
  print(f"wrote {out} (preset {args.preset!r})")
  return 0


if __name__ == "__main__":
  try:
    sys.exit(main())
  except (FileNotFoundError, FileExistsError, ImportError, ValueError) as e:
    sys.exit(f"error: {e}")
