"""The metric networks of the evaluation tables, and where their weight files are found.

LPIPS, FID, FVD and Sync run Flax ports of public networks (`chatanyone_jax.eval`) whose weights the user
supplies: the public files in a weights folder under their published names (or the same stem as .npz /
.safetensors conversions), or each file named explicitly. A metric whose file is absent is listed in
`Backends.missing` and reported as "n/a (no weights)". CSIM / LMD / Diversity use dlib's models from the
face_recognition_models wheel, HKC MediaPipe's hand model from the mediapipe wheel. Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import pathlib
from collections.abc import Sequence
from typing import Any

from chatanyone_jax.eval import faces as faces_lib
from chatanyone_jax.eval import hands as hands_lib
from chatanyone_jax.eval import i3d as i3d_lib
from chatanyone_jax.eval import inception as inception_lib
from chatanyone_jax.eval import lpips as lpips_lib
from chatanyone_jax.eval import syncnet as syncnet_lib

NA_WEIGHTS = "n/a (no weights)"
CONVERTED = (".npz", ".safetensors")  # a conversion of a published file keeps its stem


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


def find_weights_file(explicit: str | os.PathLike | None, weights_dir: pathlib.Path | None,
                      names: Sequence[str], what: str) -> pathlib.Path | None:
  """An explicitly given file (must exist), else the first of `names` in weights_dir (or the same stem as
  .npz / .safetensors), else None."""
  if explicit:
    p = pathlib.Path(explicit)
    if not p.is_file():
      raise FileNotFoundError(f"{what} weights {p} do not exist")
    return p
  if weights_dir is not None:
    for n in names:
      for cand in (weights_dir / n, *(weights_dir / (pathlib.Path(n).stem + s) for s in CONVERTED)):
        if cand.is_file():
          return cand
  return None


def dlib_model_file(name: str) -> pathlib.Path:
  """A model file of the face_recognition_models wheel, found without importing the package (its
  __init__ needs setuptools' pkg_resources, which setuptools >= 81 no longer ships)."""
  spec = importlib.util.find_spec("face_recognition_models")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError("CSIM / LMD need dlib's models: `pip install dlib-bin face-recognition-models` "
                      "(both are in this package's dependencies)")
  path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "models" / name
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing: reinstall face-recognition-models")
  return path


def face_analyzer(identity_model: str | os.PathLike | None = None, **kwargs) -> faces_lib.FaceAnalyzer:
  """dlib's face analysis with the wheel's landmark model and `identity_model` (default: the wheel's
  ResNet descriptor model) for CSIM."""
  return faces_lib.FaceAnalyzer(identity_model or dlib_model_file(faces_lib.RECOGNITION_MODEL),
                                dlib_model_file(faces_lib.LANDMARK_MODEL), **kwargs)


def load_backends(weights_dir: str | os.PathLike | None = None, *, inception: str | None = None,
                  lpips_backbone: str | None = None, lpips_lin: str | None = None, i3d: str | None = None,
                  syncnet: str | None = None, identity_model: str | None = None, faces: bool = True,
                  hands: bool = True) -> Backends:
  """Loads every metric network whose weights are found (module docstring); the rest are `missing`."""
  wd = pathlib.Path(weights_dir) if weights_dir else None
  if wd is not None and not wd.is_dir():
    raise FileNotFoundError(f"--weights-dir {wd} is not a directory")
  b = Backends()
  find = functools.partial(find_weights_file, weights_dir=wd)
  found = {
      "inception": find(inception, names=[inception_lib.WEIGHTS_FILE], what="FID Inception"),
      "lpips_backbone": find(lpips_backbone, names=[lpips_lib.BACKBONE_FILES["alex"]], what="LPIPS AlexNet"),
      "lpips_lin": find(lpips_lin, names=[lpips_lib.LIN_FILES["alex"]], what="LPIPS linear layers"),
      "i3d": find(i3d, names=list(i3d_lib.WEIGHTS_FILES), what="I3D"),
      "syncnet": find(syncnet, names=[syncnet_lib.WEIGHTS_FILE], what="SyncNet"),
  }
  b.files = {k: str(v) for k, v in found.items() if v is not None}
  if found["inception"]:
    b.inception = inception_lib.InceptionFeatures.from_file(found["inception"])
  else:
    b.missing["FID"] = f"{inception_lib.WEIGHTS_FILE} not given"
  if found["lpips_backbone"] and found["lpips_lin"]:
    b.lpips = lpips_lib.LPIPS.from_files(found["lpips_backbone"], found["lpips_lin"], net="alex")
  else:
    b.missing["LPIPS"] = f"{lpips_lib.BACKBONE_FILES['alex']} and {lpips_lib.LIN_FILES['alex']} not given"
  if found["i3d"]:
    b.i3d = i3d_lib.I3DFeatures.from_file(found["i3d"])
  else:
    b.missing["FVD"] = f"one of {', '.join(i3d_lib.WEIGHTS_FILES)} not given"
  if found["syncnet"]:
    b.syncnet = syncnet_lib.SyncScorer.from_file(found["syncnet"])
  else:
    b.missing["Sync"] = f"{syncnet_lib.WEIGHTS_FILE} not given"
  if faces:
    b.faces = face_analyzer(identity_model)
  if hands:
    b.hands = hands_lib.HandConfidence()
  return b
