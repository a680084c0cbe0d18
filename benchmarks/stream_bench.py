"""Streaming benchmark: frames/s, latency per audio block and first-frame latency of the stream step.

  python -m benchmarks.stream_bench                       # tiny presets (CPU): head, upper, refine off / on
  python -m benchmarks.stream_bench --full                # head512, upper512x768 (+ face_refine) (GPU)
  python -m benchmarks.stream_bench --full --lean         # their lean layouts (presets.lean_full) (GPU)
  python -m benchmarks.stream_bench --modes head --steps 5 --iters 2 --no-write
  python -m benchmarks.stream_bench --full --profile DIR  # also a jax.profiler trace of the timed blocks
  python -m benchmarks.stream_bench --inputs .whl/inputs.npz  # portrait and speech prepared elsewhere

Configurations: mode head (no body model, no refine) and upper with face refine off and on, at 5 and
10 DDIM steps, with the per-frame renderer networks in float32 and bfloat16 (`--dtypes`), on the
bundled portrait and speech with random weights: the tiny presets and motion configs
(`infer.smoke.random_params`) by default, the full ones with --full (for a GPU). What each row
measures: `measure`. Rows are appended to benchmarks/RESULTS.md. `--inputs` takes the annotated portrait and
the decoded speech from a file (`benchmarks.inputs`), for a machine without MediaPipe or PyAV.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import statistics
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness, render_bench
from benchmarks import inputs as bench_inputs
from benchmarks.harness import Timing
from chatanyone_jax import stream_spec, stream_step
from infer.options import StreamOptions
from infer.smoke import random_params
from infer.streaming import Session, prepare

TINY = {"head": "tiny_head512", "upper": "tiny_upper512x768", "refine": "tiny_face_refine"}
FULL = {"head": "head512", "upper": "upper512x768", "refine": "face_refine"}
FULL_LEAN = {k: v + "_lean" for k, v in FULL.items()}  # `presets.lean_full`: about 1/3 of the FLOPs
WARM_FIRST = 3  # fresh-state first calls timed for the warm first-frame latency (at most --iters)


@dataclasses.dataclass(frozen=True)
class Case:
  mode: str
  refine: bool
  steps: int
  dtype: str = "float32"


@dataclasses.dataclass
class Result:
  case: Case
  timing: Timing
  window: int
  first_cold_s: float
  first_warm_s: float
  render_s: float  # main renderer W + G on one block's T frames
  refine_s: float  # face refine W + G (0 without refine)
  render_flops: float = 0.0  # W + G of the main renderer and face refine, per frame (XLA cost analysis)

  @property
  def block_s(self) -> float:
    return statistics.median(self.timing.times_s)

  @property
  def frames_per_s(self) -> float:
    return self.window / self.block_s

  @property
  def render_tflops(self) -> float:
    """Achieved TFLOP/s of the renderers' W + G: their FLOP count over their measured time."""
    seconds = self.render_s + self.refine_s
    return self.window * self.render_flops / seconds / 1e12 if seconds > 0 else 0.0


def cases(modes: Sequence[str], steps: Sequence[int], dtypes: Sequence[str] = ("float32",),
          refine: str = "both") -> list[Case]:
  """Every (dtype, mode, refine, steps); `refine` ("both", "on" or "off") applies to mode upper only."""
  choice = {"both": (False, True), "on": (True,), "off": (False,)}[refine]
  refines = lambda m: choice if m == "upper" else (False,)
  return [Case(m, r, s, d) for d in dtypes for m in modes for r in refines(m) for s in steps]


def full_models(mode: str, refine: bool, seed: int = 0, lean: bool = False) -> tuple[dict, dict]:
  """Random (params, configs) of the full presets (`lean`: their lean layouts) and motion configs, keyed as
  `infer.stream` takes them.

  Normalisation statistics are those of `random_params` (their shapes do not depend on the model size;
  checked against the tasks' `norm_spec`).
  """
  from chatanyone_jax.render import presets
  from chatanyone_jax.render.train_step import create_generator
  from train import tasks
  from train.configs import motion_body, motion_face

  tiny_params, _ = random_params(mode, refine=False, seed=seed)
  keys = iter(jax.random.split(jax.random.key(seed), 4))
  configs: dict = {"motion_face": motion_face.get_config(), "clip_x0": 3.0}
  if mode == "upper":
    configs["motion_body"] = motion_body.get_config()
  params: dict = {}
  for name in [n for n in ("motion_face", "motion_body") if n in configs]:
    task = tasks.get_task(configs[name])
    spec = task.batch_spec(1)
    norm = tiny_params[name]["norm"]
    want = {k: tuple(s.shape) for k, s in task.norm_spec().items()}
    if {k: np.shape(v) for k, v in norm.items()} != want:
      raise AssertionError(f"{name}: normalisation shapes {want} differ from the tiny ones")
    p = jax.jit(lambda k, task=task, spec=spec: task.init_params(k, spec))(next(keys))
    params[name] = {"params": p, "norm": norm}
  family = FULL_LEAN if lean else FULL
  names = {"render": family[mode]} | ({"face_refine": family["refine"]} if refine and mode == "upper" else {})
  for name, preset in names.items():
    cfg = presets.get(preset)
    params[name] = create_generator(cfg, next(keys), (1, *cfg.image_size, 3))
    configs[name] = cfg
  return params, configs


