"""SyncNet lip-sync scores: the paper's "Sync" column (SyncNet confidence; also AV offset and min distance).

Reproduces joonson/syncnet_python: the network `S` (SyncNetModel.py; channels-last here: audio (N, 13,
20, 1) MFCC windows of 0.2 s, lip (N, 5, 224, 224, 3) stacked BGR frames in [0, 255], both -> 1024-d), its
scoring (SyncNetInstance.py `evaluate`, `calc_pdist`: `sync_scores`; the paper's "Sync" is the confidence,
higher is better), the MFCCs of jameslyons/python_speech_features with its defaults (`mfcc`, float64
NumPy on 16-bit PCM values, as `scipy.io.wavfile` reads them) and the face crop of run_pipeline.py
(`crop_face`). `SyncScorer` takes RGB uint8 face crops and flips them to the BGR that cv2
gives syncnet_python.

Weights: the public `syncnet_v2.model` (fetched by syncnet_python's download_model.sh, WEIGHTS_URL),
supplied by the user; nothing is downloaded here.

  scorer = SyncScorer.from_file("syncnet_v2.model")
  scorer(face_frames_rgb_uint8, fps, audio_float_16k)  # {"offset", "min_dist", "confidence"}
"""

from __future__ import annotations

import functools
import math
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft

from chatanyone_jax.convert.state_dict import check_state_dict, load_state_dict

WEIGHTS_FILE = "syncnet_v2.model"
WEIGHTS_URL = "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model"
SAMPLE_RATE = 16000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
MFCC_PER_FRAME = 4  # 10 ms MFCC step, 40 ms per video frame
WINDOW_FRAMES = 5  # video frames per lip window
WINDOW_MFCC = 20  # MFCC frames per audio window (0.2 s)
NUM_MFCC = 13
IMAGE_SIZE = 224
FEATURE_DIM = 1024
DEFAULT_VSHIFT = 15
DEFAULT_BATCH_SIZE = 20  # syncnet_python's run_syncnet.py default
BN_EPS = 1e-5

# ---- network ------------------------------------------------------------------------------------------
# (torch Sequential index, kind, args). conv: (out, kernel, stride, padding); pool: (window, stride, padding).
# Modules are named conv_{i} / bn_{i} after the index, so `netcnnaud.{i}.weight` -> netcnnaud/conv_{i}.
AUDIO_LAYERS: tuple = (
  (0, "conv", (64, (3, 3), (1, 1), (1, 1))), (1, "bn", ()), (2, "relu", ()),
  (3, "pool", ((1, 1), (1, 1), (0, 0))),
  (4, "conv", (192, (3, 3), (1, 1), (1, 1))), (5, "bn", ()), (6, "relu", ()),
  (7, "pool", ((3, 3), (1, 2), (0, 0))),
  (8, "conv", (384, (3, 3), (1, 1), (1, 1))), (9, "bn", ()), (10, "relu", ()),
  (11, "conv", (256, (3, 3), (1, 1), (1, 1))), (12, "bn", ()), (13, "relu", ()),
  (14, "conv", (256, (3, 3), (1, 1), (1, 1))), (15, "bn", ()), (16, "relu", ()),
  (17, "pool", ((3, 3), (2, 2), (0, 0))),
  (18, "conv", (512, (5, 4), (1, 1), (0, 0))), (19, "bn", ()), (20, "relu", ()),
)
LIP_LAYERS: tuple = (
  (0, "conv", (96, (5, 7, 7), (1, 2, 2), (0, 0, 0))), (1, "bn", ()), (2, "relu", ()),
  (3, "pool", ((1, 3, 3), (1, 2, 2), (0, 0, 0))),
  (4, "conv", (256, (1, 5, 5), (1, 2, 2), (0, 1, 1))), (5, "bn", ()), (6, "relu", ()),
  (7, "pool", ((1, 3, 3), (1, 2, 2), (0, 1, 1))),
  (8, "conv", (256, (1, 3, 3), (1, 1, 1), (0, 1, 1))), (9, "bn", ()), (10, "relu", ()),
  (11, "conv", (256, (1, 3, 3), (1, 1, 1), (0, 1, 1))), (12, "bn", ()), (13, "relu", ()),
  (14, "conv", (256, (1, 3, 3), (1, 1, 1), (0, 1, 1))), (15, "bn", ()), (16, "relu", ()),
  (17, "pool", ((1, 3, 3), (1, 2, 2), (0, 0, 0))),
  (18, "conv", (512, (1, 6, 6), (1, 1, 1), (0, 0, 0))), (19, "bn", ()), (20, "relu", ()),
)
# netfcaud / netfclip: Linear(512, 512), BatchNorm1d, ReLU, Linear(512, 1024).
FC_LAYERS: tuple = ((0, "dense", (512,)), (1, "bn", ()), (2, "relu", ()), (3, "dense", (FEATURE_DIM,)))
STREAMS = {"netcnnaud": (AUDIO_LAYERS, 1), "netcnnlip": (LIP_LAYERS, 3),
           "netfcaud": (FC_LAYERS, 512), "netfclip": (FC_LAYERS, 512)}  # name: (layers, input channels)


