"""Multi-host start-up, the ("data", "fsdp") device mesh, state / batch shardings and global batches.

Global arrays + `jax.jit` with shardings (no pmap): every state leaf gets a `NamedSharding` from one
logical rule (`param_shardings`), the batch is split along its leading axis over both mesh axes, and each
process feeds only its own rows (`global_batch`).

Start-up (`maybe_initialize_distributed`, called by `train.main` before anything touches a backend): the
same command runs as one process, as N processes on one machine (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID), as one task per GPU or host under SLURM (`srun`), under Open MPI, or on every host of a
Cloud TPU pod slice; `detect_cluster` reads which from the environment. A process that dies (or stops
sending heartbeats for `heartbeat_timeout_s`) ends every other process with an error naming the dead
task, instead of leaving them waiting in a collective.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from chatanyone_jax.tree_math import SMALL_LEAF

log = logging.getLogger(__name__)

AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")
# Seconds without a heartbeat after which the coordination service declares a process dead and stops the
# others (jax's default is 100 s).
HEARTBEAT_TIMEOUT_S = 100
# Variables `srun` sets for each task of a job step; jax derives the coordinator (the step's first node)
# from them. sbatch alone sets SLURM_JOB_ID but not the step variables.
SLURM_STEP_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
                   "SLURM_STEP_NUM_NODES")


@dataclasses.dataclass(frozen=True)
class Cluster:
  """A multi-process launch read from the environment (`detect_cluster`).

  kind: "coordinator" (explicit JAX_* variables), "slurm", "mpi" or "tpu". coordinator_address: host:port
  of process 0, or None where jax derives it itself (SLURM: the step's first node, Open MPI: its
  HNP URI, TPU: worker 0).
  """

  kind: str
  num_processes: int
  process_id: int
  coordinator_address: str | None = None


def _int(env: Mapping[str, str], name: str) -> int:
  try:
    return int(env[name])
  except (KeyError, ValueError):
    raise ValueError(f"environment variable {name} must be an integer, got {env.get(name)!r}") from None


def detect_cluster(env: Mapping[str, str] | None = None) -> Cluster | None:
  """Which multi-process launch this process is part of, or None for a plain single-process run.

  In order (the first that applies):
  - explicit: JAX_COORDINATOR_ADDRESS (host:port of process 0) with JAX_NUM_PROCESSES and JAX_PROCESS_ID;
  - SLURM: an `srun` step of more than one task (SLURM_NTASKS > 1; SLURM_PROCID is this task);
  - Open MPI: OMPI_COMM_WORLD_SIZE > 1 (`mpirun`);
  - Cloud TPU pod slice: TPU_WORKER_HOSTNAMES lists more than one host (TPU_WORKER_ID is this one).
  Raises ValueError when a launch is half-described (e.g. SLURM_NTASKS > 1 under sbatch without srun).
  """
  env = os.environ if env is None else env
  if env.get("JAX_COORDINATOR_ADDRESS"):
    missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if k not in env]
    if missing:
      raise ValueError(f"JAX_COORDINATOR_ADDRESS is set but {' and '.join(missing)} not: set all three "
                       "(the same address and count in every process, ids 0 .. count - 1)")
    n, i = _int(env, "JAX_NUM_PROCESSES"), _int(env, "JAX_PROCESS_ID")
    if not 0 <= i < n:
      raise ValueError(f"JAX_PROCESS_ID={i} is not in [0, JAX_NUM_PROCESSES={n})")
    return Cluster("coordinator", n, i, env["JAX_COORDINATOR_ADDRESS"])
  if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", "1")) > 1:
    missing = [k for k in SLURM_STEP_VARS if k not in env]
    if missing:
      raise ValueError(f"SLURM job with SLURM_NTASKS={env['SLURM_NTASKS']} but {', '.join(missing)} unset: "
                       "start the training with `srun python -m train.main ...` (one task per process)")
    return Cluster("slurm", _int(env, "SLURM_NTASKS"), _int(env, "SLURM_PROCID"))
  if int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return Cluster("mpi", _int(env, "OMPI_COMM_WORLD_SIZE"), _int(env, "OMPI_COMM_WORLD_RANK"))
  hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
  if len(hosts) > 1:
    if "TPU_WORKER_ID" not in env:
      raise ValueError("TPU_WORKER_HOSTNAMES lists several hosts but TPU_WORKER_ID is unset")
    return Cluster("tpu", len(hosts), _int(env, "TPU_WORKER_ID"))
  return None


def maybe_initialize_distributed(heartbeat_timeout_s: int = HEARTBEAT_TIMEOUT_S,
                                 env: Mapping[str, str] | None = None) -> Cluster | None:
  """`jax.distributed.initialize` for the launch `detect_cluster` finds; returns it (None: single process).

  Must run before anything touches the JAX backend. On CPU the processes' collectives go over gloo (TCP).
  heartbeat_timeout_s: how long a silent process may take before every other one is stopped with an
  error ("Terminating process because the JAX distributed service detected fatal errors").
  """
  cluster = detect_cluster(env)
  if cluster is None:
    return None
  log.info("multi-process launch (%s): process %d of %d, coordinator %s", cluster.kind, cluster.process_id,
           cluster.num_processes, cluster.coordinator_address or "from the environment")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # only used by CPU backends
  jax.distributed.initialize(coordinator_address=cluster.coordinator_address,
                             num_processes=cluster.num_processes, process_id=cluster.process_id,
                             heartbeat_timeout_seconds=heartbeat_timeout_s)
  log.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
           jax.local_device_count(), jax.device_count())
  return cluster


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int]:
  """(data, fsdp) sizes; -1 takes the devices left by the other axis (both -1: all on data)."""
  data, fsdp = int(mesh_config.data), int(mesh_config.fsdp)
  if data == -1 and fsdp == -1:
    fsdp = 1
  if data == -1:
    if num_devices % fsdp:
      raise ValueError(f"mesh.fsdp={fsdp} does not divide the {num_devices} devices")
    data = num_devices // fsdp
  elif fsdp == -1:
    if num_devices % data:
      raise ValueError(f"mesh.data={data} does not divide the {num_devices} devices")
    fsdp = num_devices // data
  if data < 1 or fsdp < 1 or data * fsdp > num_devices:
    raise ValueError(f"mesh data={data} x fsdp={fsdp} needs {data * fsdp} devices, have {num_devices}")
  return data, fsdp


def make_mesh(mesh_config: ml_collections.ConfigDict, devices=None) -> Mesh:
  """The ("data", "fsdp") mesh.

  With one process a mesh smaller than the device count uses the first devices (handy for comparing a
  sharded run with a one-device run); with several processes it must cover every device.
  """
  devices = list(jax.devices() if devices is None else devices)
  data, fsdp = mesh_shape(mesh_config, len(devices))
  n = data * fsdp
  if n < len(devices):
    if jax.process_count() > 1:
      raise ValueError(f"mesh data={data} x fsdp={fsdp} must cover all {len(devices)} devices "
                       "in a multi-process run")
    devices = devices[:n]
  # Auto axes: XLA propagates the shardings given at the jit boundary (jax.make_mesh defaults to Explicit).
  auto = (jax.sharding.AxisType.Auto,) * len(AXES)
  return jax.make_mesh((data, fsdp), AXES, axis_types=auto, devices=devices)


def leaf_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> P:
  """The FSDP rule for one array: split its largest axis divisible by `fsdp` along "fsdp", or replicate.

  Leaves smaller than `min_size` elements (biases, norms, scalars) stay replicated: splitting them saves
  no memory and costs a gather.
  """
  if fsdp <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):  # largest first, ties: first axis
    if shape[axis] % fsdp == 0:
      spec = [None] * len(shape)
      spec[axis] = "fsdp"
      return P(*spec)
  return P()


def param_shardings(shapes, mesh: Mesh, min_size: int = SMALL_LEAF):
  """NamedShardings for a pytree of arrays / ShapeDtypeStructs (a params tree or a whole train state)."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(lambda s: NamedSharding(mesh, leaf_spec(tuple(s.shape), fsdp, min_size)), shapes)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis over ("data", "fsdp"); other axes whole (`P(axes)` applies to any rank)."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: dict, sharding: NamedSharding) -> dict:
  """This process's rows (numpy) -> global jax.Arrays split along the batch axis.

  Every process holds batch_size / process_count rows; the global leading size is that times the
  process count.
  """
  n = jax.process_count()

  def one(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, x, (x.shape[0] * n,) + x.shape[1:])

  return jax.tree.map(one, local_batch)
