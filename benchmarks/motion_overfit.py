"""Stage-1 lip sync when fitting one real clip: mouth-opening correlation vs training steps.

  python -m benchmarks.motion_overfit [--preset tiny|small] [--steps 3000] [--eval-every 500] [--no-write]

The clip is the shared V-Express test_samples/short_case/AOC_gt.mp4 (137 frames at 29.97 fps, one speaking
face, 4.6 s of speech), preprocessed as in tests/chatanyone_jax/motion/train_step_test.py: MediaPipe
face landmarks -> head-template fit -> 52 expression + 6 pose per frame, normalised per dimension over the
clip; log-mel of its speech. The AudioEncoder + FaceMotionDiT are trained jointly (ε-loss, Adam with a
cosine decay, condition dropout 0.1) on its 20 windows (T = 40, H = 10, stride 5). Every `--eval-every`
steps: the ε-loss on fixed noise draws (no dropout), and the Pearson correlation between the mouth
opening (inner-lip gap of the clip's own template shape) of DDIM samples (10 steps, x̂0 clipped at 4,
the ground-truth history, no reference) and of the ground truth, over all frames of the 20 windows.

The CPU test (`test_overfit_real_clip_and_mouth_follows`) calls `run` for 600 steps of the tiny preset;
the benchmark runs longer and with the `small` model of benchmarks/motion_style.py. One row per
evaluation in RESULTS.md.
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.harness import Timing, append_rows
from chatanyone_jax import template as tp
from chatanyone_jax import xla_options
from chatanyone_jax.audio import AudioEncoder, log_mel_spectrogram
from chatanyone_jax.motion.diffusion import cosine_schedule
from chatanyone_jax.motion.face_motion_dit import (
  FaceMotionConfig,
  FaceMotionDiT,
  decode_variant,
  style_controls,
)
from chatanyone_jax.motion.sampling import FaceConditions, sample_window
from chatanyone_jax.motion.train_step import (
  FaceModels,
  face_batch_loss,
  init_train_state,
  motion_windows,
  update_step,
)
from chatanyone_jax.render.train_step import INIT_COMPILER_OPTIONS

CLIP = "V-Express__test_samples_short_case_AOC_gt.mp4"
PRESETS = ("tiny", "small")  # FaceMotionDiT variants (face_motion_dit.VARIANTS)


def clip_data(media: pathlib.Path) -> dict:
  """The clip's normalised motion, log-mel and a mouth-opening function (module docstring)."""
  from data.landmarks import extract_video_landmarks
  from data.media import read_audio

  path = media / "videos" / CLIP
  if not path.exists():
    raise FileNotFoundError(f"{path} is missing: pass --media, the shared data/media folder")
  lm = extract_video_landmarks(path, max_frames=137, pose=False, hands=False)
  if lm.num_dropped:
    raise ValueError(f"{path}: {lm.num_dropped} frames without a face; the fit needs a face in every frame")
  template = tp.load_head_template()
  fit = tp.fit_clip(template, jnp.asarray(lm.face), jnp.asarray(lm.face_valid))
  raw = np.concatenate([np.asarray(fit.exp), np.asarray(fit.pose)], -1)  # (N, 58)
  mean, std = raw.mean(0), raw.std(0) + 1e-6
  n = raw.shape[0]
  audio = read_audio(path, 16000)[: int(round(n / lm.fps * 16000))]
  if audio.size < 0.9 * n / lm.fps * 16000:
    raise ValueError(f"{path}: its audio covers {audio.size / 16000:.2f} s of the {n / lm.fps:.2f} s of "
                     "frames; the fit needs speech over the whole clip")
  mel = np.asarray(log_mel_spectrogram(jnp.asarray(audio)))
  alpha = np.asarray(fit.identity[0])

  def mouth_opening(motion_norm: np.ndarray) -> np.ndarray:
    return np.asarray(tp.mouth_opening(template, (motion_norm * std + mean)[..., :tp.NUM_EXP], alpha))

  return {"motion": (raw - mean) / std, "mel": mel, "fps": lm.fps, "mouth_opening": mouth_opening}


