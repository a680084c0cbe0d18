"""PyTorch -> Flax parameter layout conversion (pure NumPy).

PyTorch convs are (out, in, *k) and linears (out, in); Flax convs are
(*k, in, out) and Dense kernels (in, out). BatchNorm weight/bias go to the
`params` collection as scale/bias and running_mean/var to `batch_stats` as
mean/var. Checkpoint converters of the renderer build on these.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def conv_kernel(w: np.ndarray) -> np.ndarray:
  """(O, I, *k) -> (*k, I, O)."""
  w = np.asarray(w)
  return np.transpose(w, tuple(range(2, w.ndim)) + (1, 0))


def dense_kernel(w: np.ndarray) -> np.ndarray:
  """(O, I) -> (I, O)."""
  return np.asarray(w).T


def conv_params(sd: Mapping[str, np.ndarray], prefix: str) -> dict:
  out = {"kernel": conv_kernel(sd[f"{prefix}.weight"])}
  if f"{prefix}.bias" in sd:
    out["bias"] = np.asarray(sd[f"{prefix}.bias"])
  return out


def dense_params(sd: Mapping[str, np.ndarray], prefix: str) -> dict:
  out = {"kernel": dense_kernel(sd[f"{prefix}.weight"])}
  if f"{prefix}.bias" in sd:
    out["bias"] = np.asarray(sd[f"{prefix}.bias"])
  return out


def batchnorm_params(sd: Mapping[str, np.ndarray], prefix: str) -> tuple[dict, dict]:
  """Returns ({"scale", "bias"}, {"mean", "var"}) for params and batch_stats."""
  params = {"scale": np.asarray(sd[f"{prefix}.weight"]), "bias": np.asarray(sd[f"{prefix}.bias"])}
  stats = {"mean": np.asarray(sd[f"{prefix}.running_mean"]),
           "var": np.asarray(sd[f"{prefix}.running_var"])}
  return params, stats


def conv_bn_block(sd: Mapping[str, np.ndarray], prefix: str) -> tuple[dict, dict]:
  """A LivePortrait `{conv, norm}` block (SameBlock / DownBlock / UpBlock)."""
  bn_p, bn_s = batchnorm_params(sd, f"{prefix}.norm")
  return {"conv": conv_params(sd, f"{prefix}.conv"), "norm": bn_p}, {"norm": bn_s}


def res_block(sd: Mapping[str, np.ndarray], prefix: str) -> tuple[dict, dict]:
  """A LivePortrait ResBlock2d / ResBlock3d."""
  n1p, n1s = batchnorm_params(sd, f"{prefix}.norm1")
  n2p, n2s = batchnorm_params(sd, f"{prefix}.norm2")
  params = {"norm1": n1p, "norm2": n2p, "conv1": conv_params(sd, f"{prefix}.conv1"),
            "conv2": conv_params(sd, f"{prefix}.conv2")}
  return params, {"norm1": n1s, "norm2": n2s}


def spade(sd: Mapping[str, np.ndarray], prefix: str) -> dict:
  """A LivePortrait SPADE norm (`mlp_shared.0`, `mlp_gamma`, `mlp_beta`)."""
  return {"mlp_shared": conv_params(sd, f"{prefix}.mlp_shared.0"),
          "mlp_gamma": conv_params(sd, f"{prefix}.mlp_gamma"),
          "mlp_beta": conv_params(sd, f"{prefix}.mlp_beta")}


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
  """(N, C, *spatial) -> (N, *spatial, C)."""
  return np.moveaxis(np.asarray(x), 1, -1)


def nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
  """(N, *spatial, C) -> (N, C, *spatial)."""
  return np.moveaxis(np.asarray(x), -1, 1)
