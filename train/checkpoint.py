"""Orbax checkpoints of the train state with the grain iterator beside it (`workdir/checkpoints/<step>/`).

Items: "state" (the train-state pytree, `StandardSave`, sharded arrays written by every process) and
"data" (the DataLoader iterator position, `PyGrainCheckpointSave`), so a resumed run continues with the
same parameters, optimizer moments, step (hence RNG: keys are fold_in(key, step)) and next batch.
"""

from __future__ import annotations

import os
import pathlib

import grain.python as grain
import numpy as np
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"


def manager(workdir: str | os.PathLike, max_to_keep: int = 3,
            async_save: bool = True) -> ocp.CheckpointManager:
  directory = pathlib.Path(workdir).absolute() / CHECKPOINT_DIR
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
                                         create=True)
  return ocp.CheckpointManager(directory, options=options, item_names=("state", "data"))


def save(mngr: ocp.CheckpointManager, step: int, state, iterator, force: bool = False) -> bool:
  """Saves state and iterator at `step` (asynchronously: call `mngr.wait_until_finished()` before exit)."""
  return mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 data=grain.PyGrainCheckpointSave(iterator)), force=force)


STATE_LAYOUT_HINT = (
    "The checkpoint's train state is not laid out as this code builds it: a workdir of another model or "
    "config, or one written by an older version of chatanyone-jax (on 2026-12-07 the optimiser state of "
    "the leaves below sharding.fsdp_min_size became one vector, train/optim.py). To keep its weights, "
    "train in a new workdir with --config.warm_start=WORKDIR (parameters, EMA, statistics and the step "
    "continue; the optimiser starts afresh), or resume it with the version that wrote it.")


def restore(mngr: ocp.CheckpointManager, abstract_state, iterator, step: int | None = None):
  """Restores (state, iterator) at `step` (default latest).

  abstract_state: ShapeDtypeStructs with `.sharding` set (the restored arrays are placed accordingly).
  iterator: a fresh `iter(loader)` of the same pipeline, moved to the saved position; None restores the
  state only (and returns None for it). A failure says which part differs (the state's layout or the
  data pipeline) and what to do.
  """
  step = mngr.latest_step() if step is None else step
  if iterator is None:
    try:
      state_only = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
      return mngr.restore(step, args=state_only)["state"], None
    except ValueError as e:
      raise ValueError(f"{e}\n{STATE_LAYOUT_HINT}") from e
  try:
    out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                     data=grain.PyGrainCheckpointRestore(iterator)))
  except ValueError as e:
    restore(mngr, abstract_state, None, step)  # raises with STATE_LAYOUT_HINT when the state is the cause
    raise ValueError(f"{e}\nThe data pipeline differs from the checkpoint's (new records or window "
                     "settings?). To keep the trained state and start reading the data afresh, resume with "
                     "--config.restore_data=False.") from e
  return out["state"], out["data"]


def data_process_states(mngr: ocp.CheckpointManager, step: int) -> dict[int, str]:
  """{process index: its saved data-iterator state} of checkpoint `step`, whatever the process count that
  wrote it (grain writes `data/process_<i>-of-<n>.json` per process): for resuming on another count."""
  directory = pathlib.Path(mngr.directory) / str(step) / "data"
  out = {}
  for f in directory.glob("process_*-of-*.json"):
    out[int(f.name.split("_")[1].split("-")[0])] = f.read_text()
  return out


def saved_process_count(mngr: ocp.CheckpointManager, step: int) -> int | None:
  """How many processes wrote checkpoint `step`'s data-iterator states (None: none saved)."""
  states = data_process_states(mngr, step)
  return len(states) or None


def save_aside(directory: str | os.PathLike, state) -> None:
  """Synchronously writes one state to `directory` (e.g. the state that produced a non-finite loss)."""
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(pathlib.Path(directory).absolute(), state, force=True)


CONFIG_FILE = "config.json"


def save_config(workdir: str | os.PathLike, config) -> None:
  """Writes the run's ConfigDict as `workdir/config.json` (read back by `load_config`), atomically: the
  other processes of a multi-process run read it (`trainer.check_workdir`) while the first one writes it,
  and must see the old file or the new one, never a part of it."""
  path = pathlib.Path(workdir).absolute() / CONFIG_FILE
  tmp = path.with_name(f"{CONFIG_FILE}.tmp-{os.getpid()}")
  tmp.write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
  os.replace(tmp, path)


def load_config(workdir: str | os.PathLike):
  """The ConfigDict a workdir was trained with (`workdir/config.json`)."""
  import json

  import ml_collections

  path = pathlib.Path(workdir).absolute() / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} does not exist: {workdir} is not a `python -m train.main` workdir")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def load_params(workdir: str | os.PathLike, step: int | None = None, ema: bool = True) -> dict:
  """Parameters for inference from a training workdir, as host (numpy) arrays.

  Returns {"params": the EMA parameters (or the raw ones with ema=False, or when the state has no EMA),
  "norm": the task's normalisation statistics (e.g. {"motion_mean", "motion_std"}; {} for the renderer),
  "step": int}, plus for renderer workdirs "batch_stats" (BatchNorm statistics of F / M / W / G; their
  params are {"F", "M", "W", "G"}).

  Only those subtrees are read (an orbax partial restore into numpy arrays, whatever the training mesh
  or process count was): no optimiser moments, no discriminator. For a renderer that is a fifth of the
  state's arrays, and about 1 s instead of 5-6 s (a tiny renderer workdir, 2-core CPU).
  """
  directory = pathlib.Path(workdir).absolute() / CHECKPOINT_DIR
  with ocp.CheckpointManager(directory, item_handlers={"state": ocp.PyTreeCheckpointHandler()}) as mngr:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint under {directory}")
    paths = _leaf_paths(mngr, step)
    renderer = any(p[0] == "gen" for p in paths)
    has_ema = any(p[0] == "ema" for p in paths)
    weights = ("ema",) if ema and has_ema else (("gen", "params") if renderer else ("params",))
    wanted = [weights, ("norm",)] + ([("gen", "batch_stats")] if renderer else [])
    target: dict = {}
    for path in paths:
      if any(path[:len(w)] == w for w in wanted):
        node = target
        for key in path[:-1]:
          node = node.setdefault(key, {})
        node[path[-1]] = ocp.RestoreArgs(restore_type=np.ndarray)
    state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=target, partial_restore=True)))["state"]
  params = state
  for key in weights:
    params = params[key]
  out = {"params": params, "norm": state.get("norm", {}), "step": int(step)}
  if renderer:  # {"gen": {"params", "batch_stats", ...}, "disc", "ema", ...}
    out["batch_stats"] = state["gen"]["batch_stats"]
  return out


def _leaf_paths(mngr: ocp.CheckpointManager, step: int) -> list[tuple[str, ...]]:
  """The dict keys leading to each array of a checkpoint's "state", from orbax's tree metadata file (a
  JSON file: `item_metadata` instead opens every array, 2 s for a tiny renderer)."""
  import json

  path = pathlib.Path(mngr.directory) / str(step) / "state" / "_METADATA"
  if not path.is_file():
    raise FileNotFoundError(f"{path} does not exist: not a checkpoint written by `python -m train.main`")
  tree = json.loads(path.read_text())["tree_metadata"]
  return [tuple(k["key"] for k in leaf["key_metadata"]) for leaf in tree.values()]