def _blocks(spec: stream_spec.StreamSpec, audio: np.ndarray, n: int) -> list[np.ndarray]:
  """n consecutive zero-padded step inputs of the speech (`window_bounds`), cycling through it."""
  size = stream_spec.block_samples(spec)
  out, i = [], 0
  while len(out) < n:
    a0, a1 = stream_spec.window_bounds(i, spec.window, spec.spf)
    if a1 > audio.size:  # wrap around to the clip's start
      if i == 0:
        raise ValueError(f"the audio ({audio.size} samples) is shorter than one block")
      i = 0
      continue
    buf = np.zeros(size, np.float32)
    buf[:a1 - a0] = audio[a0:a1]
    out.append(buf)
    i += 1
  return out


def _first_frame(step, params, state, block) -> tuple[dict, float]:
  t0 = time.perf_counter()
  state, frames = step(params, state, block)
  np.asarray(frames[0])  # the first frame on the host
  return state, time.perf_counter() - t0


def _render_times(session: Session, state: dict, iters: int) -> tuple[float, float]:
  """Median seconds of the main renderer's and the refine renderer's W + G on one block of T frames."""
  spec, params, av = session.spec, session.params, state["avatar"]
  t = spec.window
  out = []
  for cfg, name, vol, kp in ((spec.renderer, "render", "volume", "kp_source"),
                             (spec.refine, "face_refine", "refine_volume", "refine_kp_source")):
    if cfg is None:
      out.append(0.0)
      continue
    kp_src = av[kp]  # (1, K, 3)
    kp_drv = jnp.broadcast_to(kp_src, (t,) + kp_src.shape[1:]) + 0.01 * jax.random.normal(
        jax.random.key(0), (t,) + kp_src.shape[1:])
    inject = jnp.zeros((t, *cfg.image_size, 3), jnp.float32) if cfg.spade_generator.hand_injection else None
    fn = jax.jit(lambda p, v, s, d, i, cfg=cfg: stream_step.render_frames(
        cfg, p, v, s, d, i, spec.render_batch, spec.render_dtype))
    timing = harness.time_jitted(fn, (params[name], av[vol], kp_src, kp_drv, inject), name="render",
                                 config="", warmup=1, iters=iters)
    out.append(statistics.median(timing.times_s))
  return out[0], out[1]