class _Sequential(nn.Module):
  """One of the four torch Sequentials of `S`, channels-last, in eval mode (BatchNorm running stats)."""
  layers: tuple

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for idx, kind, args in self.layers:
      if kind == "conv":
        features, kernel, stride, pad = args
        x = nn.Conv(features, kernel, strides=stride, padding=[(p, p) for p in pad], name=f"conv_{idx}")(x)
      elif kind == "dense":
        x = nn.Dense(args[0], name=f"dense_{idx}")(x)
      elif kind == "bn":
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name=f"bn_{idx}")(x)
      elif kind == "relu":
        x = nn.relu(x)
      else:  # max pool, -inf padded like torch
        window, stride, pad = args
        x = nn.max_pool(x, window, strides=stride, padding=[(p, p) for p in pad])
    return x


def _flatten_1x1(x: jax.Array, what: str, expected: str) -> jax.Array:
  if any(d != 1 for d in x.shape[1:-1]):
    raise ValueError(f"SyncNet {what} stream expects {expected} inputs (its last conv must give a 1 x 1 "
                     f"map), got a {x.shape[1:-1]} map")
  return x.reshape(x.shape[0], -1)


class SyncNet(nn.Module):
  """syncnet_python's `S`: `audio(mfcc (N, 13, 20) or (N, 13, 20, 1)) -> (N, 1024)` and
  `lip(frames (N, 5, 224, 224, 3) BGR in [0, 255]) -> (N, 1024)`; `__call__` runs both."""

  def setup(self):
    self.netcnnaud = _Sequential(AUDIO_LAYERS)
    self.netfcaud = _Sequential(FC_LAYERS)
    self.netcnnlip = _Sequential(LIP_LAYERS)
    self.netfclip = _Sequential(FC_LAYERS)

  def audio(self, mfcc_windows: jax.Array) -> jax.Array:
    x = mfcc_windows if mfcc_windows.ndim == 4 else mfcc_windows[..., None]
    return self.netfcaud(_flatten_1x1(self.netcnnaud(x), "audio", f"{NUM_MFCC} x {WINDOW_MFCC} MFCC"))

  def lip(self, frames: jax.Array) -> jax.Array:
    expected = f"{WINDOW_FRAMES} x {IMAGE_SIZE} x {IMAGE_SIZE} frame"
    return self.netfclip(_flatten_1x1(self.netcnnlip(frames), "lip", expected))

  def __call__(self, mfcc_windows: jax.Array, frames: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.audio(mfcc_windows), self.lip(frames)


# ---- converter ----------------------------------------------------------------------------------------
def _layout() -> dict[str, tuple[tuple[int, ...], tuple[str, ...]]]:
  """torch key -> (torch shape, path in our variables)."""
  out = {}
  for stream, (layers, cin) in STREAMS.items():
    c = cin
    for idx, kind, args in layers:
      p = f"{stream}.{idx}"
      if kind in ("conv", "dense"):
        cout = args[0]
        kshape = tuple(args[1]) if kind == "conv" else ()
        name = f"{kind}_{idx}"
        out[f"{p}.weight"] = ((cout, c, *kshape), ("params", stream, name, "kernel"))
        out[f"{p}.bias"] = ((cout,), ("params", stream, name, "bias"))
        c = cout
      elif kind == "bn":
        name = f"bn_{idx}"
        out[f"{p}.weight"] = ((c,), ("params", stream, name, "scale"))
        out[f"{p}.bias"] = ((c,), ("params", stream, name, "bias"))
        out[f"{p}.running_mean"] = ((c,), ("batch_stats", stream, name, "mean"))
        out[f"{p}.running_var"] = ((c,), ("batch_stats", stream, name, "var"))
  return out


def expected_shapes() -> dict[str, tuple[int, ...]]:
  """{PyTorch key: shape} of syncnet_python's `S().state_dict()` (without num_batches_tracked)."""
  return {k: shape for k, (shape, _) in _layout().items()}


def convert_syncnet(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """syncnet_python `S` state dict (flat {key: array}, e.g. from `syncnet_v2.model`) -> variables of
  `SyncNet` ({"params", "batch_stats"}, NumPy). Conv kernels (out, in, *k) -> (*k, in, out), Linear
  (out, in) -> (in, out), BatchNorm weight/bias/running_* -> scale/bias/mean/var. `num_batches_tracked` is
  ignored; any other missing, unexpected or mis-shaped key raises a ValueError naming it."""
  layout = _layout()
  check_state_dict(state_dict, expected_shapes(),
                   "a syncnet_python SyncNet (`S`, syncnet_v2.model) state dict")
  variables: dict[str, Any] = {"params": {}, "batch_stats": {}}
  for key, (_, path) in layout.items():
    value = np.asarray(state_dict[key], np.float32)
    if value.ndim >= 2:  # conv (out, in, *k) / linear (out, in) -> (*k, in, out)
      value = np.transpose(value, (*range(2, value.ndim), 1, 0))
    node = variables
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = np.ascontiguousarray(value)
  return variables


def load_syncnet_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Flat state dict of `syncnet_v2.model` (a torch.save pickle, legacy format) or of a .pth / .pt / .npz /
  .safetensors copy, read by `chatanyone_jax.convert.state_dict.load_state_dict`."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(
        f"SyncNet weights {path} not found. Expected syncnet_python's public `{WEIGHTS_FILE}` (a PyTorch "
        f"state dict), fetched by joonson/syncnet_python's download_model.sh from {WEIGHTS_URL}; download it "
        f"yourself and pass its path (nothing is downloaded here).")
  return load_state_dict(path)


# ---- MFCC (python_speech_features) --------------------------------------------------------------------
def _hz2mel(hz):
  return 2595 * np.log10(1 + hz / 700.0)


def _mel2hz(mel):
  return 700 * (10 ** (mel / 2595.0) - 1)


@functools.lru_cache(maxsize=8)
def mel_filterbank(nfilt: int = 26, nfft: int = 512, samplerate: int = SAMPLE_RATE, lowfreq: float = 0.0,
                   highfreq: float | None = None) -> np.ndarray:
  """python_speech_features `get_filterbanks`: (nfilt, nfft // 2 + 1) triangles on floored FFT bins."""
  highfreq = highfreq or samplerate / 2
  if highfreq > samplerate / 2:
    raise ValueError(f"highfreq {highfreq} is above samplerate / 2")
  melpoints = np.linspace(_hz2mel(lowfreq), _hz2mel(highfreq), nfilt + 2)
  bins = np.floor((nfft + 1) * _mel2hz(melpoints) / samplerate)
  fb = np.zeros((nfilt, nfft // 2 + 1))
  for j in range(nfilt):
    for i in range(int(bins[j]), int(bins[j + 1])):
      fb[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
    for i in range(int(bins[j + 1]), int(bins[j + 2])):
      fb[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
  fb.setflags(write=False)
  return fb


def _round_half_up(x: float) -> int:
  return int(math.floor(x + 0.5))


def mfcc(audio16k: np.ndarray, samplerate: int = SAMPLE_RATE, winlen: float = 0.025, winstep: float = 0.01,
         numcep: int = NUM_MFCC, nfilt: int = 26, nfft: int = 512, preemph: float = 0.97,
         ceplifter: int = 22, append_energy: bool = True) -> np.ndarray:
  """python_speech_features.mfcc(audio, samplerate) -> (frames, numcep) float64, frames =
  1 + ceil((len - 400) / 160) (1 if shorter than a frame; the tail is zero-padded). The signal is used as
  given (syncnet_python passes int16 PCM values: see `to_pcm16`)."""
  sig = np.asarray(audio16k)
  if sig.ndim != 1 or sig.size == 0:
    raise ValueError(f"mfcc expects a non-empty 1-D signal, got shape {sig.shape}")
  # sigproc.preemphasis (computed in float64, as NumPy promotes int16 - 0.97 * int16)
  sig = np.asarray(sig, np.float64)
  sig = np.append(sig[0], sig[1:] - preemph * sig[:-1])
  # sigproc.framesig, rectangular window
  frame_len, frame_step = _round_half_up(winlen * samplerate), _round_half_up(winstep * samplerate)
  n = 1 if sig.size <= frame_len else 1 + int(math.ceil((sig.size - frame_len) / frame_step))
  sig = np.concatenate([sig, np.zeros((n - 1) * frame_step + frame_len - sig.size)])
  frames = np.lib.stride_tricks.sliding_window_view(sig, frame_len)[::frame_step][:n]
  # sigproc.powspec, base.fbank
  if frame_len > nfft:
    raise ValueError(f"frame length {frame_len} exceeds nfft {nfft}")
  pspec = np.square(np.abs(np.fft.rfft(frames, nfft))) / nfft
  energy = pspec.sum(axis=1)
  energy = np.where(energy == 0, np.finfo(float).eps, energy)
  feat = pspec @ mel_filterbank(nfilt, nfft, samplerate).T
  feat = np.where(feat == 0, np.finfo(float).eps, feat)
  # base.mfcc, base.lifter
  feat = scipy.fft.dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :numcep]
  if ceplifter > 0:
    feat = feat * (1 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(numcep) / ceplifter))
  if append_energy:
    feat[:, 0] = np.log(energy)
  return feat


def to_pcm16(audio: np.ndarray) -> np.ndarray:
  """Audio as syncnet_python reads it (ffmpeg pcm_s16le + scipy wavfile): int16 stays as it is, float in
  [-1, 1] becomes round(x * 32768) clipped to the int16 range."""
  a = np.asarray(audio)
  if a.dtype == np.int16:
    return a
  if not np.issubdtype(a.dtype, np.floating):
    raise ValueError(f"audio must be float in [-1, 1] or int16 PCM, got dtype {a.dtype}")
  return np.clip(np.round(a.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


# ---- offset / confidence (SyncNetInstance.calc_pdist + evaluate) ----------------------------------------
def calc_pdist(video_feats: np.ndarray, audio_feats: np.ndarray, vshift: int = DEFAULT_VSHIFT) -> np.ndarray:
  """(T, 2 vshift + 1) distances ||v_i - a_{i+s} + 1e-6|| for s = -vshift..vshift, the audio features
  zero-padded at both ends (torch `pairwise_distance` semantics). Computed in float64."""
  v = np.asarray(video_feats, np.float64)
  a = np.asarray(audio_feats, np.float64)
  if v.ndim != 2 or a.ndim != 2 or v.shape[1] != a.shape[1] or len(a) < len(v):
    raise ValueError(f"need video (T, D) and audio (>= T, D) features, got {v.shape} and {a.shape}")
  win = 2 * vshift + 1
  ap = np.pad(a, ((vshift, vshift), (0, 0)))
  idx = np.arange(len(v))[:, None] + np.arange(win)[None, :]  # (T, win) rows of ap
  return np.linalg.norm(v[:, None, :] - ap[idx] + 1e-6, axis=-1)


def sync_scores(video_feats: np.ndarray, audio_feats: np.ndarray,
                vshift: int = DEFAULT_VSHIFT) -> dict[str, Any]:
  """SyncNet's AV offset (video frames), min mean distance and confidence (= median - min of the mean
  distance per shift; the paper's "Sync") from per-window features. Also returns `mean_dists` (2 vshift + 1,)
  and `dists` (T, 2 vshift + 1)."""
  dists = calc_pdist(video_feats, audio_feats, vshift)
  mdist = dists.mean(axis=0)
  minidx = int(np.argmin(mdist))  # first minimum, as torch.min
  median = np.sort(mdist)[(len(mdist) - 1) // 2]  # torch.median: the lower middle value
  return {"offset": vshift - minidx, "min_dist": float(mdist[minidx]),
          "confidence": float(median - mdist[minidx]), "mean_dists": mdist, "dists": dists}


# ---- frames -------------------------------------------------------------------------------------------
def resample_indices(num_frames: int, fps: float, target_fps: float = FPS) -> np.ndarray:
  """Source frame for each output frame at `target_fps`: nearest timestamp, floor(T * target / fps) frames."""
  if fps <= 0 or num_frames <= 0:
    raise ValueError(f"need a positive frame count and fps, got {num_frames} frames at {fps} fps")
  count = int(math.floor(num_frames * target_fps / fps + 1e-6))
  return np.minimum(np.floor(np.arange(count) * (fps / target_fps) + 0.5).astype(np.int64), num_frames - 1)


def crop_face(frame: np.ndarray, bbox: tuple[float, float, float, float], crop_scale: float = 0.4,
              pad_value: int = 110) -> np.ndarray:
  """syncnet_python run_pipeline.py `crop_video` for one frame (without its median smoothing of the track):
  the face box (x1, y1, x2, y2) -> a crop of (1 + crop_scale) half-sizes around the box centre horizontally
  and from -1 to (1 + 2 crop_scale) half-sizes vertically, padded with `pad_value`. Not resized."""
  x1, y1, x2, y2 = (float(b) for b in bbox)
  bs = max(y2 - y1, x2 - x1) / 2
  bsi = int(bs * (1 + 2 * crop_scale))
  padded = np.pad(np.asarray(frame), ((bsi, bsi), (bsi, bsi), (0, 0)), constant_values=pad_value)
  my, mx = (y1 + y2) / 2 + bsi, (x1 + x2) / 2 + bsi
  return padded[int(my - bs):int(my + bs * (1 + 2 * crop_scale)),
                int(mx - bs * (1 + crop_scale)):int(mx + bs * (1 + crop_scale))]


def _lip_windows(clip: jax.Array, starts: jax.Array) -> jax.Array:
  """clip (L, H, W, 3) uint8 RGB -> (B, 5, 224, 224, 3) float BGR windows starting at `starts`."""
  x = clip.astype(jnp.float32)
  if x.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE):  # cv2.resize(face, (224, 224)): bilinear, no antialiasing
    x = jax.image.resize(x, (x.shape[0], IMAGE_SIZE, IMAGE_SIZE, 3), "linear", antialias=False)
    x = jnp.clip(jnp.round(x), 0.0, 255.0)
  x = x[..., ::-1]
  return x[starts[:, None] + jnp.arange(WINDOW_FRAMES)[None, :]]


@jax.jit
def _lip_features(variables, clip: jax.Array, starts: jax.Array) -> jax.Array:
  return SyncNet().apply(variables, _lip_windows(clip, starts), method="lip")


@jax.jit
def _audio_features(variables, windows: jax.Array) -> jax.Array:
  return SyncNet().apply(variables, windows, method="audio")


def min_frames(vshift: int = DEFAULT_VSHIFT) -> int:
  """Fewest 25 fps frames (and 640-sample audio frames) `SyncScorer` accepts: as many windows as shifts."""
  return 2 * vshift + 1 + WINDOW_FRAMES


class SyncScorer:
  """SyncNet offset / min distance / confidence of talking-face clips (syncnet_python `evaluate`).

    scorer = SyncScorer.from_file("syncnet_v2.model")
    scorer(face_frames_rgb_uint8, fps, audio_float_16k)  # {"offset": 0, "min_dist": 7.1, "confidence": 7.9}
  """

  def __init__(self, variables: Mapping[str, Any], vshift: int = DEFAULT_VSHIFT):
    self.variables = jax.tree_util.tree_map(jnp.asarray, dict(variables))
    self.vshift = int(vshift)

  @classmethod
  def from_file(cls, path: str | os.PathLike, vshift: int = DEFAULT_VSHIFT) -> SyncScorer:
    return cls(convert_syncnet(load_syncnet_state_dict(path)), vshift)

  def _prepare(self, face_frames: np.ndarray, fps: float, audio: np.ndarray,
               sample_rate: int) -> tuple[np.ndarray, np.ndarray, int]:
    if sample_rate != SAMPLE_RATE:
      raise ValueError(f"SyncNet needs {SAMPLE_RATE} Hz audio, got {sample_rate} Hz; resample it first "
                       f"(e.g. librosa.resample(audio, orig_sr={sample_rate}, target_sr={SAMPLE_RATE}))")
    frames = np.asarray(face_frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
      raise ValueError(f"face_frames must be uint8 RGB (T, H, W, 3), got {frames.dtype} {frames.shape}")
    pcm = to_pcm16(audio)
    if pcm.ndim != 1:
      raise ValueError(f"audio must be mono (samples,), got shape {pcm.shape}")
    if fps != FPS:
      frames = frames[resample_indices(len(frames), fps)]
    length = min(len(frames), len(pcm) // SAMPLES_PER_FRAME)  # evaluate's min_length
    need = min_frames(self.vshift)
    if length < need:
      raise ValueError(
          f"clip too short for SyncNet with vshift={self.vshift}: {len(frames)} frames at 25 fps and "
          f"{len(pcm) / SAMPLE_RATE:.2f} s of audio give {length} usable frames, need at least {need} "
          f"({need / FPS:.2f} s: {WINDOW_FRAMES}-frame windows for {2 * self.vshift + 1} shifts)")
    return frames, pcm, length - WINDOW_FRAMES

  def features(self, face_frames: np.ndarray, fps: float, audio: np.ndarray, sample_rate: int = SAMPLE_RATE,
               batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(video features, audio features), both (windows, 1024) float32, one per 5-frame / 20-MFCC window.

    windows = min(frames, floor(samples / 640)) - 5 with stride 1: the reference's count, one short of
    every full window."""
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    frames, pcm, count = self._prepare(face_frames, fps, audio, sample_rate)
    cc = mfcc(pcm, SAMPLE_RATE).T.astype(np.float32)  # (13, n)
    video, aud = [], []
    for i in range(0, count, batch_size):  # fixed batch shape: one compile per input size
      n = min(batch_size, count - i)
      clip = frames[i:i + n + WINDOW_FRAMES - 1]
      clip = np.concatenate([clip, np.repeat(clip[-1:], batch_size - n, axis=0)]) if n < batch_size else clip
      video.append(np.asarray(_lip_features(self.variables, clip, np.arange(batch_size, dtype=np.int32)))[:n])
      starts = MFCC_PER_FRAME * np.minimum(np.arange(i, i + batch_size), count - 1)
      windows = np.stack([cc[:, s:s + WINDOW_MFCC] for s in starts])
      aud.append(np.asarray(_audio_features(self.variables, windows[..., None]))[:n])
    return np.concatenate(video), np.concatenate(aud)

  def __call__(self, face_frames: np.ndarray, fps: float, audio: np.ndarray, sample_rate: int = SAMPLE_RATE,
               batch_size: int = DEFAULT_BATCH_SIZE) -> dict[str, int | float]:
    """face_frames: uint8 RGB (T, H, W, 3) face crops (as `crop_face` makes them; resized to 224 x 224);
    fps: their frame rate (resampled to 25 fps by nearest timestamp); audio: mono float in [-1, 1] or int16
    at 16 kHz. -> {"offset": AV offset in frames, "min_dist": float, "confidence": float (the "Sync")}."""
    video, aud = self.features(face_frames, fps, audio, sample_rate, batch_size)
    s = sync_scores(video, aud, self.vshift)
    return {"offset": s["offset"], "min_dist": s["min_dist"], "confidence": s["confidence"]}
