"""Reference outputs of piergiaj/pytorch-i3d's `InceptionI3d` (pytorch_i3d.py), the FVD feature network.

Run once, by hand, from the repo root with a PyTorch environment:

  python -m tests.chatanyone_jax.eval.reference.make_i3d

The modules of github.com/piergiaj/pytorch-i3d pytorch_i3d.py (`MaxPool3dSamePadding`, `Unit3D`,
`InceptionModule`, `InceptionI3d`; Apache-2.0) are copied below, unchanged but for formatting, the removed
debug prints and two constructor arguments: `bn_eps` (piergiaj: 0.001; the copy in wilson1yan/VideoGPT
videogpt/fvd/pytorch_i3d.py, used with `i3d_pretrained_400.pt` by songweige/TATS and
JunyaoHu/common_metrics_on_video_quality, has BatchNorm3d(eps=1e-5, momentum=0.001)) and `final_pool`
(the AvgPool3d kernel, [2, 7, 7] upstream, smaller here so the reference runs on small inputs). `forward`
returns piergiaj's (N, 400, T') logits; VideoGPT's `.mean(dim=2)` is applied outside.

The weights are `seeded_state_dict` (strict load) and the inputs `seeded_input` clips in [-1, 1], stored
NTHWC by the test and transposed to NCTHW here. Cases:
  * net:      2 clips (T=17, 32x48), eps 1e-3, pool [2, 1, 2]: per-time logits (T'=2), their mean and the
              pooled 1024-d features (`extract_features`, mean over time);
  * eps5:     2 other clips of the same size through the same net with eps 1e-5 (VideoGPT's copy);
  * pipeline: 2 uint8 clips (T=10, 48x72) through VideoGPT's `preprocess_single` (THWC uint8 -> /255 ->
              bilinear resize of the shorter side to 32 -> centre crop -> [-1, 1]) and the eps-1e-3 net with
              pool [2, 1, 1]; the first preprocessed frame of each clip is stored too;
  * upsample: `preprocess_single` of a 2-frame 20x26 uint8 clip to 32 (upsampling) — the whole output.
Only outputs, the state-dict shapes and the seeds (JSON strings) are saved to i3d.npz.
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from tests.chatanyone_jax.eval.reference.seeded import seeded_input, seeded_state_dict

OUT = pathlib.Path(__file__).with_name("i3d.npz")
WEIGHT_SEED = 301
INPUT_SEEDS = {"net": 302, "eps5": 303, "pipeline": 304, "upsample": 305}


# ---- piergiaj/pytorch-i3d pytorch_i3d.py ----------------------------------------------------------------
class MaxPool3dSamePadding(nn.MaxPool3d):

  def compute_pad(self, dim, s):
    if s % self.stride[dim] == 0:
      return max(self.kernel_size[dim] - self.stride[dim], 0)
    else:
      return max(self.kernel_size[dim] - (s % self.stride[dim]), 0)

  def forward(self, x):
    # compute 'same' padding
    (batch, channel, t, h, w) = x.size()
    pad_t = self.compute_pad(0, t)
    pad_h = self.compute_pad(1, h)
    pad_w = self.compute_pad(2, w)
    pad_t_f = pad_t // 2
    pad_t_b = pad_t - pad_t_f
    pad_h_f = pad_h // 2
    pad_h_b = pad_h - pad_h_f
    pad_w_f = pad_w // 2
    pad_w_b = pad_w - pad_w_f
    pad = (pad_w_f, pad_w_b, pad_h_f, pad_h_b, pad_t_f, pad_t_b)
    x = F.pad(x, pad)
    return super().forward(x)


class Unit3D(nn.Module):

  def __init__(self, in_channels, output_channels, kernel_shape=(1, 1, 1), stride=(1, 1, 1), padding=0,
               activation_fn=F.relu, use_batch_norm=True, use_bias=False, name='unit_3d', bn_eps=0.001):
    """Initializes Unit3D module."""
    super().__init__()
    self._output_channels = output_channels
    self._kernel_shape = kernel_shape
    self._stride = stride
    self._use_batch_norm = use_batch_norm
    self._activation_fn = activation_fn
    self._use_bias = use_bias
    self.name = name
    self.padding = padding
    self.conv3d = nn.Conv3d(in_channels=in_channels, out_channels=self._output_channels,
                            kernel_size=self._kernel_shape, stride=self._stride,
                            padding=0,  # we always want padding to be 0 here. We will dynamically pad
                            bias=self._use_bias)
    if self._use_batch_norm:
      self.bn = nn.BatchNorm3d(self._output_channels, eps=bn_eps, momentum=0.01)

  def compute_pad(self, dim, s):
    if s % self._stride[dim] == 0:
      return max(self._kernel_shape[dim] - self._stride[dim], 0)
    else:
      return max(self._kernel_shape[dim] - (s % self._stride[dim]), 0)

  def forward(self, x):
    # compute 'same' padding
    (batch, channel, t, h, w) = x.size()
    pad_t = self.compute_pad(0, t)
    pad_h = self.compute_pad(1, h)
    pad_w = self.compute_pad(2, w)
    pad_t_f = pad_t // 2
    pad_t_b = pad_t - pad_t_f
    pad_h_f = pad_h // 2
    pad_h_b = pad_h - pad_h_f
    pad_w_f = pad_w // 2
    pad_w_b = pad_w - pad_w_f
    pad = (pad_w_f, pad_w_b, pad_h_f, pad_h_b, pad_t_f, pad_t_b)
    x = F.pad(x, pad)
    x = self.conv3d(x)
    if self._use_batch_norm:
      x = self.bn(x)
    if self._activation_fn is not None:
      x = self._activation_fn(x)
    return x


class InceptionModule(nn.Module):
  def __init__(self, in_channels, out_channels, name, bn_eps=0.001):
    super().__init__()
    kw = dict(bn_eps=bn_eps)
    self.b0 = Unit3D(in_channels=in_channels, output_channels=out_channels[0], kernel_shape=[1, 1, 1],
                     padding=0, name=name + '/Branch_0/Conv3d_0a_1x1', **kw)
    self.b1a = Unit3D(in_channels=in_channels, output_channels=out_channels[1], kernel_shape=[1, 1, 1],
                      padding=0, name=name + '/Branch_1/Conv3d_0a_1x1', **kw)
    self.b1b = Unit3D(in_channels=out_channels[1], output_channels=out_channels[2], kernel_shape=[3, 3, 3],
                      name=name + '/Branch_1/Conv3d_0b_3x3', **kw)
    self.b2a = Unit3D(in_channels=in_channels, output_channels=out_channels[3], kernel_shape=[1, 1, 1],
                      padding=0, name=name + '/Branch_2/Conv3d_0a_1x1', **kw)
    self.b2b = Unit3D(in_channels=out_channels[3], output_channels=out_channels[4], kernel_shape=[3, 3, 3],
                      name=name + '/Branch_2/Conv3d_0b_3x3', **kw)
    self.b3a = MaxPool3dSamePadding(kernel_size=[3, 3, 3], stride=(1, 1, 1), padding=0)
    self.b3b = Unit3D(in_channels=in_channels, output_channels=out_channels[5], kernel_shape=[1, 1, 1],
                      padding=0, name=name + '/Branch_3/Conv3d_0b_1x1', **kw)
    self.name = name

  def forward(self, x):
    b0 = self.b0(x)
    b1 = self.b1b(self.b1a(x))
    b2 = self.b2b(self.b2a(x))
    b3 = self.b3b(self.b3a(x))
    return torch.cat([b0, b1, b2, b3], dim=1)


class InceptionI3d(nn.Module):
  """Inception-v1 I3D architecture (Carreira & Zisserman, "Quo Vadis, Action Recognition?")."""

  VALID_ENDPOINTS = (
    'Conv3d_1a_7x7', 'MaxPool3d_2a_3x3', 'Conv3d_2b_1x1', 'Conv3d_2c_3x3', 'MaxPool3d_3a_3x3', 'Mixed_3b',
    'Mixed_3c', 'MaxPool3d_4a_3x3', 'Mixed_4b', 'Mixed_4c', 'Mixed_4d', 'Mixed_4e', 'Mixed_4f',
    'MaxPool3d_5a_2x2', 'Mixed_5b', 'Mixed_5c', 'Logits', 'Predictions',
  )

  def __init__(self, num_classes=400, spatial_squeeze=True, final_endpoint='Logits', name='inception_i3d',
               in_channels=3, dropout_keep_prob=0.5, bn_eps=0.001, final_pool=(2, 7, 7)):
    if final_endpoint not in self.VALID_ENDPOINTS:
      raise ValueError('Unknown final endpoint %s' % final_endpoint)  # noqa: UP031  (upstream)
    super().__init__()
    self._num_classes = num_classes
    self._spatial_squeeze = spatial_squeeze
    self._final_endpoint = final_endpoint
    self.logits = None
    kw = dict(bn_eps=bn_eps)

    self.end_points = {}
    end_point = 'Conv3d_1a_7x7'
    self.end_points[end_point] = Unit3D(in_channels=in_channels, output_channels=64, kernel_shape=[7, 7, 7],
                                        stride=(2, 2, 2), padding=(3, 3, 3), name=name + end_point, **kw)
    end_point = 'MaxPool3d_2a_3x3'
    self.end_points[end_point] = MaxPool3dSamePadding(kernel_size=[1, 3, 3], stride=(1, 2, 2), padding=0)
    end_point = 'Conv3d_2b_1x1'
    self.end_points[end_point] = Unit3D(in_channels=64, output_channels=64, kernel_shape=[1, 1, 1], padding=0,
                                        name=name + end_point, **kw)
    end_point = 'Conv3d_2c_3x3'
    self.end_points[end_point] = Unit3D(in_channels=64, output_channels=192, kernel_shape=[3, 3, 3],
                                        padding=1, name=name + end_point, **kw)
    end_point = 'MaxPool3d_3a_3x3'
    self.end_points[end_point] = MaxPool3dSamePadding(kernel_size=[1, 3, 3], stride=(1, 2, 2), padding=0)
    end_point = 'Mixed_3b'
    self.end_points[end_point] = InceptionModule(192, [64, 96, 128, 16, 32, 32], name + end_point, **kw)
    end_point = 'Mixed_3c'
    self.end_points[end_point] = InceptionModule(256, [128, 128, 192, 32, 96, 64], name + end_point, **kw)
    end_point = 'MaxPool3d_4a_3x3'
    self.end_points[end_point] = MaxPool3dSamePadding(kernel_size=[3, 3, 3], stride=(2, 2, 2), padding=0)
    end_point = 'Mixed_4b'
    self.end_points[end_point] = InceptionModule(128 + 192 + 96 + 64, [192, 96, 208, 16, 48, 64],
                                                 name + end_point, **kw)
    end_point = 'Mixed_4c'
    self.end_points[end_point] = InceptionModule(192 + 208 + 48 + 64, [160, 112, 224, 24, 64, 64],
                                                 name + end_point, **kw)
    end_point = 'Mixed_4d'
    self.end_points[end_point] = InceptionModule(160 + 224 + 64 + 64, [128, 128, 256, 24, 64, 64],
                                                 name + end_point, **kw)
    end_point = 'Mixed_4e'
    self.end_points[end_point] = InceptionModule(128 + 256 + 64 + 64, [112, 144, 288, 32, 64, 64],
                                                 name + end_point, **kw)
    end_point = 'Mixed_4f'
    self.end_points[end_point] = InceptionModule(112 + 288 + 64 + 64, [256, 160, 320, 32, 128, 128],
                                                 name + end_point, **kw)
    end_point = 'MaxPool3d_5a_2x2'
    self.end_points[end_point] = MaxPool3dSamePadding(kernel_size=[2, 2, 2], stride=(2, 2, 2), padding=0)
    end_point = 'Mixed_5b'
    self.end_points[end_point] = InceptionModule(256 + 320 + 128 + 128, [256, 160, 320, 32, 128, 128],
                                                 name + end_point, **kw)
    end_point = 'Mixed_5c'
    self.end_points[end_point] = InceptionModule(256 + 320 + 128 + 128, [384, 192, 384, 48, 128, 128],
                                                 name + end_point, **kw)

    self.avg_pool = nn.AvgPool3d(kernel_size=list(final_pool), stride=(1, 1, 1))
    self.dropout = nn.Dropout(dropout_keep_prob)
    self.logits = Unit3D(in_channels=384 + 384 + 128 + 128, output_channels=self._num_classes,
                         kernel_shape=[1, 1, 1], padding=0, activation_fn=None, use_batch_norm=False,
                         use_bias=True, name='logits')
    self.build()

  def build(self):
    for k in self.end_points.keys():
      self.add_module(k, self.end_points[k])

  def forward(self, x):
    for end_point in self.VALID_ENDPOINTS:
      if end_point in self.end_points:
        x = self._modules[end_point](x)  # use _modules to work with dataparallel
    x = self.logits(self.dropout(self.avg_pool(x)))
    if self._spatial_squeeze:
      logits = x.squeeze(3).squeeze(3)
    # logits is batch X time X classes, which is what we want to work with
    else:
      return x
    return logits

  def extract_features(self, x):
    for end_point in self.VALID_ENDPOINTS:
      if end_point in self.end_points:
        x = self._modules[end_point](x)
    return self.avg_pool(x)


# ---- wilson1yan/VideoGPT videogpt/fvd/fvd.py (also common_metrics_on_video_quality fvd/videogpt/fvd.py) ----
def preprocess_single(video, resolution, sequence_length=None):
  # video: THWC, {0, ..., 255}
  video = video.permute(0, 3, 1, 2).float() / 255.  # TCHW
  t, c, h, w = video.shape
  # temporal crop
  if sequence_length is not None:
    assert sequence_length <= t
    video = video[:sequence_length]
  # scale shorter side to resolution
  scale = resolution / min(h, w)
  if h < w:
    target_size = (resolution, math.ceil(w * scale))
  else:
    target_size = (math.ceil(h * scale), resolution)
  video = F.interpolate(video, size=target_size, mode='bilinear', align_corners=False)
  # center crop
  t, c, h, w = video.shape
  w_start = (w - resolution) // 2
  h_start = (h - resolution) // 2
  video = video[:, :, h_start:h_start + resolution, w_start:w_start + resolution]
  video = video.permute(1, 0, 2, 3).contiguous()  # CTHW
  video -= 0.5
  return video


# ---- the reference cases -------------------------------------------------------------------------------
def build(bn_eps: float, final_pool: tuple[int, int, int], sd: dict[str, np.ndarray] | None):
  model = InceptionI3d(400, in_channels=3, bn_eps=bn_eps, final_pool=final_pool).eval()
  if sd is None:
    return model
  model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
  return model


def to_ncthw(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3)))


def uint8_clip(shape: tuple[int, ...], seed: int) -> np.ndarray:
  return np.round(seeded_input(shape, seed, 0.0, 255.0)).astype(np.uint8)


def main() -> None:
  torch.set_num_threads(max(torch.get_num_threads(), 1))
  shapes = {k: tuple(v.shape) for k, v in build(1e-3, (2, 7, 7), None).state_dict().items()}
  sd = seeded_state_dict(shapes, WEIGHT_SEED)
  out = {"shapes": np.array(json.dumps({k: list(s) for k, s in shapes.items()})),
         "seeds": np.array(json.dumps({"weights": WEIGHT_SEED, **INPUT_SEEDS}))}

  with torch.no_grad():
    # net: per-time logits, their mean (VideoGPT's forward) and the pooled features.
    model = build(1e-3, (2, 1, 2), sd)
    x = to_ncthw(seeded_input((2, 17, 32, 48, 3), INPUT_SEEDS["net"], -1.0, 1.0))
    logits_t = model(x)  # (N, 400, T')
    out["net_logits_t"] = logits_t.numpy()
    out["net_logits"] = logits_t.mean(dim=2).numpy()
    out["net_features"] = model.extract_features(x).squeeze(4).squeeze(3).mean(dim=2).numpy()

    model = build(1e-5, (2, 1, 2), sd)
    x = to_ncthw(seeded_input((2, 17, 32, 48, 3), INPUT_SEEDS["eps5"], -1.0, 1.0))
    out["eps5_logits"] = model(x).mean(dim=2).numpy()

    model = build(1e-3, (2, 1, 1), sd)
    videos = torch.from_numpy(uint8_clip((2, 10, 48, 72, 3), INPUT_SEEDS["pipeline"]))
    pre = torch.stack([preprocess_single(v, 32) for v in videos]) * 2  # [-0.5, 0.5] -> [-1, 1]
    out["pipeline_first_frame"] = pre[:, :, 0].numpy()  # (N, 3, 32, 32)
    out["pipeline_logits"] = model(pre).mean(dim=2).numpy()

    video = torch.from_numpy(uint8_clip((2, 20, 26, 3), INPUT_SEEDS["upsample"]))
    out["upsample"] = (preprocess_single(video, 32) * 2).numpy()  # (3, 2, 32, 32)

  out = {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in out.items()}
  np.savez_compressed(OUT, **out)
  for k, v in out.items():
    print(k, v.shape, v.dtype, "" if v.dtype.kind == "U" else f"|max| {np.abs(v).max():.4g}")
  print("wrote", OUT, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
  main()
