"""Two training processes on this machine (jax.distributed over localhost, CPU collectives over gloo) train
as one process does on the same global batch, read disjoint shards, exchange checkpoints with a 1-process
run in both directions, and a killed process stops the other with an error (`tests.train.multiprocess_worker`
is the processes' script)."""

from __future__ import annotations

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
import pytest

from tests import fixtures
from tests.helpers import REPO
from tests.train import multiprocess_worker as worker
from train import checkpoint, tasks, trainer

pytestmark = pytest.mark.xdist_group(__name__)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _params(workdir: pathlib.Path) -> dict:
  return checkpoint.load_params(workdir, ema=False)["params"]


def _max_diff(a, b) -> float:
  return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.abs(np.asarray(x) - np.asarray(y)).max()),
                                          a, b)))


def _losses(workdir: pathlib.Path) -> list[float]:
  return [json.loads(x)["loss"] for x in (workdir / "metrics.jsonl").read_text().splitlines()]


def _wait_for(paths, procs, logs, timeout: float) -> None:
  """Waits until every path exists; fails early with the logs if a process ends first."""
  end = time.monotonic() + timeout
  while not all(p.exists() for p in paths):
    for proc, log in zip(procs, logs, strict=True):
      if proc.poll() is not None:
        pytest.fail(f"process exited with {proc.returncode} before finishing:\n{log.read_text()[-4000:]}")
    if time.monotonic() > end:
      pytest.fail(f"timed out after {timeout} s waiting for {[str(p) for p in paths]}")
    time.sleep(0.5)


@pytest.mark.slow
def test_two_processes_train_as_one_and_fail_together(tmp_path):
  data = tmp_path / "data"
  fixtures.write_records(data, num_clips=2, num_frames=60, body_size=(96, 64), head_size=64)
  # 1. One process (this one) on the same global batches: 2 data shards read side by side.
  single = {}
  for name, config in worker.configs(str(data)).items():
    single[name] = []
    worker.train(config, tmp_path / f"one_{name}", single[name], worker.EXAMPLE_KEYS[name])
  shutil.copytree(tmp_path / "one_motion", tmp_path / "from_single")

  # 2. Two processes, one CPU device each, started as `train.main` would be by a launcher.
  port = _free_port()
  procs, logs = [], []
  try:
    for p in range(2):
      env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), JAX_NUM_PROCESSES="2",
                 JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_PROCESS_ID=str(p),
                 XLA_FLAGS="--xla_force_host_platform_device_count=1")
      logs.append(tmp_path / f"process_{p}.log")
      with open(logs[-1], "w") as f:
        procs.append(subprocess.Popen([sys.executable, "-m", "tests.train.multiprocess_worker", str(data),
                                       str(tmp_path)], env=env, cwd=REPO, stdout=f, stderr=subprocess.STDOUT))
    done = [tmp_path / "result_0.json", tmp_path / "result_1.json", tmp_path / "endless" / "metrics.jsonl"]
    _wait_for(done, procs, logs, timeout=400)
    # 3. Kill process 1 mid-training: process 0 must stop with an error, not wait in a collective.
    procs[1].send_signal(signal.SIGKILL)
    t_kill = time.monotonic()
    try:
      rc = procs[0].wait(timeout=worker.HEARTBEAT_S + 60)
    except subprocess.TimeoutExpired:
      pytest.fail(f"process 0 still running {worker.HEARTBEAT_S + 60} s after process 1 was killed")
    detected_s = time.monotonic() - t_kill
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  log0 = logs[0].read_text()
  assert rc != 0, log0[-3000:]
  assert "another task died" in log0 or "heartbeat timeout" in log0 or "Connection reset by peer" in log0, \
      log0[-3000:]
  print(f"process 1 killed: process 0 stopped {detected_s:.1f} s later (heartbeat {worker.HEARTBEAT_S} s)")

  results = [json.loads((tmp_path / f"result_{p}.json").read_text()) for p in range(2)]
  assert [(r["devices"], r["local_devices"]) for r in results] == [(2, 1), (2, 1)]
  for name in ("motion", "render"):
    mine = [r["examples"][name] for r in results]
    assert len(mine[0]) == len(mine[1]) == worker.STEPS
    # Each process reads only its shard: no example of one process is ever read by the other ...
    seen = [{tuple(x) for step in rows for x in step} for rows in mine]
    assert not seen[0] & seen[1], name
    # ... and together, in process order, they are the rows the single process trained on.
    assert [a + b for a, b in zip(*mine, strict=True)] == [[list(x) for x in s] for s in single[name]], name
    # Same losses and parameters up to float32 reduction order (tolerances below).
    two, one = tmp_path / f"two_{name}", tmp_path / f"one_{name}"
    np.testing.assert_allclose(_losses(two), _losses(one), rtol=1e-5, atol=1e-6)
    diff = _max_diff(_params(two), _params(one))
    moved = _max_diff(_params(one), checkpoint.load_params(one)["params"])  # raw vs EMA: training moved them
    print(f"{name}: 2 processes vs 1, {worker.STEPS} steps: max param diff {diff:.2e} ({moved:.2e} raw-EMA)")
    assert diff < 2e-5 and moved > 1e-4, (name, diff, moved)

  # 4. The 2-process checkpoint resumes in one process (orbax reshards the fsdp-split state; each data shard
  # continues where it was); the 1-process checkpoint resumed in 2 processes above. Both take step 4 on the
  # 4th global batch.
  shutil.copytree(tmp_path / "two_motion", tmp_path / "from_two")
  config = worker.configs(str(data))["motion"]
  config.num_steps = worker.STEPS + 1
  rows: list = []
  worker.train(config, tmp_path / "from_two", rows, worker.EXAMPLE_KEYS["motion"])
  it = trainer.data_iterator(tasks.get_task(config), config, config.seed)  # an uninterrupted run's batches
  keys = worker.EXAMPLE_KEYS["motion"]
  fourth = [next(it) for _ in range(worker.STEPS + 1)][-1]
  assert rows == [[tuple(int(fourth[k][i]) for k in keys) for i in range(config.batch_size)]]
  two_rows = [a + b for a, b in zip(*(r["examples"]["from_single"] for r in results), strict=True)]
  assert two_rows == [[list(x) for x in s] for s in rows]
  diff = _max_diff(_params(tmp_path / "from_two"), _params(tmp_path / "from_single"))
  assert checkpoint.load_params(tmp_path / "from_two")["step"] == worker.STEPS + 1
  assert diff < 2e-5, diff
