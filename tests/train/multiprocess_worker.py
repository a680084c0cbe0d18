"""One process of the 2-process training test (`tests/train/multiprocess_test.py`); not a test module.

  python -m tests.train.multiprocess_worker DATA ROOT   # with JAX_COORDINATOR_ADDRESS / _NUM_PROCESSES /
                                                        # _PROCESS_ID set, as `train.main` would run
Starts through `train.parallel.maybe_initialize_distributed` (the launcher's code path), then
1. trains the tiny motion config (parameters and optimiser state sharded over both processes, fsdp=2) and
   the tiny head renderer (data-parallel) for `STEPS` steps, recording the rows each process reads;
2. resumes the 1-process run's motion workdir ROOT/from_single for one more step (a 1-process
   checkpoint restored on 2 processes);
3. writes ROOT/result_<process>.json, then trains the motion config without end (ROOT/endless) until the
   test kills the other process.
"""

from __future__ import annotations

import json
import pathlib
import sys

import jax

from train import parallel

STEPS = 3
HEARTBEAT_S = 5
# The rows of a pipeline batch that name its examples: (clip, window start) of a motion window, the frame
# index of a render pair's driving frame.
EXAMPLE_KEYS = {"motion": ("clip_index", "start"), "render": ("driving_index",)}


def configs(data_dir: str) -> dict:
  """The two tiny configs of the test, the same in every process count: the global batch is the data of
  2 shards (`config.data_shards`), so 1 and 2 processes train on the same rows."""
  from train.configs import motion_face, render_head512

  m = motion_face.get_config("tiny")
  m.update(data_dir=data_dir, num_steps=STEPS, log_every=1, checkpoint_every=1000, progress=False,
           batch_size=8, data_shards=2)
  r = render_head512.get_config("tiny")
  r.update(data_dir=data_dir, num_steps=STEPS, log_every=1, checkpoint_every=1000, progress=False,
           batch_size=4, data_shards=2, image_every=0)
  return {"motion": m, "render": r}


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


def train(config, workdir: pathlib.Path, examples: list | None = None, keys=()) -> dict:
  from train import trainer

  make = trainer.data_iterator
  if examples is not None:
    trainer.data_iterator = recording(examples, keys)
  try:
    trainer.train_and_evaluate(config, workdir)
  finally:
    trainer.data_iterator = make
  return json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1]) if workdir.exists() else {}


def main(data_dir: str, root: str) -> None:
  root = pathlib.Path(root)
  cluster = parallel.maybe_initialize_distributed(heartbeat_timeout_s=HEARTBEAT_S)
  assert cluster is not None and jax.process_count() == 2, (cluster, jax.process_count())
  jax.config.update("jax_disable_most_optimizations", True)  # a few steps: compiling dominates
  p = jax.process_index()
  out = {"process": p, "devices": jax.device_count(), "local_devices": jax.local_device_count(),
         "examples": {}}
  for name, config in configs(data_dir).items():
    if name == "motion":
      config.mesh.data, config.mesh.fsdp = 1, 2  # parameters split over the two processes
    rows: list = []
    train(config, root / f"two_{name}", rows, EXAMPLE_KEYS[name])
    out["examples"][name] = rows
  motion = configs(data_dir)["motion"]
  motion.num_steps = STEPS + 1
  rows = []
  train(motion, root / "from_single", rows, EXAMPLE_KEYS["motion"])
  out["examples"]["from_single"] = rows
  (root / f"result_{p}.json").write_text(json.dumps(out))
  endless = configs(data_dir)["motion"]
  endless.update(num_steps=10 ** 9, checkpoint_every=10 ** 9)
  train(endless, root / "endless")  # until the test kills a process


if __name__ == "__main__":
  main(*sys.argv[1:])
