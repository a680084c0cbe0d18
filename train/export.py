"""Compact inference checkpoints: a training workdir's EMA weights and statistics, without optimizer state.

  python -m train.export --workdir ~/runs/small_head --out infer/assets/checkpoint/render [--bfloat16]

An export is a folder with the run's `config.json`, `params.msgpack` (flax serialization of {"params",
"batch_stats" (renderers) or "norm" (motion models)}) and `export.json` (format version, step, task,
model, storage dtype). `load_weights` reads an export or a training workdir alike (`load_config` of
`train.checkpoint` reads either's config.json), so `infer.stream`, `infer.evaluate` and
`infer.models.load_checkpoint` take either. bfloat16 storage halves the file (statistics stay float32);
loading returns float32. Loading an export checks every array against the networks its config names, so
a file of another preset or model fails with the paths that differ.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import serialization

from chatanyone_jax.render import train_step
from train import checkpoint, tasks

EXPORT_FILE = "export.json"
PARAMS_FILE = "params.msgpack"
FORMAT = "chatanyone-jax-export"
VERSION = 1


def is_export(path: str | os.PathLike) -> bool:
  return (pathlib.Path(path) / EXPORT_FILE).is_file()


def expected_shapes(config: ml_collections.ConfigDict) -> dict:
  """{"params": ..., ["batch_stats": ...]} of the networks `config` names, as ShapeDtypeStructs (an abstract
  trace of their init, no FLOPs: for a renderer the generator's alone, without the discriminator and the
  optimiser states). Cached per config in this process: loading a checkpoint checks every network against
  these, and a process loads the same networks again and again (each stream, each test); the first trace
  costs about a second per network on CPU."""
  key = config.to_json_best_effort(sort_keys=True)
  if key not in _EXPECTED:
    _EXPECTED[key] = _trace_shapes(config)
    while len(_EXPECTED) > _MAX_EXPECTED:
      _EXPECTED.pop(next(iter(_EXPECTED)))
  return jax.tree.map(lambda s: s, _EXPECTED[key])  # new containers: callers may edit theirs


_EXPECTED: dict = {}  # expected_shapes' cache, the oldest first
_MAX_EXPECTED = 32


def _trace_shapes(config: ml_collections.ConfigDict) -> dict:
  task = tasks.get_task(config)
  if config.task == "render":
    renderer = task.renderer
    gen = jax.eval_shape(lambda: train_step.init_generator(renderer, jax.random.key(0), renderer.image_size))
    return {"params": gen["params"], "batch_stats": gen["batch_stats"]}
  spec = task.batch_spec(1)
  state = jax.eval_shape(task.make_init(optax.identity(), spec, lambda s: 0.0), jax.random.key(0),
                         jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), task.norm_spec()))
  return {"params": state["params"]}


def check_arrays(config: ml_collections.ConfigDict, tree: dict, where: str) -> None:
  """Raises ValueError naming the paths whose presence or shape differs from `expected_shapes`."""
  expected = expected_shapes(config)
  want = {jax.tree_util.keystr(p): tuple(v.shape) for p, v in jax.tree_util.tree_leaves_with_path(expected)}
  have = {jax.tree_util.keystr(p): tuple(np.shape(v))
          for p, v in jax.tree_util.tree_leaves_with_path({k: tree.get(k, {}) for k in expected})}
  missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
  shapes = [f"{k}: {have[k]} vs {want[k]}" for k in sorted(set(want) & set(have)) if want[k] != have[k]]
  if missing or extra or shapes:
    model = config.model.get("preset") or config.model.to_dict()
    raise ValueError(f"{where} does not hold the networks of its config (model {model}): "
                     f"{len(missing)} missing (e.g. {missing[:3]}), {len(extra)} unexpected "
                     f"(e.g. {extra[:3]}), "
                     f"{len(shapes)} of another shape (e.g. {shapes[:3]}); was it exported from another "
                     "preset or model?")


def export(workdir: str | os.PathLike, out: str | os.PathLike, *, bfloat16: bool = False) -> dict:
  """Writes the export of `workdir`'s latest checkpoint to `out`; returns its export.json content."""
  config = checkpoint.load_config(workdir)
  loaded = checkpoint.load_params(workdir)
  keys = ("params", "batch_stats") if "batch_stats" in loaded else ("params", "norm")
  tree = {k: loaded[k] for k in keys}
  check_arrays(config, tree, str(workdir))
  if bfloat16:  # weights only; BatchNorm and normalisation statistics keep float32
    tree["params"] = jax.tree.map(lambda x: np.asarray(jnp.asarray(x, jnp.bfloat16)), tree["params"])
  return write_export(out, config, tree, step=loaded["step"], source=str(pathlib.Path(workdir).absolute()),
                      dtype="bfloat16" if bfloat16 else "float32")


def write_export(out: str | os.PathLike, config: ml_collections.ConfigDict, tree: dict, *, step: int,
                 source: str, dtype: str = "float32", **extra) -> dict:
  """Writes an export folder: `tree` ({"params", "norm" | "batch_stats"}, host arrays, already checked),
  the config and export.json (with `extra` fields); returns export.json's content."""
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  (out / PARAMS_FILE).write_bytes(serialization.msgpack_serialize(jax.tree.map(np.asarray, tree)))
  (out / checkpoint.CONFIG_FILE).write_text(config.to_json_best_effort(indent=1))
  info = {"format": FORMAT, "version": VERSION, "step": int(step), "task": config.task,
          "model": config.model.to_dict(), "dtype": dtype, "source": source,
          "bytes": (out / PARAMS_FILE).stat().st_size, **extra}
  (out / EXPORT_FILE).write_text(json.dumps(info, indent=1))
  return info


def load_weights(path: str | os.PathLike) -> dict:
  """Inference weights of an export or a training workdir: {"params", "norm", "step"[, "batch_stats"]} as
  host arrays (`checkpoint.load_params` for a workdir: EMA parameters); an export's are float32 and
  checked against the networks of its config."""
  path = pathlib.Path(path)
  if not is_export(path):
    return checkpoint.load_params(path)
  info = json.loads((path / EXPORT_FILE).read_text())
  if info.get("format") != FORMAT or info.get("version") != VERSION:
    raise ValueError(f"{path / EXPORT_FILE}: not a version-{VERSION} {FORMAT} file ({info.get('format')} "
                     f"{info.get('version')})")
  tree = serialization.msgpack_restore((path / PARAMS_FILE).read_bytes())
  config = checkpoint.load_config(path)
  check_arrays(config, tree, str(path))
  tree = jax.tree.map(lambda x: np.asarray(x, np.float32), tree)
  return {"params": tree["params"], "norm": tree.get("norm", {}), "step": int(info["step"]),
          **({"batch_stats": tree["batch_stats"]} if "batch_stats" in tree else {})}


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m train.export", description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True, help="a `python -m train.main` workdir")
  p.add_argument("--out", required=True, help="the export folder (e.g. infer/assets/checkpoint/render)")
  p.add_argument("--bfloat16", action="store_true", help="store the weights in bfloat16")
  args = p.parse_args(argv)
  try:
    info = export(args.workdir, args.out, bfloat16=args.bfloat16)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(info, indent=1))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