def measure(case: Case, *, full: bool, iters: int, warmup: int = 1, profile: str | None = None,
            inputs: str | None = None, lean: bool = False) -> Result:
  """Times one configuration on the bundled portrait and speech.

  `infer.streaming.prepare`, then the jitted `chatanyone_jax.stream_step.make_stream_step` fed one block
  of T frames of audio per call, exactly as `infer.stream` does, frames copied to the host after every
  call. Measured:
    * first-frame latency, cold: from the first audio block entering the step of a fresh avatar state
      to its first frame on the host, on the first call of the spec (trace + compile + run); the
      "compile s" column of the rows;
    * first-frame latency, warm: the same on a fresh avatar state once the step is compiled (the median
      of a few); an application also waits for the block's T / 30 s of audio to arrive before this;
    * per-block latency (the median / p10 / p90 columns): the steady stream, state carried from call to
      call; frames/s = T / median. Real time is 30 frames/s;
    * the renderer's share: W + G of the main renderer (and of face refine) on T frames, timed alone on
      the same avatar (`stream_step.render_frames`); the remainder is the audio features, both DDIM
      samplers, keypoints, hand images and the paste-back. With 5 and 10 sampling steps both measured,
      their difference gives the cost of one DDIM step (face + body models);
    * achieved TFLOP/s of the renderers: T x their per-frame FLOPs (`render_bench.flops_per_frame`, XLA's
      count) over their measured W + G time.
  `inputs`: the `benchmarks.inputs` file to take the portrait and speech from (default: annotate and decode
  the bundled ones).
  With --full the parameters are random (the zero-initialised layers stay zero: values do not change
  the cost); `lean` (with `full`): the lean full-size renderers (`FULL_LEAN`).
  """
  if full:
    params, configs = full_models(case.mode, refine=case.refine, lean=lean)
  else:
    params, configs = random_params(case.mode, refine=case.refine)
  options = StreamOptions(mode=case.mode, refine=case.refine, num_steps=case.steps, render_dtype=case.dtype)
  portrait, audio = bench_inputs.load(inputs)
  session = prepare(portrait, options=options, params=params, configs=configs)
  spec = session.spec
  step = stream_step.make_stream_step(spec)
  init = stream_step.make_init_state(spec)
  blocks = _blocks(spec, audio, max(warmup + iters, 2))

  fresh = lambda: init(session.params, session.avatar, jax.random.key(0))
  _, cold = _first_frame(step, session.params, fresh(), blocks[0])
  warm = []
  for _ in range(min(WARM_FIRST, iters)):
    state = jax.block_until_ready(fresh())
    _, s = _first_frame(step, session.params, state, blocks[0])
    warm.append(s)

  state = fresh()
  for j in range(warmup):
    state, frames = step(session.params, state, blocks[j])
    np.asarray(frames)
  times = []
  trace = jax.profiler.trace(profile, create_perfetto_trace=True) if profile else contextlib.nullcontext()
  with trace:
    for j in range(iters):
      t0 = time.perf_counter()
      state, frames = step(session.params, state, blocks[(warmup + j) % len(blocks)])
      np.asarray(frames)  # the generator hands host frames to the application
      times.append(time.perf_counter() - t0)
  render_s, refine_s = _render_times(session, state, max(2, min(iters, 5)))

  presets_used = (FULL_LEAN if lean else FULL) if full else TINY
  flops = render_bench.flops_per_frame(presets_used[case.mode])["frame"].per_item
  if spec.refine is not None:
    flops += render_bench.flops_per_frame(presets_used["refine"])["frame"].per_item
  label = f"{case.mode} {presets_used[case.mode]}"
  if spec.refine is not None:
    label += f" + {presets_used['refine']}"
  elif case.mode == "upper":
    label += " (no refine)"
  out_h, out_w = spec.output_size
  config = (f"{label}, {'full' if full else 'tiny'} motion configs, {case.steps} DDIM steps, T={spec.window} "
            f"frames/block, {out_w}x{out_h} out, B=1, renderer {case.dtype}, random weights")
  result = Result(case, Timing("stream step", config, cold, times), spec.window, cold,
                  statistics.median(warm), render_s, refine_s, flops)
  share = f"renderer W+G {render_s * 1e3:.1f} ms ({100 * render_s / result.block_s:.0f}%)"
  if refine_s:
    share += f", refine W+G {refine_s * 1e3:.1f} ms ({100 * refine_s / result.block_s:.0f}%)"
  share += f"; renderers {flops / 1e9:.4g} GFLOP/frame at {result.render_tflops:.3g} TFLOP/s"
  result.timing.throughput = (
      f"{result.frames_per_s:.1f} frames/s (x{result.frames_per_s / 30:.2f} real time); first frame "
      f"{cold:.2f} s cold incl. compile, {result.first_warm_s * 1e3:.1f} ms warm (+ {spec.window / 30:.2f} s "
      f"of audio per block); {share}")
  return result


def sampling_costs(results: Sequence[Result]) -> dict[tuple[str, bool, str], float]:
  """Seconds per DDIM step (face + body samplers) from pairs of results differing only in steps."""
  by = {}
  for r in results:
    by.setdefault((r.case.mode, r.case.refine, r.case.dtype), {})[r.case.steps] = r.block_s
  out = {}
  for key, d in by.items():
    if len(d) >= 2:
      lo, hi = min(d), max(d)
      out[key] = (d[hi] - d[lo]) / (hi - lo)
  return out


def table(results: Sequence[Result]) -> str:
  head = ("| mode | refine | renderer dtype | DDIM steps | first frame cold s (compile) "
          "| first frame warm ms | block ms (p10-p90) | frames/s | renderer % | refine % "
          "| renderers GFLOP/frame | renderers TFLOP/s |")
  rows = [head, "|" + "---|" * 12]
  for r in results:
    t = r.timing
    rows.append(f"| {r.case.mode} | {'on' if r.refine_s else 'off'} | {r.case.dtype} | {r.case.steps} "
                f"| {r.first_cold_s:.2f} "
                f"| {r.first_warm_s * 1e3:.1f} | {t.median_ms:.1f} ({t.quantile_ms(0.1):.1f}-"
                f"{t.quantile_ms(0.9):.1f}) | {r.frames_per_s:.1f} | {100 * r.render_s / r.block_s:.0f} "
                f"| {100 * r.refine_s / r.block_s:.0f} | {r.render_flops / 1e9:.4g} "
                f"| {r.render_tflops:.3g} |")
  return "\n".join(rows)


