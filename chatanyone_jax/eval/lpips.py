"""LPIPS perceptual distance (Zhang et al., CVPR 2018), v0.1, the AlexNet variant the paper reports.

Reproduces richzhang/PerceptualSimilarity's `lpips.LPIPS(net='alex', version='0.1')` (lpips/lpips.py,
lpips/pretrained_networks.py), channels-last; net='vgg' (VGG-16) works as well:

  x in [-1, 1] -> (x - shift) / scale -> backbone features at 5 ReLUs (torchvision alexnet / vgg16)
  -> per layer: f / (sqrt(sum_c f²) + 1e-10), d = (f0 - f1)², 1x1 conv C -> 1 ("lin"), spatial mean
  -> distance = sum over the 5 layers.

Weights are user-supplied, never downloaded: the torchvision ImageNet backbone (BACKBONE_FILES, from
https://download.pytorch.org/models/) and the v0.1 lin layers (LIN_FILES, in the `lpips` pip package and
PerceptualSimilarity's lpips/weights/v0.1/), each a .pth or its state dict as .npz / .safetensors.

  metric = LPIPS.from_files("alexnet-owt-7be5be79.pth", "alex.pth")
  d = metric(frames_a, frames_b, batch_size=32)  # (N,) for (N, H, W, 3) uint8 or float in [0, 1]
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax.convert.state_dict import check_state_dict, load_state_dict

BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
LIN_FILES = {"alex": "alex.pth", "vgg": "vgg.pth"}
_BACKBONE_URL = "https://download.pytorch.org/models/"
_LIN_SOURCE = ("the `lpips` pip package (site-packages/lpips/weights/v0.1/) or "
               "github.com/richzhang/PerceptualSimilarity (lpips/weights/v0.1/)")

SHIFT = (-0.030, -0.088, -0.188)  # ScalingLayer, for inputs in [-1, 1]
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10                       # normalize_tensor

# torchvision `features`: (index, out channels, kernel, stride, padding) per conv; ("M", index) max pool.
_ALEX = (
  (0, 64, 11, 4, 2), ("M", 2), (3, 192, 5, 1, 2), ("M", 5), (6, 384, 3, 1, 1), (8, 256, 3, 1, 1),
  (10, 256, 3, 1, 1),
)
_VGG16 = (
  (0, 64, 3, 1, 1), (2, 64, 3, 1, 1), ("M", 4), (5, 128, 3, 1, 1), (7, 128, 3, 1, 1), ("M", 9),
  (10, 256, 3, 1, 1), (12, 256, 3, 1, 1), (14, 256, 3, 1, 1), ("M", 16), (17, 512, 3, 1, 1),
  (19, 512, 3, 1, 1), (21, 512, 3, 1, 1), ("M", 23), (24, 512, 3, 1, 1), (26, 512, 3, 1, 1),
  (28, 512, 3, 1, 1),
)
_ARCH = {
  # layers, torchvision ReLU indices that end the 5 slices, max pool (window, stride), channels per slice
  "alex": (_ALEX, (1, 4, 7, 9, 11), (3, 2), (64, 192, 384, 256, 256)),
  "vgg": (_VGG16, (3, 8, 15, 22, 29), (2, 2), (64, 128, 256, 512, 512)),
}
NETS = tuple(_ARCH)
CHANNELS = {net: arch[3] for net, arch in _ARCH.items()}
MIN_SIZE = {"alex": 31, "vgg": 16}  # smallest H, W for which every layer has a non-empty output


def _check_net(net: str) -> None:
  if net not in _ARCH:
    raise ValueError(f"unknown LPIPS net {net!r}; expected one of {NETS}")


class LPIPSBackbone(nn.Module):
  """torchvision alexnet / vgg16 `features`: (B, H, W, 3) already scaled -> the 5 slice outputs (ReLUs).

  Conv parameters are named `features_{i}` after torchvision's index. Convs run at `precision` (HIGHEST by
  default, so a GPU does not silently drop to TF32 / bf16 passes for a metric)."""
  net: str = "alex"
  precision: jax.lax.Precision | str | None = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    layers, taps, (window, stride), _ = _ARCH[self.net]
    feats = []
    for layer in layers:
      if layer[0] == "M":
        x = nn.max_pool(x, (window, window), strides=(stride, stride), padding="VALID")
        continue
      idx, cout, k, s, p = layer
      x = nn.Conv(cout, (k, k), strides=(s, s), padding=[(p, p), (p, p)], precision=self.precision,
                  name=f"features_{idx}")(x)
      x = nn.relu(x)
      if idx + 1 in taps:
        feats.append(x)
    return feats


def normalize_tensor(f: jax.Array, eps: float = EPS) -> jax.Array:
  """Unit-normalise over channels (last axis), as lpips.normalize_tensor."""
  return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + eps)


class LPIPSNet(nn.Module):
  """lpips.LPIPS(net, version='0.1') forward: two images (B, H, W, 3) in [-1, 1] -> distances (B,), or the
  per-layer terms (B, 5) with `per_layer=True`. The two inputs go through the backbone as one batch."""
  net: str = "alex"
  precision: jax.lax.Precision | str | None = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, in0: jax.Array, in1: jax.Array, per_layer: bool = False) -> jax.Array:
    _check_net(self.net)
    shift = jnp.asarray(SHIFT, jnp.float32)
    scale = jnp.asarray(SCALE, jnp.float32)
    b = in0.shape[0]
    x = (jnp.concatenate([in0, in1], axis=0).astype(jnp.float32) - shift) / scale
    outs = LPIPSBackbone(self.net, self.precision, name="net")(x)
    terms = []
    for kk, f in enumerate(outs):
      diff = (normalize_tensor(f[:b]) - normalize_tensor(f[b:])) ** 2
      lin = nn.Conv(1, (1, 1), use_bias=False, precision=self.precision, name=f"lin{kk}")(diff)  # B,h,w,1
      terms.append(jnp.mean(lin, axis=(1, 2, 3)))
    res = jnp.stack(terms, axis=-1)
    return res if per_layer else jnp.sum(res, axis=-1)


def expected_keys(net: str = "alex") -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
  """({backbone key: torch shape}, {lin key: torch shape}) that `convert_lpips` reads."""
  _check_net(net)
  layers, _, _, chans = _ARCH[net]
  backbone, cin = {}, 3
  for layer in layers:
    if layer[0] == "M":
      continue
    idx, cout, k, _, _ = layer
    backbone[f"features.{idx}.weight"] = (cout, cin, k, k)
    backbone[f"features.{idx}.bias"] = (cout,)
    cin = cout
  lin = {f"lin{kk}.model.1.weight": (1, c, 1, 1) for kk, c in enumerate(chans)}
  return backbone, lin


def _canonical_lin_keys(lin_sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """`lins.{k}.*` (the ModuleList alias in an `lpips.LPIPS().state_dict()`) -> `lin{k}.*`, the key of the
  public files; when both are present they are one tensor and the alias is dropped."""
  out = {}
  for key, value in lin_sd.items():
    m = re.fullmatch(r"lins\.(\d+)\.(.*)", key)
    canonical = f"lin{m.group(1)}.{m.group(2)}" if m else key
    if m is None or canonical not in lin_sd:
      out[canonical] = value
  return out


def convert_lpips(backbone_sd: Mapping[str, np.ndarray], lin_sd: Mapping[str, np.ndarray],
                  net: str = "alex") -> dict[str, Any]:
  """torchvision backbone state dict + LPIPS v0.1 lin state dict (NumPy) -> variables of `LPIPSNet(net)`.

  backbone_sd: `features.{i}.weight` (out, in, k, k) / `.bias` of every conv of torchvision's alexnet or
  vgg16 (`classifier.*` keys are ignored; anything else is unexpected). lin_sd: `lin{k}.model.1.weight`
  (1, C_k, 1, 1), k = 0..4 (`lins.{k}.*` aliases are accepted). Raises a ValueError naming missing,
  unexpected and mis-shaped keys.
  """
  want_backbone, want_lin = expected_keys(net)
  check_state_dict(backbone_sd, want_backbone, f"a torchvision {'alexnet' if net == 'alex' else 'vgg16'} "
                   f"state dict ({BACKBONE_FILES[net]})", ignore=lambda k: k.startswith("classifier."))
  lin_sd = _canonical_lin_keys(lin_sd)
  check_state_dict(lin_sd, want_lin, f"an LPIPS v0.1 lin state dict for net={net!r} ({LIN_FILES[net]})")
  backbone = {}
  for key in want_backbone:
    if key.endswith(".weight"):
      idx = key.split(".")[1]
      w = np.asarray(backbone_sd[key], np.float32)
      backbone[f"features_{idx}"] = {
        "kernel": np.transpose(w, (2, 3, 1, 0)),
        "bias": np.asarray(backbone_sd[f"features.{idx}.bias"], np.float32),
      }
  params: dict[str, Any] = {"net": backbone}
  for kk in range(5):
    w = np.asarray(lin_sd[f"lin{kk}.model.1.weight"], np.float32)
    params[f"lin{kk}"] = {"kernel": np.transpose(w, (2, 3, 1, 0))}  # (1, 1, C, 1)
  return {"params": params}


def _to_unit(x: jax.Array) -> jax.Array:
  """uint8 -> /255; float taken as [0, 1]. Then to [-1, 1] (lpips `normalize=True`)."""
  x = x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)
  return 2.0 * x - 1.0


@functools.partial(jax.jit, static_argnames=("net",))
def lpips_batch(variables: Mapping[str, Any], a: jax.Array, b: jax.Array, net: str = "alex") -> jax.Array:
  """Jitted LPIPS of one batch of image pairs (B, H, W, 3), uint8 or float in [0, 1] -> (B,)."""
  return LPIPSNet(net).apply(variables, _to_unit(a), _to_unit(b))


def _missing_message(net: str, backbone: bool) -> str:
  if backbone:
    return (f"the torchvision ImageNet {'AlexNet' if net == 'alex' else 'VGG-16'} weights "
            f"{BACKBONE_FILES[net]} (public: {_BACKBONE_URL}{BACKBONE_FILES[net]}; torchvision caches it "
            f"in ~/.cache/torch/hub/checkpoints)")
  return f"the LPIPS v0.1 lin weights {LIN_FILES[net]} (from {_LIN_SOURCE})"


class LPIPS:
  """LPIPS v0.1 distance between image pairs, with converted weights held on device.

  `LPIPS.from_files(backbone, lin)` reads the public PyTorch files;
  `LPIPS(variables, net)` takes the output of `convert_lpips`. Calling it on two image arrays
  (N, H, W, 3), uint8 or float in [0, 1], returns the N distances (float32 NumPy), lower = more similar.
  """

  def __init__(self, variables: Mapping[str, Any], net: str = "alex"):
    _check_net(net)
    self.net = net
    self.variables = jax.tree_util.tree_map(jnp.asarray, variables)

  @classmethod
  def from_state_dicts(cls, backbone_sd: Mapping[str, np.ndarray], lin_sd: Mapping[str, np.ndarray],
                       net: str = "alex") -> LPIPS:
    return cls(convert_lpips(backbone_sd, lin_sd, net), net)

  @classmethod
  def from_files(cls, backbone_path: str | os.PathLike, lin_path: str | os.PathLike,
                 net: str = "alex") -> LPIPS:
    """From the torchvision backbone file and the lpips lin file (.pth, or .npz / .safetensors copies)."""
    _check_net(net)
    for path, is_backbone in ((backbone_path, True), (lin_path, False)):
      if not pathlib.Path(path).is_file():
        raise FileNotFoundError(f"{path} does not exist; expected {_missing_message(net, is_backbone)}")
    return cls.from_state_dicts(load_state_dict(backbone_path), load_state_dict(lin_path), net)

  def __call__(self, a: np.ndarray, b: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Distances (N,) between images a[i] and b[i], (N, H, W, 3) uint8 or float in [0, 1].

    Runs in batches of `batch_size` pairs; the last batch is zero-padded to the same shape so one
    compilation serves the whole call."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3:
      raise ValueError(f"expected two image arrays (N, H, W, 3) of one shape, got {a.shape} and {b.shape}")
    if min(a.shape[1:3]) < MIN_SIZE[self.net]:
      raise ValueError(f"images {a.shape[1:3]} are too small for LPIPS(net={self.net!r}): "
                       f"need at least {MIN_SIZE[self.net]} pixels per side")
    for x in (a, b):
      if x.dtype != np.uint8 and x.size and (np.min(x) < -1e-3 or np.max(x) > 1 + 1e-3):
        raise ValueError(f"float images must be in [0, 1], got values in [{np.min(x):.3g}, {np.max(x):.3g}]")
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = a.shape[0]
    bs = min(batch_size, max(n, 1))
    out = []
    for start in range(0, n, bs):
      xa, xb = a[start:start + bs], b[start:start + bs]
      m = xa.shape[0]
      if m < bs:
        pad = ((0, bs - m), (0, 0), (0, 0), (0, 0))
        xa, xb = np.pad(xa, pad), np.pad(xb, pad)
      out.append(np.asarray(lpips_batch(self.variables, xa, xb, net=self.net))[:m])
    return np.concatenate(out) if out else np.zeros((0,), np.float32)
