"""Settings shared by every training config (`get_config` of each experiment starts from `base_config`)."""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def base_config() -> ml_collections.ConfigDict:
  """Optimisation, logging, checkpointing, mesh and data settings; the caller sets task and model."""
  c = ml_collections.ConfigDict()
  c.task = ""  # name in train.tasks.TASKS
  # Required: the output folder of `python -m data.preprocess --videos DIR --out OUT` (or OUT/records).
  c.data_dir = config_dict.placeholder(str)
  c.split = "train"
  c.worker_count = 0  # grain worker processes (0 = in the training process)
  c.seed = 0

  c.batch_size = 64  # global; divisible by the number of devices in the mesh
  c.num_steps = 200_000
  c.learning_rate = 1e-4  # peak, after a linear warmup, then cosine decay to end_lr_factor · peak
  c.warmup_steps = 1_000
  # Length of the cosine decay (None: num_steps); set it to extend or split a run without changing the
  # schedule (a run to num_steps=N then one to 2N with lr_decay_steps=2N equals one run to 2N).
  c.lr_decay_steps = config_dict.placeholder(int)
  c.end_lr_factor = 0.01
  c.weight_decay = 0.0  # AdamW decoupled weight decay
  c.b1, c.b2 = 0.9, 0.999
  c.grad_clip = 1.0  # global-norm clip (<= 0: off)
  c.ema_decay = 0.999

  c.log_every = 100
  c.checkpoint_every = 2_000
  c.keep_checkpoints = 3
  c.progress = True  # tqdm bar on process 0
  c.stats_batches = 16  # batches read (every process the same) to estimate the normalisation statistics

  # Device mesh ("data", "fsdp"): -1 = all devices not taken by the other axis.
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
  # Logical sharding rule for every state leaf (params, optimizer moments, EMA): with fsdp > 1, a leaf of at
  # least `fsdp_min_size` elements is split along its largest axis divisible by the fsdp size, else it is
  # replicated. The batch is split along ("data", "fsdp") on its leading axis.
  c.sharding = ml_collections.ConfigDict({"fsdp_min_size": 2 ** 14})
  return c


def shrink_for_cpu(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The tiny / runlocal overrides shared by every config: a few seconds per step on a 2-core CPU."""
  c.batch_size = 8
  c.num_steps = 6
  c.warmup_steps = 2
  c.learning_rate = 1e-3
  c.log_every = 2
  c.checkpoint_every = 4
  c.keep_checkpoints = 2
  c.stats_batches = 2
  c.ema_decay = 0.9
  c.sharding.fsdp_min_size = 256
  return c
