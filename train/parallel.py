"""Multi-host start-up, the ("data", "fsdp") device mesh, state / batch shardings and global batches.

Global arrays + `jax.jit` with shardings (no pmap): every state leaf gets a `NamedSharding` from one
logical rule (`param_shardings`), the batch is split along its leading axis over both mesh axes, and each
process feeds only its own rows (`global_batch`).
"""

from __future__ import annotations

import logging
import os

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

log = logging.getLogger(__name__)

AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")


def _cluster_detected() -> str | None:
  """Which multi-process launcher we run under, or None for a plain single-process run.

  Only these are treated as clusters (`jax.distributed.initialize()` auto-detects each of them):
  - SLURM: SLURM_JOB_ID set and SLURM_NTASKS > 1 (an `srun` with several tasks);
  - explicit: JAX_COORDINATOR_ADDRESS set (with JAX_NUM_PROCESSES / JAX_PROCESS_ID);
  - Open MPI: OMPI_COMM_WORLD_SIZE > 1;
  - Cloud TPU pods: TPU_WORKER_HOSTNAMES lists more than one host.
  """
  env = os.environ
  if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", "1")) > 1:
    return "slurm"
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return "coordinator"
  if int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return "mpi"
  if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
    return "tpu"
  return None


def maybe_initialize_distributed() -> bool:
  """Calls `jax.distributed.initialize()` when a cluster launcher is detected (see `_cluster_detected`).

  Must run before anything touches the JAX backend. Returns whether it initialised.
  """
  kind = _cluster_detected()
  if kind is None:
    return False
  log.info("multi-process launch detected (%s): jax.distributed.initialize()", kind)
  jax.distributed.initialize()
  log.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
           jax.local_device_count(), jax.device_count())
  return True


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


def param_shardings(shapes, mesh: Mesh, min_size: int = 2 ** 14):
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
