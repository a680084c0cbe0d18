"""The training loop: `train_and_evaluate(config, workdir)` for any task in `train.tasks`.

Order of work: validate the config and the records (no compile before that) -> mesh -> task and data
iterator -> abstract state (`jax.eval_shape`) and its shardings -> restore the latest checkpoint (state
and iterator) or estimate the normalisation statistics and run the sharded init -> jitted step (state
donated) -> loop with metrics, checkpoints, a progress bar, SIGTERM / SIGINT handling and a non-finite
guard.

Train state: {"params", "opt_state", "ema", "step" () int32, "norm" (task statistics, not trained)}.
The step draws its key as fold_in(key, step), so a resumed run repeats the RNG of an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import pathlib
import signal
import threading
import time

import grain.python as grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from chatanyone_jax.motion.train_step import update_step
from chatanyone_jax.render.train_step import INIT_COMPILER_OPTIONS
from data import records
from train import checkpoint, metrics, parallel, tasks

log = logging.getLogger(__name__)


class NonFiniteError(FloatingPointError):
  pass


LAST_VALUE = ("param_norm", "learning_rate", "finite")  # logged as the last step's value (or not at all)


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


def check_workdir(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
  """Raises if `workdir` holds a run of another task or model (its config.json differs in those keys)."""
  if not (workdir / checkpoint.CONFIG_FILE).is_file():
    return
  old = checkpoint.load_config(workdir)
  new = ml_collections.ConfigDict(json.loads(config.to_json_best_effort()))
  for key in ARCHITECTURE_KEYS:
    a, b = old.get(key), new.get(key)
    a = a.to_dict() if isinstance(a, ml_collections.ConfigDict) else a
    b = b.to_dict() if isinstance(b, ml_collections.ConfigDict) else b
    if a != b:
      raise ValueError(f"{workdir} holds a run with config.{key}={a!r}, but this config has {b!r}; use a new "
                       f"--workdir, or the config that run was started with")


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup to learning_rate over warmup_steps, cosine decay to end_lr_factor · lr at
  lr_decay_steps (default num_steps)."""
  total = config.lr_decay_steps or config.num_steps
  warmup = max(0, min(config.warmup_steps, total - 1))
  return optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup, max(total, warmup + 1),
                                            config.learning_rate * config.end_lr_factor)


def optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
  adam = optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay)
  return optax.chain(optax.clip_by_global_norm(config.grad_clip), adam) if config.grad_clip > 0 else adam


def make_init(task: tasks.Task, tx: optax.GradientTransformation, spec: dict):
  def init(rng: jax.Array, norm: dict) -> dict:
    params = task.init_params(rng, spec)
    return {"params": params, "opt_state": tx.init(params), "ema": jax.tree.map(jnp.array, params),
            "step": jnp.zeros((), jnp.int32), "norm": norm}
  return init


def make_step(task: tasks.Task, tx: optax.GradientTransformation, schedule: optax.Schedule, ema_decay: float,
              key: jax.Array):
  """step(state, batch) -> (state, metrics), un-jitted (the trainer jits it with shardings).

  `chatanyone_jax.motion.train_step.update_step` with the task loss reading state["norm"], plus a guard:
  a non-finite loss or gradient norm leaves the whole state unchanged (so the offending state can be
  saved) and reports metrics["finite"] = False.
  """

  def step(state: dict, batch: dict) -> tuple[dict, dict]:
    loss_fn = lambda params, b, rng: task.loss(params, b, rng, state["norm"])
    new, out = update_step(state, batch, loss_fn, tx, ema_decay, key)
    finite = jnp.isfinite(out["loss"]) & jnp.isfinite(out["grad_norm"])
    new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
    return new, {**out, "learning_rate": schedule(state["step"]), "finite": finite}

  return step


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
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.array(self.set))))


