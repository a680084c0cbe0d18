"""VGG-19 feature extractor for the perceptual losses (paper Eq. 6, L_Per; FOMM / LivePortrait).

torchvision's `vgg19().features` up to relu5_1, channels-last, returning the
five ReLU outputs relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1 (torchvision
indices 1, 6, 11, 20, 29). The input is an RGB image in [0, 1], normalised
with ImageNet's mean and std inside the module. Conv parameters are named
`features_{i}` after torchvision's index so `convert_vgg19` maps a state dict
one to one. The weights are user-supplied (no download here); without them the
trainer falls back to discriminator feature matching.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax.convert.state_dict import check_state_dict
from chatanyone_jax.layers.blocks import conv

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's vgg19 "E" config up to relu5_1: conv output channels, "M" for 2x2 max pooling.
_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)
OUTPUT_RELUS = (1, 6, 11, 20, 29)  # relu1_1 ... relu5_1


def _conv_indices() -> list[tuple[int, int]]:
  """(torchvision index, channels) of every conv up to relu5_1."""
  out, idx = [], 0
  for layer in _LAYERS:
    if layer == "M":
      idx += 1
    else:
      out.append((idx, layer))
      idx += 2  # conv, relu
  return out


CONV_INDICES = tuple(i for i, _ in _conv_indices())  # (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28)


class VGG19Features(nn.Module):
  """Image (B, H, W, 3) in [0, 1] -> [relu1_1 (B, H, W, 64), relu2_1 (H/2, 128), relu3_1 (H/4, 256),
  relu4_1 (H/8, 512), relu5_1 (H/16, 512)]."""
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, image: jax.Array) -> list[jax.Array]:
    mean = jnp.asarray(IMAGENET_MEAN, image.dtype)
    std = jnp.asarray(IMAGENET_STD, image.dtype)
    x = (image - mean) / std
    feats, idx = [], 0
    for layer in _LAYERS:
      if layer == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        idx += 1
        continue
      x = nn.relu(conv(layer, 2, 3, name=f"features_{idx}", dtype=self.dtype)(x))
      if idx + 1 in OUTPUT_RELUS:
        feats.append(x)
      idx += 2
    return feats


def convert_vgg19(state_dict: Mapping[str, np.ndarray]) -> dict:
  """torchvision VGG-19 state dict (NumPy arrays) -> variables of `VGG19Features`.

  Reads `features.{i}.weight` (out, in, 3, 3) -> kernel (3, 3, in, out) and
  `features.{i}.bias` for the 13 convs up to relu5_1; later convs and the
  classifier are ignored. Raises a ValueError on missing keys or wrong shapes.
  """
  expected, cin = {}, 3
  for idx, cout in _conv_indices():
    expected[f"features.{idx}.weight"] = (cout, cin, 3, 3)
    expected[f"features.{idx}.bias"] = (cout,)
    cin = cout
  check_state_dict(state_dict, expected, "a torchvision VGG-19 state dict", ignore=lambda key: True)
  return {"params": {f"features_{idx}": {
      "kernel": np.transpose(np.asarray(state_dict[f"features.{idx}.weight"], np.float32), (2, 3, 1, 0)),
      "bias": np.asarray(state_dict[f"features.{idx}.bias"], np.float32)} for idx, _ in _conv_indices()}}
