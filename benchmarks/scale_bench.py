"""Per-unit costs for scaling out: preprocessing speed-up with worker processes, training FLOPs per step of
the full configs, and whether the motion input pipeline keeps up with the step.

  python -m benchmarks.scale_bench preprocess [--videos 4] [--max-seconds 4] [--engines processes beam]
  python -m benchmarks.scale_bench flops [--configs ...]          # full configs, lowered HLO only
  python -m benchmarks.scale_bench input [--configs motion_face motion_body] [--seconds 20]

preprocess: `preprocess.run` end to end (cold: process start, JIT compiles, MediaPipe set-up and the records
included) on copies of one real clip, with 1 and with 2 workers (the process pool, and the Beam
DirectRunner in multi_processing mode with --engines beam); frames/s = output frames / wall seconds.
flops: XLA's cost analysis of the full configs' jitted train step at their `train_bench.FULL_BATCH`,
from abstract shapes (nothing allocated or run): the FLOPs a GPU-hour estimate divides by.
input: the trainer's input path (`trainer.data_iterator` -> `task.adapt` -> `parallel.global_batch`) at the
full configs' batch sizes, driving a synthetic fast step (one jitted reduction over the batch), against the
full step time measured by `benchmarks.train_bench --full`.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import shutil
import tempfile
import time

import jax
import numpy as np

from benchmarks import harness, train_bench
from benchmarks.preprocess_bench import CLIPS, cores, media_videos
from benchmarks.render_bench import cost_flops

log = logging.getLogger(__name__)


def bench_preprocess(num_videos: int, max_seconds: float, engines, workers=(1, 2)) -> list[harness.Timing]:
  from data import preprocess

  config = preprocess.PreprocessConfig(max_seconds=max_seconds)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="scale_bench_"))
  videos = tmp / "videos"
  videos.mkdir()
  for i in range(num_videos):
    shutil.copy(media_videos() / CLIPS[0], videos / f"copy_{i}.mp4")
  rows, base = [], {}
  try:
    for engine in engines:
      for n in workers:
        beam = {"beam_runner": "DirectRunner"} if engine == "beam" else {}
        t = time.perf_counter()
        summary = preprocess.run(videos, tmp / f"out_{engine}_{n}", config, workers=n, progress=False, **beam)
        wall = time.perf_counter() - t
        if summary["done"] != num_videos:
          raise RuntimeError(f"preprocessing failed: {summary['failed']}")
        fps = summary["frames"] / wall
        base.setdefault(engine, fps)
        timing = harness.Timing(
            name="preprocess scale", compile_s=0.0, times_s=[wall / summary["frames"]],
            config=(f"preprocess.run {engine} workers={n}, cold (process start, JIT, MediaPipe set-up, "
                    f"records included); {num_videos} copies of {CLIPS[0][:24]}.. first {max_seconds} s, "
                    f"body 768x512, head 512; {cores()} cores shared with a training campaign"))
        timing.throughput = (f"{fps:.2f} frames/s ({summary['frames']} frames in {wall:.0f} s), "
                             f"x{fps / base[engine]:.2f} vs 1 worker")
        rows.append(timing)
        print(harness.format_row(timing), end="", flush=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return rows


def step_flops(name: str) -> tuple[float, int]:
  """(FLOPs of one train step of the full config `name` at FULL_BATCH, that batch), from shapes only."""
  from train import parallel, tasks, trainer

  config = train_bench.load_config(name, None)
  config.batch_size = train_bench.FULL_BATCH[name]
  config.data_dir = "unused"
  task = tasks.get_task(config)
  mesh = parallel.make_mesh(config.mesh)
  prog = trainer.build(task, config, mesh)
  batch = {k: jax.ShapeDtypeStruct(s.shape, s.dtype) for k, s in prog.spec.items()}
  guard = jax.eval_shape(prog.new_guard)
  return cost_flops(prog.step, prog.abstract, batch, guard), config.batch_size


def bench_flops(names) -> list[harness.Timing]:
  rows = []
  for name in names:
    t = time.perf_counter()
    flops, batch = step_flops(name)
    timing = harness.Timing(name="train step FLOPs", compile_s=0.0, times_s=[time.perf_counter() - t],
                            config=f"{name} (full), global batch {batch}, XLA cost analysis of the lowered "
                                   "step (nothing run); median ms = tracing + lowering time")
    timing.throughput = f"{flops / 1e12:.2f} TFLOP/step, {flops / batch / 1e9:.0f} GFLOP/example"
    rows.append(timing)
    print(harness.format_row(timing), end="", flush=True)
  return rows


def bench_input(names, data: str, seconds: float) -> list[harness.Timing]:
  """Batches/s of the trainer's input path at the full batch sizes, feeding a fast synthetic step."""
  from train import parallel, tasks, trainer

  rows = []
  for name in names:
    config = train_bench.load_config(name, None)
    config.batch_size = train_bench.FULL_BATCH[name]
    config.data_dir = data
    task = tasks.get_task(config)
    sharding = parallel.batch_sharding(parallel.make_mesh(config.mesh))
    step = jax.jit(lambda b: sum(jax.numpy.sum(x.astype(jax.numpy.float32)) for x in jax.tree.leaves(b)))
    it = trainer.data_iterator(task, config, config.seed)
    out = step(parallel.global_batch(task.adapt(next(it)), sharding))  # start-up and compile not counted
    jax.block_until_ready(out)
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
      t = time.perf_counter()
      out = step(parallel.global_batch(task.adapt(next(it)), sharding))
      jax.block_until_ready(out)
      times.append(time.perf_counter() - t)
    timing = harness.Timing(name="input pipeline", compile_s=0.0, times_s=times,
                            config=f"{name} (full) batch {config.batch_size}: data_iterator -> adapt -> "
                                   f"global_batch -> a jitted sum (synthetic fast step), "
                                   f"{config.worker_count} grain workers, records {data}")
    timing.throughput = f"{1 / float(np.median(times)):.1f} batches/s"
    rows.append(timing)
    print(harness.format_row(timing), end="", flush=True)
  return rows


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="what", required=True)
  p = sub.add_parser("preprocess")
  p.add_argument("--videos", type=int, default=4)
  p.add_argument("--max-seconds", type=float, default=4.0)
  p.add_argument("--engines", nargs="+", default=["processes", "beam"], choices=["processes", "beam"])
  f = sub.add_parser("flops")
  f.add_argument("--configs", nargs="+", default=list(train_bench.CONFIGS), choices=train_bench.CONFIGS)
  i = sub.add_parser("input")
  i.add_argument("--configs", nargs="+", default=["motion_face", "motion_body"])
  i.add_argument("--data", required=True, help="preprocessed records")
  i.add_argument("--seconds", type=float, default=20.0)
  for s in (p, f, i):
    s.add_argument("--write", action="store_true", help="append the rows to benchmarks/RESULTS.md")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  if args.what == "preprocess":
    rows = bench_preprocess(args.videos, args.max_seconds, args.engines)
  elif args.what == "flops":
    rows = bench_flops(args.configs)
  else:
    rows = bench_input(args.configs, args.data, args.seconds)
  if args.write:
    harness.append_rows(rows)


if __name__ == "__main__":
  main()
