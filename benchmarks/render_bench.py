"""Stage-2 renderer cost per frame: XLA FLOP counts, CPU latency, GPU frames/s.

  python -m benchmarks.render_bench [--flops] [--cpu] [--gpu] [--write] [--presets NAME ...]

Per-frame inference path of a renderer preset: F once per source (cached appearance volume), then per
frame W (warp + 2D features) and G (image, with its injection branch where the preset has one). M and
stage 1 are not counted (`benchmarks/motion_bench.py`). Weights are random, which does not change the cost.

  --flops  XLA cost analysis of the lowered HLO from abstract shapes only (nothing compiled or run), for
           the full presets and their lean layouts (`presets.lean_full`); gathers count ~0, so the "physical
           floor" is an upper bound on frames/s, not a prediction.
  --cpu    median ms per frame (and per source for F) for the `tiny` / `tiny_upper` / `reduced256` configs.
  --gpu    frames/s at batch 1 for the full presets and their lean layouts (`presets.lean_full`; the lean
           upper body and face refine first) in float32 and bfloat16.
  --write  append the rows to benchmarks/RESULTS.md (FLOP rows leave the timing columns as "-").
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import logging
import math
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness
from chatanyone_jax.render import presets
from chatanyone_jax.render.appearance_feature_extractor import AppearanceFeatureExtractor
from chatanyone_jax.render.face_refine import paste_back
from chatanyone_jax.render.presets import (
  AppearanceFeatureExtractorConfig,
  DenseMotionConfig,
  RendererConfig,
  SPADEDecoderConfig,
  WarpingNetworkConfig,
)
from chatanyone_jax.render.spade_generator import SPADEDecoder, skip_inputs
from chatanyone_jax.render.warping_network import WarpingNetwork

# Peak dense throughput from the vendors' spec sheets (no sparsity), FLOP/s.
# NVIDIA H100 SXM5 datasheet: BF16 tensor core 989.4 TFLOPS dense (1979 with sparsity), FP32 67 TFLOPS
# (non-tensor; TF32 tensor core 494.7 dense, which XLA:GPU may use for float32 convs at default precision).
# NVIDIA Ada (RTX 4090) whitepaper: BF16 tensor with FP32 accumulate 165.2 TFLOPS dense (330.3 sparse),
# FP32 82.6 TFLOPS.
H100_SXM_BF16 = 989.4e12
H100_SXM_FP32 = 67.0e12
H100_SXM_TF32 = 494.7e12
RTX4090_BF16 = 165.2e12
RTX4090_FP32 = 82.6e12
PEAKS: dict[str, float] = {
    "H100 bf16": H100_SXM_BF16, "H100 fp32": H100_SXM_FP32,
    "4090 bf16": RTX4090_BF16, "4090 fp32": RTX4090_FP32,
}

# A 256x256-output renderer small enough for a 2-core CPU: 128x128 in, volume 4 x 16 x 32 x 32 (C x D x H x
# W), K = 32 head keypoints, every hidden width <= 64 (F 16 -> 32 -> 64, W's 2D decoder and the hourglass
# <= 64, G's trunk 64 channels at 32x32, SPADE hidden 32); the hourglass input is (K + 1)(1 + compress) = 66
# channels wide. No hand injection.
REDUCED256 = RendererConfig(
    appearance_feature_extractor=AppearanceFeatureExtractorConfig(
        block_expansion=16, num_down_blocks=2, max_features=64, reshape_channel=4, reshape_depth=16,
        num_resblocks=2),
    warping_network=WarpingNetworkConfig(
        num_kp=presets.K_HEAD, block_expansion=8, max_features=64, num_down_blocks=2, reshape_channel=4,
        dense_motion=DenseMotionConfig(block_expansion=8, max_features=64, num_blocks=3, reshape_depth=16,
                                       compress=1)),
    spade_generator=SPADEDecoderConfig(upscale=2, block_expansion=8, max_features=64, num_down_blocks=2,
                                       out_channels=16, spade_hidden=32),
    image_size=(128, 128),
    num_kp_head=presets.K_HEAD,
)

CONFIGS: dict[str, RendererConfig] = {**presets.PRESETS, "reduced256": REDUCED256}
# Written into the rows of configs that are not presets.
CONFIG_NOTES = {
    "reduced256": "benchmark-local (F 16/32/64 ch, volume 4x16x32x32, K=32, hourglass 8..64 ch with 66 input "
                  "ch, W 2D 32 ch, G trunk 64 ch at 32x32, SPADE hidden 32, no injection)",
}
FLOPS_PRESETS = ("head512", "upper512x768", "face_refine",
                 "head512_lean", "upper512x768_lean", "face_refine_lean")  # presets.lean_full
CPU_PRESETS = ("tiny", "tiny_upper", "reduced256")
GPU_PRESETS = ("upper512x768_lean", "face_refine_lean", "head512", "upper512x768", "face_refine",
               "head512_lean")
PASTE_FRAME = (768, 512)  # face_refine pastes its crop into the upper-body renderer's output frame


def _label(name: str) -> str:
  return f"{name} [{CONFIG_NOTES[name]}]" if name in CONFIG_NOTES else name


def config(name: str) -> RendererConfig:
  if name not in CONFIGS:
    raise ValueError(f"unknown renderer config {name!r}; known: {sorted(CONFIGS)}")
  return CONFIGS[name]


@dataclasses.dataclass(frozen=True)
class Renderer:
  """The F / W / G modules of one config and pure functions of its per-source and per-frame parts."""
  name: str
  cfg: RendererConfig
  dtype: Any = None  # module compute dtype (None: float32)

  @property
  def F(self):
    return AppearanceFeatureExtractor(self.cfg.appearance_feature_extractor, dtype=self.dtype)

  @property
  def W(self):
    return WarpingNetwork(self.cfg.warping_network, dtype=self.dtype)

  @property
  def G(self):
    return SPADEDecoder(self.cfg.spade_generator, dtype=self.dtype)

  @property
  def has_injection(self) -> bool:
    return self.cfg.spade_generator.hand_injection

  @property
  def has_skip(self) -> bool:
    return self.cfg.spade_generator.source_skip

  @property
  def pastes_back(self) -> bool:
    return self.name.startswith("face_refine")  # the full-size refine presets (face_refine[_lean])

  def _image_dtype(self):
    return self.dtype or jnp.float32

  def source_shape(self, batch: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((batch, *self.cfg.image_size, 3), self._image_dtype())

  def volume_shape(self, batch: int) -> jax.ShapeDtypeStruct:
    vol = _variable_shapes(self)[1]
    return jax.ShapeDtypeStruct((batch, *vol.shape[1:]), vol.dtype)

  def frame_input_shapes(self, batch: int) -> dict[str, jax.ShapeDtypeStruct]:
    """Inputs of `frame` besides the variables: volume, kp_driving, kp_source[, injection image][, frame]
    [, source image (G's source skip)]."""
    kp = jax.ShapeDtypeStruct((batch, self.cfg.warping_network.num_kp, 3), jnp.float32)
    shapes = {"volume": self.volume_shape(batch), "kp_driving": kp, "kp_source": kp}
    if self.has_injection:
      shapes["inject"] = self.source_shape(batch)
    if self.pastes_back:
      shapes["frame"] = jax.ShapeDtypeStruct((batch, *PASTE_FRAME, 3), self._image_dtype())
    if self.has_skip:
      shapes["source"] = self.source_shape(batch)
    return shapes

  def variable_shapes(self) -> dict[str, Any]:
    """{"F", "W", "G"}: each network's variables ({params[, batch_stats]}) as ShapeDtypeStructs."""
    return _variable_shapes(self)[0]

  def appearance(self, variables, source):
    """Per source: F."""
    return self.F.apply(variables["F"], source)

  def frame(self, variables, inputs):
    """Per frame: W (+ G's injection encoder) + G [+ its source skip] [+ paste-back into inputs["frame"]];
    inputs as `frame_input_shapes`."""
    warped = self.W.apply(variables["W"], inputs["volume"], inputs["kp_driving"], inputs["kp_source"])
    skip = skip_inputs(self.cfg.spade_generator, inputs["source"], warped) if self.has_skip else {}
    image = self.G.apply(variables["G"], warped["out"], inputs.get("inject"), **skip)
    frame = inputs.get("frame")
    if frame is None:
      return image
    # The crop covers the frame's central 512 x 512 (x0, y0, x1, y1), feathered.
    hf, wf = frame.shape[1:3]
    box = jnp.broadcast_to(jnp.asarray([0.0, (hf - wf) / 2, wf, (hf + wf) / 2], jnp.float32),
                           (frame.shape[0], 4))
    return paste_back(frame, image.astype(frame.dtype), box)


@functools.cache
def _variable_shapes(r: Renderer) -> tuple[dict[str, Any], jax.ShapeDtypeStruct]:
  """(variables of F, W, G as ShapeDtypeStructs, F's output volume shape at batch 1), traced once per
  renderer (the variables do not depend on the batch)."""
  key = jax.random.key(0)
  img = jax.ShapeDtypeStruct((1, *r.cfg.image_size, 3), jnp.float32)
  v_f = jax.eval_shape(r.F.init, key, img)
  vol = jax.eval_shape(r.F.apply, v_f, r.source_shape(1))
  vol32 = jax.ShapeDtypeStruct(vol.shape, jnp.float32)
  wcfg = r.cfg.warping_network
  kp = jax.ShapeDtypeStruct((1, wcfg.num_kp, 3), jnp.float32)
  v_w = jax.eval_shape(r.W.init, key, vol32, kp, kp)
  # W's output (B, H, W, block_expansion 2^num_down_blocks) at the volume's H, W (WarpingNetwork).
  feat = jax.ShapeDtypeStruct((1, *vol.shape[2:4], wcfg.block_expansion * 2 ** wcfg.num_down_blocks),
                              jnp.float32)
  flow = jax.ShapeDtypeStruct((1, *vol.shape[2:4], 2), jnp.float32)
  skip = {"source": img, "flow": flow} if r.has_skip else {}
  v_g = jax.eval_shape(lambda f, i, s: r.G.init(key, f, i, **s), feat, img if r.has_injection else None, skip)
  return {"F": v_f, "W": v_w, "G": v_g}, vol


def cost_flops(fn: Callable[..., Any], *args: Any) -> float:
  """FLOPs of `fn(*args)` (arrays or ShapeDtypeStructs) from XLA's cost analysis of the lowered HLO.

  `fn`: a function, or a jitted one (lowered as it is: a jit with `compiler_options`, such as the
  trainer's step on CPU, cannot be nested in another). `Lowered.cost_analysis()` needs no compilation; it
  returns a dict (recent jax) or a list of per-module dicts (older jax). Falls back to the compiled
  executable's analysis where the lowered one is missing.
  """
  lowered = (fn if hasattr(fn, "lower") else jax.jit(fn)).lower(*args)
  try:
    analysis = lowered.cost_analysis()
  except (AttributeError, NotImplementedError):
    analysis = None
  if not analysis:
    analysis = lowered.compile().cost_analysis()
  if isinstance(analysis, dict):
    analysis = [analysis]
  return float(sum(a.get("flops", 0.0) for a in analysis))


@dataclasses.dataclass
class FlopCount:
  preset: str
  part: str  # "F (per source)" or "frame"
  batch: int
  flops: float  # for the whole batch
  params: int

  @property
  def per_item(self) -> float:
    return self.flops / self.batch

  def floor_fps(self) -> dict[str, float]:
    return {k: peak / self.per_item for k, peak in PEAKS.items()}


def _num_params(variables) -> int:
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(variables.get("params", {}))))


