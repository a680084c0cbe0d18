"""Stage-1 latency: one 40-frame window of FaceMotionDiT + UpperBodyMotion sampling.

  python -m benchmarks.motion_bench [--steps 5 10 25] [--iters 5] [--tiny] [--no-write]

Per configuration, one jitted function samples the face window with DDIM
(with or without classifier-free guidance, which doubles the face model's
batch), projects the sampled coefficients to the 32 head keypoints through
the shipped head template, and samples the upper-body window with DDIM
conditioned on them. Weights are random (timing does not depend on them);
the AdaLN-Zero projections are filled with noise so no branch is skipped.
Real time needs the total well under the window's 40 / 30 = 1.33 s of audio.
"""

from __future__ import annotations

import argparse
import logging

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import append_rows, format_row, time_jitted
from chatanyone_jax.motion import diffusion
from chatanyone_jax.motion.face_motion_dit import FaceMotionConfig, FaceMotionDiT, dummy_inputs
from chatanyone_jax.motion.sampling import FaceConditions, sample_window
from chatanyone_jax.motion.upper_body_motion import UpperBodyConfig, UpperBodyMotion, dummy_upper_body_inputs
from chatanyone_jax.ops import init_rng
from chatanyone_jax.template import load_head_template
from chatanyone_jax.template.head_template import NUM_EXP, project_keypoints


def _noise_params(shapes, key):
  """Small noise of every leaf's shape (zero-initialised layers included); `shapes` a tree of arrays or
  ShapeDtypeStructs."""
  leaves, tree = jax.tree.flatten(shapes)
  keys = jax.random.split(init_rng.init_key(key), len(leaves))
  return jax.tree.unflatten(tree, [0.02 * jax.random.normal(k, x.shape, x.dtype)
                                   for k, x in zip(keys, leaves, strict=True)])


def build(tiny: bool = False):
  """The two stage-1 models and noise parameters of their shapes: one jitted draw, no init run (values do
  not change the cost; eager inits and one draw program per leaf shape cost seconds of compiling)."""
  fcfg = FaceMotionConfig.tiny() if tiny else FaceMotionConfig()
  ucfg = UpperBodyConfig.tiny() if tiny else UpperBodyConfig()
  face, body = FaceMotionDiT(fcfg), UpperBodyMotion(ucfg)
  kf, ku = jax.random.split(jax.random.key(0))
  fshapes = jax.eval_shape(lambda: face.init(kf, *dummy_inputs(fcfg, 1, ref_len=None)[:5])["params"])
  ushapes = jax.eval_shape(lambda: body.init(ku, *dummy_upper_body_inputs(ucfg, 1))["params"])
  fparams, uparams = jax.jit(lambda a, b: (_noise_params(fshapes, a), _noise_params(ushapes, b)))(kf, ku)
  return face, fparams, fcfg, body, uparams, ucfg


def run(steps=(5, 10, 25), iters: int = 5, tiny: bool = False):
  face, fparams, fcfg, body, uparams, ucfg = build(tiny)
  template = load_head_template()
  schedule = diffusion.cosine_schedule()
  n = fcfg.window
  rng = np.random.default_rng(0)
  audio = jnp.asarray(rng.normal(size=(1, n, fcfg.audio_dim)), jnp.float32)
  history = jnp.zeros((1, fcfg.history, fcfg.motion_dim))
  style = jnp.ones((1, fcfg.num_style))
  b_audio = jnp.asarray(rng.normal(size=(1, ucfg.window, ucfg.audio_dim)), jnp.float32)
  app = jnp.asarray(rng.normal(size=(1, 4, ucfg.app_dim)), jnp.float32)
  label = "tiny" if tiny else "full"
  nparams = sum(x.size for x in jax.tree.leaves((fparams, uparams)))
  timings = []
  for num_steps in steps:
    for guided in (False, True):
      def window(fparams, uparams, key, num_steps=num_steps, guided=guided):
        cond = FaceConditions(audio, history, style)
        kf, ku = jax.random.split(key)
        motion = sample_window(face, fparams, cond, kf, schedule=schedule, num_steps=num_steps,
                               guidance_scale=2.0 if guided else 1.0, guidance=guided)  # (1, T, 58)
        exp, pose = motion[0, :, :NUM_EXP], motion[0, :, NUM_EXP:]
        head_kp = project_keypoints(template, pose, jnp.ones((n,)), exp)[None]  # (1, T, 32, 3)

        def body_eps(x, t):
          return body.apply({"params": uparams}, x, t, head_kp, b_audio, app)

        upper = diffusion.ddim_sample(body_eps, schedule, (1, ucfg.window, ucfg.layout.dim), ku,
                                      num_steps=num_steps)
        return motion, upper

      fn = jax.jit(window)
      cfg = (f"{label} ({nparams / 1e6:.1f} M params), 1 window x {n} frames, {num_steps} DDIM steps, "
             f"face CFG {'on (batch x2)' if guided else 'off'}")
      timing = time_jitted(fn, (fparams, uparams, jax.random.key(1)), name="stage-1 window", config=cfg,
                           iters=iters, warmup=1)
      timing.throughput = f"{n / (timing.median_ms / 1e3):.0f} frames/s of motion"
      logging.info("%s: median %.1f ms", cfg, timing.median_ms)
      timings.append(timing)
  return timings


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--steps", type=int, nargs="+", default=[5, 10, 25])
  p.add_argument("--iters", type=int, default=5)
  p.add_argument("--tiny", action="store_true", help="tiny configs (smoke run)")
  p.add_argument("--no-write", action="store_true")
  a = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  timings = run(tuple(a.steps), a.iters, a.tiny)
  rows = [format_row(x) for x in timings] if a.no_write else append_rows(timings)
  print("".join(rows), end="")


if __name__ == "__main__":
  main()