def dominant(results: Sequence[Result]) -> list[str]:
  """One line per (mode, refine): the largest part of the step."""
  per_step = sampling_costs(results)
  lines = []
  for r in results:
    key = (r.case.mode, r.case.refine, r.case.dtype)
    if key not in per_step or r.case.steps != max(x.case.steps for x in results
                                                  if (x.case.mode, x.case.refine, x.case.dtype) == key):
      continue
    parts = {"main renderer (W+G)": r.render_s, "face refine (W+G)": r.refine_s,
             f"DDIM sampling ({r.case.steps} steps)": max(0.0, per_step[key]) * r.case.steps}  # < 0: noise
    parts["other (audio, keypoints, hands, paste-back)"] = max(0.0, r.block_s - sum(parts.values()))
    name, s = max(parts.items(), key=lambda kv: kv[1])
    split = ", ".join(f"{k} {100 * v / r.block_s:.0f}%" for k, v in parts.items() if v)
    lines.append(f"{r.case.mode}{' + refine' if r.case.refine else ''} ({r.case.dtype}): {name} dominates; "
                 f"{split} of "
                 f"{r.block_s * 1e3:.1f} ms per block")
  return lines


def run(*, full: bool = False, modes: Sequence[str] = ("head", "upper"), steps: Sequence[int] = (5, 10),
        dtypes: Sequence[str] = ("float32", "bfloat16"), iters: int = 10, write: bool = True,
        profile: str | None = None, inputs: str | None = None, refine: str = "both",
        lean: bool = False) -> list[Result]:
  if lean and not full:
    raise ValueError("lean=True needs full=True (the tiny presets have no lean layout)")
  results = []
  for case in cases(modes, steps, dtypes, refine):
    name = f"{case.mode}_{'refine' if case.refine else 'norefine'}_{case.steps}_{case.dtype}"
    where = f"{profile}/{name}" if profile else None
    r = measure(case, full=full, iters=iters, profile=where, inputs=inputs, lean=lean)
    logging.info("%s: %s", r.timing.config, r.timing.throughput)
    results.append(r)
    if write:  # row by row: a run cut short (gpu.sh's time limit) keeps what it measured
      harness.append_rows([r.timing])
  return results


def main(argv: Sequence[str] | None = None) -> list[Result]:
  p = argparse.ArgumentParser(prog="python -m benchmarks.stream_bench", description=__doc__.split("\n\n")[0],
                              epilog=__doc__.split("\n\n", 1)[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--full", action="store_true", help="full presets and motion configs (for a GPU)")
  p.add_argument("--lean", action="store_true", help="with --full: the lean full-size renderers "
                 "(render.presets.lean_full, about 1/3 of the FLOPs per frame)")
  p.add_argument("--modes", nargs="+", choices=("head", "upper"), default=["head", "upper"])
  p.add_argument("--steps", nargs="+", type=int, default=[5, 10], help="DDIM sampling steps")
  p.add_argument("--iters", type=int, default=10, help="timed blocks per configuration")
  p.add_argument("--dtypes", nargs="+", choices=("float32", "bfloat16"), default=["float32", "bfloat16"],
                 help="compute dtype of the per-frame renderer networks")
  p.add_argument("--refine", choices=("both", "on", "off"), default="both",
                 help="mode upper: with face refine, without, or both (default)")
  p.add_argument("--no-write", action="store_true", help="do not append rows to benchmarks/RESULTS.md")
  p.add_argument("--profile", metavar="DIR", help="write a jax.profiler trace of the timed blocks to DIR "
                 "(with a Perfetto JSON trace: `python -m benchmarks.profile_top DIR` lists its top ops)")
  p.add_argument("--inputs", metavar="NPZ", help="annotated portrait and decoded speech from this file "
                 "(`python -m benchmarks.gpu_wheels`), for a machine without MediaPipe or PyAV")
  a = p.parse_args(argv)
  if a.lean and not a.full:
    p.error("--lean needs --full (the tiny presets have no lean layout)")
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  logging.getLogger("infer.models").setLevel(logging.WARNING)
  if a.full and jax.default_backend() == "cpu":
    logging.warning("--full on CPU: the full presets take minutes per block here")
  results = run(full=a.full, modes=a.modes, steps=a.steps, dtypes=a.dtypes, iters=a.iters,
                write=not a.no_write, profile=a.profile, inputs=a.inputs, refine=a.refine, lean=a.lean)
  print(f"\nstream step on {harness.device_name()}\n")
  print(table(results))
  for line in dominant(results):
    print(line)
  return results


if __name__ == "__main__":
  main()
