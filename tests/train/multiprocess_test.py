"""Two training processes on this machine (jax.distributed over localhost, CPU collectives over gloo) train
as one process does on the same global batch, read disjoint shards, exchange checkpoints with a 1-process
run in both directions, and a killed process stops the other with an error.

One pair of worker processes (`tests.train.multiprocess_worker`) serves every test of the module: the
module fixture starts them and the renderer's 1-process reference (a third process, two local devices),
runs the motion model's 1-process reference in this process meanwhile, kills one worker at the end and
resumes the 2-process checkpoint here; the tests check what it collected.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests import fixtures
from tests.helpers import REPO, xla_flags
from tests.train import multiprocess_worker as worker
from train import checkpoint, tasks, trainer

pytestmark = [pytest.mark.xdist_group(__name__), pytest.mark.slow]

TIMEOUT_S = 900  # for everything the workers do before the kill (on a loaded 2-core machine)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _state(workdir: pathlib.Path, step: int | None = None) -> dict:
  """A workdir's whole train state (optimiser included) as host arrays, whatever mesh wrote it."""
  directory = workdir.absolute() / checkpoint.CHECKPOINT_DIR
  with ocp.CheckpointManager(directory, item_handlers={"state": ocp.StandardCheckpointHandler()}) as mngr:
    step = mngr.latest_step() if step is None else step
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
                            mngr.item_metadata(step)["state"])
    return jax.device_get(mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))["state"])


def _flat(tree) -> np.ndarray:
  """The leaves of `tree` raveled into one float64 vector."""
  return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


def _metrics(workdir: pathlib.Path, key: str) -> list[float]:
  return [json.loads(x)[key] for x in (workdir / "metrics.jsonl").read_text().splitlines()]


@dataclasses.dataclass
class Runs:
  root: pathlib.Path
  single: dict  # {"motion" | "render": the rows of every 1-process batch}
  one_render: list  # the rows the renderer's 1-process reference (2 local devices) read
  results: list  # result_<p>.json of both workers
  detected_s: float  # from killing process 1 to process 0's exit
  rc0: int
  log0: str
  from_two_rows: list  # the rows the 1-process resume of the 2-process checkpoint read
  expected_next: list  # the rows of batch MOTION_STEPS + 1 of an uninterrupted 1-process run


def _wait_for(paths, procs, logs, timeout: float) -> None:
  """Waits until every path exists; fails early with the logs if a process ends first."""
  end = time.monotonic() + timeout
  while not all(p.exists() for p in paths):
    for proc, log in zip(procs, logs, strict=True):
      if proc.poll() is not None:
        pytest.fail(f"process exited with {proc.returncode} before finishing:\n{log.read_text()[-4000:]}")
    if time.monotonic() > end:
      pytest.fail(f"timed out after {timeout} s waiting for {[str(p) for p in paths]}")
    time.sleep(0.2)


