"""Our W+G and M side by side with LivePortrait's own PyTorch networks: agreement, then time per call.

  python -m benchmarks.vs_liveportrait --liveportrait-dir DIR                 # W+G and M, full size, fp32
  python -m benchmarks.vs_liveportrait --liveportrait-dir DIR --parts wg --iters 1
  python -m benchmarks.vs_liveportrait --liveportrait-dir DIR --reduced       # reference-vector configs
  python -m benchmarks.vs_liveportrait --liveportrait-dir DIR --compile --write
  python -m benchmarks.vs_liveportrait --liveportrait-dir DIR --dtype bf16 --compile   # on a GPU

DIR is your own clone of https://github.com/KwaiVGI/LivePortrait: its `src/modules` networks are imported
from there, nothing of LivePortrait is vendored here. PyTorch is no dependency of this project: install
it apart, e.g. `python -m pip install --target /tmp/torchsite torch pyyaml`, and run with
PYTHONPATH=/tmp/torchsite. Without DIR or torch this prints what is missing and exits 0 (2 with --strict).

Same weights: LivePortrait's modules are built with the kwargs of DIR's src/config/models.yaml (which must
equal the `liveportrait` preset's) or, with --reduced, of the reference vectors (`reference_reduced`:
64x64 images, K = 5, custom ConvNeXt-V2 depths / dims), seeded; norm affine parameters, GRN and any
constant-initialised parameter are then randomised, BatchNorm running statistics come from one train-mode
pass over the inputs and are then perturbed (eval mode is not batch statistics), G's spectral norms get 3
power iterations; the state dict goes through `chatanyone_jax.convert.liveportrait`. Same inputs: for W+G
an appearance volume N(0, 1) and K source / driving keypoints, one call W -> G per frame (F excluded); for
M one image U[0, 1) (256x256 at full size). The first call of each implementation (JAX trace + compile,
torch.compile's compile) is timed apart and its outputs must agree with torch eager's (max |ours - torch| /
max |torch| per output within --tol) before anything is timed; then --warmup untimed calls each and
--iters rounds calling each implementation once, in an order rotated every round. Printed: medians and
ours / theirs ratios (> 1: ours slower). Batch 1, float32 on CPU. On a GPU (JAX on GPU and torch with
CUDA) --dtype bf16 / fp16 runs ours in that compute dtype and torch under autocast (upstream's fp16
inference); --compile adds torch.compile. --write appends the rows to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import pathlib
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness
from chatanyone_jax.convert import liveportrait as convert
from chatanyone_jax.render import presets
from chatanyone_jax.render.motion_extractor import MotionExtractor
from chatanyone_jax.render.presets import RendererConfig
from chatanyone_jax.render.spade_generator import SPADEDecoder
from chatanyone_jax.render.warping_network import WarpingNetwork

UPSTREAM = "https://github.com/KwaiVGI/LivePortrait"
# Files of a LivePortrait clone that this benchmark imports (relative to its root).
CLONE_FILES = tuple(f"src/modules/{m}.py" for m in (
    "warping_network", "dense_motion", "spade_generator", "motion_extractor", "convnextv2", "util"))
MODELS_YAML = "src/config/models.yaml"
TORCH_HINT = ("install it apart from this project's venv, e.g. `python -m pip install --target "
              "/tmp/torchsite torch pyyaml` (add --index-url https://download.pytorch.org/whl/cpu for the "
              "CPU build), then run with PYTHONPATH=/tmp/torchsite")
PARTS = {"wg": "W+G", "m": "M"}
OURS, EAGER, COMPILED = "ours (JAX jit)", "torch eager", "torch.compile"
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# Relative tolerance (max |ours - torch| / max |torch|) by (device, dtype). On a GPU both sides may run
# float32 convolutions in TF32; bf16 / fp16 compound through G's 8 SPADE blocks.
TOLERANCE = {("cpu", "fp32"): 1e-3, ("cuda", "fp32"): 1e-2, ("cuda", "bf16"): 1e-1, ("cuda", "fp16"): 5e-2}
CUSTOM_BACKBONE = "convnextv2_chatanyone"  # registered in LivePortrait's backbone table for non-tiny M
TINY = ((3, 3, 9, 3), (96, 192, 384, 768))  # convnextv2_tiny's (depths, dims)
SPADE_HIDDEN = 128  # fixed in LivePortrait's SPADE
MASK_KERNEL = 7  # LivePortrait's dense-motion mask conv


class Skip(Exception):
  """Something the comparison needs is not given (exit 0, or 2 with --strict)."""


class UsageError(Exception):
  """A wrong argument or environment (exit 2)."""


class Disagreement(Exception):
  """Our outputs do not match LivePortrait's (exit 1)."""


