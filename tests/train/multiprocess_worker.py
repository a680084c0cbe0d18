"""One process of the 2-process training tests (`tests/train/multiprocess_test.py`); not a test module.

  python -m tests.train.multiprocess_worker DATA ROOT   # with JAX_COORDINATOR_ADDRESS / _NUM_PROCESSES /
                                                        # _PROCESS_ID set, as `train.main` would run
  python -m tests.train.multiprocess_worker --one-process DATA ROOT   # with 2 CPU devices (XLA_FLAGS)
Starts through `train.parallel.maybe_initialize_distributed` (the launcher's code path), then
1. trains the tiny motion config (parameters and optimiser state split over both processes, fsdp=2) for
   `MOTION_STEPS` steps and the tiny head renderer (data-parallel) for `RENDER_STEPS`, recording the rows
   each process reads;
2. waits for the test's 1-process motion run (ROOT/from_single/READY) and resumes it for one more step (a
   1-process checkpoint restored on 2 processes);
3. writes ROOT/result_<process>.json, then trains the motion config without end (ROOT/endless) until the
   test kills the other process.
With --one-process it is the renderer's 1-process reference instead: the same data-parallel run (data=2)
in one process over 2 local CPU devices (ROOT/one_render), so that the gradients are summed over the two
halves of the batch as across the processes (on one device the same 4 rows summed in another order move
Adam's steps on near-zero gradients by up to a learning rate).
Every program is compiled without most XLA optimisations; programs that come back (steps 2 and 3 run the
motion program of step 1 again) are read from the persistent compilation cache the test sets
(JAX_COMPILATION_CACHE_DIR).
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

import jax

from train import parallel

MOTION_STEPS = 3
RENDER_STEPS = 2
HEARTBEAT_S = 5
READY_TIMEOUT_S = 900
# The rows of a pipeline batch that name its examples: (clip, window start, reference start) of a motion
# window, (driving frame, source frame) of a render pair. The first RECORD_KEYS of them name the record a
# row was read from (the unit the data shards split).
EXAMPLE_KEYS = {"motion": ("clip_index", "start", "ref_start"), "render": ("driving_index", "source_index")}
RECORD_KEYS = {"motion": 2, "render": 1}


def configs(data_dir: str) -> dict:
  """The two tiny configs of the tests, the same in every process count: the global batch is the data of
  2 shards (`config.data_shards`), so 1 and 2 processes train on the same rows. The mesh is one device
  (the 1-process reference); `two_process_mesh` gives the 2-process one."""
  from train.configs import motion_face, render_head512

  m = motion_face.get_config("tiny")
  m.update(data_dir=data_dir, num_steps=MOTION_STEPS, log_every=1, checkpoint_every=1000, progress=False,
           batch_size=8, data_shards=2)
  r = render_head512.get_config("tiny")
  r.update(data_dir=data_dir, num_steps=RENDER_STEPS, log_every=1, checkpoint_every=1000, progress=False,
           batch_size=4, data_shards=2, image_every=0)
  for c in (m, r):
    c.mesh.data, c.mesh.fsdp = 1, 1
    # The schedule's length is part of the step program: fixed, the resumed runs (one step more) and the
    # endless one reuse the compiled motion step (the persistent cache) instead of compiling their own.
    c.lr_decay_steps = MOTION_STEPS + 1
  return {"motion": m, "render": r}


def two_process_mesh(name: str, config):
  """The motion state split over both processes (fsdp=2); the renderer data-parallel (data=2)."""
  config.mesh.data, config.mesh.fsdp = (1, 2) if name == "motion" else (2, 1)
  return config


def recording(examples: list, keys: tuple[str, ...]):
  """Wraps `trainer.data_iterator` so that every batch the trainer draws is noted in `examples`: one tuple
  of `keys` per row."""
  from train import trainer

  make = trainer.data_iterator

  class Recorder:
    def __init__(self, it):
      self.it = it

    def __iter__(self):
      return self

    def __next__(self):
      b = next(self.it)
      examples.append([tuple(int(b[k][i]) for k in keys) for i in range(len(b[keys[0]]))])
      return b

    def get_state(self):
      return self.it.get_state()

    def set_state(self, state):
      self.it.set_state(state)

  return lambda *a, **kw: Recorder(make(*a, **kw))


def train(config, workdir: pathlib.Path, examples: list | None = None, keys=()) -> None:
  """`trainer.train_and_evaluate`, noting the rows of every batch drawn in `examples`."""
  from train import trainer

  make = trainer.data_iterator
  if examples is not None:
    trainer.data_iterator = recording(examples, keys)
  try:
    trainer.train_and_evaluate(config, workdir)
  finally:
    trainer.data_iterator = make


def main(data_dir: str, root: str) -> None:
  root = pathlib.Path(root)
  cluster = parallel.maybe_initialize_distributed(heartbeat_timeout_s=HEARTBEAT_S)
  assert cluster is not None and jax.process_count() == 2, (cluster, jax.process_count())
  jax.config.update("jax_disable_most_optimizations", True)  # a few steps: compiling dominates
  p = jax.process_index()
  out = {"process": p, "devices": jax.device_count(), "local_devices": jax.local_device_count(),
         "examples": {}}
  for name, config in configs(data_dir).items():
    rows: list = []
    train(two_process_mesh(name, config), root / f"two_{name}", rows, EXAMPLE_KEYS[name])
    out["examples"][name] = rows
  end = time.monotonic() + READY_TIMEOUT_S
  while not (root / "from_single" / "READY").exists():
    if time.monotonic() > end:
      raise TimeoutError(f"no 1-process checkpoint at {root / 'from_single'} after {READY_TIMEOUT_S} s")
    time.sleep(0.2)
  motion = two_process_mesh("motion", configs(data_dir)["motion"])
  motion.num_steps = MOTION_STEPS + 1
  rows = []
  train(motion, root / "from_single", rows, EXAMPLE_KEYS["motion"])
  out["examples"]["from_single"] = rows
  (root / f"result_{p}.json").write_text(json.dumps(out))
  endless = two_process_mesh("motion", configs(data_dir)["motion"])
  endless.update(num_steps=10 ** 9, checkpoint_every=10 ** 9)
  train(endless, root / "endless")  # until the test kills a process


def one_process(data_dir: str, root: str) -> None:
  root = pathlib.Path(root)
  assert jax.process_count() == 1 and jax.device_count() == 2, (jax.process_count(), jax.device_count())
  jax.config.update("jax_disable_most_optimizations", True)
  rows: list = []
  train(two_process_mesh("render", configs(data_dir)["render"]), root / "one_render", rows,
        EXAMPLE_KEYS["render"])
  (root / "result_one.json").write_text(json.dumps({"render": rows}))


if __name__ == "__main__":
  if sys.argv[1] == "--one-process":
    one_process(*sys.argv[2:])
  else:
    main(*sys.argv[1:])
