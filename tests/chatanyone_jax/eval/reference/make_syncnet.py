"""Reference outputs of joonson/syncnet_python's SyncNet (`S`, SyncNetInstance `evaluate`) and of
jameslyons/python_speech_features' `mfcc`.

Run once, by hand, from the repo root with a PyTorch environment (SciPy and NumPy needed too):

  python -m tests.chatanyone_jax.eval.reference.make_syncnet

Neither package is installed: syncnet_python's SyncNetModel.py `S` (its `forward_aud` / `forward_lip`),
SyncNetInstance.py `calc_pdist` and the body of `evaluate` (from the loaded frames and audio on; without
ffmpeg / cv2 file I/O), and python_speech_features 0.6's base.py (`mfcc`, `fbank`, `get_filterbanks`,
`hz2mel`, `mel2hz`, `lifter`) and sigproc.py (`round_half_up`, `framesig` without the stride trick,
`magspec`, `powspec`, `preemphasis`) are copied below, trimmed of unused options.

`S` is filled with `seeded_state_dict` (SEEDS["weights"], the first convs scaled by WEIGHT_SCALES); the
inputs are `seeded_input` arrays: RGB uint8 face frames (flipped to BGR here, as cv2.imread would give
them) and float audio in [-1, 1] turned into the int16 values a 16-bit WAV of it holds (what
scipy.io.wavfile hands to python_speech_features). Saved to syncnet.npz: the MFCCs of three signals, the
per-window lip and audio features and the distances / offset / min distance / confidence of `evaluate` on
a short clip (vshift=E2E_VSHIFT), `calc_pdist` statistics on seeded features at syncnet_python's default
vshift=15, the weight scales and the state-dict shapes (JSON).
"""

from __future__ import annotations

import decimal
import json
import math
import pathlib

import numpy
import numpy as np
import torch
import torch.nn as nn
from scipy.fftpack import dct

from tests.chatanyone_jax.eval.reference.seeded import seeded_input, seeded_state_dict

OUT = pathlib.Path(__file__).with_name("syncnet.npz")
SEEDS = {"weights": 301, "frames": 302, "audio": 303, "mfcc": 304, "feat_video": 305, "feat_audio": 306}
E2E_FRAMES = 15  # 25 fps RGB frames, 224 x 224
E2E_AUDIO = E2E_FRAMES * 640 + 100  # samples at 16 kHz
E2E_VSHIFT = 4
E2E_BATCH = 4
MFCC_LENGTHS = (16123, 300, 4000)  # a long signal, one shorter than a frame, one with a silent start
MFCC_SILENT = 800  # leading zero samples of the third signal
PDIST_T, PDIST_VSHIFT = 40, 15
# The seeded first-conv weights are scaled down so that both streams give features of similar, moderate
# size (the lip stream sees raw 0..255 pixels, the audio stream MFCCs of ~±20): with features of ~1e3 the
# confidence would be a small difference of large float32 distances.
WEIGHT_SCALES = {"netcnnlip.0.weight": 1 / 256, "netcnnaud.0.weight": 1 / 16}


# ---- python_speech_features/sigproc.py ----------------------------------------------------------------
def round_half_up(number):
  return int(decimal.Decimal(number).quantize(decimal.Decimal('1'), rounding=decimal.ROUND_HALF_UP))


def framesig(sig, frame_len, frame_step, winfunc=lambda x: numpy.ones((x,))):
  slen = len(sig)
  frame_len = int(round_half_up(frame_len))
  frame_step = int(round_half_up(frame_step))
  if slen <= frame_len:
    numframes = 1
  else:
    numframes = 1 + int(math.ceil((1.0 * slen - frame_len) / frame_step))
  padlen = int((numframes - 1) * frame_step + frame_len)
  zeros = numpy.zeros((padlen - slen,))
  padsignal = numpy.concatenate((sig, zeros))
  indices = numpy.tile(numpy.arange(0, frame_len), (numframes, 1)) + numpy.tile(
      numpy.arange(0, numframes * frame_step, frame_step), (frame_len, 1)).T
  indices = numpy.array(indices, dtype=numpy.int32)
  frames = padsignal[indices]
  win = numpy.tile(winfunc(frame_len), (numframes, 1))
  return frames * win