# ---- LivePortrait's kwargs, the clone, torch --------------------------------------------------------------

def torch_kwargs(cfg: RendererConfig) -> dict[str, dict[str, Any]]:
  """LivePortrait constructor kwargs of cfg's W, G and M, keyed like models.yaml's `model_params`.

  Raises ValueError for what LivePortrait's constructors cannot express.
  """
  w, g, m = cfg.warping_network, cfg.spade_generator, cfg.motion_extractor
  dm = w.dense_motion
  problems = []
  if dm.mask_kernel_size != MASK_KERNEL:
    problems.append(f"dense-motion mask_kernel_size {dm.mask_kernel_size} (LivePortrait: {MASK_KERNEL})")
  if g.spade_hidden != SPADE_HIDDEN:
    problems.append(f"spade_hidden {g.spade_hidden} (LivePortrait: {SPADE_HIDDEN})")
  if g.hand_injection:
    problems.append("hand injection in G")
  if w.reshape_channel * dm.reshape_depth != w.max_features:
    problems.append(f"W's volume C x D = {w.reshape_channel} x {dm.reshape_depth} != max_features "
                    f"{w.max_features} (LivePortrait's `third` takes max_features channels)")
  if problems:
    raise ValueError("not expressible with LivePortrait's constructors: " + "; ".join(problems))
  warping = {"num_kp": w.num_kp, "block_expansion": w.block_expansion, "max_features": w.max_features,
             "num_down_blocks": w.num_down_blocks, "reshape_channel": w.reshape_channel,
             "estimate_occlusion_map": w.estimate_occlusion_map,
             "dense_motion_params": {"block_expansion": dm.block_expansion, "max_features": dm.max_features,
                                     "num_blocks": dm.num_blocks, "reshape_depth": dm.reshape_depth,
                                     "compress": dm.compress}}
  if not w.flag_use_occlusion_map:
    warping["flag_use_occlusion_map"] = False
  spade = {"upscale": g.upscale, "block_expansion": g.block_expansion, "max_features": g.max_features,
           "num_down_blocks": g.num_down_blocks}
  if g.out_channels != 64:  # SPADEDecoder's default
    spade["out_channels"] = g.out_channels
  motion: dict[str, Any] = {"num_kp": m.num_kp, "backbone": "convnextv2_tiny"}
  if (tuple(m.depths), tuple(m.dims)) != TINY:
    motion.update(backbone=CUSTOM_BACKBONE, depths=list(m.depths), dims=list(m.dims))
  if m.num_bins != 66:
    motion["num_bins"] = m.num_bins
  if m.image_channel != 3:
    motion["in_chans"] = m.image_channel
  return {"warping_module_params": warping, "spade_generator_params": spade,
          "motion_extractor_params": motion}


def check_clone(lp_dir: pathlib.Path) -> pathlib.Path:
  """The resolved clone root; raises UsageError when lp_dir is not a LivePortrait clone."""
  if not lp_dir.is_dir():
    raise UsageError(f"--liveportrait-dir {lp_dir} is not a directory: pass the root of a clone of "
                     f"{UPSTREAM}")
  missing = [f for f in CLONE_FILES if not (lp_dir / f).is_file()]
  if missing:
    raise UsageError(f"--liveportrait-dir {lp_dir} is not a LivePortrait clone: missing {', '.join(missing)} "
                     f"(pass the root of a clone of {UPSTREAM})")
  return lp_dir.resolve()


def import_torch():
  """torch, or Skip saying how to provide it."""
  try:
    import torch
  except ImportError as e:
    raise Skip(f"torch is not importable ({e}): LivePortrait's networks need PyTorch; {TORCH_HINT}") from e
  return torch


