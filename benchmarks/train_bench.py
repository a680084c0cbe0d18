"""Training throughput: steps/s and frames/s of the jitted train step of each training config.

  python -m benchmarks.train_bench                      # tiny variants, CPU (rows to RESULTS.md)
  python -m benchmarks.train_bench --variant small --configs render_head512 --profile [--data DIR]
  python -m benchmarks.train_bench --full               # full configs at the batch sizes below (GPU)
  python -m benchmarks.train_bench --configs render_head512 --full --batch-size 16

The step is the one `python -m train.main` runs (`train.trainer.build`: `task.make_step` with the
non-finite guard, jitted with the state donated and sharded data-parallel over all local devices), fed
a synthetic batch of the task's `batch_spec` (images uniform in [0, 1], coefficients and keypoints
Gaussian): throughput does not depend on the values, and
the full configs need no preprocessed data. The first step (trace + compile + run) is reported as the
compile time; then `--warmup` untimed steps and `--iters` timed ones, each ended by `block_until_ready`.
frames/s counts the frames a step trains on: batch x 1 for the renderers, batch x window (T) for the
motion models; each row also gives the parameters and XLA's FLOP count of the step.

--profile (renderers) times, at the step's shapes, the forward + backward pass of each part alone: F,
M (source + driving), the equivariance pass (M on the warped driving image; layouts with implicit
keypoints), W, G, the discriminator on the generator side (real + fake, feature matching) and its own
update. --data DIR adds the input pipeline's rate (`task.loader` + `adapt` on those records, the
config's worker_count), which must stay well above the step rate.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import time

import jax
import numpy as np

from benchmarks.harness import Timing, append_rows, format_row
from benchmarks.render_bench import cost_flops
from chatanyone_jax import losses
from chatanyone_jax.render import train_step
from chatanyone_jax.render.spade_generator import skip_inputs
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


def load_config(name: str, variant: str | None):
  """train/configs/<name>.py at a variant ("tiny", "small", or None: the full config)."""
  return importlib.import_module(f"train.configs.{name}").get_config(variant)


def bench(name: str, *, variant: str | None, batch_size: int | None, warmup: int, iters: int,
          profile: bool = False) -> list[Timing]:
  full = variant is None
  config = load_config(name, variant)
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
  preset = config.model.get("preset", "") if name.startswith(("render", "face")) else ""
  desc = (f"{name}{'' if full else ':' + variant}{f' ({preset})' if preset else ''}, global batch "
          f"{config.batch_size}, {mesh.size} device(s) data-parallel, float32, synthetic batch")
  timing = Timing(name="train step", config=desc, compile_s=compile_s, times_s=times)
  sps = 1.0 / float(np.median(times))
  frames = config.batch_size * task.frames_per_example()
  trained = state["gen"]["params"] if "gen" in state else state["params"]
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(trained))
  flops = cost_flops(prog.step, state, batch, guard)
  timing.throughput = (f"{sps:.2f} steps/s, {sps * frames:.1f} frames/s; {n_params / 1e6:.2f} M trained "
                       f"params, {flops / 1e9:.1f} GFLOP/step ({flops * sps / 1e9:.0f} GFLOP/s)")
  timings = [timing]
  if profile and "gen" in state:
    for part, ms in profile_renderer(task, jax.device_get(state), synthetic_batch(prog.spec)).items():
      timings.append(Timing(name="render step part (fwd + bwd)", config=f"{desc}: {part}", compile_s=0.0,
                            times_s=[ms / 1e3]))
  return timings


def _grad_ms(fn, args, iters: int = 5) -> float:
  """Median ms of jit(grad(sum of fn(*args)'s leaves)) with respect to every argument."""
  g = jax.jit(jax.grad(lambda *a: sum(jax.numpy.sum(x) for x in jax.tree.leaves(fn(*a))),
                       argnums=tuple(range(len(args)))))
  jax.block_until_ready(g(*args))
  times = []
  for _ in range(iters):
    t = time.perf_counter()
    jax.block_until_ready(g(*args))
    times.append(time.perf_counter() - t)
  return 1e3 * float(np.median(times))


def profile_renderer(task, state: dict, batch: dict) -> dict[str, float]:
  """ms of each renderer part's forward + backward pass at the step's shapes (module docstring)."""
  jnp = jax.numpy
  r = task.renderer
  nets = train_step.networks(r)
  params, stats = state["gen"]["params"], state["gen"]["batch_stats"]
  disc = state["disc"]

  def apply(name, p, *args, **kw):
    s = disc["batch_stats"] if name == "D" else stats[name]
    kw = kw if name == "M" else {**kw, "train": True}
    if s:
      return nets[name].apply({"params": p, "batch_stats": s}, *args, mutable=["batch_stats"], **kw)[0]
    return nets[name].apply({"params": p}, *args, **kw)

  src, drv, target = batch["source"], batch["driving"], batch["driving_target"]
  b = src.shape[0]
  kp = jax.random.uniform(jax.random.key(2), (b, r.warping_network.num_kp, 3), minval=-0.5, maxval=0.5)
  volume = apply("F", params["F"], src)
  warped = apply("W", params["W"], volume, kp, 0.9 * kp)
  feature = warped["out"]
  hand = (batch["hand_image"],) if r.spade_generator.hand_injection else ()
  skip = skip_inputs(r.spade_generator, src, warped)
  pred = apply("G", params["G"], feature, *hand, **skip)
  ms = {"F": _grad_ms(lambda p, x: apply("F", p, x), (params["F"], src)),
        "M (source + driving)": _grad_ms(lambda p, x: apply("M", p, x),
                                         (params["M"], jnp.concatenate([src, drv])))}
  if train_step.keypoint_layout(r) != "head_offset":
    tps = losses.random_tps_transform(jax.random.key(3), b)
    ms["equivariance (M on the warped driving)"] = _grad_ms(
        lambda p, x: apply("M", p, losses.warp_image(x, tps)), (params["M"], drv))
  ms["W"] = _grad_ms(lambda p, v: apply("W", p, v, kp, 0.9 * kp)["out"], (params["W"], volume))
  ms["G"] = _grad_ms(lambda p, f, *h: apply("G", p, f, *h, **skip), (params["G"], feature, *hand))
  ms["D, generator side (real + fake)"] = _grad_ms(
      lambda x: apply("D", disc["params"], jnp.concatenate([target, x])), (pred,))
  ms["D update (real + fake)"] = _grad_ms(lambda p: apply("D", p, jnp.concatenate([target, pred])),
                                          (disc["params"],))
  return ms


def data_rate(name: str, variant: str | None, data: str, batch_size: int, seconds: float = 20.0) -> Timing:
  """The task's input pipeline (loader + adapt, as the trainer gets batches) on real records."""
  config = load_config(name, variant)
  config.data_dir = data
  task = tasks.get_task(config)
  it = iter(task.loader(batch_size, 0))
  task.adapt(next(it))  # start-up (workers, first reads) not counted
  times = []
  t_end = time.perf_counter() + seconds
  while time.perf_counter() < t_end:
    t = time.perf_counter()
    task.adapt(next(it))
    times.append(time.perf_counter() - t)
  timing = Timing(name="input pipeline", config=f"{name}:{variant} batch {batch_size}, "
                  f"{config.worker_count} worker(s), {data}", compile_s=0.0, times_s=times)
  timing.throughput = f"{1 / float(np.median(times)):.1f} batches/s"
  return timing


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
  parser.add_argument("--variant", default="tiny", help="config variant: tiny (default), small or full")
  parser.add_argument("--full", action="store_true", help="full-size configs (--variant full)")
  parser.add_argument("--profile", action="store_true", help="renderers: forward + backward ms per part")
  parser.add_argument("--data", help="preprocessed records: also time the input pipeline")
  parser.add_argument("--batch-size", type=int, default=None, help="global batch (default: per config)")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--iters", type=int, default=5)
  parser.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  variant = None if args.full or args.variant == "full" else args.variant
  for name in args.configs:
    ts = bench(name, variant=variant, batch_size=args.batch_size, warmup=args.warmup, iters=args.iters,
               profile=args.profile)
    if args.data:
      ts.append(data_rate(name, variant, args.data, args.batch_size or load_config(name, variant).batch_size))
    for t in ts:
      print(format_row(t), end="", flush=True)
    if not args.no_write:  # per config: a run cut short (gpu.sh's time limit) keeps what it measured
      append_rows(ts)


if __name__ == "__main__":
  main()