def magspec(frames, NFFT):  # noqa: N803  (upstream name)
  complex_spec = numpy.fft.rfft(frames, NFFT)
  return numpy.absolute(complex_spec)


def powspec(frames, NFFT):  # noqa: N803
  return 1.0 / NFFT * numpy.square(magspec(frames, NFFT))


def preemphasis(signal, coeff=0.95):
  return numpy.append(signal[0], signal[1:] - coeff * signal[:-1])


# ---- python_speech_features/base.py -------------------------------------------------------------------
def mfcc(signal, samplerate=16000, winlen=0.025, winstep=0.01, numcep=13, nfilt=26, nfft=512, lowfreq=0,
         highfreq=None, preemph=0.97, ceplifter=22, appendEnergy=True,  # noqa: N803
         winfunc=lambda x: numpy.ones((x,))):
  feat, energy = fbank(signal, samplerate, winlen, winstep, nfilt, nfft, lowfreq, highfreq, preemph, winfunc)
  feat = numpy.log(feat)
  feat = dct(feat, type=2, axis=1, norm='ortho')[:, :numcep]
  feat = lifter(feat, ceplifter)
  if appendEnergy:
    feat[:, 0] = numpy.log(energy)
  return feat


def fbank(signal, samplerate=16000, winlen=0.025, winstep=0.01, nfilt=26, nfft=512, lowfreq=0, highfreq=None,
          preemph=0.97, winfunc=lambda x: numpy.ones((x,))):
  highfreq = highfreq or samplerate / 2
  signal = preemphasis(signal, preemph)
  frames = framesig(signal, winlen * samplerate, winstep * samplerate, winfunc)
  pspec = powspec(frames, nfft)
  energy = numpy.sum(pspec, 1)
  energy = numpy.where(energy == 0, numpy.finfo(float).eps, energy)
  fb = get_filterbanks(nfilt, nfft, samplerate, lowfreq, highfreq)
  feat = numpy.dot(pspec, fb.T)
  feat = numpy.where(feat == 0, numpy.finfo(float).eps, feat)
  return feat, energy


def hz2mel(hz):
  return 2595 * numpy.log10(1 + hz / 700.)


def mel2hz(mel):
  return 700 * (10 ** (mel / 2595.0) - 1)