def _rows(batch: dict, keys) -> list:
  return [tuple(int(batch[k][i]) for k in keys) for i in range(len(batch[keys[0]]))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
  root = tmp_path_factory.mktemp("multiprocess")
  data = root / "data"
  fixtures.write_records(data, num_clips=2, num_frames=60, body_size=(96, 64), head_size=64)
  # 1. Two processes, one CPU device each, started as `train.main` would be by a launcher.
  port = _free_port()
  procs, logs = [], []
  try:
    for p in range(2):
      env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), JAX_NUM_PROCESSES="2",
                 JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_PROCESS_ID=str(p),
                 XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=1"),
                 JAX_COMPILATION_CACHE_DIR=str(root / "jax_cache"),
                 JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
      logs.append(root / f"process_{p}.log")
      with open(logs[-1], "w") as f:
        procs.append(subprocess.Popen([sys.executable, "-m", "tests.train.multiprocess_worker", str(data),
                                       str(root)], env=env, cwd=REPO, stdout=f, stderr=subprocess.STDOUT))
    # The renderer's 1-process reference: one process, the same data-parallel mesh over 2 local devices.
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
               XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=2"),
               JAX_COMPILATION_CACHE_DIR=str(root / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    one_log = root / "one_process.log"
    with open(one_log, "w") as f:
      procs.append(subprocess.Popen([sys.executable, "-m", "tests.train.multiprocess_worker", "--one-process",
                                     str(data), str(root)], env=env, cwd=REPO, stdout=f,
                                    stderr=subprocess.STDOUT))
    # 2. Meanwhile, the motion model's 1-process reference (one device) on the same global batches: 2 data
    # shards read side by side. The workers resume the motion checkpoint once READY is there.
    single = {}
    configs = worker.configs(str(data))
    single["motion"] = []
    worker.train(configs["motion"], root / "one_motion", single["motion"], worker.EXAMPLE_KEYS["motion"])
    shutil.copytree(root / "one_motion", root / "from_single")
    (root / "from_single" / "READY").touch()
    render = configs["render"]
    it = trainer.data_iterator(tasks.get_task(render), render, render.seed)
    single["render"] = [_rows(next(it), worker.EXAMPLE_KEYS["render"]) for _ in range(worker.RENDER_STEPS)]
    _wait_for([root / "result_one.json"], procs[2:], [one_log], timeout=TIMEOUT_S)
    done = [root / "result_0.json", root / "result_1.json", root / "endless" / "metrics.jsonl"]
    _wait_for(done, procs[:2], logs, timeout=TIMEOUT_S)
    # 3. Kill process 1 mid-training: process 0 must stop with an error, not wait in a collective.
    procs[1].send_signal(signal.SIGKILL)
    t_kill = time.monotonic()
    try:
      rc0 = procs[0].wait(timeout=worker.HEARTBEAT_S + 60)
    except subprocess.TimeoutExpired:
      pytest.fail(f"process 0 still running {worker.HEARTBEAT_S + 60} s after process 1 was killed")
    detected_s = time.monotonic() - t_kill
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  results = [json.loads((root / f"result_{p}.json").read_text()) for p in range(2)]

  # 4. The 2-process checkpoint resumes in one process (orbax gathers the fsdp-split state; each data shard
  # continues where it was) for one more step; and the batch an uninterrupted 1-process run reads there.
  shutil.copytree(root / "two_motion", root / "from_two")
  config = worker.configs(str(data))["motion"]
  config.num_steps = worker.MOTION_STEPS + 1
  from_two: list = []
  keys = worker.EXAMPLE_KEYS["motion"]
  worker.train(config, root / "from_two", from_two, keys)
  it = trainer.data_iterator(tasks.get_task(config), config, config.seed)
  expected = _rows([next(it) for _ in range(worker.MOTION_STEPS + 1)][-1], keys)
  one_render = json.loads((root / "result_one.json").read_text())["render"]
  return Runs(root, single, [[tuple(x) for x in step] for step in one_render], results, detected_s, rc0,
              logs[0].read_text(), from_two, expected)


def _two(runs: Runs, name: str) -> list:
  """The global batches of the 2-process run: both processes' rows, in process order."""
  mine = [r["examples"][name] for r in runs.results]
  return [[tuple(x) for x in a + b] for a, b in zip(*mine, strict=True)]


def test_every_process_reads_only_its_shard(runs):
  assert [(r["devices"], r["local_devices"]) for r in runs.results] == [(2, 1), (2, 1)]
  for name, steps in (("motion", worker.MOTION_STEPS), ("render", worker.RENDER_STEPS)):
    mine = [r["examples"][name] for r in runs.results]
    assert len(mine[0]) == len(mine[1]) == steps, name
    # No record read by one process is ever read by the other ...
    k = worker.RECORD_KEYS[name]
    seen = [{tuple(x[:k]) for step in rows for x in step} for rows in mine]
    assert seen[0] and seen[1] and not seen[0] & seen[1], name
    # ... and together, in process order, they are the rows the single process trained on.
    assert _two(runs, name) == runs.single[name], name


def test_motion_two_processes_equal_one(runs):
  """motion_face:tiny, state split over both processes (fsdp=2): losses and every parameter as in one
  process up to float32 reduction order (measured: 1.6e-7; the tolerance 2e-5 is 2 % of the learning
  rate, the most one Adam step moves a parameter)."""
  two, one = runs.root / "two_motion", runs.root / "one_motion"
  np.testing.assert_allclose(_metrics(two, "loss"), _metrics(one, "loss"), rtol=1e-5, atol=1e-6)
  a, b = _state(two), _state(one)
  diff = np.abs(_flat(a["params"]) - _flat(b["params"])).max()
  moved = np.abs(_flat(b["params"]) - _flat(b["ema"])).max()  # raw vs EMA: training moved them
  print(f"motion: 2 processes vs 1, {worker.MOTION_STEPS} steps: max param diff {diff:.2e} "
        f"(raw - EMA {moved:.2e})")
  assert diff < 2e-5 and moved > 1e-4, (diff, moved)


def test_render_two_processes_equal_one(runs):
  """render_head512:tiny, data-parallel over both processes (data=2), 2 steps: every array of the train
  state (generator and discriminator parameters, both optimisers' states, BatchNorm statistics, EMA) equals
  the 1-process run's on the same global batch and mesh over 2 local devices: measured bit for bit (max
  difference 0.0); tolerance 1e-7. On 1 device instead, the same 4 rows summed in one reduction move
  Adam's steps on near-zero gradients: up to 5e-4 (measured), about a learning rate."""
  two = runs.root / "two_render"
  steps = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in steps] == list(range(1, worker.RENDER_STEPS + 1))
  for r in steps:
    assert np.isfinite(r["loss"]) and np.isfinite(r["disc_loss"]) and r["grad_norm"] > 0, r
  one = runs.root / "one_render"
  assert runs.one_render == runs.single["render"]  # the same rows, in one process
  np.testing.assert_allclose(_metrics(two, "loss"), _metrics(one, "loss"), rtol=1e-7)
  np.testing.assert_allclose(_metrics(two, "disc_loss"), _metrics(one, "disc_loss"), rtol=1e-7)
  a, b = _state(two), _state(one)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  diff = np.abs(_flat(a) - _flat(b)).max()
  moved = np.abs(_flat(a["gen"]["params"]) - _flat(a["ema"])).max()  # raw vs EMA: training moved them
  print(f"render: 2 processes vs 1 (2 local devices), {worker.RENDER_STEPS} steps: max state diff {diff:.2e} "
        f"(raw - EMA {moved:.2e})")
  assert int(a["step"]) == worker.RENDER_STEPS and diff <= 1e-7 and moved > 0, (diff, moved)


