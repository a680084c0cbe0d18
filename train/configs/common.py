"""Settings shared by every training config (`get_config` of each experiment starts from `base_config`)."""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from chatanyone_jax.tree_math import SMALL_LEAF


def base_config() -> ml_collections.ConfigDict:
  """Optimisation, logging, checkpointing, mesh and data settings; the caller sets task and model."""
  c = ml_collections.ConfigDict()
  c.task = ""  # a name in train.tasks.TASKS
  # Required: the output folder of `python -m data.preprocess --videos DIR --out OUT` (or OUT/records).
  c.data_dir = config_dict.placeholder(str)
  c.split = "train"
  c.worker_count = 0  # grain worker processes (0 = in the training process)
  # Data shards (0: one per process). A fixed count, a multiple of every process count the run may use,
  # keeps the global batch and the data position the same when a run resumes on another number of hosts.
  c.data_shards = 0
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
  c.image_every = 1_000  # TensorBoard images (tasks with a summary: the renderers); 0 = never
  c.stats_batches = 16  # batches read (every process the same) to estimate the normalisation statistics
  # A fresh run may start from the weights of an export (`python -m train.export`) or workdir of the same
  # task and model (parameters, EMA, normalisation statistics; a fresh optimiser): how a campaign restarts
  # on a new machine from its committed export. warm_start_step: continue the step count (the schedules).
  c.warm_start = config_dict.placeholder(str)
  c.warm_start_step = True
  # Resuming restores the data iterator's position too; False keeps the trained state and reads the
  # (changed) data afresh, seeded by the step: for a campaign whose records grew between sessions.
  c.restore_data = True

  # Device mesh ("data", "fsdp"): -1 = all devices not taken by the other axis.
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
  # Logical sharding rule for every state leaf (params, optimizer moments, EMA): with fsdp > 1, a leaf of at
  # least `fsdp_min_size` elements is split along its largest axis divisible by the fsdp size, else it is
  # replicated. The batch is split along ("data", "fsdp") on its leading axis.
  c.sharding = ml_collections.ConfigDict({"fsdp_min_size": SMALL_LEAF})
  return c


def shrink_for_cpu(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The tiny / runlocal overrides shared by every config: a few seconds per step on a 2-core CPU."""
  c.batch_size = 8
  c.num_steps = 6
  c.warmup_steps = 2
  c.learning_rate = 1e-3
  c.log_every = 2
  c.image_every = 4
  c.checkpoint_every = 4
  c.keep_checkpoints = 2
  c.stats_batches = 2
  c.ema_decay = 0.9
  c.sharding.fsdp_min_size = 256
  return c


def render_config(preset: str, *, crop: str, region: str | None, face_refine: bool = False
                  ) -> ml_collections.ConfigDict:
  """A renderer / face-refine experiment (task "render", `train.render_task`) with LivePortrait's recipe:
  Adam(2e-4, b1 = 0.5), no gradient clipping, generator EMA."""
  c = base_config()
  c.task = "render"
  c.crop = crop
  c.region = region
  c.face_refine = face_refine
  c.max_gap = config_dict.placeholder(int)  # source frame at most this far from the driving one (None: any)
  c.model = ml_collections.ConfigDict({"preset": preset})
  # Held-out evaluation in the loop (`train.render_eval`): every N steps (0 = off) and at the end, the EMA
  # generator against copy-the-source on these records splits (build them with --split-file and
  # --heldout-tail; a split the records lack is skipped with a warning).
  c.evals = ml_collections.ConfigDict({"every": 0, "splits": ("heldout_frames", "validation"),
                                       "max_clips": 16, "frames_per_clip": 4, "batch_size": 8,
                                       "sheet_rows": 6})
  c.loss_weights = ml_collections.ConfigDict({})  # overrides of render.train_step.DEFAULT_LOSS_WEIGHTS
  # A torchvision VGG-19 state dict (.pth / .safetensors / .npz) for L_Per (and the region term); None:
  # discriminator feature matching and an L1 region term instead (no weights are downloaded).
  c.vgg_weights = config_dict.placeholder(str)
  # A converted LivePortrait checkpoint (python -m train.convert liveportrait --out DIR), or an export /
  # workdir of another renderer of this project (e.g. the head renderer for the face refine): arrays with
  # matching names and shapes start from it.
  c.init_from = config_dict.placeholder(str)
  # With config.warm_start: G's sub-pixel heads (conv_img, conv_alpha) start projected onto ICNR (each
  # output's four sub-pixel kernels replaced by their mean, `ops.icnr_project`): a fine-tune that removes
  # the period-2 checkerboard of a generator trained from independently drawn sub-kernels.
  c.warm_start_icnr = False
  c.batch_size = 32  # global (the paper: 8 A100)
  c.num_steps = 300_000
  c.learning_rate = 2e-4
  c.disc_lr_factor = 1.0  # the discriminator's learning rate relative to the generator's
  c.b1 = 0.5
  c.grad_clip = 0.0
  c.ema_decay = 0.999
  c.checkpoint_every = 5_000
  c.image_every = 2_000
  c.stats_batches = 1  # nothing to normalise; one batch read
  return c


def shrink_render_for_cpu(c: ml_collections.ConfigDict, preset: str) -> ml_collections.ConfigDict:
  shrink_for_cpu(c)
  c.model.preset = preset
  c.batch_size = 4
  c.learning_rate = 1e-3
  c.stats_batches = 1
  return c


def _cpu_campaign(c: ml_collections.ConfigDict, batch_size: int, checkpoint_every: int) -> None:
  """What every CPU training campaign (hours on 2 cores, stopped and resumed) sets."""
  c.batch_size = batch_size
  c.num_steps = 200_000  # a campaign is stopped and resumed; lr_decay_steps fixes the schedule's length
  c.lr_decay_steps = 200_000
  c.warmup_steps = 500
  c.learning_rate = 2e-4
  c.log_every = 50
  c.image_every = 2_000
  c.checkpoint_every = checkpoint_every  # every few minutes
  c.keep_checkpoints = 2
  c.worker_count = 1  # decoding in a worker process keeps the step, not the data, the cost
  c.sharding.fsdp_min_size = 2 ** 12


def small_render_for_cpu(c: ml_collections.ConfigDict, preset: str) -> ml_collections.ConfigDict:
  """A renderer CPU campaign with a `render.presets` small_* preset: batch 4, about one step per second,
  held-out evaluation every 2,000 steps; train on the people of `data/splits/people.tsv`."""
  c.model.preset = preset
  _cpu_campaign(c, batch_size=4, checkpoint_every=250)
  c.evals.every = 2_000
  return c


def small_motion_for_cpu(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A stage-1 CPU campaign (the caller names the model's small variant): the full window and history,
  batch 32; train on the people of `data/splits/people.tsv`."""
  _cpu_campaign(c, batch_size=32, checkpoint_every=500)
  return c
