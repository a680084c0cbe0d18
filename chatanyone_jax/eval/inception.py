"""FID's Inception-V3 feature extractor: the 2048-d pool features that FID compares.

A channels-last Flax port of pytorch-fid's `InceptionV3` (mseitzer/pytorch-fid,
src/pytorch_fid/inception.py) in its FID configuration: torchvision's `Inception3` with pytorch-fid's
FIDInceptionA / C / E_1 / E_2 patches that reproduce the TF FID graph (their pool branches differ: average
pools that do not count padding, a max pool in Mixed_7c), `resize_input=True, normalize_input=True`,
returning block 3, the final average pool:

  RGB in [0, 1] -> bilinear resize to 299x299 (`F.interpolate`: no antialias) -> 2x - 1
  -> Inception-V3 up to Mixed_7c -> spatial mean.

Weights (never downloaded here): pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (WEIGHTS_URL).
`convert_fid_inception` maps its state dict to {"params", "batch_stats"} of `FIDInceptionV3` (BatchNorm
kept, not folded); `InceptionFeatures.from_file(path)(frames)` gives (N, 2048) float64 features.
"""

from __future__ import annotations

import functools
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax.convert.state_dict import check_state_dict, load_state_dict
from chatanyone_jax.layers.blocks import BatchNorm
from chatanyone_jax.ops.resample import resize_bilinear_torch

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008  # the TF graph's classifier; unused for FID but present in the weights file
BN_EPS = 1e-3

Variables = dict[str, Any]


# ---- network ---------------------------------------------------------------------------------------------

class BasicConv2d(nn.Module):
  """torchvision's BasicConv2d: conv (no bias) -> BatchNorm(eps=0.001, eval) -> ReLU."""
  features: int
  kernel: tuple[int, int]
  stride: int = 1
  padding: tuple[int, int] = (0, 0)
  precision: str | None = "highest"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel, strides=(self.stride, self.stride), padding=[(ph, ph), (pw, pw)],
                use_bias=False, precision=self.precision, name="conv")(x)
    return nn.relu(BatchNorm(epsilon=BN_EPS, name="bn")(x))


def _pool3x3_same(x: jax.Array, kind: str) -> jax.Array:
  """3x3 / stride 1 / pad 1 pool of the pool branch: TF-style average (padding not counted) or max."""
  pad = ((1, 1), (1, 1))
  if kind == "max":
    return nn.max_pool(x, (3, 3), strides=(1, 1), padding=pad)
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=pad, count_include_pad=False)


def _max_pool3x3_s2(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (3, 3), strides=(2, 2))


