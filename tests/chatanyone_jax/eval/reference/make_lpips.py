"""Reference outputs of richzhang/PerceptualSimilarity's LPIPS (v0.1, net='alex' and net='vgg').

Run once, by hand, from the repo root with a PyTorch + torchvision environment:

  python -m tests.chatanyone_jax.eval.reference.make_lpips

The `lpips` package is not needed: its modules (lpips/lpips.py `LPIPS`, `ScalingLayer`, `NetLinLayer`,
`normalize_tensor`, `spatial_average`; lpips/pretrained_networks.py `alexnet`, `vgg16`) are copied below,
trimmed to the v0.1 / lpips=True / spatial=False path and taking the torchvision features as an argument.
The backbone (torchvision `alexnet().features` / `vgg16().features`, keys `features.{i}.*` as in the
public torchvision files) and the lin layers (keys `lin{k}.model.1.weight` as in lpips/weights/v0.1/*.pth)
are filled with `seeded_state_dict` from two seeds (the lin weights made non-negative with abs(), as the
trained ones are); the inputs are `seeded_input` images in [0, 1]
(NHWC, transposed to NCHW here) fed with `normalize=True`. Only the distances, the per-layer terms, the
input sums and the state-dict shapes are saved to lpips.npz.
"""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import torch
import torchvision
from torch import nn

from tests.chatanyone_jax.eval.reference.seeded import seeded_input, seeded_state_dict

OUT = pathlib.Path(__file__).with_name("lpips.npz")
SEEDS = {"alex": (101, 102, 103), "vgg": (201, 202, 203)}  # backbone, lin, input
SIZE = 64
N_PAIRS = 2


# ---- lpips/pretrained_networks.py -------------------------------------------------------------------
class alexnet(nn.Module):  # noqa: N801  (upstream name)
  def __init__(self, features: nn.Sequential):
    super().__init__()
    self.slice1, self.slice2, self.slice3 = nn.Sequential(), nn.Sequential(), nn.Sequential()
    self.slice4, self.slice5 = nn.Sequential(), nn.Sequential()
    self.N_slices = 5
    for x in range(2):
      self.slice1.add_module(str(x), features[x])
    for x in range(2, 5):
      self.slice2.add_module(str(x), features[x])
    for x in range(5, 8):
      self.slice3.add_module(str(x), features[x])
    for x in range(8, 10):
      self.slice4.add_module(str(x), features[x])
    for x in range(10, 12):
      self.slice5.add_module(str(x), features[x])

  def forward(self, x):
    h_relu1 = self.slice1(x)
    h_relu2 = self.slice2(h_relu1)
    h_relu3 = self.slice3(h_relu2)
    h_relu4 = self.slice4(h_relu3)
    h_relu5 = self.slice5(h_relu4)
    return [h_relu1, h_relu2, h_relu3, h_relu4, h_relu5]


class vgg16(nn.Module):  # noqa: N801  (upstream name)
  def __init__(self, features: nn.Sequential):
    super().__init__()
    self.slice1, self.slice2, self.slice3 = nn.Sequential(), nn.Sequential(), nn.Sequential()
    self.slice4, self.slice5 = nn.Sequential(), nn.Sequential()
    self.N_slices = 5
    for x in range(4):
      self.slice1.add_module(str(x), features[x])
    for x in range(4, 9):
      self.slice2.add_module(str(x), features[x])
    for x in range(9, 16):
      self.slice3.add_module(str(x), features[x])
    for x in range(16, 23):
      self.slice4.add_module(str(x), features[x])
    for x in range(23, 30):
      self.slice5.add_module(str(x), features[x])

  def forward(self, x):
    h_relu1_2 = self.slice1(x)
    h_relu2_2 = self.slice2(h_relu1_2)
    h_relu3_3 = self.slice3(h_relu2_2)
    h_relu4_3 = self.slice4(h_relu3_3)
    h_relu5_3 = self.slice5(h_relu4_3)
    return [h_relu1_2, h_relu2_2, h_relu3_3, h_relu4_3, h_relu5_3]


# ---- lpips/__init__.py, lpips/lpips.py --------------------------------------------------------------
def normalize_tensor(in_feat, eps=1e-10):
  norm_factor = torch.sqrt(torch.sum(in_feat ** 2, dim=1, keepdim=True))
  return in_feat / (norm_factor + eps)


def spatial_average(in_tens, keepdim=True):
  return in_tens.mean([2, 3], keepdim=keepdim)


class ScalingLayer(nn.Module):
  def __init__(self):
    super().__init__()
    self.register_buffer("shift", torch.Tensor([-.030, -.088, -.188])[None, :, None, None])
    self.register_buffer("scale", torch.Tensor([.458, .448, .450])[None, :, None, None])

  def forward(self, inp):
    return (inp - self.shift) / self.scale


class NetLinLayer(nn.Module):
  def __init__(self, chn_in, chn_out=1, use_dropout=False):
    super().__init__()
    layers = [nn.Dropout()] if use_dropout else []
    layers += [nn.Conv2d(chn_in, chn_out, 1, stride=1, padding=0, bias=False)]
    self.model = nn.Sequential(*layers)

  def forward(self, x):
    return self.model(x)


