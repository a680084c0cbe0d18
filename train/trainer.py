"""The training loop: `train_and_evaluate(config, workdir)` for any task in `train.tasks`.

Order of work: validate the config and the records (no compile before that) -> mesh -> task and data
iterator -> `build`: abstract state (`jax.eval_shape`), its shardings and the jitted step -> restore the
latest checkpoint (state and iterator) or estimate the normalisation statistics and run the sharded init
-> loop with metrics, checkpoints, a progress bar and SIGTERM / SIGINT handling.

Train state: {"params", "opt_state", "ema", "step" () int32, "norm" (task statistics, not trained)}.
The step draws its key as fold_in(key, step), so a resumed run repeats the RNG of an uninterrupted one.
The host syncs with the device only at log and checkpoint steps (big_vision's train.py): the step's
non-finite guard freezes the state at the first non-finite step, and those syncs check for it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import grain.python as grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from chatanyone_jax import xla_options
from chatanyone_jax.render.train_step import INIT_COMPILER_OPTIONS
from data import pipelines, records
from train import checkpoint, export, metrics, optim, parallel, tasks
from train.task_base import Task

log = logging.getLogger(__name__)


class NonFiniteError(FloatingPointError):
  """A training step gave a non-finite loss or gradient norm (see `guard_nonfinite`, `check_finite`)."""


LAST_VALUE = ("param_norm", "learning_rate", "finite")  # logged as the last step's value (or not at all)
# The metrics a step must keep finite (those it has): every task's loss and gradient norm, the GAN's
# discriminator ones.
FINITE_KEYS = ("loss", "grad_norm", "disc_loss", "disc_grad_norm")


# ------------------------------------------------------------------------------------------ set-up


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks the config and that the records exist; raises with the fix in the message."""
  if not config.get("data_dir"):
    raise ValueError("config.data_dir is not set: pass --config.data_dir=OUT, where OUT holds the records "
                     "written by `python -m data.preprocess --videos VIDEOS_DIR --out OUT`")
  try:
    records.read_meta(config.data_dir)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"config.data_dir={config.data_dir!r}: {e}") from None
  if config.batch_size % jax.process_count():
    raise ValueError(f"batch_size {config.batch_size} is not divisible by {jax.process_count()} processes")
  if config.num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {config.num_steps}")


# What a workdir's checkpoints depend on: resuming with a different value cannot work.
ARCHITECTURE_KEYS = ("task", "model", "window", "history")


def architecture(config: dict) -> dict:
  """The ARCHITECTURE_KEYS of a config (plain dict), config.model resolved by its task (`resolve_model`:
  a named variant and the sizes it stands for compare equal)."""
  arch = {key: config.get(key) for key in ARCHITECTURE_KEYS}
  task = tasks.TASKS.get(arch["task"])
  if task is not None and isinstance(arch["model"], dict):
    arch["model"] = task.resolve_model(arch["model"])
  return arch