class FIDInceptionA(nn.Module):
  """Mixed_5b/5c/5d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool(no pad count)-1x1."""
  pool_features: int
  precision: str | None = "highest"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = functools.partial(BasicConv2d, precision=self.precision)
    b1 = c(64, (1, 1), name="branch1x1")(x)
    b5 = c(48, (1, 1), name="branch5x5_1")(x)
    b5 = c(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = c(64, (1, 1), name="branch3x3dbl_1")(x)
    b3 = c(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = c(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = c(self.pool_features, (1, 1), name="branch_pool")(_pool3x3_same(x, "avg"))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a (torchvision's InceptionB, unpatched): stride-2 reduction 35 -> 17."""
  precision: str | None = "highest"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = functools.partial(BasicConv2d, precision=self.precision)
    b3 = c(384, (3, 3), stride=2, name="branch3x3")(x)
    bd = c(64, (1, 1), name="branch3x3dbl_1")(x)
    bd = c(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = c(96, (3, 3), stride=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool3x3_s2(x)], axis=-1)


class FIDInceptionC(nn.Module):
  """Mixed_6b-6e: factorised 7x7 branches, avgpool (no pad count) branch."""
  channels_7x7: int
  precision: str | None = "highest"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = functools.partial(BasicConv2d, precision=self.precision)
    c7 = self.channels_7x7
    b1 = c(192, (1, 1), name="branch1x1")(x)
    b7 = c(c7, (1, 1), name="branch7x7_1")(x)
    b7 = c(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = c(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = c(c7, (1, 1), name="branch7x7dbl_1")(x)
    bd = c(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = c(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = c(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = c(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = c(192, (1, 1), name="branch_pool")(_pool3x3_same(x, "avg"))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a (torchvision's InceptionD, unpatched): stride-2 reduction 17 -> 8."""
  precision: str | None = "highest"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = functools.partial(BasicConv2d, precision=self.precision)
    b3 = c(192, (1, 1), name="branch3x3_1")(x)
    b3 = c(320, (3, 3), stride=2, name="branch3x3_2")(b3)
    b7 = c(192, (1, 1), name="branch7x7x3_1")(x)
    b7 = c(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = c(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = c(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool3x3_s2(x)], axis=-1)


class FIDInceptionE(nn.Module):
  """Mixed_7b (FIDInceptionE_1: pool="avg", pad not counted) and Mixed_7c (FIDInceptionE_2: pool="max")."""
  pool: str = "avg"
  precision: str | None = "highest"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = functools.partial(BasicConv2d, precision=self.precision)
    b1 = c(320, (1, 1), name="branch1x1")(x)
    b3 = c(384, (1, 1), name="branch3x3_1")(x)
    b3 = jnp.concatenate([c(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                          c(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
    bd = c(448, (1, 1), name="branch3x3dbl_1")(x)
    bd = c(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([c(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                          c(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
    bp = c(192, (1, 1), name="branch_pool")(_pool3x3_same(x, self.pool))
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """Images (N, H, W, 3) float RGB in [0, 1] -> (N, 2048) FID pool features (pytorch-fid block 3).

  Any H, W: the input is first resized to 299x299 as pytorch-fid (bilinear, no antialias). Submodules are
  named after torchvision's attributes (`Conv2d_1a_3x3`, `Mixed_5b.branch1x1`, ... each with `conv` and
  `bn`). The outputs of pytorch-fid's blocks 0-2 (first and second max pool, Mixed_6e) are sown into the
  "intermediates" collection as `block0`, `block1`, `block2` (read with `mutable=["intermediates"]`).

  precision: of the convs. "highest" (default) is true float32 everywhere; "default" lets GPUs use TF32
  (faster, less exact; what PyTorch's cuDNN does by default).
  """
  precision: str | None = "highest"

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be (N, H, W, 3), got shape {images.shape}")
    x = resize_bilinear_torch(images, (INPUT_SIZE, INPUT_SIZE))
    x = 2.0 * x - 1.0
    c = functools.partial(BasicConv2d, precision=self.precision)
    p = self.precision
    x = c(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)                 # 149
    x = c(32, (3, 3), name="Conv2d_2a_3x3")(x)                           # 147
    x = c(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)           # 147
    x = _max_pool3x3_s2(x)                                               # 73
    self.sow("intermediates", "block0", x)
    x = c(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = c(192, (3, 3), name="Conv2d_4a_3x3")(x)                          # 71
    x = _max_pool3x3_s2(x)                                               # 35
    self.sow("intermediates", "block1", x)
    x = FIDInceptionA(32, precision=p, name="Mixed_5b")(x)               # 256
    x = FIDInceptionA(64, precision=p, name="Mixed_5c")(x)               # 288
    x = FIDInceptionA(64, precision=p, name="Mixed_5d")(x)               # 288
    x = InceptionB(precision=p, name="Mixed_6a")(x)                      # 17, 768
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = FIDInceptionC(c7, precision=p, name=name)(x)
    self.sow("intermediates", "block2", x)
    x = InceptionD(precision=p, name="Mixed_7a")(x)                      # 8, 1280
    x = FIDInceptionE("avg", precision=p, name="Mixed_7b")(x)            # 2048
    x = FIDInceptionE("max", precision=p, name="Mixed_7c")(x)            # 2048
    return jnp.mean(x, axis=(1, 2))


# ---- weights ---------------------------------------------------------------------------------------------

_BN_KEYS = {"weight": ("params", "scale"), "bias": ("params", "bias"),
            "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}
# In the weights file (and `Inception3.state_dict()`), but not needed for the pool features.
_OPTIONAL_SHAPES = {"fc.weight": (NUM_CLASSES, FEATURE_DIM), "fc.bias": (NUM_CLASSES,)}


@functools.lru_cache(maxsize=1)
def expected_shapes() -> dict[str, tuple[int, ...]]:
  """{PyTorch key: shape} of every conv / BatchNorm tensor the features need (no FLOPs: eval_shape)."""
  tree = jax.eval_shape(FIDInceptionV3().init, jax.random.PRNGKey(0),
                        jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32))
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree["params"])[0]:
    *module, layer, leaf_name = (p.key for p in path)
    prefix = ".".join(module)
    if layer == "conv":
      kh, kw, cin, cout = leaf.shape
      out[f"{prefix}.conv.weight"] = (cout, cin, kh, kw)
    elif leaf_name == "scale":  # one BatchNorm: four torch tensors of shape (C,)
      out.update({f"{prefix}.bn.{name}": tuple(leaf.shape) for name in _BN_KEYS})
  return dict(sorted(out.items()))


def convert_fid_inception(sd: Mapping[str, np.ndarray]) -> Variables:
  """pytorch-fid's FID Inception state dict (flat {key: array}) -> FIDInceptionV3's {"params", "batch_stats"}.

  `{m}.conv.weight` (out, in, kh, kw) -> `{m}/conv/kernel` (kh, kw, in, out); `{m}.bn.weight / bias` ->
  params `{m}/bn/scale / bias`; `{m}.bn.running_mean / running_var` -> batch_stats `{m}/bn/mean / var`
  (BatchNorm is not folded). `num_batches_tracked` and the 1008-class `fc` are accepted and ignored (fc's
  shape is still checked: torchvision's own 1000-class ImageNet Inception is a different network for FID).
  Raises a ValueError listing missing, unexpected and mis-shaped keys.
  """
  want = expected_shapes()
  check_state_dict(sd, want, f"pytorch-fid's FID Inception-V3 state dict ({WEIGHTS_FILE})",
                   optional=_OPTIONAL_SHAPES)
  variables: Variables = {"params": {}, "batch_stats": {}}

  def put(collection: str, prefix: str, leaf: tuple[str, str], value: np.ndarray) -> None:
    node = variables[collection]
    for name in prefix.split("."):
      node = node.setdefault(name, {})
    node.setdefault(leaf[0], {})[leaf[1]] = value

  for key in want:
    prefix, layer, name = key.rsplit(".", 2)
    value = np.asarray(sd[key], np.float32)
    if layer == "conv":
      put("params", prefix, ("conv", "kernel"), np.transpose(value, (2, 3, 1, 0)))
    else:
      collection, flax_name = _BN_KEYS[name]
      put(collection, prefix, ("bn", flax_name), value)
  return variables


# ---- batched extractor -----------------------------------------------------------------------------------

def _missing_weights_message(path: pathlib.Path) -> str:
  return (f"FID Inception weights not found at {path}. FID needs pytorch-fid's port of the TF Inception "
          f"graph, {WEIGHTS_FILE}; it is not fetched automatically: download it from {WEIGHTS_URL} "
          "and pass its path.")


class InceptionFeatures:
  """Jitted, batched FID feature extractor: frames (N, H, W, 3) -> (N, 2048) float64 pool features.

    extractor = InceptionFeatures.from_file("pt_inception-2015-12-05-6726825d.pth")
    real = extractor(real_frames)  # uint8 (N, H, W, 3), or float in [0, 1]
    fid = frechet.frechet_distance_features(real, extractor(fake_frames))

  Frames are sent to the device `batch_size` at a time (uint8 stays uint8 until on the device); the last
  batch is zero-padded, so one compilation per (min(batch_size, N), H, W, dtype) serves any N. Results are
  fetched one batch behind, so the host copy overlaps the next batch. `precision` is FIDInceptionV3's
  (conv precision: "highest" = true float32, "default" allows TF32 on GPUs).
  """

  def __init__(self, variables: Variables, precision: str | None = "highest"):
    self.model = FIDInceptionV3(precision=precision)
    self.variables = jax.device_put(variables)
    self._apply = jax.jit(self._forward)

  @classmethod
  def from_file(cls, path: str | os.PathLike = WEIGHTS_FILE, **kwargs) -> InceptionFeatures:
    """Reads pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (or its state dict as .npz / .safetensors).

    Raises FileNotFoundError (saying where to get the file) or ValueError (not that network's state dict).
    """
    path = pathlib.Path(path)
    if not path.is_file():
      raise FileNotFoundError(_missing_weights_message(path))
    return cls(convert_fid_inception(load_state_dict(path)), **kwargs)

  def _forward(self, variables: Variables, frames: jax.Array) -> jax.Array:
    x = frames.astype(jnp.float32)
    if frames.dtype == jnp.uint8:
      x = x / 255.0
    return self.model.apply(variables, x)

  def __call__(self, frames: np.ndarray, batch_size: int = 50) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
      raise ValueError(f"frames must be (N, H, W, 3) RGB, got shape {frames.shape}")
    if frames.dtype != np.uint8 and not np.issubdtype(frames.dtype, np.floating):
      raise ValueError(f"frames must be uint8 or float in [0, 1], got dtype {frames.dtype}")
    if frames.dtype != np.uint8:
      frames = frames.astype(np.float32, copy=False)
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = frames.shape[0]
    out = np.empty((n, FEATURE_DIM), np.float64)
    bs = min(batch_size, max(n, 1))
    pending: tuple[int, int, jax.Array] | None = None  # fetch batch i while batch i + 1 runs
    for start in range(0, n, bs):
      chunk = frames[start:start + bs]
      k = chunk.shape[0]
      if k < bs:
        chunk = np.concatenate([chunk, np.zeros((bs - k, *chunk.shape[1:]), chunk.dtype)])
      result = self._apply(self.variables, chunk)
      if pending is not None:
        out[pending[0]:pending[0] + pending[1]] = np.asarray(pending[2])[:pending[1]]
      pending = (start, k, result)
    if pending is not None:
      out[pending[0]:pending[0] + pending[1]] = np.asarray(pending[2])[:pending[1]]
    return out