def frame_part_label(r: Renderer) -> str:
  label = "W + G"
  if r.pastes_back:
    label += " (+ masked-crop injection) + paste-back"
  elif r.has_injection:
    label += " (+ hand injection)"
  return label


@functools.cache
def flops_per_frame(preset_name: str, batch: int = 1) -> dict[str, FlopCount]:
  """{"F": per-source FLOPs, "frame": per-frame FLOPs (W + G [+ injection encoder] [+ paste-back])}.

  Abstract shapes only: nothing is initialised, compiled or run. Cached per (preset, batch). One
  multiply-add counts 2 FLOPs; gathers (grid_sample) count ~0. For `face_refine` the frame part also
  pastes the refined 512x512 crop back into a 768x512 frame (`face_refine.paste_back`).
  """
  r = Renderer(preset_name, config(preset_name))
  var = r.variable_shapes()
  f = cost_flops(r.appearance, {"F": var["F"]}, r.source_shape(batch))
  frame_vars = {"W": var["W"], "G": var["G"]}
  fr = cost_flops(r.frame, frame_vars, r.frame_input_shapes(batch))
  return {"F": FlopCount(preset_name, "F (per source)", batch, f, _num_params(var["F"])),
          "frame": FlopCount(preset_name, frame_part_label(r), batch, fr,
                             _num_params(var["W"]) + _num_params(var["G"]))}