def test_one_process_checkpoint_resumes_in_two(runs):
  """The 1-process motion checkpoint at step MOTION_STEPS, resumed by both workers: step MOTION_STEPS + 1
  reads the batch an uninterrupted run reads there, split between the processes."""
  assert _two(runs, "from_single") == [runs.expected_next]
  assert checkpoint.load_params(runs.root / "from_single")["step"] == worker.MOTION_STEPS + 1


def test_two_process_checkpoint_resumes_in_one(runs):
  """The 2-process (fsdp-split) motion checkpoint resumed in one process: same next batch, and the same
  state as the 1-process checkpoint resumed in two processes."""
  assert runs.from_two_rows == [runs.expected_next]
  assert checkpoint.load_params(runs.root / "from_two")["step"] == worker.MOTION_STEPS + 1
  a, b = _state(runs.root / "from_two"), _state(runs.root / "from_single")
  diff = np.abs(_flat(a["params"]) - _flat(b["params"])).max()
  assert diff < 2e-5, diff


def test_killed_process_stops_the_other(runs):
  print(f"process 1 killed: process 0 stopped {runs.detected_s:.1f} s later "
        f"(heartbeat {worker.HEARTBEAT_S} s)")
  assert runs.rc0 != 0, runs.log0[-3000:]
  assert any(m in runs.log0 for m in ("another task died", "heartbeat timeout", "Connection reset by peer",
                                      "detected fatal errors")), runs.log0[-3000:]
  assert runs.detected_s < worker.HEARTBEAT_S + 30, runs.detected_s
