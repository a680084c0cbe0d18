"""Times trilinear grid_sample at the renderer's volume sizes.

  python -m benchmarks.grid_sample_bench [--iters 10] [--batch 1] [--no-write]

Volumes are (B, D=16, H, W, C=32) warped by a dense (B, 16, H, W, 3) flow,
i.e. LivePortrait's appearance volume 32x16x64x64 for the head renderer and
32x16x96x64 (H=96, W=64) for the upper-body renderer. Forward and
forward+backward (gradients w.r.t. volume and grid, as in training).
"""

from __future__ import annotations

import argparse
import logging

import jax
import jax.numpy as jnp

from benchmarks.harness import append_rows, time_jitted
from chatanyone_jax.ops import grid_sample, make_coordinate_grid

SIZES = {"head 32x16x64x64": (16, 64, 64), "upper 32x16x96x64": (16, 96, 64)}


def make_inputs(batch: int, dhw: tuple[int, int, int], channels: int = 32, dtype=jnp.float32):
  kv, kg = jax.random.split(jax.random.key(0))
  vol = jax.random.normal(kv, (batch, *dhw, channels), dtype)
  # A realistic flow: identity grid plus a smooth-ish random displacement.
  grid = make_coordinate_grid(dhw)[None] + 0.05 * jax.random.normal(kg, (batch, *dhw, 3))
  return vol, grid.astype(jnp.float32)


def run(iters: int = 10, batch: int = 1, dtype=jnp.float32):
  fwd = jax.jit(grid_sample)

  @jax.jit
  def fwd_bwd(vol, grid):
    return jax.grad(lambda v, g: jnp.sum(grid_sample(v, g) ** 2), argnums=(0, 1))(vol, grid)

  timings = []
  for label, dhw in SIZES.items():
    vol, grid = make_inputs(batch, dhw, dtype=dtype)
    cfg = f"{label}, B={batch}, {jnp.dtype(dtype).name}"
    for name, fn in (("grid_sample fwd", fwd), ("grid_sample fwd+bwd", fwd_bwd)):
      t = time_jitted(fn, (vol, grid), name=name, config=cfg, iters=iters)
      voxels = batch * dhw[0] * dhw[1] * dhw[2]
      t.throughput = f"{voxels / (t.median_ms / 1e3) / 1e6:.1f} Mvox/s"
      logging.info("%s %s: median %.2f ms (compile %.2f s)", name, cfg, t.median_ms, t.compile_s)
      timings.append(t)
  return timings


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--iters", type=int, default=10)
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--bf16", action="store_true", help="bfloat16 volume")
  p.add_argument("--no-write", action="store_true", help="print rows, do not append to RESULTS.md")
  a = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  timings = run(a.iters, a.batch, jnp.bfloat16 if a.bf16 else jnp.float32)
  if a.no_write:
    from benchmarks.harness import format_row
    for t in timings:
      print(format_row(t), end="")
  else:
    for row in append_rows(timings):
      print(row, end="")


if __name__ == "__main__":
  main()