def run(preset: str, steps: int, eval_every: int, media: pathlib.Path, lr: float = 3e-3,
        guidance_scales: tuple[float, ...] = (1.0,)) -> list[dict]:
  """Fits `preset` on the clip's windows; a row per evaluation: eval ε-loss and the mouth-opening
  correlation of samples (DDIM 10 steps) with the clip's, per classifier-free guidance scale
  ("mouth_corr_by_guidance"; "mouth_corr" is the first scale's)."""
  d = clip_data(media)
  w = motion_windows(d["motion"], d["mel"], window=40, history=10, stride=5, audio_rate=100.0, fps=d["fps"])
  batch = {"mel": w["audio"], "motion": w["motion"], "history": w["history"],
           "history_valid": w["history_valid"], "style": np.asarray(style_controls(jnp.asarray(w["motion"])))}
  batch = jax.tree.map(jnp.asarray, batch)
  sizes = decode_variant(preset)

  def models(p_drop: float) -> FaceModels:
    cfg = FaceMotionConfig(p_drop=p_drop, **sizes["dit"])
    return FaceModels(FaceMotionDiT(cfg), AudioEncoder(width=cfg.audio_dim, **sizes["audio"]))

  train_models, eval_models = models(0.1), models(0.0)
  schedule = cosine_schedule()
  tx = optax.adam(optax.cosine_decay_schedule(lr, steps, 0.05))
  # Compiled as the trainer compiles inits on CPU (one run: no backend optimisations).
  options = xla_options.cpu_options(**INIT_COMPILER_OPTIONS)
  key = jax.random.key(0)
  state = init_train_state(jax.jit(train_models.init_params).lower(key).compile(options)(key), tx)
  loss_fn = lambda p, b, r: face_batch_loss(p, b, r, model=train_models, schedule=schedule)
  step = jax.jit(lambda s, b: update_step(s, b, loss_fn, tx, 0.99, jax.random.key(1)), donate_argnums=0)

  @jax.jit
  def eval_loss(params):  # the mean over 8 noise draws, one model in the program (lax.map, not unrolled)
    keys = jax.vmap(jax.random.key)(100 + jnp.arange(8))
    return jnp.mean(jax.lax.map(lambda k: face_batch_loss(params, batch, k, model=eval_models,
                                                          schedule=schedule), keys))

  @functools.partial(jax.jit, static_argnums=(2, 3))
  def sample(params, key, num_steps, guidance_scale):
    tokens = eval_models.audio.apply({"params": params["audio"]}, batch["mel"], num_tokens=40)
    cond = FaceConditions(tokens, batch["history"], batch["style"], None, batch["history_valid"])
    return sample_window(eval_models.dit, params["face"], cond, key, schedule=schedule, num_steps=num_steps,
                         guidance_scale=guidance_scale, clip_x0=4.0)

  true_open = d["mouth_opening"](np.asarray(w["motion"])).ravel()
  rows, t0 = [], time.perf_counter()
  initial = float(eval_loss(state["params"]))
  for i in range(1, steps + 1):
    state, _ = step(state, batch)
    if i % eval_every == 0 or i == steps:
      corr = {}
      for g in guidance_scales:
        gen = np.asarray(sample(state["params"], jax.random.key(7), 10, float(g)))
        corr[float(g)] = float(np.corrcoef(d["mouth_opening"](gen).ravel(), true_open)[0, 1])
      rows.append({"step": i, "eval_loss": float(eval_loss(state["params"])), "initial_loss": initial,
                   "mouth_corr": corr[float(guidance_scales[0])], "mouth_corr_by_guidance": corr,
                   "seconds": time.perf_counter() - t0,
                   "windows": int(w["motion"].shape[0])})
      print(rows[-1], flush=True)
  return rows


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--preset", choices=PRESETS, default="small")
  parser.add_argument("--steps", type=int, default=3000)
  parser.add_argument("--eval-every", type=int, default=500)
  parser.add_argument("--lr", type=float, default=3e-3)
  parser.add_argument("--guidance", default="1",
                      help="comma-separated guidance scales of the samples (the first is the row's)")
  parser.add_argument("--media", default=str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
                                             / "media"), help="the shared data/media folder")
  parser.add_argument("--no-write", action="store_true")
  args = parser.parse_args(argv)
  scales = tuple(float(g) for g in args.guidance.split(","))
  rows = run(args.preset, args.steps, args.eval_every, pathlib.Path(args.media), args.lr, scales)
  if not args.no_write:
    d = decode_variant(args.preset)["dit"]
    desc = (f"FaceMotionDiT {args.preset} ({d['num_layers']} layers x {d['width']}) fitted on one real clip "
            f"(V-Express AOC_gt, {rows[0]['windows']} windows), Adam lr {args.lr} cosine, DDIM 10 steps, "
            f"guidance {scales[0]:g}")
    append_rows([Timing(name="stage-1 overfit lips", config=desc, compile_s=float("nan"),
                        times_s=[r["seconds"]],
                        throughput=f"step {r['step']}: eval loss {r['initial_loss']:.3f} -> "
                                   f"{r['eval_loss']:.3f}, mouth-opening correlation {r['mouth_corr']:.3f}")
                 for r in rows])


if __name__ == "__main__":
  main()
