"""`python -m train.convert`: pretrained PyTorch weights -> checkpoints that training starts from.

  python -m train.convert liveportrait --weights pretrained_weights/liveportrait --out ckpt/liveportrait \
      [--preset liveportrait] [--overwrite]
  python -m train.convert inspect FILE [FILE ...]

`liveportrait` finds F, M, W, G (and the optional stitching / retargeting MLPs) in a LivePortrait weights
folder that you downloaded from the HuggingFace repo KwaiVGI/LivePortrait (nothing is downloaded here),
converts them with `chatanyone_jax.convert.liveportrait` and writes one orbax checkpoint plus a JSON
sidecar; the renderer configs' `init_from` reads it with `load_liveportrait_checkpoint`. `inspect` lists
the arrays of a PyTorch weights file (read without PyTorch), e.g. a metric network's for `infer.evaluate`.
The module lives in train/ because training is the lowest package that reads what it writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from chatanyone_jax.convert import liveportrait, torch_pickle
from chatanyone_jax.convert.state_dict import WEIGHT_SUFFIXES, load_state_dict
from chatanyone_jax.render import presets

Variables = dict[str, Any]
HF_REPO = "KwaiVGI/LivePortrait"
META_FILE = "liveportrait_meta.json"
FORMAT = "chatanyone_jax LivePortrait checkpoint (orbax), 1"


# ---- a LivePortrait weights folder ------------------------------------------------------------------------

def _search_folders(weights_dir: pathlib.Path, stitching: bool) -> list[pathlib.Path]:
  """`weights_dir` may be liveportrait/ (holding base_models/, retargeting_models/) or base_models/ itself."""
  if not stitching:
    return [weights_dir, weights_dir / "base_models"]
  folders = [weights_dir / "retargeting_models", weights_dir]
  if weights_dir.name == "base_models":
    folders.append(weights_dir.parent / "retargeting_models")
  return folders


def _find(folders: Sequence[pathlib.Path], stem: str) -> pathlib.Path | None:
  for folder in folders:
    for suffix in WEIGHT_SUFFIXES:
      if (folder / f"{stem}{suffix}").is_file():
        return folder / f"{stem}{suffix}"
  return None


def find_weights(weights_dir: str | os.PathLike) -> dict[str, pathlib.Path]:
  """Tree name -> weights file for the four base models (required) and the stitching file (if present)."""
  d = pathlib.Path(weights_dir)
  if not d.is_dir():
    raise FileNotFoundError(f"LivePortrait weights folder {d} does not exist or is not a folder")
  base = liveportrait.BASE_MODEL_FILES
  found = {name: _find(_search_folders(d, False), stem) for name, stem in base.items()}
  missing = [base[name] for name, path in found.items() if path is None]
  if missing:
    looked = ", ".join(str(f) for f in _search_folders(d, False))
    raise FileNotFoundError(
        f"missing LivePortrait weights: {', '.join(m + '.pth' for m in missing)} (looked in {looked} for "
        f"{' / '.join(WEIGHT_SUFFIXES)}). LivePortrait publishes them in the HuggingFace repo {HF_REPO} "
        f"under liveportrait/base_models/ (and liveportrait/retargeting_models/{liveportrait.STITCHING_FILE}"
        ".pth); download them yourself and point --weights at that folder (this converter never downloads).")
  stitching = _find(_search_folders(d, True), liveportrait.STITCHING_FILE)
  if stitching is not None:
    found[liveportrait.STITCHING] = stitching
  return found


def _num_params(variables: Variables) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables.get("params", {})))


def convert_liveportrait(weights_dir: str | os.PathLike, preset: str = "liveportrait"
                         ) -> tuple[dict[str, Variables], dict[str, Any]]:
  """(tree, meta): the converted variables of every network found in `weights_dir`, and a summary.

  tree: {"appearance_feature_extractor", "motion_extractor", "warping_network", "spade_generator"} and,
  when the stitching file is there, {"stitching", "lip", "eye"}; each {"params": ..., ["batch_stats"]}.
  G's spectral norms are folded into effective kernels (inference layout).
  """
  cfg = presets.get(preset)
  d = pathlib.Path(weights_dir)
  files = find_weights(d)
  if liveportrait.STITCHING in files and cfg.stitching is None:
    raise ValueError(f"preset {preset!r} has no stitching / retargeting MLPs, but "
                     f"{files[liveportrait.STITCHING]} exists (use --preset liveportrait)")
  tree: dict[str, Variables] = {}
  for name, path in files.items():
    sd = load_state_dict(path)
    try:
      tree.update(liveportrait.convert_weights_file(name, sd, cfg))
    except ValueError as e:
      raise ValueError(f"{path} does not match preset {preset!r} (wrong --preset for these weights?): {e}") \
          from e
  meta = {
      "format": FORMAT,
      "preset": preset,
      "weights_dir": str(d.resolve()),
      "sources": {name: os.path.relpath(path, d) for name, path in files.items()},
      "num_parameters": {name: _num_params(v) for name, v in tree.items()},
      "spade_generator_spectral_norm": "folded into effective kernels",
      "preset_config": dataclasses.asdict(cfg),
  }
  return tree, meta


# ---- the checkpoint ----------------------------------------------------------------------------------------

def _check_out(out: pathlib.Path, overwrite: bool) -> None:
  if out.exists() and (out.is_file() or any(out.iterdir())):
    if not overwrite:
      raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    if not (out / META_FILE).is_file():
      raise FileExistsError(f"{out} exists and is not a checkpoint written by this converter "
                            f"(no {META_FILE}); refusing to overwrite it")


def save_liveportrait_checkpoint(out: str | os.PathLike, tree: Mapping[str, Variables],
                                 meta: Mapping[str, Any], overwrite: bool = False) -> pathlib.Path:
  """Writes `tree` as one orbax checkpoint at `out` and `meta` beside it as `out/liveportrait_meta.json`."""
  out = pathlib.Path(out).resolve()  # orbax wants absolute paths
  _check_out(out, overwrite)
  if out.is_dir() and not any(out.iterdir()):
    out.rmdir()
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(out, dict(tree), force=overwrite)
    ckptr.wait_until_finished()
  (out / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
  return out


def load_liveportrait_meta(path: str | os.PathLike) -> dict[str, Any]:
  """The JSON sidecar of a checkpoint written by `save_liveportrait_checkpoint`."""
  meta = pathlib.Path(path) / META_FILE
  if not meta.is_file():
    raise FileNotFoundError(f"{path} is not a LivePortrait checkpoint of this converter (no {META_FILE}); "
                            "write one with `python -m train.convert liveportrait`")
  return json.loads(meta.read_text())


def load_liveportrait_checkpoint(path: str | os.PathLike) -> dict[str, Variables]:
  """The tree written by `save_liveportrait_checkpoint` (NumPy arrays): {network name: variables}."""
  path = pathlib.Path(path).resolve()
  load_liveportrait_meta(path)  # a clear error for a wrong folder
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(path)


# ---- inspect ----------------------------------------------------------------------------------------------

def describe(obj: Any) -> Iterator[str]:
  """"name<TAB>dtype<TAB>shape" per array of a loaded weights file ("name<TAB>type<TAB>repr" otherwise)."""
  stack: list[tuple[str, Any]] = [("", obj)]
  while stack:
    name, obj = stack.pop()
    if isinstance(obj, dict):
      stack.extend((f"{name}.{k}" if name else str(k), v) for k, v in reversed(list(obj.items())))
    elif isinstance(obj, list | tuple):
      stack.extend((f"{name}.{i}" if name else str(i), v) for i, v in reversed(list(enumerate(obj))))
    elif isinstance(obj, np.ndarray):
      yield f"{name or '<root>'}\t{obj.dtype}\t{tuple(obj.shape)}"
    else:
      yield f"{name or '<root>'}\t{type(obj).__name__}\t{obj!r:.60}"


# ---- command line -----------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m train.convert", description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  lp = sub.add_parser(
      "liveportrait", help="LivePortrait weights folder -> one orbax checkpoint (for init_from)",
      description="Convert LivePortrait's PyTorch weights (downloaded by you from the HuggingFace repo "
                  f"{HF_REPO}) into one orbax checkpoint of chatanyone_jax variables.")
  lp.add_argument("--weights", required=True,
                  help="LivePortrait's pretrained_weights/liveportrait folder (or its base_models/): "
                       + ", ".join(f"{s}.pth" for s in liveportrait.BASE_MODEL_FILES.values())
                       + f", optionally retargeting_models/{liveportrait.STITCHING_FILE}.pth; .pt, .npz and "
                       ".safetensors files with the same names work too")
  lp.add_argument("--out", required=True, help="checkpoint folder to write")
  lp.add_argument("--preset", default="liveportrait",
                  help=f"renderer preset the weights belong to (default liveportrait; known: "
                       f"{', '.join(sorted(presets.PRESETS))})")
  lp.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --out")
  ins = sub.add_parser("inspect", help="list the arrays of PyTorch weights files (read without PyTorch)")
  ins.add_argument("files", nargs="+", help=".pth / .pt / .ckpt / .model files written by torch.save")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  if args.command == "inspect":
    for path in args.files:
      for line in describe(torch_pickle.load(path)):
        print(line)
    return 0
  _check_out(pathlib.Path(args.out).resolve(), args.overwrite)  # fail before the conversion
  tree, meta = convert_liveportrait(args.weights, args.preset)
  out = save_liveportrait_checkpoint(args.out, tree, meta, overwrite=args.overwrite)
  sources = meta["sources"]
  for name, count in meta["num_parameters"].items():
    print(f"{name:<30} {count:>12,d} params  <- {sources.get(name, sources.get(liveportrait.STITCHING))}")
  print(f"wrote {out} (preset {args.preset!r})")
  return 0


if __name__ == "__main__":
  try:
    sys.exit(main())
  except (FileNotFoundError, FileExistsError, ImportError, ValueError) as e:
    sys.exit(f"error: {e}")
