"""Reference outputs of pytorch-fid's FID Inception-V3 (mseitzer/pytorch-fid, src/pytorch_fid/inception.py)
with seeded weights, for tests/chatanyone_jax/eval/inception_test.py.

Run once, by hand, from the repo root with a PyTorch + torchvision environment:

  python -m tests.chatanyone_jax.eval.reference.make_inception

pytorch-fid is not a dependency, so its `fid_inception_v3()` model and its FIDInceptionA / FIDInceptionC /
FIDInceptionE_1 / FIDInceptionE_2 blocks are copied below (they subclass torchvision's Inception blocks,
torchvision/models/inception.py) together with `InceptionV3.forward` for resize_input=True,
normalize_input=True and output block 3. Instead of loading pt_inception-2015-12-05-6726825d.pth the model
is filled with `seeded_state_dict(shapes, SEED)`; the state dict keys and shapes are those of the real file
(strict load). Writes inception.npz: the 2048-d features for two seeded 64x64 images (resized to 299 inside),
channel means of blocks 0-2, torch's bilinear resize on a few small up / down sizes, and its 1-D resize
weights from 64, 512 and 1080 pixels to 299.
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from tests.chatanyone_jax.eval.reference.seeded import seeded_input, seeded_state_dict

SEED = 20151205
INPUT_SEED = 7
INPUT_SHAPE = (2, 3, 64, 64)  # NCHW, in [0, 1]
RESIZE_CASES = ((7, 5, 13, 3), (11, 16, 4, 9))  # (h, w) -> (h', w'): up / down, odd ratios
MATRIX_SIZES = (64, 512, 1080)  # torch's 1-D bilinear weights size -> 299, read off impulse inputs
OUT = pathlib.Path(__file__).with_name("inception.npz")


# ---- copied from pytorch-fid src/pytorch_fid/inception.py -----------------------------------------------

def fid_inception_v3():
  inception = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None,
                                              init_weights=False)
  inception.Mixed_5b = FIDInceptionA(192, pool_features=32)
  inception.Mixed_5c = FIDInceptionA(256, pool_features=64)
  inception.Mixed_5d = FIDInceptionA(288, pool_features=64)
  inception.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
  inception.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
  inception.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
  inception.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
  inception.Mixed_7b = FIDInceptionE_1(1280)
  inception.Mixed_7c = FIDInceptionE_2(2048)
  return inception  # pytorch-fid loads FID_WEIGHTS_URL here


class FIDInceptionA(torchvision.models.inception.InceptionA):
  def __init__(self, in_channels, pool_features):
    super().__init__(in_channels, pool_features)

  def forward(self, x):
    branch1x1 = self.branch1x1(x)
    branch5x5 = self.branch5x5_1(x)
    branch5x5 = self.branch5x5_2(branch5x5)
    branch3x3dbl = self.branch3x3dbl_1(x)
    branch3x3dbl = self.branch3x3dbl_2(branch3x3dbl)
    branch3x3dbl = self.branch3x3dbl_3(branch3x3dbl)
    # Patch: Tensorflow's average pool does not use the padded zero's in its average calculation
    branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
    branch_pool = self.branch_pool(branch_pool)
    outputs = [branch1x1, branch5x5, branch3x3dbl, branch_pool]
    return torch.cat(outputs, 1)


class FIDInceptionC(torchvision.models.inception.InceptionC):
  def __init__(self, in_channels, channels_7x7):
    super().__init__(in_channels, channels_7x7)

  def forward(self, x):
    branch1x1 = self.branch1x1(x)
    branch7x7 = self.branch7x7_1(x)
    branch7x7 = self.branch7x7_2(branch7x7)
    branch7x7 = self.branch7x7_3(branch7x7)
    branch7x7dbl = self.branch7x7dbl_1(x)
    branch7x7dbl = self.branch7x7dbl_2(branch7x7dbl)
    branch7x7dbl = self.branch7x7dbl_3(branch7x7dbl)
    branch7x7dbl = self.branch7x7dbl_4(branch7x7dbl)
    branch7x7dbl = self.branch7x7dbl_5(branch7x7dbl)
    # Patch: Tensorflow's average pool does not use the padded zero's in its average calculation
    branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
    branch_pool = self.branch_pool(branch_pool)
    outputs = [branch1x1, branch7x7, branch7x7dbl, branch_pool]
    return torch.cat(outputs, 1)


class FIDInceptionE_1(torchvision.models.inception.InceptionE):
  def __init__(self, in_channels):
    super().__init__(in_channels)

  def forward(self, x):
    branch1x1 = self.branch1x1(x)
    branch3x3 = self.branch3x3_1(x)
    branch3x3 = [self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)]
    branch3x3 = torch.cat(branch3x3, 1)
    branch3x3dbl = self.branch3x3dbl_1(x)
    branch3x3dbl = self.branch3x3dbl_2(branch3x3dbl)
    branch3x3dbl = [self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)]
    branch3x3dbl = torch.cat(branch3x3dbl, 1)
    # Patch: Tensorflow's average pool does not use the padded zero's in its average calculation
    branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
    branch_pool = self.branch_pool(branch_pool)
    outputs = [branch1x1, branch3x3, branch3x3dbl, branch_pool]
    return torch.cat(outputs, 1)


class FIDInceptionE_2(torchvision.models.inception.InceptionE):
  def __init__(self, in_channels):
    super().__init__(in_channels)

  def forward(self, x):
    branch1x1 = self.branch1x1(x)
    branch3x3 = self.branch3x3_1(x)
    branch3x3 = [self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)]
    branch3x3 = torch.cat(branch3x3, 1)
    branch3x3dbl = self.branch3x3dbl_1(x)
    branch3x3dbl = self.branch3x3dbl_2(branch3x3dbl)
    branch3x3dbl = [self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)]
    branch3x3dbl = torch.cat(branch3x3dbl, 1)
    # Patch: The FID Inception model uses max pooling instead of average pooling.
    branch_pool = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    branch_pool = self.branch_pool(branch_pool)
    outputs = [branch1x1, branch3x3, branch3x3dbl, branch_pool]
    return torch.cat(outputs, 1)


class InceptionV3(torch.nn.Module):
  """pytorch-fid's InceptionV3 with output_blocks=(0, 1, 2, 3), resize_input=True, normalize_input=True."""

  def __init__(self):
    super().__init__()
    inception = fid_inception_v3()
    self.blocks = torch.nn.ModuleList([
        torch.nn.Sequential(inception.Conv2d_1a_3x3, inception.Conv2d_2a_3x3, inception.Conv2d_2b_3x3,
                            torch.nn.MaxPool2d(kernel_size=3, stride=2)),
        torch.nn.Sequential(inception.Conv2d_3b_1x1, inception.Conv2d_4a_3x3,
                            torch.nn.MaxPool2d(kernel_size=3, stride=2)),
        torch.nn.Sequential(inception.Mixed_5b, inception.Mixed_5c, inception.Mixed_5d, inception.Mixed_6a,
                            inception.Mixed_6b, inception.Mixed_6c, inception.Mixed_6d, inception.Mixed_6e),
        torch.nn.Sequential(inception.Mixed_7a, inception.Mixed_7b, inception.Mixed_7c,
                            torch.nn.AdaptiveAvgPool2d(output_size=(1, 1))),
    ])
    self.inception = inception  # only to expose the weights file's state dict keys

  def forward(self, inp):
    outp = []
    x = F.interpolate(inp, size=(299, 299), mode="bilinear", align_corners=False)
    x = 2 * x - 1  # Scale from range (0, 1) to range (-1, 1)
    for block in self.blocks:
      x = block(x)
      outp.append(x)
    return outp


