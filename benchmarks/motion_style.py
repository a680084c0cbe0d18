"""Stage-1 behaviour of a FaceMotionDiT trained on real data: style control, reference pull, seams, lips.

  python -m benchmarks.motion_style --data DATA --workdir WORKDIR [--steps 3000] [--eval-only]
      [--num-steps 10] [--guidance-scale G] [--p-reference-drop P] [--style-augment F] [--seed S]
      [--no-write]

Trains `train/configs/motion_face.py` (the `small` settings below, or resumes WORKDIR) on the records'
train split, then measures on every window of the validation split with the EMA parameters, DDIM and
classifier-free guidance (default `chatanyone_jax.motion.sampling.GUIDANCE_SCALE`): expression amplitude
and head-pose range under scaled style controls, the reference's effect (paper Table 4 MAE / SSIM and
pull), frame-to-frame jitter, window seams (`seam_statistic`, raw and with `join_window`) and lip-opening
correlation (all listed in `evaluate`).

Writes WORKDIR/motion_style_steps{N}_cfg{G}.json and (unless --no-write) rows to RESULTS.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import Timing, append_rows
from chatanyone_jax import template as tp
from chatanyone_jax.motion import sampling
from chatanyone_jax.motion.face_motion_dit import style_controls
from chatanyone_jax.motion.sampling import FaceConditions, generate_long, sample_window, seam_statistic
from data import records
from infer.evaluate import expression_scores, motion_windows
from train import checkpoint, tasks, trainer
from train.configs import motion_face
from train.export import load_weights

SCALES = (0.5, 1.0, 2.0)
SEAM_FRAMES = (0, 8)  # raw windows, and join_window over 8 frames


def small_config(data: str, steps: int) -> object:
  c = motion_face.get_config()
  c.data_dir = data
  c.model.variant = "small"
  c.update(batch_size=16, num_steps=steps, warmup_steps=200, learning_rate=5e-4, log_every=100,
           checkpoint_every=1000, image_every=1000, stats_batches=32, ema_decay=0.999)
  return c


def mouth_opening(motion_raw: np.ndarray) -> np.ndarray:
  """(..., 58) raw exp ⊕ pose -> (...,) inner-lip gap of the mean-identity canonical template shape."""
  return np.asarray(tp.mouth_opening(tp.load_head_template(), motion_raw[..., :tp.NUM_EXP]))


def evaluate(config, workdir: pathlib.Path, *, num_steps: int = 10,
             guidance_scale: float = sampling.GUIDANCE_SCALE, split: str = "validation",
             noise_scale: float = sampling.NOISE_SCALE) -> dict:
  """Measures WORKDIR's EMA parameters on every window of the records' `split`.

  Each window gets its ground-truth history (unless stated), DDIM with `num_steps`, guidance
  `guidance_scale` and starting-noise scale `noise_scale`:
    * expression amplitude: the style input's amplitude scaled by 0.5 / 1 / 2 -> std over time of the
      generated expression coefficients (normalised units, mean over coefficients), with the same-clip
      reference and without a reference (the learned null reference);
    * head-pose range: the style's range scaled by 0.5 / 1 / 2 -> (max - min) over time of the
      generated pose (normalised units, mean over the 6 values), with and without the reference;
    * reference (paper Table 4): MAE and SSIM of the generated expressions against the ground truth
      with the reference = another window of the same clip (as in training), = a window of another clip,
      and without a reference; and the pull: the distance of the generated window's mean expression to
      the mean of a reference when that reference was given vs when the other one was (both
      directions). Both with the ground-truth history and without history (a stream's first window);
    * frame change: mean |x_f - x_{f-1}| inside the generated windows vs the ground truth's (jitter);
    * seams: `seam_statistic` of whole clips generated window by window (`generate_long`, no
      reference), with raw windows and with `join_window`;
    * lips: Pearson correlation of the mouth opening (`mouth_opening`) between generated and
      ground-truth windows.
  """
  task = tasks.get_task(config)
  loaded = load_weights(workdir)  # a training workdir or its export
  params, norm = jax.tree.map(jnp.asarray, loaded["params"]), jax.tree.map(jnp.asarray, loaded["norm"])
  w = motion_windows(config, task, config.data_dir, split)
  n = w["motion"].shape[0]
  h, t = config.history, config.window
  motion = (w["motion"] - np.asarray(norm["motion_mean"])) / np.asarray(norm["motion_std"])
  target, history = motion[:, h:], motion[:, :h]
  ref_same = ((w["ref_motion"] - np.asarray(norm["motion_mean"])) / np.asarray(norm["motion_std"]))
  clip = w["clip_index"]
  other = np.array([next((j for j in range(n) if clip[j] != clip[i]), i) for i in range(n)])
  ref_other = ref_same[other]
  dit = task.models.dit
  ref_dim = dit.config.ref_dim
  if not (ref_dim and config.use_reference):
    raise ValueError("motion_style measures the reference input: train with use_reference=True")

  speech = task.speech_params()  # a Whisper front end's frozen encoder (None: log-mel)
  # The windows' own audio (a Whisper front end's left context is silence: windows cut out of clips).
  audio = jax.jit(task.window_tokens)(params, speech, jnp.asarray(
      np.pad(np.asarray(w["audio"], np.float32), ((0, 0), (task.speech_context, 0)))))
  style0 = style_controls(jnp.asarray(target))
  same = jnp.asarray(ref_same[..., :ref_dim])
  no_ref = jnp.zeros_like(same)

  @functools.partial(jax.jit, static_argnames="with_history")
  def generate(style, reference, ref_valid, key, with_history=True):
    cond = FaceConditions(audio, jnp.asarray(history), style, reference, jnp.full((n,), with_history),
                          jnp.full((n,), ref_valid))
    return sample_window(dit, params["face"], cond, key, schedule=task.schedule, num_steps=num_steps,
                         guidance_scale=guidance_scale, clip_x0=4.0, noise_scale=noise_scale)

  key = jax.random.key(0)
  out: dict = {"validation_windows": int(n), "validation_clips": int(len(set(clip.tolist()))),
               "num_steps": num_steps, "guidance_scale": guidance_scale, "noise_scale": noise_scale}
  exp_std = lambda g: float(np.mean(np.std(np.asarray(g)[..., :tp.NUM_EXP], axis=1)))
  pose_rng = lambda g: float(np.mean(np.ptp(np.asarray(g)[..., tp.NUM_EXP:], axis=1)))
  for name, ref, valid in (("with_reference", same, True), ("without_reference", no_ref, False)):
    out[f"expression_std_by_amplitude_{name}"] = {
        s: exp_std(generate(style0 * jnp.asarray([s, 1.0]), ref, valid, key)) for s in SCALES}
    out[f"pose_range_by_pose_scale_{name}"] = {
        s: pose_rng(generate(style0 * jnp.asarray([1.0, s]), ref, valid, key)) for s in SCALES}
  out["ground_truth"] = {"expression_std": exp_std(target), "pose_range": pose_rng(target)}

  exp_gt = jnp.asarray(target[..., :tp.NUM_EXP])
  mean = lambda x: np.asarray(x)[..., :tp.NUM_EXP].mean(1)
  m_same, m_other = mean(ref_same), mean(ref_other)
  valid = other != np.arange(n)  # windows with a window of another clip (pull: None without any)
  d = lambda g, m: float(np.mean(np.linalg.norm(mean(g) - m, axis=-1))) if valid.any() else None
  # Table 4 with the ground-truth history of each window (its start is then given), and without history
  # (the first window of a stream: audio, style and reference only).
  references = {"same_clip": (same, True), "other_clip": (jnp.asarray(ref_other[..., :ref_dim]), True),
                "none": (no_ref, False)}
  gens_by_history = {hist: {name: generate(style0, ref, valid, key, with_history=hist)
                            for name, (ref, valid) in references.items()} for hist in (True, False)}
  for suffix, with_history in (("", True), ("_no_history", False)):
    gens = gens_by_history[with_history]
    out["reference" + suffix] = {}
    for name, g in gens.items():
      mae, ssim = expression_scores(g[..., :tp.NUM_EXP], exp_gt)
      out["reference" + suffix][name] = {"mae": mae, "ssim": ssim}
    # Pull: distance of the generated mean expression to a reference's mean when that reference was given
    # vs when the other one was, in both directions.
    g_same, g_other = np.asarray(gens["same_clip"])[valid], np.asarray(gens["other_clip"])[valid]
    out["reference_pull" + suffix] = {
        "gen_with_same_to_same": d(g_same, m_same[valid]),
        "gen_with_other_to_same": d(g_other, m_same[valid]),
        "gen_with_other_to_other": d(g_other, m_other[valid]),
        "gen_with_same_to_other": d(g_same, m_other[valid]),
    }
  kept = gens_by_history[True]  # lips and jitter: with the ground-truth history, as the controls

  # Lips: mouth opening of generated vs ground-truth windows (raw units).
  raw = lambda x: np.asarray(x) * np.asarray(norm["motion_std"]) + np.asarray(norm["motion_mean"])
  mo_gt = mouth_opening(w["motion"][:, h:])
  out["mouth_opening_correlation"] = {
      k: float(np.corrcoef(mouth_opening(raw(kept[k])).ravel(), mo_gt.ravel())[0, 1])
      for k in ("same_clip", "none")}
  # Jitter: mean |x_f - x_{f-1}| inside the generated windows, expression and pose, vs the ground truth.
  jit = lambda x, sl: float(np.mean(np.abs(np.diff(np.asarray(x)[..., sl], axis=1))))
  exp_sl, pose_sl = slice(0, tp.NUM_EXP), slice(tp.NUM_EXP, None)
  out["frame_change"] = {"generated": {"expression": jit(kept["same_clip"], exp_sl),
                                       "pose": jit(kept["same_clip"], pose_sl)},
                         "ground_truth": {"expression": jit(target, exp_sl), "pose": jit(target, pose_sl)}}

  # Seams: whole validation clips, window by window with carried history, without a reference video,
  # with the raw windows (seam_frames 0) and with `join_window`.
  clips = records.data_source(config.data_dir, "clips", split)
  seams = {k: {"boundary": [], "inside": []} for k in SEAM_FRAMES}
  for i in range(len(clips)):
    c = clips[i]
    frames = int(np.asarray(c["exp"]).shape[0])
    if frames < 2 * t:
      continue
    # Whole windows of the clip, each with its front end's left context, as a stream.
    num_w = frames // t
    frames = num_w * t
    audio_c = np.asarray(c["audio"], np.float32) / 32768.0
    tok = task.clip_tokens(params, speech, np.pad(audio_c, (0, max(0, num_w * task.window_samples
                                                                   - audio_c.size))), num_w)
    style_c = style_controls((jnp.concatenate([jnp.asarray(c["exp"]), jnp.asarray(c["pose"])], -1)[None]
                              - norm["motion_mean"]) / norm["motion_std"])
    for k in SEAM_FRAMES:
      g = generate_long(dit, params["face"], tok, style_c, key, schedule=task.schedule,
                        num_steps=num_steps, guidance_scale=guidance_scale, clip_x0=4.0,
                        noise_scale=noise_scale, reference=no_ref[:1],
                        reference_valid=jnp.zeros((1,), bool), seam_frames=k)
      b, ins = seam_statistic(g, t)
      seams[k]["boundary"].append(float(b))
      seams[k]["inside"].append(float(ins))
  out["seam"] = {f"seam_frames_{k}": {"clips": len(v["boundary"]),
                                      "boundary": float(np.mean(v["boundary"])) if v["boundary"] else None,
                                      "inside": float(np.mean(v["inside"])) if v["inside"] else None}
                 for k, v in seams.items()}
  return out


def result_rows(out: dict) -> list[tuple[str, str]]:
  """(name, measurement) rows for RESULTS.md from `evaluate`'s output."""
  f = lambda x: "n/a" if x is None else f"{x:.3f}"
  gt = out["ground_truth"]
  by = lambda key: " / ".join(f(v) for v in out[key].values())
  label = lambda k: "raw windows" if k.endswith("_0") else f"join_window {k.rsplit('_', 1)[1]} frames"
  seam = "; ".join(f"{label(k)} boundary {f(v['boundary'])} vs inside {f(v['inside'])}"
                   for k, v in out["seam"].items())
  mo = out["mouth_opening_correlation"]
  table4 = lambda key: "; ".join(f"{k}: MAE {f(v['mae'])}, SSIM {f(v['ssim'])}" for k, v in out[key].items())

  def pull(key):
    p = out[key]
    if p["gen_with_same_to_same"] is None:
      return "n/a (one clip)"
    return (f"{f(p['gen_with_same_to_same'])} / {f(p['gen_with_other_to_same'])}; "
            f"{f(p['gen_with_other_to_other'])} / {f(p['gen_with_same_to_other'])}")

  fc = out["frame_change"]
  n_clips = next(iter(out["seam"].values()))["clips"]
  return [
      ("stage-1 style: amplitude", "expression std at amplitude x0.5 / x1 / x2: with reference "
       f"{by('expression_std_by_amplitude_with_reference')}, without "
       f"{by('expression_std_by_amplitude_without_reference')} (ground truth {f(gt['expression_std'])})"),
      ("stage-1 style: pose range", "pose range at range x0.5 / x1 / x2: with reference "
       f"{by('pose_range_by_pose_scale_with_reference')}, without "
       f"{by('pose_range_by_pose_scale_without_reference')} (ground truth {f(gt['pose_range'])})"),
      ("stage-1 reference (Table 4)", "with ground-truth history: " + table4("reference")
       + "; without history: " + table4("reference_no_history")),
      ("stage-1 reference pull", "distance of the generated mean expression to the same-clip reference "
       "when given it / given the other clip's; to the other clip's reference when given it / given the "
       f"same-clip one: with history {pull('reference_pull')}; without history "
       f"{pull('reference_pull_no_history')}"),
      ("stage-1 lips / seams", f"mouth-opening correlation {f(mo['same_clip'])} (with reference), "
       f"{f(mo['none'])} (without); frame-to-frame change inside windows: expression "
       f"{f(fc['generated']['expression'])} (ground truth {f(fc['ground_truth']['expression'])}), pose "
       f"{f(fc['generated']['pose'])} ({f(fc['ground_truth']['pose'])}); seams over {n_clips} clips: {seam}"),
  ]


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data", required=True, help="preprocessed records with a validation split")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--steps", type=int, default=3000)
  parser.add_argument("--p-reference-drop", type=float, default=None,
                      help="override the config's p_reference_drop (training without the reference)")
  parser.add_argument("--style-augment", type=float, default=None,
                      help="override the config's style_augment (largest amplitude / pose-range factor)")
  parser.add_argument("--num-steps", type=int, default=10, help="DDIM steps of the measurements")
  parser.add_argument("--guidance-scale", type=float, default=sampling.GUIDANCE_SCALE,
                      help=f"classifier-free guidance (default {sampling.GUIDANCE_SCALE:g}, as infer.stream)")
  parser.add_argument("--noise-scale", type=float, default=sampling.NOISE_SCALE,
                      help=f"starting-noise scale (default {sampling.NOISE_SCALE:g}, as infer.stream)")
  parser.add_argument("--seed", type=int, default=None, help="override the config's seed (init, data order)")
  parser.add_argument("--eval-only", action="store_true", help="measure WORKDIR's checkpoint, no training")
  parser.add_argument("--no-write", action="store_true")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  if args.eval_only and (pathlib.Path(args.workdir) / "config.json").is_file():
    config = checkpoint.load_config(args.workdir)  # the run's own model (e.g. a Whisper front end)
    config.data_dir = args.data
  else:
    config = small_config(args.data, args.steps)
  config.progress = False
  if args.p_reference_drop is not None:
    config.p_reference_drop = args.p_reference_drop
  if args.style_augment is not None:
    config.style_augment = args.style_augment
  if args.seed is not None:
    config.seed = args.seed
  t0 = time.perf_counter()
  if not args.eval_only:
    trainer.train_and_evaluate(config, args.workdir)
  train_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  out = evaluate(config, pathlib.Path(args.workdir), num_steps=args.num_steps,
                 guidance_scale=args.guidance_scale, noise_scale=args.noise_scale)
  out.update(train_steps=args.steps, train_seconds=round(train_s, 1),
             eval_seconds=round(time.perf_counter() - t0, 1))
  json_name = (f"motion_style_steps{args.num_steps}_cfg{args.guidance_scale:g}"
               f"_noise{args.noise_scale:g}.json")
  (pathlib.Path(args.workdir) / json_name).write_text(json.dumps(out, indent=2) + "\n")
  print(json.dumps(out, indent=2))
  if not args.no_write:
    d = tasks.get_task(config).dit_config
    desc = (f"FaceMotionDiT {d.num_layers} layers x {d.width}, trained {args.steps} steps on {args.data} "
            f"(train split, style_augment {config.style_augment}, p_reference_drop "
            f"{config.p_reference_drop}, seed {config.seed}); {out['validation_windows']} validation "
            f"windows of {out['validation_clips']} unseen clips, DDIM {args.num_steps} steps, guidance "
            f"{args.guidance_scale:g}, noise scale {args.noise_scale:g}, EMA")
    append_rows([Timing(name=name, config=desc, compile_s=float("nan"), times_s=[out["eval_seconds"]],
                        throughput=value) for name, value in result_rows(out)])


if __name__ == "__main__":
  main()
