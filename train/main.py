"""Training entry point: `python -m train.main --workdir=DIR --config=train/configs/motion_face.py[:tiny]`.

Override any config field on the command line, e.g. `--config.data_dir=OUT --config.batch_size=32`.
Several processes (hosts, or CPU processes on one machine): the same command in each, under `srun`,
`mpirun`, on every host of a TPU pod slice, or with JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID set (`train.parallel.detect_cluster`; docs/TRAINING.md).
"""

from absl import app, flags, logging
from ml_collections import config_flags

from train import parallel, trainer

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file (train/configs/*.py[:variant]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard events and metrics.jsonl go here.")
flags.DEFINE_integer("heartbeat_timeout", parallel.HEARTBEAT_TIMEOUT_S,
                     "Multi-process runs: seconds after which a silent (dead) process stops all the others.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  parallel.maybe_initialize_distributed(FLAGS.heartbeat_timeout)
  logging.info("config:\n%s", FLAGS.config)
  trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