def import_liveportrait(lp_dir: pathlib.Path) -> dict[str, Any]:
  """LivePortrait's network modules, imported from the clone at lp_dir (`src.modules.*`)."""
  sys.path.insert(0, str(lp_dir))
  try:
    mods = {name: importlib.import_module(f"src.modules.{name}")
            for name in ("warping_network", "spade_generator", "motion_extractor", "convnextv2")}
  except ImportError as e:
    raise UsageError(f"importing LivePortrait's networks from {lp_dir} failed: {e}") from e
  finally:
    sys.path.remove(str(lp_dir))
  for name, mod in mods.items():
    if not pathlib.Path(mod.__file__).resolve().is_relative_to(lp_dir):
      raise UsageError(f"src.modules.{name} was imported from {mod.__file__}, not from {lp_dir}: another "
                       f"`src` package shadows the clone; run from a directory without one")
  return mods


def models_yaml_kwargs(lp_dir: pathlib.Path) -> dict[str, Any] | None:
  """The clone's models.yaml `model_params`, or None (with a note) when PyYAML or the file is missing."""
  path = lp_dir / MODELS_YAML
  try:
    import yaml
  except ImportError:
    print(f"note: PyYAML is not importable, so {MODELS_YAML} is not checked against the `liveportrait` "
          f"preset, whose kwargs are used (install pyyaml next to torch to check it)")
    return None
  if not path.is_file():
    print(f"note: {path} is missing: the `liveportrait` preset's kwargs are used")
    return None
  return yaml.safe_load(path.read_text())["model_params"]


def resolve_kwargs(cfg: RendererConfig, lp_dir: pathlib.Path, reduced: bool) -> dict[str, dict[str, Any]]:
  """torch_kwargs(cfg), checked against the clone's models.yaml at full size."""
  try:
    kwargs = torch_kwargs(cfg)
  except ValueError as e:
    raise UsageError(str(e)) from e
  if not reduced:
    upstream = models_yaml_kwargs(lp_dir)
    if upstream is not None:
      diff = differences({k: upstream.get(k) for k in kwargs}, kwargs)
      if diff:
        raise UsageError(f"the clone's {MODELS_YAML} differs from the `liveportrait` preset "
                         f"(yaml vs preset): {'; '.join(diff)}")
  return kwargs


