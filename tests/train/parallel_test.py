"""Mesh, FSDP rule, and a sharded step (data=4 x fsdp=2 on 8 forced CPU devices) equal to one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import ml_collections
import pytest
from jax.sharding import PartitionSpec as P

from tests.helpers import REPO, xla_flags
from train import parallel


def test_leaf_spec_rule():
  assert parallel.leaf_spec((64, 256), 2, 256) == P(None, "fsdp")  # largest axis
  assert parallel.leaf_spec((96, 5), 4, 256) == P("fsdp", None)
  assert parallel.leaf_spec((97, 5), 4, 256) == P()  # nothing divisible
  assert parallel.leaf_spec((64,), 2, 256) == P()  # below min_size
  assert parallel.leaf_spec((64, 256), 1, 256) == P()  # no fsdp axis


def test_mesh_shape():
  m = lambda d, f: ml_collections.ConfigDict({"data": d, "fsdp": f})
  assert parallel.mesh_shape(m(-1, 2), 8) == (4, 2)
  assert parallel.mesh_shape(m(2, -1), 8) == (2, 4)
  assert parallel.mesh_shape(m(-1, -1), 8) == (8, 1)
  with pytest.raises(ValueError):
    parallel.mesh_shape(m(-1, 3), 8)
  mesh = parallel.make_mesh(m(-1, 1))
  assert mesh.axis_names == ("data", "fsdp") and mesh.size == jax.device_count()


SCRIPT = textwrap.dedent("""
  import json, sys
  import jax, numpy as np
  from jax.sharding import PartitionSpec as P
  # One step per mesh: compiling fast beats running fast (as every test process compiles, tests/conftest.py).
  jax.config.update("jax_disable_most_optimizations", True)
  from train import checkpoint, trainer
  from train.configs import motion_face

  assert jax.device_count() == 8, jax.devices()
  data_dir, workdir = sys.argv[1], sys.argv[2]
  out = {}
  for name, (d, f) in {"sharded": (4, 2), "single": (1, 1)}.items():
    c = motion_face.get_config("tiny")
    c.update(data_dir=data_dir, num_steps=1, log_every=1, progress=False, batch_size=8)
    c.mesh.data, c.mesh.fsdp = d, f
    state = trainer.train_and_evaluate(c, f"{workdir}/{name}")
    specs = [x.sharding.spec for x in jax.tree.leaves(state["params"])]
    loss = json.loads(open(f"{workdir}/{name}/metrics.jsonl").read().splitlines()[-1])["loss"]
    out[name] = {"devices": len(jax.tree.leaves(state["params"])[0].sharding.device_set),
                 "fsdp_leaves": sum("fsdp" in tuple(s) for s in specs), "loss": loss}
  a = checkpoint.load_params(f"{workdir}/sharded", ema=False)["params"]
  b = checkpoint.load_params(f"{workdir}/single", ema=False)["params"]
  diffs = jax.tree.leaves(jax.tree.map(lambda x, y: float(np.abs(x - y).max()), a, b))
  moved = jax.tree.leaves(jax.tree.map(lambda x, y: float(np.abs(x - y).max()), a,
                                       checkpoint.load_params(f"{workdir}/single")["params"]))
  out["max_param_diff"], out["max_moved"] = max(diffs), max(moved)
  print("RESULT" + json.dumps(out))
""")


def test_sharded_step_matches_single_device(motion_records, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=8"),
             PYTHONPATH=str(REPO))
  proc = subprocess.run([sys.executable, "-c", SCRIPT, str(motion_records), str(tmp_path)], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-4000:]
  (line,) = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")]
  r = json.loads(line[len("RESULT"):])
  assert r["sharded"]["devices"] == 8 and r["single"]["devices"] == 1
  assert r["sharded"]["fsdp_leaves"] > 0 and r["single"]["fsdp_leaves"] == 0
  # Same loss; parameters after one AdamW step equal up to float32 reduction order. Adam's first update is
  # ~lr · sign(g), so a gradient that is ~0 in one run and ~1e-9 in the other could differ by up to lr
  # (1e-3 · warmup factor); the bound is 1e-5, far below one step's movement (checked > 1e-5).
  assert abs(r["sharded"]["loss"] - r["single"]["loss"]) < 1e-5 * max(1.0, abs(r["single"]["loss"]))
  assert r["max_param_diff"] < 1e-5, r
  assert r["max_moved"] > 1e-5, r


# ------------------------------------------------------------------ launch detection (faked environments)

SLURM_STEP = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "gpu[017-018]", "SLURM_NTASKS": "16",
              "SLURM_PROCID": "9", "SLURM_LOCALID": "1", "SLURM_STEP_NUM_NODES": "2"}


def test_detect_cluster_from_launcher_environments():
  assert parallel.detect_cluster({}) is None
  assert parallel.detect_cluster({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1"}) is None  # a 1-task job
  assert parallel.detect_cluster({"TPU_WORKER_HOSTNAMES": "t0", "TPU_WORKER_ID": "0"}) is None  # one host
  explicit = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
  assert parallel.detect_cluster(explicit) == parallel.Cluster("coordinator", 4, 3, "10.0.0.1:1234")
  # srun: every task of the step is one process; jax finds the coordinator from the node list.
  assert parallel.detect_cluster(SLURM_STEP) == parallel.Cluster("slurm", 16, 9, None)
  assert parallel.detect_cluster({"OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_RANK": "5"}) == \
      parallel.Cluster("mpi", 8, 5, None)
  # A TPU pod slice (v5e-32: 8 hosts), one process per host.
  tpu = {"TPU_WORKER_HOSTNAMES": ",".join(f"t1v-n-{i}" for i in range(8)), "TPU_WORKER_ID": "6"}
  assert parallel.detect_cluster(tpu) == parallel.Cluster("tpu", 8, 6, None)
  # The explicit variables win over a scheduler's (a job that launches its own processes).
  assert parallel.detect_cluster({**SLURM_STEP, **explicit}).kind == "coordinator"


@pytest.mark.parametrize("env, message", [
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_PROCESS_ID": "0"}, "JAX_NUM_PROCESSES"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, r"not in \[0"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"}, "integer"),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_PROCID": "0"}, "srun"),  # sbatch without srun
    ({"TPU_WORKER_HOSTNAMES": "a,b"}, "TPU_WORKER_ID"),
])
def test_half_described_launch_is_an_error(env, message):
  with pytest.raises(ValueError, match=message):
    parallel.detect_cluster(env)


def test_initialize_gets_the_detected_launch(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
  assert parallel.maybe_initialize_distributed(env={}) is None and not calls  # single process: no call
  assert parallel.maybe_initialize_distributed(heartbeat_timeout_s=7, env=SLURM_STEP).kind == "slurm"
  assert calls == [{"coordinator_address": None, "num_processes": 16, "process_id": 9,
                    "heartbeat_timeout_seconds": 7}]