def _fmt_fps(x: float) -> str:
  return f"{x:,.0f}" if x >= 10 else f"{x:.1f}"


def flops_table(counts: Sequence[FlopCount]) -> list[tuple[str, str, str, str]]:
  """(name, config, GFLOP, floor text) rows, plus an upper512x768 + face_refine total when both present."""
  rows = []
  for c in counts:
    floor = ", ".join(f"{k} {_fmt_fps(v)}" for k, v in c.floor_fps().items())
    unit = "source" if c.part.startswith("F ") else "frame"
    rows.append((_label(c.preset), f"{c.part}, B={c.batch}, {c.params / 1e6:.3g} M params",
                 f"{c.per_item / 1e9:.4g} GFLOP/{unit}", floor))
  frames = {c.preset: c for c in counts if not c.part.startswith("F ")}
  for suffix in ("", "_lean"):
    upper, refine = "upper512x768" + suffix, "face_refine" + suffix
    if upper in frames and refine in frames:
      total = frames[upper].per_item + frames[refine].per_item
      floor = ", ".join(f"{k} {_fmt_fps(peak / total)}" for k, peak in PEAKS.items())
      rows.append((f"{upper} + {refine}", "frame parts of both (full ChatAnyone frame)",
                   f"{total / 1e9:.4g} GFLOP/frame", floor))
  return rows