def get_filterbanks(nfilt=20, nfft=512, samplerate=16000, lowfreq=0, highfreq=None):
  highfreq = highfreq or samplerate / 2
  assert highfreq <= samplerate / 2, "highfreq is greater than samplerate/2"
  lowmel = hz2mel(lowfreq)
  highmel = hz2mel(highfreq)
  melpoints = numpy.linspace(lowmel, highmel, nfilt + 2)
  bin = numpy.floor((nfft + 1) * mel2hz(melpoints) / samplerate)  # noqa: A001
  fbank = numpy.zeros([nfilt, nfft // 2 + 1])
  for j in range(0, nfilt):
    for i in range(int(bin[j]), int(bin[j + 1])):
      fbank[j, i] = (i - bin[j]) / (bin[j + 1] - bin[j])
    for i in range(int(bin[j + 1]), int(bin[j + 2])):
      fbank[j, i] = (bin[j + 2] - i) / (bin[j + 2] - bin[j + 1])
  return fbank


def lifter(cepstra, L=22):  # noqa: N803
  if L > 0:
    nframes, ncoeff = numpy.shape(cepstra)
    n = numpy.arange(ncoeff)
    lift = 1 + (L / 2.) * numpy.sin(numpy.pi * n / L)
    return lift * cepstra
  return cepstra


# ---- syncnet_python/SyncNetModel.py -------------------------------------------------------------------
class S(nn.Module):
  def __init__(self, num_layers_in_fc_layers=1024):
    super().__init__()
    self.netcnnaud = nn.Sequential(
        nn.Conv2d(1, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),

        nn.Conv2d(64, 192, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
        nn.BatchNorm2d(192),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),

        nn.Conv2d(192, 384, kernel_size=(3, 3), padding=(1, 1)),
        nn.BatchNorm2d(384),
        nn.ReLU(inplace=True),

        nn.Conv2d(384, 256, kernel_size=(3, 3), padding=(1, 1)),
        nn.BatchNorm2d(256),
        nn.ReLU(inplace=True),

        nn.Conv2d(256, 256, kernel_size=(3, 3), padding=(1, 1)),
        nn.BatchNorm2d(256),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),

        nn.Conv2d(256, 512, kernel_size=(5, 4), padding=(0, 0)),
        nn.BatchNorm2d(512),
        nn.ReLU(),
    )
    self.netfcaud = nn.Sequential(
        nn.Linear(512, 512),
        nn.BatchNorm1d(512),
        nn.ReLU(),
        nn.Linear(512, num_layers_in_fc_layers),
    )
    self.netfclip = nn.Sequential(
        nn.Linear(512, 512),
        nn.BatchNorm1d(512),
        nn.ReLU(),
        nn.Linear(512, num_layers_in_fc_layers),
    )
    self.netcnnlip = nn.Sequential(
        nn.Conv3d(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=0),
        nn.BatchNorm3d(96),
        nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),

        nn.Conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
        nn.BatchNorm3d(256),
        nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),

        nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
        nn.BatchNorm3d(256),
        nn.ReLU(inplace=True),

        nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
        nn.BatchNorm3d(256),
        nn.ReLU(inplace=True),

        nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
        nn.BatchNorm3d(256),
        nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),

        nn.Conv3d(256, 512, kernel_size=(1, 6, 6), padding=0),
        nn.BatchNorm3d(512),
        nn.ReLU(inplace=True),
    )

  def forward_aud(self, x):
    mid = self.netcnnaud(x)
    mid = mid.view((mid.size()[0], -1))
    return self.netfcaud(mid)

  def forward_lip(self, x):
    mid = self.netcnnlip(x)
    mid = mid.view((mid.size()[0], -1))
    return self.netfclip(mid)


# ---- syncnet_python/SyncNetInstance.py ----------------------------------------------------------------
def calc_pdist(feat1, feat2, vshift=10):
  win_size = vshift * 2 + 1
  feat2p = torch.nn.functional.pad(feat2, (0, 0, vshift, vshift))
  dists = []
  for i in range(0, len(feat1)):
    dists.append(torch.nn.functional.pairwise_distance(feat1[[i], :].repeat(win_size, 1),
                                                       feat2p[i:i + win_size, :]))
  return dists


def offset_and_confidence(im_feat, cc_feat, vshift):
  """The tail of `evaluate`, from the features on."""
  dists = calc_pdist(im_feat, cc_feat, vshift=vshift)
  mdist = torch.mean(torch.stack(dists, 1), 1)
  minval, minidx = torch.min(mdist, 0)
  offset = vshift - minidx
  conf = torch.median(mdist) - minval
  return {"dists": torch.stack(dists, 0).numpy(), "mdist": mdist.numpy(), "offset": np.int64(offset.item()),
          "minval": np.float32(minval.item()), "conf": np.float32(conf.item())}