def main() -> None:
  torch.manual_seed(0)
  model = InceptionV3().eval()
  inception = model.inception
  shapes = {k: tuple(v.shape) for k, v in inception.state_dict().items()}
  sd = seeded_state_dict(shapes, SEED)
  inception.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)

  x = seeded_input(INPUT_SHAPE, INPUT_SEED)
  with torch.no_grad():
    b0, b1, b2, b3 = model(torch.from_numpy(x))
    resized = F.interpolate(torch.from_numpy(x), size=(299, 299), mode="bilinear", align_corners=False)
  out = {
      "seed": np.int64(SEED), "input_seed": np.int64(INPUT_SEED), "input_shape": np.array(INPUT_SHAPE),
      "shape_keys": np.array(sorted(shapes)),
      "shape_values": np.array([str(shapes[k]) for k in sorted(shapes)]),
      "features": b3.numpy()[:, :, 0, 0],                               # (2, 2048)
      "block0_mean": b0.mean((2, 3)).numpy(), "block1_mean": b1.mean((2, 3)).numpy(),
      "block2_mean": b2.mean((2, 3)).numpy(),                           # channel means (2, C)
      "block2_shape": np.array(b2.shape), "block0_shape": np.array(b0.shape),
      "resized_rows": resized.numpy()[:, :, ::37].transpose(0, 2, 3, 1),  # (2, 9, 299, 3) NHWC rows
  }
  for i, (h, w, h2, w2) in enumerate(RESIZE_CASES):
    y = seeded_input((2, 3, h, w), 100 + i)
    with torch.no_grad():
      r = F.interpolate(torch.from_numpy(y), size=(h2, w2), mode="bilinear", align_corners=False)
    out[f"resize{i}_in"] = y.transpose(0, 2, 3, 1)
    out[f"resize{i}_out"] = r.numpy().transpose(0, 2, 3, 1)
  for n in MATRIX_SIZES:
    eye = torch.eye(n).reshape(n, 1, 1, n)  # n one-row images, each an impulse
    with torch.no_grad():
      m = F.interpolate(eye, size=(1, 299), mode="bilinear", align_corners=False)
    out[f"matrix_{n}"] = m.reshape(n, 299).T.numpy()  # (299, n), mostly zeros: compresses well
  np.savez_compressed(OUT, **out)
  print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KB); features {out['features'].shape}, "
        f"|f| mean {np.abs(out['features']).mean():.4g}, {len(shapes)} state dict keys")


if __name__ == "__main__":
  main()