def flops_rows_md(rows: Sequence[tuple[str, str, str, str]]) -> list[str]:
  """RESULTS.md rows in the harness's columns; the timing columns are "-" (nothing is run)."""
  date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
  commit, device = harness.git_commit(), harness.device_name()
  out = []
  for name, cfg, gflop, floor in rows:
    out.append(f"| {date} | {commit} | {device} | {jax.__version__} | render FLOPs | {name}: {cfg}; XLA cost "
               f"analysis of the lowered HLO | - | - | - | - | - | {gflop}; floor fps (spec peak / FLOPs): "
               f"{floor} |\n")
  return out


def run_flops(names: Sequence[str] = FLOPS_PRESETS) -> list[tuple[str, str, str, str]]:
  counts = []
  for name in names:
    c = flops_per_frame(name)
    logging.info("%s: F %.2f GFLOP/source, frame %.2f GFLOP", name, c["F"].per_item / 1e9,
                 c["frame"].per_item / 1e9)
    counts += [c["F"], c["frame"]]
  return flops_table(counts)


def random_variables(shapes: Any, seed: int = 0) -> Any:
  """Concrete variables for a ShapeDtypeStruct tree without compiling an init: fan-in scaled normal
  kernels, BatchNorm scale / var 1, everything else (biases, means, zero-init gates) small noise."""
  rng = np.random.default_rng(seed)

  def leaf(path, s):
    key = str(getattr(path[-1], "key", path[-1]))
    if key in ("scale", "var"):
      x = np.ones(s.shape)
    elif key == "mean" or len(s.shape) < 2:
      x = 0.01 * rng.standard_normal(s.shape)
    else:
      x = rng.standard_normal(s.shape) / np.sqrt(math.prod(s.shape[:-1]))
    return jnp.asarray(x, s.dtype)

  return jax.tree_util.tree_map_with_path(leaf, shapes)


def _random_inputs(shapes: dict[str, jax.ShapeDtypeStruct], seed: int = 1) -> dict[str, jax.Array]:
  rng = np.random.default_rng(seed)
  out = {}
  for k, s in shapes.items():
    if k.startswith("kp"):
      x = rng.uniform(-0.8, 0.8, s.shape)
    elif k == "volume":
      x = rng.standard_normal(s.shape)
    else:  # images in [0, 1]
      x = rng.uniform(0, 1, s.shape)
    out[k] = jnp.asarray(x, s.dtype)
  return out