def evaluate(model, images_bgr, audio, vshift, batch_size):
  """`evaluate` after reading the frames (list of (H, W, 3) BGR) and the int16 audio."""
  im = numpy.stack(images_bgr, axis=3)
  im = numpy.expand_dims(im, axis=0)
  im = numpy.transpose(im, (0, 3, 4, 1, 2))
  imtv = torch.from_numpy(im.astype(float)).float()
  mfcc_ = zip(*mfcc(audio, 16000), strict=True)
  mfcc_ = numpy.stack([numpy.array(i) for i in mfcc_])
  cc = numpy.expand_dims(numpy.expand_dims(mfcc_, axis=0), axis=0)
  cct = torch.from_numpy(cc.astype(float)).float()
  min_length = min(len(images_bgr), math.floor(len(audio) / 640))
  lastframe = min_length - 5
  im_feat, cc_feat = [], []
  with torch.no_grad():
    for i in range(0, lastframe, batch_size):
      im_batch = [imtv[:, :, vframe:vframe + 5, :, :] for vframe in range(i, min(lastframe, i + batch_size))]
      im_feat.append(model.forward_lip(torch.cat(im_batch, 0)))
      cc_batch = [cct[:, :, :, vframe * 4:vframe * 4 + 20]
                  for vframe in range(i, min(lastframe, i + batch_size))]
      cc_feat.append(model.forward_aud(torch.cat(cc_batch, 0)))
  im_feat, cc_feat = torch.cat(im_feat, 0), torch.cat(cc_feat, 0)
  return im_feat, cc_feat, offset_and_confidence(im_feat, cc_feat, vshift)


# ---- inputs (the test rebuilds them the same way) -----------------------------------------------------
def e2e_frames_rgb() -> np.ndarray:
  return seeded_input((E2E_FRAMES, 224, 224, 3), SEEDS["frames"], 0.0, 256.0).astype(np.uint8)


def e2e_audio() -> np.ndarray:
  return seeded_input((E2E_AUDIO,), SEEDS["audio"], -0.3, 0.3)


def pcm16(audio: np.ndarray) -> np.ndarray:
  """The int16 samples of a 16-bit WAV of float audio in [-1, 1]."""
  return np.clip(np.round(audio.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def mfcc_signal(k: int) -> np.ndarray:
  sig = pcm16(seeded_input((MFCC_LENGTHS[k],), SEEDS["mfcc"] + k, -0.5, 0.5))
  if k == 2:
    sig[:MFCC_SILENT] = 0
  return sig


def main() -> None:
  torch.manual_seed(0)
  model = S().eval()
  shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
  sd = seeded_state_dict(shapes, SEEDS["weights"])
  sd.update({k: (v * sd[k]).astype(np.float32) for k, v in WEIGHT_SCALES.items()})
  model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)

  out = {"shapes": np.array(json.dumps(shapes)), "weight_scales": np.array(json.dumps(WEIGHT_SCALES))}
  for k in range(len(MFCC_LENGTHS)):
    out[f"mfcc_{k}"] = mfcc(mfcc_signal(k), 16000)

  rgb = e2e_frames_rgb()
  images_bgr = [f[..., ::-1] for f in rgb]  # cv2.imread order
  im_feat, cc_feat, res = evaluate(model, images_bgr, pcm16(e2e_audio()), E2E_VSHIFT, E2E_BATCH)
  out.update(e2e_video_feats=im_feat.numpy(), e2e_audio_feats=cc_feat.numpy(),
             **{f"e2e_{k}": v for k, v in res.items()})

  fv = torch.from_numpy(seeded_input((PDIST_T, 1024), SEEDS["feat_video"], -1.0, 1.0))
  fa = torch.from_numpy(seeded_input((PDIST_T, 1024), SEEDS["feat_audio"], -1.0, 1.0))
  out.update({f"pdist_{k}": v for k, v in offset_and_confidence(fv, fa, PDIST_VSHIFT).items()})

  np.savez_compressed(OUT, **out)
  print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KB):",
        {k: (v.shape, v.dtype.str) for k, v in out.items()})
  print("e2e:", {k: out[f"e2e_{k}"] for k in ("offset", "minval", "conf")},
        "mean |feature|", float(np.abs(out["e2e_video_feats"]).mean()),
        float(np.abs(out["e2e_audio_feats"]).mean()))


if __name__ == "__main__":
  main()