def differences(a: Any, b: Any, path: str = "") -> list[str]:
  """"path: a vs b" for every leaf where the nested dicts a and b differ (a missing leaf is <missing>)."""
  if isinstance(a, dict) and isinstance(b, dict):
    return [d for k in sorted(set(a) | set(b), key=str)
            for d in differences(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{path}.{k}" if path else k)]
  return [] if a == b else [f"{path}: {a} vs {b}"]


def pick_device(jax_backend: str, torch_cuda: bool, dtype: str) -> str:
  """"cpu" or "cuda" for both sides: CUDA only when JAX runs on a GPU and torch has CUDA."""
  if jax_backend == "gpu" and not torch_cuda:
    raise UsageError("JAX runs on a GPU but this torch has no CUDA: install a CUDA build of torch, or "
                     "compare on CPU with JAX_PLATFORMS=cpu")
  device = "cuda" if jax_backend == "gpu" else "cpu"
  if dtype != "fp32" and device == "cpu":
    raise UsageError(f"--dtype {dtype} needs a GPU (JAX on GPU and torch with CUDA); on CPU use fp32")
  return device


def tolerance(device: str, dtype: str) -> float:
  return TOLERANCE[(device, dtype)]


# ---- inputs, weights ---------------------------------------------------------------------------------------

def make_inputs(cfg: RendererConfig, part: str, seed: int) -> dict[str, np.ndarray]:
  """Batch-1 float32 inputs in LivePortrait's layout (NCDHW volume, (1, K, 3) keypoints, NCHW image)."""
  rng = np.random.default_rng(seed)
  if part == "wg":
    w, down = cfg.warping_network, 2 ** cfg.appearance_feature_extractor.num_down_blocks
    h, wd = (s // down for s in cfg.image_size)
    volume = rng.standard_normal((1, w.reshape_channel, w.dense_motion.reshape_depth, h, wd), np.float32)
    kp_source = np.clip(0.3 * rng.standard_normal((1, w.num_kp, 3)), -0.9, 0.9).astype(np.float32)
    kp_driving = (kp_source + 0.05 * rng.standard_normal(kp_source.shape)).astype(np.float32)
    return {"feature_3d": volume, "kp_driving": kp_driving, "kp_source": kp_source}
  if part == "m":
    shape = (1, cfg.motion_extractor.image_channel, *cfg.image_size)
    return {"x": rng.random(shape, np.float32)}
  raise ValueError(f"unknown part {part!r}; known: {sorted(PARTS)}")


def build_torch(torch, lp: Mapping[str, Any], kwargs: Mapping[str, dict], part: str,
                inputs: Mapping[str, Any], seed: int) -> dict[str, Any]:
  """LivePortrait's networks of `part` ({"W", "G"} or {"M"}), randomised (`randomize_`), in eval mode."""
  torch.manual_seed(seed)
  gen = torch.Generator().manual_seed(seed + 1)
  if part == "wg":
    nets = {"W": lp["warping_network"].WarpingNetwork(**kwargs["warping_module_params"]),
            "G": lp["spade_generator"].SPADEDecoder(**kwargs["spade_generator_params"])}
    calibrate = {"W": lambda w: w(**inputs)}
  else:
    mkw = kwargs["motion_extractor_params"]
    if mkw["backbone"] == CUSTOM_BACKBONE:  # the class itself takes depths / dims
      lp["motion_extractor"].model_dict[CUSTOM_BACKBONE] = lp["convnextv2"].ConvNeXtV2
    nets = {"M": lp["motion_extractor"].MotionExtractor(**mkw)}
    calibrate = {"M": lambda m: m(inputs["x"])}
  for name, net in nets.items():
    randomize_(torch, net, gen, calibrate[name] if name in calibrate else None)
  return nets


def randomize_(torch, net, gen, forward: Callable[[Any], Any] | None) -> None:
  """Makes agreement meaningful: random norm affines / GRN / constant parameters, BatchNorm running
  statistics from one train-mode pass of `forward` then perturbed, 3 spectral-norm power iterations."""
  nn = torch.nn

  def normal(t, std):
    t.copy_(std * torch.randn(t.shape, generator=gen))

  def uniform(t, lo, hi):
    t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=gen))

  with torch.no_grad():
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in net.modules():
      if m in bns or (type(m).__name__ == "LayerNorm" and getattr(m, "weight", None) is not None):
        uniform(m.weight, 0.5, 1.5)
        normal(m.bias, 0.2)
      elif type(m).__name__ == "GRN":
        normal(m.gamma, 0.5)
        normal(m.beta, 0.2)
    for p in net.parameters():  # anything else still constant (zero-initialised biases)
      if p.numel() > 1 and bool((p == p.flatten()[0]).all()):
        normal(p, 0.02)
    for m in net.modules():  # spectral norm: torch's u, v start random; eval uses them without iterating
      if hasattr(m, "weight_orig") and hasattr(m, "weight_u"):
        w = m.weight_orig.reshape(m.weight_orig.shape[0], -1)
        u, v = m.weight_u.clone(), m.weight_v.clone()
        for _ in range(3):
          v = nn.functional.normalize(w.t() @ u, dim=0, eps=1e-12)
          u = nn.functional.normalize(w @ v, dim=0, eps=1e-12)
        m.weight_u.copy_(u)
        m.weight_v.copy_(v)
    if bns and forward is not None:
      for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one pass gives that pass's statistics
      net.train()
      forward(net)
      for m in bns:
        normal_mean = torch.randn(m.running_mean.shape, generator=gen)
        m.running_mean.add_(0.2 * m.running_var.sqrt() * normal_mean)
        m.running_var.mul_(0.6 + 0.9 * torch.rand(m.running_var.shape, generator=gen))
        m.momentum = 0.1
  net.eval()


def state_dict_numpy(net) -> dict[str, np.ndarray]:
  return {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}


def convert_variables(cfg: RendererConfig, part: str, nets: Mapping[str, Any]) -> dict[str, Any]:
  """Our Flax variables of the torch networks, through `chatanyone_jax.convert.liveportrait`."""
  if part == "wg":
    return {"W": convert.convert_warping_network(state_dict_numpy(nets["W"]), cfg.warping_network),
            "G": convert.convert_spade_decoder(state_dict_numpy(nets["G"]), cfg.spade_generator)}
  return {"M": convert.convert_motion_extractor(state_dict_numpy(nets["M"]), cfg.motion_extractor)}


# ---- the implementations ---------------------------------------------------------------------------------

def _nchw(x: np.ndarray) -> np.ndarray:
  """(B, *spatial, C) -> (B, C, *spatial)."""
  return np.moveaxis(np.asarray(x, np.float32), -1, 1)


def ours(cfg: RendererConfig, part: str, variables: Mapping[str, Any], inputs: Mapping[str, np.ndarray],
         dtype: str) -> tuple[Callable[[], Any], Callable[[Any], dict[str, np.ndarray]]]:
  """(call, outputs): call() runs our jitted part once and blocks; outputs(result) in torch layout."""
  dt = None if dtype == "fp32" else jnp.dtype(DTYPES[dtype])
  act = dt or jnp.float32
  variables = jax.device_put(variables)
  if part == "wg":
    W, G = WarpingNetwork(cfg.warping_network, dtype=dt), SPADEDecoder(cfg.spade_generator, dtype=dt)

    @jax.jit
    def frame(v, volume, kp_driving, kp_source):
      out = W.apply(v["W"], volume, kp_driving, kp_source)["out"]
      return out, G.apply(v["G"], out)

    args = jax.device_put((jnp.asarray(np.moveaxis(inputs["feature_3d"], 1, -1), act),
                           jnp.asarray(inputs["kp_driving"]), jnp.asarray(inputs["kp_source"])))
    return (lambda: jax.block_until_ready(frame(variables, *args)),
            lambda r: {"W out": _nchw(r[0]), "image": _nchw(r[1])})
  M = MotionExtractor(cfg.motion_extractor, dtype=dt)
  motion = jax.jit(lambda v, x: M.apply(v["M"], x))
  x = jax.device_put(jnp.asarray(np.moveaxis(inputs["x"], 1, -1), act))
  return (lambda: jax.block_until_ready(motion(variables, x)),
          lambda r: {k: np.asarray(v, np.float32) for k, v in r.items()})


def theirs(torch, part: str, nets: Mapping[str, Any], inputs: Mapping[str, np.ndarray], device: str,
           dtype: str, compile: bool) -> tuple[Callable[[], Any], Callable[[Any], dict[str, np.ndarray]]]:
  """(call, outputs) of LivePortrait's part, eager or torch.compile-d; under autocast for bf16 / fp16."""
  nets = {k: n.to(device) for k, n in nets.items()}
  args = {k: torch.from_numpy(v).to(device) for k, v in inputs.items()}
  if part == "wg":
    W, G = nets["W"], nets["G"]

    def fn(feature_3d, kp_driving, kp_source):
      out = W(feature_3d=feature_3d, kp_driving=kp_driving, kp_source=kp_source)["out"]
      return out, G(out)

    def outputs(r):
      return {"W out": r[0].float().cpu().numpy(), "image": r[1].float().cpu().numpy()}
  else:
    fn = nets["M"]

    def outputs(r):
      return {k: v.float().cpu().numpy() for k, v in r.items()}
  if compile:
    fn = torch.compile(fn)

  def call():
    amp = (torch.autocast(device, dtype=getattr(torch, DTYPES[dtype])) if dtype != "fp32"
           else contextlib.nullcontext())
    with torch.no_grad(), amp:
      out = fn(**args)
    if device == "cuda":
      torch.cuda.synchronize()
    return out

  return call, outputs


# ---- agreement, timing, summary (no torch) ----------------------------------------------------------------

def agreement(mine: Mapping[str, np.ndarray],
              ref: Mapping[str, np.ndarray]) -> dict[str, tuple[float, float]]:
  """{output: (max |mine - ref|, that / max |ref|)} over ref's outputs; shapes must be equal."""
  if set(mine) != set(ref):
    raise ValueError(f"outputs differ: {sorted(mine)} vs {sorted(ref)}")
  errs = {}
  for k, r in ref.items():
    m, r = np.asarray(mine[k], np.float64), np.asarray(r, np.float64)
    if m.shape != r.shape:
      raise ValueError(f"{k}: shape {m.shape} vs LivePortrait's {r.shape}")
    if not np.all(np.isfinite(m)):
      return {**errs, k: (float("inf"), float("inf"))}
    err = float(np.max(np.abs(m - r)))
    errs[k] = (err, err / max(float(np.max(np.abs(r))), 1e-30))
  return errs


def failures(errs: Mapping[str, tuple[float, float]], tol: float) -> list[str]:
  """Outputs whose relative error exceeds tol (or is not finite)."""
  return [k for k, (_, rel) in errs.items() if not rel <= tol]


def interleaved_order(names: Sequence[str], rounds: int) -> list[list[str]]:
  """One list per round, each name once, rotated by one every round (no implementation always first)."""
  n = len(names)
  return [[names[(r + i) % n] for i in range(n)] for r in range(rounds)]


def first_calls(calls: Mapping[str, Callable[[], Any]],
                clock: Callable[[], float] = time.perf_counter) -> dict[str, tuple[float, Any]]:
  """{name: (seconds, result)} of each call's first run (trace / compile included), in order."""
  out = {}
  for name, call in calls.items():
    t = clock()
    result = call()
    out[name] = (clock() - t, result)
  return out


def time_interleaved(calls: Mapping[str, Callable[[], Any]], iters: int, warmup: int = 1,
                     clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
  """`warmup` untimed rounds, then `iters` timed rounds in `interleaved_order`: {name: seconds per call}."""
  names = list(calls)
  for _ in range(warmup):
    for name in names:
      calls[name]()
  times: dict[str, list[float]] = {n: [] for n in names}
  for order in interleaved_order(names, iters):
    for name in order:
      t = clock()
      calls[name]()
      times[name].append(clock() - t)
  return times


def ratios(times: Mapping[str, Sequence[float]], ours_name: str = OURS) -> dict[str, float]:
  """{other implementation: median(ours) / median(it)} (> 1: ours is slower)."""
  mine = statistics.median(times[ours_name])
  return {n: mine / statistics.median(t) for n, t in times.items() if n != ours_name}


def ratio_text(name: str, ratio: float) -> str:
  verdict = "ours slower" if ratio > 1 else "ours faster"
  return f"ours/{name} {ratio:.2f}x ({verdict})"


@dataclasses.dataclass
class PartResult:
  part: str  # a key of PARTS
  config: str
  tol: float
  errors: dict[str, dict[str, tuple[float, float]]]  # implementation -> output -> (max abs, rel)
  first_s: dict[str, float]
  times: dict[str, list[float]] = dataclasses.field(default_factory=dict)

  def timings(self) -> list[harness.Timing]:
    rs = ratios(self.times) if self.times else {}
    rows = []
    for name, t in self.times.items():
      if name == OURS:
        thr = ", ".join(ratio_text(n, r) for n, r in rs.items())
      else:
        thr = ratio_text(name, rs[name])
      rows.append(harness.Timing(name=f"vs LivePortrait {PARTS[self.part]}: {name}", config=self.config,
                                 compile_s=self.first_s[name], times_s=list(t), throughput=thr))
    return rows


def summary(r: PartResult) -> str:
  """Human-readable lines: agreement per output, then median ms per implementation and the ratios."""
  lines = [f"{PARTS[r.part]} [{r.config}]"]
  for impl, errs in r.errors.items():
    bad = failures(errs, r.tol)
    worst = ", ".join(f"{k} max abs {a:.2e} rel {rel:.2e}" for k, (a, rel) in errs.items())
    lines.append(f"  agreement {impl} vs torch eager: {worst} -> "
                 f"{'FAIL' if bad else 'ok'} (rel tol {r.tol:g})")
  rs = ratios(r.times) if r.times else {}
  for name, t in r.times.items():
    med = 1e3 * statistics.median(t)
    tail = f"  {ratio_text(name, rs[name])}" if name in rs else ""
    lines.append(f"  {name:<16} median {med:10.1f} ms over {len(t)} (first call {r.first_s[name]:.2f} s)"
                 + tail)
  return "\n".join(lines)


# ---- driver ----------------------------------------------------------------------------------------------

def run_part(torch, lp, cfg: RendererConfig, kwargs, part: str, *, reduced: bool, device: str, dtype: str,
             compile: bool, iters: int, warmup: int, tol: float, seed: int) -> PartResult:
  inputs = make_inputs(cfg, part, seed)
  with torch.no_grad():
    nets = build_torch(torch, lp, kwargs, part, {k: torch.from_numpy(v) for k, v in inputs.items()}, seed)
  variables = convert_variables(cfg, part, nets)
  impls = {OURS: ours(cfg, part, variables, inputs, dtype),
           EAGER: theirs(torch, part, nets, inputs, device, dtype, compile=False)}
  if compile:
    impls[COMPILED] = theirs(torch, part, nets, inputs, device, dtype, compile=True)
  size = "x".join(map(str, cfg.image_size))
  config = (f"{'reference_reduced' if reduced else 'liveportrait'} {size} in, B=1, {DTYPES[dtype]}, random "
            f"weights; torch {torch.__version__} ({torch.get_num_threads()} threads) on {device}")
  print(f"{PARTS[part]}: first calls (JAX compile{', torch.compile' if compile else ''}) ...", flush=True)
  first = first_calls({n: call for n, (call, _) in impls.items() if n != COMPILED})
  if compile:
    try:
      first.update(first_calls({COMPILED: impls[COMPILED][0]}))
    except Exception as e:  # noqa: BLE001 - inductor needs a C++ compiler (CPU) or Triton (GPU)
      print(f"note: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            f"timing without it")
      del impls[COMPILED]
  ref = impls[EAGER][1](first[EAGER][1])
  errors = {n: agreement(impls[n][1](first[n][1]), ref) for n in impls if n != EAGER}
  result = PartResult(part, config, tol, errors, {n: s for n, (s, _) in first.items()})
  bad = {n: failures(e, tol) for n, e in errors.items() if failures(e, tol)}
  if bad:
    print(summary(result))
    raise Disagreement(f"{PARTS[part]}: outputs disagree with LivePortrait's beyond rel tol {tol:g}: "
                       + "; ".join(f"{n}: {', '.join(ks)}" for n, ks in bad.items()))
  print(f"{PARTS[part]}: outputs agree; timing {iters} interleaved rounds after {warmup} warm-up ...",
        flush=True)
  result.times = time_interleaved({n: call for n, (call, _) in impls.items()}, iters, warmup)
  return result


def run(a: argparse.Namespace) -> list[PartResult]:
  if a.liveportrait_dir is None:
    raise Skip(f"no LivePortrait clone given: pass --liveportrait-dir DIR, the root of your own clone of "
               f"{UPSTREAM} (its PyTorch networks are imported from there, never vendored here)")
  lp_dir = check_clone(a.liveportrait_dir)
  torch = import_torch()
  device = pick_device(jax.default_backend(), bool(torch.cuda.is_available()), a.dtype)
  if device == "cpu" and torch.cuda.is_available():
    print("note: torch has CUDA but JAX runs on CPU: both sides run on CPU")
  lp = import_liveportrait(lp_dir)
  cfg = presets.reference_reduced if a.reduced else presets.get("liveportrait")
  kwargs = resolve_kwargs(cfg, lp_dir, a.reduced)
  tol = a.tol if a.tol is not None else tolerance(device, a.dtype)
  print(f"vs LivePortrait ({lp_dir}) on {harness.device_name()}; JAX {jax.__version__} "
        f"({jax.default_backend()}), torch {torch.__version__} ({device})")
  results = []
  for part in a.parts:
    r = run_part(torch, lp, cfg, kwargs, part, reduced=a.reduced, device=device, dtype=a.dtype,
                 compile=a.compile, iters=a.iters, warmup=a.warmup, tol=tol, seed=a.seed)
    print(summary(r), flush=True)
    results.append(r)
  if a.write:
    rows = harness.append_rows([t for r in results for t in r.timings()], a.results)
    print("".join(rows), end="")
  return results


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m benchmarks.vs_liveportrait",
                              description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--liveportrait-dir", type=pathlib.Path, metavar="DIR",
                 help=f"root of your clone of {UPSTREAM}")
  p.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS),
                 help="wg: W+G per frame; m: the motion extractor M")
  p.add_argument("--reduced", action="store_true",
                 help="the reference vectors' reduced configs (reference_reduced, 64x64), not full size")
  p.add_argument("--iters", type=int, default=5, help="timed interleaved rounds")
  p.add_argument("--warmup", type=int, default=1, help="untimed rounds after the first calls")
  p.add_argument("--compile", action="store_true", help="also time torch.compile")
  p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="bf16 / fp16 need a GPU")
  defaults = ", ".join(f"{d} {t} {v:g}" for (d, t), v in TOLERANCE.items())
  p.add_argument("--tol", type=float, help=f"relative tolerance of the agreement check (default: {defaults})")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--strict", action="store_true", help="exit 2 instead of 0 when skipped")
  p.add_argument("--write", action="store_true", help="append rows to benchmarks/RESULTS.md")
  p.add_argument("--results", type=pathlib.Path, default=harness.RESULTS, help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  if a.iters < 1 or a.warmup < 0:
    p.error("--iters must be >= 1 and --warmup >= 0")
  try:
    run(a)
  except Skip as e:
    print(f"vs_liveportrait: skipped: {e}")
    return 2 if a.strict else 0
  except UsageError as e:
    print(f"vs_liveportrait: error: {e}", file=sys.stderr)
    return 2
  except Disagreement as e:
    print(f"vs_liveportrait: FAILED: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