def time_preset(name: str, dtype=jnp.float32, *, batch: int = 1, iters: int = 10, warmup: int = 2,
                min_time_s: float = 0.0) -> list[harness.Timing]:
  """Median latency of F (per source) and of the frame part of a config at `batch`, in `dtype`.

  bfloat16 sets the modules' `dtype` (compute): params stay float32 and are cast per op, images are
  cast to bfloat16; BatchNorm statistics, softmax / sigmoid and keypoints stay float32.
  """
  r = Renderer(name, config(name), dtype=None if dtype == jnp.float32 else dtype)
  shapes = r.variable_shapes()
  variables = random_variables(shapes)
  dname = jnp.dtype(dtype).name
  dnote = "" if r.dtype is None else f" (module dtype={dname}: float32 params cast per op, {dname} images)"
  source = _random_inputs({"source": r.source_shape(batch)})["source"]
  f_fn = jax.jit(r.appearance)
  frame_fn = jax.jit(r.frame)
  in_h, in_w = r.cfg.image_size
  t_f = harness.time_jitted(f_fn, ({"F": variables["F"]}, source), name="render F (per source)",
                            config=f"{_label(name)}, {in_h}x{in_w} in, B={batch}, {dname}{dnote}",
                            iters=iters, warmup=warmup, min_time_s=min_time_s)
  t_f.throughput = f"{batch / (t_f.median_ms / 1e3):.1f} sources/s"
  inputs = _random_inputs(r.frame_input_shapes(batch))
  inputs["volume"] = f_fn({"F": variables["F"]}, source)
  out_h, out_w = r.cfg.output_size
  cfg = (f"{_label(name)}, {frame_part_label(r)}, {out_h}x{out_w} out, K={r.cfg.warping_network.num_kp}, "
         f"B={batch}, {dname}{dnote}")
  frame_args = ({"W": variables["W"], "G": variables["G"]}, inputs)
  t_fr = harness.time_jitted(frame_fn, frame_args, name="render frame", config=cfg, iters=iters,
                             warmup=warmup, min_time_s=min_time_s)
  t_fr.throughput = f"{batch / (t_fr.median_ms / 1e3):.1f} frames/s"
  for t in (t_f, t_fr):
    logging.info("%s | %s: median %.2f ms (compile %.2f s)", t.name, t.config, t.median_ms, t.compile_s)
  return [t_f, t_fr]


def _print_flops(rows):
  print("| config | part | FLOPs | floor fps (spec peak / FLOPs) |")
  print("|---|---|---|---|")
  for name, cfg, gflop, floor in rows:
    print(f"| {name} | {cfg} | {gflop} | {floor} |")


def _print_timings(timings):
  print("| benchmark | config | compile s | median ms | throughput |")
  print("|---|---|---|---|---|")
  for t in timings:
    print(f"| {t.name} | {t.config} | {t.compile_s:.2f} | {t.median_ms:.2f} | {t.throughput} |")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--flops", action="store_true", help=f"FLOP counts (default configs: {FLOPS_PRESETS})")
  p.add_argument("--cpu", action="store_true", help=f"CPU latency (default configs: {CPU_PRESETS})")
  p.add_argument("--gpu", action="store_true", help=f"GPU fps, float32 + bfloat16 ({GPU_PRESETS})")
  p.add_argument("--presets", nargs="+", choices=sorted(CONFIGS), help="override every mode's configs")
  p.add_argument("--iters", type=int, default=10)
  p.add_argument("--write", action="store_true", help="append rows to benchmarks/RESULTS.md")
  p.add_argument("--results", type=pathlib.Path, default=harness.RESULTS, help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  if not (a.flops or a.cpu or a.gpu):
    p.error("choose at least one of --flops, --cpu, --gpu")
  if a.gpu and jax.default_backend() != "gpu":
    p.error(f"--gpu needs a GPU backend (jax.default_backend() is {jax.default_backend()!r})")
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  flop_rows, timings = [], []
  if a.flops:
    flop_rows = run_flops(a.presets or FLOPS_PRESETS)
    _print_flops(flop_rows)
  if a.write:
    harness.append_rows([], a.results)  # creates the file with its header when missing
    md = flops_rows_md(flop_rows)
    with a.results.open("a") as f:
      f.writelines(md)
    print("".join(md), end="")

  def measure(names, dtypes):  # rows appended as measured: a time cap (benchmarks/gpu.sh) loses only the rest
    for name in names:
      for dtype in dtypes:
        ts = time_preset(name, dtype, iters=a.iters)
        timings.extend(ts)
        if a.write:
          print("".join(harness.append_rows(ts, a.results)), end="")

  if a.cpu:
    with jax.default_device(jax.devices("cpu")[0]):
      measure(a.presets or CPU_PRESETS, (jnp.float32,))
  if a.gpu:
    measure(a.presets or GPU_PRESETS, (jnp.float32, jnp.bfloat16))
  if timings:
    _print_timings(timings)
  return flop_rows, timings


if __name__ == "__main__":
  main()