def _estimate_norm(task: tasks.Task, config) -> dict:
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
  Raises NonFiniteError after saving the state that gave a non-finite loss to workdir/nonfinite_step_<n>.
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
  local_batch = config.batch_size // jax.process_count()
  iterator = iter(task.loader(local_batch, config.seed))  # checks the windows fit the clips

  schedule = learning_rate_schedule(config)
  tx = optimizer(config, schedule)
  key = jax.random.key(config.seed)
  init_key, step_key = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
  spec = task.batch_spec(config.batch_size)
  init = task.make_init(tx, spec, schedule)
  abstract = jax.eval_shape(init, init_key, task.norm_spec())
  state_sh = parallel.param_shardings(abstract, mesh, config.sharding.fsdp_min_size)
  batch_sh = parallel.batch_sharding(mesh)
  repl = parallel.replicated(mesh)

  mngr = checkpoint.manager(workdir, config.keep_checkpoints)
  latest = mngr.latest_step()
  if latest is not None:
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh)
    state, iterator = checkpoint.restore(mngr, target, iterator, latest)
    log.info("resumed from %s at step %d", mngr.directory, latest)
  else:
    norm = _estimate_norm(task, config)
    state = _compile_init(init, state_sh)(init_key, jax.device_put(norm, repl))
    state = task.initial_params(state, state_sh)

  train_step = jax.jit(task.make_step(tx, schedule, config.ema_decay, step_key),
                       in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, repl), donate_argnums=0)
  summary_fn = task.make_summary()
  if summary_fn is not None:
    summary_fn = jax.jit(summary_fn, in_shardings=(state_sh, batch_sh), out_shardings=repl)
  writer = metrics.MetricWriter(workdir, enabled=lead)
  step = int(state["step"])
  frames = config.batch_size * task.frames_per_example()
  bar = tqdm(total=config.num_steps, initial=step, desc=config.task, unit="step",
             disable=not (lead and config.progress))
  history, t_last, step_last, start = [], time.perf_counter(), step, step
  batch = None
  if step < config.num_steps:
    first = task.adapt(next(iterator))
    _check_batch(first, spec, process_count=jax.process_count())
    batch = parallel.global_batch(first, batch_sh)
  try:
    with _StopFlag() as stop:
      while step < config.num_steps:
        state, m = train_step(state, batch)
        history.append(m)
        step += 1
        if step == start + 1:  # throughput excludes the first step's compile
          jax.block_until_ready(m)
          t_last, step_last = time.perf_counter(), step
        last = step == config.num_steps
        # Every process must stop at the same step: with several, they agree at log steps only.
        stopping = not last and (jax.process_count() == 1 or step % config.log_every == 0) and stop.agreed()
        if (step % config.checkpoint_every == 0 and not last) or stopping:
          _check_finite(m, state, batch, step, workdir)
          checkpoint.save(mngr, step, state, iterator)  # before the next batch is read: exact resume
        if stopping:
          log.warning("stopping at step %d on a signal (checkpoint saved)", step)
          bar.update()
          break
        if not last:  # host work for the next batch overlaps the device step
          batch_next = parallel.global_batch(task.adapt(next(iterator)), batch_sh)
        _check_finite(m, state, batch, step, workdir)
        bar.update()
        if step % config.log_every == 0 or last:
          now = time.perf_counter()
          host = jax.device_get(history)
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
        if not last:
          batch = batch_next
    if mngr.latest_step() != step:  # the final checkpoint
      checkpoint.save(mngr, step, state, iterator, force=True)
    mngr.wait_until_finished()
  finally:
    bar.close()
    writer.close()
    mngr.close()
  return state


def _compile_init(init, shardings):
  """The sharded initialiser, jitted. On CPU without XLA's backend optimisations: init graphs (threefry
  for every parameter) otherwise take minutes to compile there, and they run once."""
  lowered = jax.jit(init, out_shardings=shardings).lower
  options = INIT_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None

  def run(*args):
    return lowered(*args).compile(options)(*args)

  return run


def _check_batch(batch: dict, spec: dict, process_count: int) -> None:
  """The adapted batch must match the task's batch_spec (per-process rows); raises naming the keys."""
  want = {k: ((s.shape[0] // process_count,) + tuple(s.shape[1:])) for k, s in spec.items()}
  got = {k: tuple(np.shape(v)) for k, v in batch.items()}
  if got != want:
    diff = {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)}
    raise ValueError(f"the task's batch does not match its batch_spec: {diff} (got, expected); the records "
                     "may have been written with other crop sizes or keypoint counts than the config expects")


def _check_finite(m: dict, state: dict, batch: dict, step: int, workdir: pathlib.Path) -> None:
  """Raises NonFiniteError (after saving the unchanged state and the batch) if the step was not finite."""
  if bool(m["finite"]):
    return
  bad = step - 1  # the step guard left the state at the step that failed
  path = workdir / f"nonfinite_step_{bad}"
  checkpoint.save_aside(path / "state", state)
  if jax.process_index() == 0:
    np.savez(path / "batch.npz", **{k: np.asarray(jax.device_get(v)) for k, v in batch.items()
                                      if getattr(v, "is_fully_addressable", True)})
  raise NonFiniteError(f"non-finite loss {float(m['loss'])} or grad norm {float(m['grad_norm'])} at step "
                       f"{bad}; "
                       f"the state before that step and its batch are in {path}")
