"""Training throughput: steps/s and frames/s of the jitted train step of each training config.

  python -m benchmarks.train_bench                      # tiny variants, CPU (rows to RESULTS.md)
  python -m benchmarks.train_bench --full               # full configs at the batch sizes below (GPU)
  python -m benchmarks.train_bench --configs render_head512 --full --batch-size 16

The step is the one `python -m train.main` runs (`train.trainer.build`: `task.make_step` with the
non-finite guard, jitted with the state donated and sharded data-parallel over all local devices), fed
a synthetic batch of the task's `batch_spec` (images uniform in [0, 1], coefficients and keypoints
Gaussian): throughput does not depend on the values, and
the full configs need no preprocessed data. The first step (trace + compile + run) is reported as the
compile time; then `--warmup` untimed steps and `--iters` timed ones, each ended by `block_until_ready`.
frames/s counts the frames a step trains on: batch x 1 for the renderers, batch x window (T) for the
motion models.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import time

import jax
import numpy as np

from benchmarks.harness import Timing, append_rows, format_row
from train import parallel, tasks, trainer

CONFIGS = ("render_head512", "render_upper512x768", "face_refine", "motion_face", "motion_body")
# Full-size global batch per config for one 80 GB GPU (per-GPU batch of the paper-scale runs).
FULL_BATCH = {"render_head512": 8, "render_upper512x768": 4, "face_refine": 8, "motion_face": 64,
              "motion_body": 64}


def synthetic_batch(spec: dict, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  out = {}
  for k, s in spec.items():
    if k in ("source", "driving", "driving_target", "hand_image") or k.endswith("_mask"):
      out[k] = rng.uniform(0, 1, s.shape).astype(np.float32)
    elif k.startswith("body_visibility"):
      out[k] = rng.uniform(0.5, 1, s.shape).astype(np.float32)
    elif k == "audio":
      out[k] = (0.1 * rng.normal(size=s.shape)).astype(np.float32)
    else:
      out[k] = (0.3 * rng.normal(size=s.shape)).astype(np.float32)
  return out


def bench(name: str, *, full: bool, batch_size: int | None, warmup: int, iters: int) -> Timing:
  config = importlib.import_module(f"train.configs.{name}").get_config(None if full else "tiny")
  config.batch_size = batch_size or (FULL_BATCH[name] if full else config.batch_size)
  config.data_dir = "unused"
  task = tasks.get_task(config)
  mesh = parallel.make_mesh(config.mesh)
  if config.batch_size % mesh.size:
    raise ValueError(f"batch {config.batch_size} does not split over {mesh.size} devices")
  prog = trainer.build(task, config, mesh)
  batch_host = synthetic_batch(prog.spec)
  norm = task.norm_stats([batch_host])
  state = prog.compile_init()(prog.init_key, jax.device_put(norm, prog.replicated))
  batch, guard = parallel.global_batch(batch_host, prog.batch_sharding), prog.new_guard()
  t0 = time.perf_counter()
  state, m, guard = prog.step(state, batch, guard)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  for _ in range(warmup):
    state, m, guard = prog.step(state, batch, guard)
  jax.block_until_ready(m)
  times = []
  for _ in range(iters):
    t = time.perf_counter()
    state, m, guard = prog.step(state, batch, guard)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  if not bool(m["finite"]):
    raise trainer.NonFiniteError(f"{name}: non-finite loss on the synthetic batch")
  variant = config.model.get("preset", "") if name.startswith(("render", "face")) else ""
  desc = (f"{name}{'' if full else ':tiny'}{f' ({variant})' if variant else ''}, global batch "
          f"{config.batch_size}, {mesh.size} device(s) data-parallel, float32, synthetic batch")
  timing = Timing(name="train step", config=desc, compile_s=compile_s, times_s=times)
  sps = 1.0 / float(np.median(times))
  frames = config.batch_size * task.frames_per_example()
  timing.throughput = f"{sps:.2f} steps/s, {sps * frames:.1f} frames/s"
  return timing


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
  parser.add_argument("--full", action="store_true", help="full-size configs (default: the :tiny variants)")
  parser.add_argument("--batch-size", type=int, default=None, help="global batch (default: per config)")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--iters", type=int, default=5)
  parser.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  timings = []
  for name in args.configs:
    t = bench(name, full=args.full, batch_size=args.batch_size, warmup=args.warmup, iters=args.iters)
    print(format_row(t), end="", flush=True)
    timings.append(t)
  if not args.no_write:
    append_rows(timings)


if __name__ == "__main__":
  main()