class LPIPS(nn.Module):
  """lpips.LPIPS(net=..., version='0.1', lpips=True, spatial=False, use_dropout=True), eval mode."""

  def __init__(self, net: str, features: nn.Sequential):
    super().__init__()
    self.scaling_layer = ScalingLayer()
    if net == "vgg":
      self.net, self.chns = vgg16(features), [64, 128, 256, 512, 512]
    else:
      self.net, self.chns = alexnet(features), [64, 192, 384, 256, 256]
    self.L = len(self.chns)
    self.lin0 = NetLinLayer(self.chns[0], use_dropout=True)
    self.lin1 = NetLinLayer(self.chns[1], use_dropout=True)
    self.lin2 = NetLinLayer(self.chns[2], use_dropout=True)
    self.lin3 = NetLinLayer(self.chns[3], use_dropout=True)
    self.lin4 = NetLinLayer(self.chns[4], use_dropout=True)
    self.lins = nn.ModuleList([self.lin0, self.lin1, self.lin2, self.lin3, self.lin4])

  def forward(self, in0, in1, retPerLayer=False, normalize=False):  # noqa: N803  (upstream name)
    if normalize:
      in0 = 2 * in0 - 1
      in1 = 2 * in1 - 1
    in0_input, in1_input = self.scaling_layer(in0), self.scaling_layer(in1)
    outs0, outs1 = self.net.forward(in0_input), self.net.forward(in1_input)
    feats0, feats1, diffs = {}, {}, {}
    for kk in range(self.L):
      feats0[kk], feats1[kk] = normalize_tensor(outs0[kk]), normalize_tensor(outs1[kk])
      diffs[kk] = (feats0[kk] - feats1[kk]) ** 2
    res = [spatial_average(self.lins[kk](diffs[kk]), keepdim=True) for kk in range(self.L)]
    val = 0
    for layer in range(self.L):
      val += res[layer]
    return (val, res) if retPerLayer else val


# ---- generation ---------------------------------------------------------------------------------------
def _run(net: str) -> dict[str, np.ndarray]:
  seed_backbone, seed_lin, seed_input = SEEDS[net]
  tv = torchvision.models.alexnet(weights=None) if net == "alex" else torchvision.models.vgg16(weights=None)
  features = tv.features
  backbone_shapes = {f"features.{k}": tuple(v.shape) for k, v in features.state_dict().items()}
  backbone_sd = seeded_state_dict(backbone_shapes, seed_backbone)
  features.load_state_dict({k[len("features."):]: torch.from_numpy(v) for k, v in backbone_sd.items()},
                           strict=True)
  model = LPIPS(net, features).eval()
  # `lin{k}.model.1.weight`, the keys of the public alex.pth / vgg.pth (the module's state dict lists each
  # tensor a second time as `lins.{k}.model.1.weight`, the ModuleList alias).
  lin_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if re.fullmatch(r"lin\d\..*", k)}
  assert len(lin_shapes) == 5, lin_shapes
  # |seeded| : the trained v0.1 lin weights are non-negative (clamped during training), and signed ones
  # would let the per-layer terms cancel, making the comparison ill-conditioned.
  lin_sd = {k: torch.from_numpy(np.abs(v)) for k, v in seeded_state_dict(lin_shapes, seed_lin).items()}
  missing, unexpected = model.load_state_dict(lin_sd, strict=False)
  assert not unexpected and all(k.startswith(("net.", "scaling_layer.", "lins.")) for k in missing)
  for kk in range(5):
    assert torch.equal(model.lins[kk].model[1].weight, lin_sd[f"lin{kk}.model.1.weight"])
  # Pairs: an image against an independent one, and an image against a noisy copy of itself. The test
  # rebuilds them the same way (and checks the stored sums).
  x = seeded_input((2 * N_PAIRS, SIZE, SIZE, 3), seed_input)
  a = x[:N_PAIRS]
  b = np.concatenate([x[N_PAIRS:N_PAIRS + 1], np.clip(a[1:2] + 0.1 * (x[N_PAIRS + 1:] - 0.5), 0, 1)])
  to_t = lambda z: torch.from_numpy(np.ascontiguousarray(z.transpose(0, 3, 1, 2)))
  with torch.no_grad():
    val, res = model(to_t(a), to_t(b), retPerLayer=True, normalize=True)
  return {
    f"{net}_input_sums": np.array([a.astype(np.float64).sum(), b.astype(np.float64).sum()]),
    f"{net}_distance": val.numpy().reshape(-1),
    f"{net}_per_layer": torch.cat([r.reshape(-1, 1) for r in res], dim=1).numpy(),
    f"{net}_shapes": np.array(json.dumps({"backbone": backbone_shapes, "lin": lin_shapes})),
    f"{net}_seeds": np.array([seed_backbone, seed_lin], np.int64),
  }


def main() -> None:
  torch.manual_seed(0)
  out = {}
  for net in ("alex", "vgg"):
    out.update(_run(net))
  np.savez_compressed(OUT, **out)
  for net in ("alex", "vgg"):
    print(net, out[f"{net}_distance"], out[f"{net}_per_layer"])
  print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
  main()