def check_workdir(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
  """Raises if `workdir` holds a run of another task or model (its config.json differs in those keys)."""
  if not (workdir / checkpoint.CONFIG_FILE).is_file():
    return
  old = architecture(checkpoint.load_config(workdir).to_dict())
  new = architecture(json.loads(config.to_json_best_effort()))
  for key in ARCHITECTURE_KEYS:
    if old[key] != new[key]:
      raise ValueError(f"{workdir} holds a run with config.{key}={old[key]!r}, but this config has "
                       f"{new[key]!r}; use a new --workdir, or the config that run was started with")


def guard_nonfinite(step: Callable, state_metrics: Callable[[dict], dict] = lambda state: {}) -> Callable:
  """The one non-finite guard: step(state, batch) -> guarded(state, batch, guard) -> (state, metrics, guard).

  guard = {"ok": () bool, "batch": the batch of the first non-finite step (zeros until then)}, threaded
  through the steps on the device (`new_guard`). A step whose FINITE_KEYS metrics are not all finite
  leaves the whole state unchanged, and so does every step after it: the state the host finds at its next
  check is the one before the first bad step, and guard["batch"] that step's batch. metrics["finite"] =
  guard["ok"] after the step; state_metrics(kept state) adds metrics of the state kept (`Task`).
  """

  def guarded(state: dict, batch: dict, guard: dict) -> tuple[dict, dict, dict]:
    new, m = step(state, batch)
    finite = jnp.all(jnp.stack([jnp.isfinite(m[k]) for k in FINITE_KEYS if k in m]))
    ok = guard["ok"] & finite
    first = guard["ok"] & ~finite
    # One conditional for the whole state instead of a select per array: the same values, and XLA compiles
    # one op instead of one per leaf (render_upper512x768:tiny's step: 112k -> 97k HLO lines, 13 % less
    # compile time).
    new = jax.lax.cond(ok, lambda: new, lambda: state)
    bad = jax.lax.cond(first, lambda: batch, lambda: guard["batch"])
    return new, {**m, **state_metrics(new), "finite": ok}, {"ok": ok, "batch": bad}

  return guarded


def new_guard(spec: dict) -> dict:
  """The initial guard of `guard_nonfinite` for batches of `spec` (ShapeDtypeStructs)."""
  return {"ok": jnp.ones((), bool), "batch": {k: jnp.zeros(s.shape, s.dtype) for k, s in spec.items()}}


@dataclasses.dataclass(frozen=True)
class Program:
  """A task's train state and jitted step for a config and a mesh, as `train_and_evaluate` runs them.

  init: pure init(rng, norm) -> state; abstract: its ShapeDtypeStructs; init_key: the key it runs with;
  step: jitted step(state, batch, guard) -> (state, metrics, guard) (`guard_nonfinite`; state and guard
  donated); new_guard(): the initial guard, sharded (it holds one batch on the device); spec: the global
  batch's ShapeDtypeStructs; summary: jitted summary(state, batch) -> images of the task (`Task.make_summary`)
  or None; jitted_init: `init` jitted with the state shardings (`compile_init`).
  """
  init: Callable
  abstract: Any
  init_key: jax.Array
  state_shardings: Any
  batch_sharding: jax.sharding.Sharding
  replicated: jax.sharding.Sharding
  step: Callable
  spec: dict
  summary: Callable | None = None
  jitted_init: Callable | None = None

  def compile_init(self) -> Callable:
    """`init`, jitted with the state shardings (one compile per Program). On CPU without XLA's backend
    optimisations: init graphs (threefry for every parameter) otherwise take minutes to compile there, and
    they run once."""
    return self.jitted_init

  def new_guard(self) -> dict:
    sh = {"ok": self.replicated, "batch": {k: self.batch_sharding for k in self.spec}}
    return jax.jit(lambda: new_guard(self.spec), out_shardings=sh)()


# Config keys that only steer the loop (how long, what it logs and saves, where it starts from), never the
# programs `build` makes: two configs that differ only in these share one Program (`cached_build`).
LOOP_KEYS = ("num_steps", "log_every", "checkpoint_every", "keep_checkpoints", "progress", "image_every",
             "evals", "restore_data", "warm_start", "warm_start_step", "warm_start_icnr", "stats_batches",
             "worker_count")
_PROGRAMS: dict = {}  # cached_build's programs, the most recent last
_MAX_PROGRAMS = 4


def program_key(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> str:
  """What `build` depends on: the config without LOOP_KEYS (num_steps as the schedule's length it sets,
  `optim.learning_rate_schedule`), the mesh's devices and axes, the process count."""
  c = json.loads(config.to_json_best_effort())
  c["lr_decay_steps"] = c.get("lr_decay_steps") or c.get("num_steps")
  for key in LOOP_KEYS:
    c.pop(key, None)
  devices = [d.id for d in mesh.devices.flat]
  return json.dumps([c, dict(mesh.shape), devices, jax.process_count()], sort_keys=True, default=str)


def cached_build(task: Task, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Program:
  """`build`, reusing the Program of an earlier call in this process whose config differs only in
  LOOP_KEYS (a resumed run, more steps, another workdir): its step is traced, lowered and compiled once,
  not again per call (about 10-30 s per call for a renderer on CPU). The last _MAX_PROGRAMS are kept."""
  key = program_key(config, mesh)
  prog = _PROGRAMS.pop(key, None) or build(task, config, mesh)
  _PROGRAMS[key] = prog
  while len(_PROGRAMS) > _MAX_PROGRAMS:
    _PROGRAMS.pop(next(iter(_PROGRAMS)))
  return prog


def build(task: Task, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Program:
  """The `Program` of `task` (optimizer and schedule from `train.optim`, keys from config.seed)."""
  schedule = optim.learning_rate_schedule(config)
  tx = optim.optimizer(config, schedule)
  key = jax.random.key(config.seed)
  init_key, step_key = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
  spec = task.batch_spec(config.batch_size)
  init = task.make_init(tx, spec, schedule)
  abstract = jax.eval_shape(init, init_key, task.norm_spec())
  state_sh = parallel.param_shardings(abstract, mesh, config.sharding.fsdp_min_size)
  batch_sh = parallel.batch_sharding(mesh)
  repl = parallel.replicated(mesh)
  guard_sh = {"ok": repl, "batch": {k: batch_sh for k in spec}}
  guarded = guard_nonfinite(task.make_step(tx, schedule, config.ema_decay, step_key), task.state_metrics)
  options = xla_options.cpu_options()  # on CPU: no YNNPACK dot fusions (the renderers' steps 1.6x faster)
  step = jax.jit(guarded, in_shardings=(state_sh, batch_sh, guard_sh),
                 out_shardings=(state_sh, repl, guard_sh), donate_argnums=(0, 2), compiler_options=options)
  summary = task.make_summary()
  if summary is not None:
    summary = jax.jit(summary, in_shardings=(state_sh, batch_sh), out_shardings=repl,
                      compiler_options=options)
  jitted_init = jax.jit(init, out_shardings=state_sh,
                        compiler_options=xla_options.cpu_options(**INIT_COMPILER_OPTIONS))
  return Program(init, abstract, init_key, state_sh, batch_sh, repl, step, spec, summary, jitted_init)


def warm_start(task: Task, config: ml_collections.ConfigDict, state: dict, shardings) -> dict:
  """A fresh state with the weights of `config.warm_start` (an export of `train.export` or a workdir of
  the same task and model): parameters and their EMA (BatchNorm statistics, normalisation statistics);
  the optimiser (and a renderer's discriminator) start afresh. With config.warm_start_step (default) the
  step counter continues from the weights' step, so the schedules go on: how a campaign restarts from
  its exported checkpoint on a new machine."""
  path = pathlib.Path(config.warm_start)
  other = architecture(checkpoint.load_config(path).to_dict())
  mine = architecture(json.loads(config.to_json_best_effort()))
  for key in ("task", "model"):
    if other[key] != mine[key]:
      raise ValueError(f"config.warm_start={path} holds {key} {other[key]!r}, but this config has "
                       f"{mine[key]!r}: warm-start from weights of the same task and model")
  weights = export.load_weights(path)
  host = jax.device_get(state)
  host = task.with_weights(host, weights)
  if config.get("warm_start_step", True):
    host["step"] = np.asarray(weights["step"], np.asarray(host["step"]).dtype)
    host = optim.at_schedule_step(host, weights["step"])  # every optimiser state in it
  log.info("warm start from %s (step %d)", path, weights["step"])
  return jax.device_put(host, shardings)


class _StopFlag:
  """SIGTERM / SIGINT set a flag (the loop saves and returns); the previous handlers come back on exit."""

  def __init__(self):
    self.set = False
    self._old = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    log.warning("signal %d: saving a checkpoint and stopping after this step", signum)
    self.set = True

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)

  def agreed(self) -> bool:
    """Whether any process was signalled (all processes must stop at the same step)."""
    if jax.process_count() == 1:
      return self.set
    with jax.transfer_guard("allow"):
      return bool(np.any(multihost_utils.process_allgather(np.array(self.set))))


def data_shards(config: ml_collections.ConfigDict) -> tuple[int, list[int]]:
  """(S, the shards this process reads) of config.data_shards (0: one shard per process).

  A fixed S (a multiple of every process count the run may use) makes the global batch independent of the
  process count: process p of n reads shards p·S/n .. (p + 1)·S/n - 1 side by side (`data.pipelines.
  ShardsIterator`), and a checkpoint's data position carries over to another count (`_restore_data`).
  """
  n, p = jax.process_count(), jax.process_index()
  total = int(config.get("data_shards", 0) or 0) or n
  if total % n:
    raise ValueError(f"config.data_shards={total} is not a multiple of the {n} processes")
  k = total // n
  if (config.batch_size // n) % k:
    raise ValueError(f"the per-process batch {config.batch_size // n} does not split into {k} data shards")
  return total, list(range(p * k, (p + 1) * k))


def data_iterator(task: Task, config: ml_collections.ConfigDict, seed: int):
  """This process's iterator over its shards of the training records (`data_shards`): numpy batches of
  batch_size / process_count rows, checkpointable beside the model."""
  local = config.batch_size // jax.process_count()
  if not config.get("data_shards", 0):  # grain's ShardByJaxProcess (the sampler repr older checkpoints hold)
    return iter(task.loader(local, seed))
  total, mine = data_shards(config)
  its = [iter(task.loader(local // len(mine), seed, shard_options=grain.ShardOptions(s, total,
                                                                                      drop_remainder=True)))
         for s in mine]
  return its[0] if len(its) == 1 else pipelines.ShardsIterator(its, mine)


def _restore_data(task: Task, config: ml_collections.ConfigDict, mngr, step: int, iterator):
  """The data iterator at checkpoint `step` written by another number of processes: each shard continues
  where it was with config.data_shards set; else (one shard per process: the shards changed) the data
  restarts, seeded by the step."""
  saved = checkpoint.data_process_states(mngr, step)
  if config.get("data_shards", 0):
    total, _ = data_shards(config)
    k_old = total // len(saved)
    states = {}
    for i, text in saved.items():
      states.update(pipelines.shard_states(text, list(range(i * k_old, (i + 1) * k_old))))
    _, mine = data_shards(config)
    if len(mine) > 1:  # `data_iterator` reads several shards side by side (a `ShardsIterator`'s state)
      iterator.set_state(json.dumps({"shards": {str(s): states[s] for s in mine}}).encode())
    else:
      iterator.set_state(states[mine[0]].encode())
    log.info("data position of %d shards restored from a %d-process checkpoint", total, len(saved))
    return iterator
  log.warning("checkpoint %d was written by %d processes, this run has %d: without config.data_shards the "
              "data shards differ, so the data restarts (seed %d)", step, len(saved), jax.process_count(),
              config.seed + step)
  return data_iterator(task, config, config.seed + step)


def _estimate_norm(task: Task, config) -> dict:
  """Normalisation statistics from `stats_batches` batches; every process reads the same ones."""
  loader = task.loader(config.batch_size, config.seed + 1, shard_options=grain.NoSharding())
  it = iter(loader)
  batches = [task.adapt(next(it)) for _ in range(max(1, config.stats_batches))]
  return task.norm_stats(batches)


# ------------------------------------------------------------------------------------------ main loop


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Trains config.task for config.num_steps steps in `workdir` (resuming from its latest checkpoint).

  Writes workdir/checkpoints/<step>/{state,data}, workdir/tensorboard/events.* and workdir/metrics.jsonl.
  Returns the final train state (global jax.Arrays). A SIGTERM / SIGINT saves and returns early.
  Raises NonFiniteError at the first log or checkpoint step after a non-finite step (`check_finite`);
  nothing after the last finite checkpoint is saved as a checkpoint.
  """
  validate(config)
  workdir = pathlib.Path(workdir).absolute()
  check_workdir(config, workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  lead = jax.process_index() == 0
  if lead:
    checkpoint.save_config(workdir, config)

  mesh = parallel.make_mesh(config.mesh)
  if config.batch_size % mesh.size:
    raise ValueError(f"batch_size {config.batch_size} is not divisible by the {mesh.size} devices of "
                     f"the mesh {dict(mesh.shape)}")
  task = tasks.get_task(config)
  iterator = data_iterator(task, config, config.seed)  # checks the windows fit the clips
  prog = cached_build(task, config, mesh)

  mngr = checkpoint.manager(workdir, config.keep_checkpoints)
  latest = mngr.latest_step()
  if latest is not None:
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), prog.abstract,
                          prog.state_shardings)
    saved = checkpoint.saved_process_count(mngr, latest)
    if config.get("restore_data", True) and saved in (None, jax.process_count()):
      state, iterator = checkpoint.restore(mngr, target, iterator, latest)
    elif config.get("restore_data", True):  # orbax reshards the state; the data needs its shards mapped
      state, _ = checkpoint.restore(mngr, target, None, latest)
      iterator = _restore_data(task, config, mngr, latest, iterator)
    else:  # the records changed (a campaign that grew its data): a new data order, seeded by the step
      state, _ = checkpoint.restore(mngr, target, None, latest)
      iterator = data_iterator(task, config, config.seed + latest)
      log.info("data iterator restarted (config.restore_data=False, seed %d)", config.seed + latest)
    log.info("resumed from %s at step %d", mngr.directory, latest)
  else:
    norm = _estimate_norm(task, config)
    state = prog.compile_init()(prog.init_key, jax.device_put(norm, prog.replicated))
    state = task.initial_params(state, prog.state_shardings, load_weights=export.load_weights)
    if config.get("warm_start"):
      state = warm_start(task, config, state, prog.state_shardings)

  summary_fn = prog.summary
  evaluator = task.make_evaluator()
  writer = metrics.MetricWriter(workdir, enabled=lead)
  step = int(state["step"])
  frames = config.batch_size * task.frames_per_example()
  bar = tqdm(total=config.num_steps, initial=step, desc=config.task, unit="step",
             disable=not (lead and config.progress))
  history, t_last, step_last, start = [], time.perf_counter(), step, step
  batch, guard = None, prog.new_guard()
  if step < config.num_steps:
    first = task.adapt(next(iterator))
    _check_batch(first, prog.spec, process_count=jax.process_count())
    batch = parallel.global_batch(first, prog.batch_sharding)
  try:
    # An implicit device -> host transfer in the loop (a per-step sync) fails loudly; explicit
    # `jax.device_get` at log and checkpoint steps is the loop's only sync.
    with _StopFlag() as stop, jax.transfer_guard_device_to_host("disallow"):
      while step < config.num_steps:
        state, m, guard = prog.step(state, batch, guard)
        history.append(m)
        step += 1
        if step == start + 1:  # throughput excludes the first step's compile
          jax.block_until_ready(m)
          t_last, step_last = time.perf_counter(), step
        last = step == config.num_steps
        # Every process must stop at the same step: with several, they agree at log steps only.
        stopping = not last and (jax.process_count() == 1 or step % config.log_every == 0) and stop.agreed()
        if (step % config.checkpoint_every == 0 and not last) or stopping:
          check_finite(history, step, state, guard, workdir)  # never checkpoint a non-finite state
          with jax.transfer_guard("allow"):
            checkpoint.save(mngr, step, state, iterator)  # before the next batch is read: exact resume
        if stopping:
          log.warning("stopping at step %d on a signal (checkpoint saved)", step)
          bar.update()
          break
        if not last:  # host work for the next batch overlaps the device step
          batch_next = parallel.global_batch(task.adapt(next(iterator)), prog.batch_sharding)
        bar.update()
        if step % config.log_every == 0 or last:
          host = jax.device_get(history)
          now = time.perf_counter()
          check_finite(host, step, state, guard, workdir)
          scalars = {k: float(np.mean([h[k] for h in host])) for k in host[-1] if k not in LAST_VALUE}
          scalars.update({k: float(host[-1][k]) for k in ("param_norm", "learning_rate")})
          if step > step_last:  # (not on the first step alone: its time is the compile)
            scalars["steps_per_sec"] = (step - step_last) / (now - t_last)
            scalars["frames_per_sec"] = scalars["steps_per_sec"] * frames
          writer.write_scalars(step, scalars)
          bar.set_postfix(loss=f"{scalars['loss']:.4f}")
          history, t_last, step_last = [], now, step
        if summary_fn is not None and config.image_every and (step % config.image_every == 0 or last):
          images = task.summaries(jax.device_get(summary_fn(state, batch)))
          writer.write_images(step, images)
          t_last = time.perf_counter()  # not counted in the throughput
        if evaluator is not None and (step % config.evals.every == 0 or last):
          with jax.transfer_guard("allow"):
            scalars, images = evaluator.run(state)
          writer.write_scalars(step, scalars)
          writer.write_images(step, images)
          log.info("step %d evals: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in scalars.items()))
          t_last = time.perf_counter()
        if not last:
          batch = batch_next
    if mngr.latest_step() != step:  # the final checkpoint (the last step was checked when logged)
      checkpoint.save(mngr, step, state, iterator, force=True)
    mngr.wait_until_finished()
  finally:
    bar.close()
    writer.close()
    mngr.close()
  return state


def _check_batch(batch: dict, spec: dict, process_count: int) -> None:
  """The adapted batch must match the task's batch_spec (per-process rows); raises naming the keys."""
  want = {k: ((s.shape[0] // process_count,) + tuple(s.shape[1:])) for k, s in spec.items()}
  got = {k: tuple(np.shape(v)) for k, v in batch.items()}
  if got != want:
    diff = {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)}
    raise ValueError(f"the task's batch does not match its batch_spec: {diff} (got, expected); the records "
                     "may have been written with other crop sizes or keypoint counts than the config expects")


def check_finite(history: list[dict], step: int, state: dict, guard: dict, workdir: pathlib.Path) -> None:
  """Raises NonFiniteError if a step of `history` was not finite (`guard_nonfinite`).

  history: the metrics (on the device or the host) of the steps up to `step` since the last log step.
  Syncs with the device (one scalar when all is well). Before raising it saves the state, which the guard
  froze before the first non-finite step, and that step's batch to workdir/nonfinite_step_<state step>.
  """
  if bool(jax.device_get(history[-1]["finite"])):  # "finite" is sticky: the last step tells for all
    return
  host = jax.device_get(history)
  first = step - len(host) + 1
  i = next(i for i, h in enumerate(host) if not h["finite"])
  path = workdir / f"nonfinite_step_{first + i - 1}"  # the state's step: frozen before step first + i
  with jax.transfer_guard("allow"):
    checkpoint.save_aside(path / "state", state)
  if jax.process_index() == 0:
    np.savez(path / "batch.npz", **{k: np.asarray(jax.device_get(v)) for k, v in guard["batch"].items()
                                      if getattr(v, "is_fully_addressable", True)})
  raise NonFiniteError(f"loss or gradient became nan or inf at step {first + i} (of steps [{first}, {step}] "
                       f"since the last log): loss {float(host[i]['loss'])}, grad norm "
                       f"{float(host[i]['grad_norm'])}; the state before that step and its batch are in "
                       f"{path}")
