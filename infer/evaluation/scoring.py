"""What the evaluation tables share: the records of a split, per-row accumulators, FID / FVD, CSIM.

FID compares Inception-V3 pool features of all generated vs all real frames of a table; FVD the I3D
features of their non-overlapping `FVD_SEGMENT`-frame segments. CSIM is the dlib identity cosine of the
source image and each generated frame, over the frames in which a face is found.
"""

from __future__ import annotations

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from chatanyone_jax.eval.faces import identity_similarity
from chatanyone_jax.eval.frechet import frechet_distance_features
from chatanyone_jax.motion.lip_regressor import mouth_blend_matrix
from chatanyone_jax.template import load_head_template
from data import records
from infer.evaluation.backends import NA_WEIGHTS, Backends
from train import checkpoint as ckpt
from train import tasks
from train.export import load_weights

FVD_SEGMENT = 16


def open_split(data: str | os.PathLike, split: str):
  """(meta, clips, frames) data sources of a `python -m data.preprocess` output's split."""
  meta = records.read_meta(data)
  if split not in meta["splits"]["clips"]:
    have = sorted(meta["splits"]["clips"])
    hint = " (preprocess with --val-fraction > 0 to hold clips back)" if split == "validation" else ""
    raise ValueError(f"{data} has no {split!r} split{hint}; it has {have}: pass --split")
  return meta, records.data_source(data, "clips", split), records.data_source(data, "frames", split)


def load_motion_face(workdir: str | os.PathLike):
  """(config, task, params, norm) of a FaceMotionDiT workdir or export; params and norm as device arrays."""
  workdir = pathlib.Path(workdir)
  config = ckpt.load_config(workdir)
  if config.get("task") != "motion_face":
    raise ValueError(f"{workdir} holds a {config.get('task')!r} run, not motion_face")
  loaded = load_weights(workdir)
  return (config, tasks.get_task(config), jax.tree.map(jnp.asarray, loaded["params"]),
          jax.tree.map(jnp.asarray, loaded["norm"]))


def load_motion_lip(workdir: str | os.PathLike) -> dict:
  """{"path", "config", "model" (LipRegressor), "params", "norm", "blend"} of a motion_lip workdir or export:
  what `infer.models.load_checkpoint` gives a stream (device arrays)."""
  workdir = pathlib.Path(workdir)
  config = ckpt.load_config(workdir)
  if config.get("task") != "motion_lip":
    raise ValueError(f"{workdir} holds a {config.get('task')!r} run, not motion_lip")
  loaded = load_weights(workdir)
  blend = mouth_blend_matrix(load_head_template())
  return {"path": str(workdir), "config": config, "model": tasks.get_task(config).model,
          "params": jax.tree.map(jnp.asarray, loaded["params"]),
          "norm": jax.tree.map(jnp.asarray, loaded["norm"]), "blend": jnp.asarray(blend)}


def to_uint8(x: np.ndarray) -> np.ndarray:
  """Float images in [0, 1] -> uint8 (rounded)."""
  return np.clip(np.asarray(x, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """uint8 (H, W, 3) -> (size[0], size[1], 3), bilinear (PIL)."""
  if img.shape[:2] == tuple(size):
    return img
  return np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def clip_indices(clips, max_clips: int | None) -> list[int]:
  n = len(clips)
  return list(range(n if max_clips is None else min(n, max_clips)))


class Accumulator:
  """Per-frame and per-clip values of one row of a table, plus the feature sets of FID / FVD."""

  def __init__(self):
    self.values: dict[str, list[float]] = {}
    self.counts: dict[str, int] = {}
    self.inception: list[np.ndarray] = []
    self.i3d: list[np.ndarray] = []

  def add(self, name: str, values, count: int | None = None) -> None:
    """Adds the finite ones of `values`; counts them (or `count`, e.g. frames behind one value)."""
    v = np.atleast_1d(np.asarray(values, np.float64))
    v = v[np.isfinite(v)]
    self.values.setdefault(name, []).extend(v.tolist())
    self.counts[name] = self.counts.get(name, 0) + (len(v) if count is None else count)

  def mean(self, name: str) -> float | None:
    v = self.values.get(name)
    return float(np.mean(v)) if v else None


def segments(frames: np.ndarray, length: int = FVD_SEGMENT) -> np.ndarray:
  """(T, H, W, 3) -> (T // length, length, H, W, 3) non-overlapping segments."""
  n = len(frames) // length
  return frames[:n * length].reshape(n, length, *frames.shape[1:])


def add_features(b: Backends, acc: Accumulator, frames: np.ndarray) -> None:
  """The FID and FVD features of `frames` (uint8 (T, H, W, 3)), for the back-ends that are loaded."""
  if b.inception is not None:
    acc.inception.append(np.asarray(b.inception(frames)))
  if b.i3d is not None and len(frames) >= FVD_SEGMENT:
    acc.i3d.append(np.asarray(b.i3d(segments(frames))))


def frechet(real: list[np.ndarray], fake: list[np.ndarray], backend, name: str) -> float | str:
  """FID / FVD (`name`) of two lists of feature batches; a "n/a (...)" string where it cannot be computed."""
  if backend is None:
    return NA_WEIGHTS
  r = np.concatenate(real) if real else np.zeros((0, 1))
  f = np.concatenate(fake) if fake else np.zeros((0, 1))
  if len(r) < 2 or len(f) < 2:
    unit = "frames" if name == "FID" else f"{FVD_SEGMENT}-frame segments"
    return f"n/a (fewer than 2 {unit})"
  return frechet_distance_features(r, f)


def add_identity(b: Backends, acc: Accumulator, source: np.ndarray, frames: np.ndarray,
                 analysed: dict | None = None) -> dict | None:
  """CSIM of frames against the source image; returns the frames' face analysis (for LMD / Sync)."""
  if b.faces is None:
    return None
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
