"""Lip sync of stage 1 on preprocessed records, against audio-only baselines (`chatanyone_jax.eval.lipsync`).

`clip_curves` reads each clip's mouth opening (the template's inner-lip gap of its expression
coefficients and identity) and the loudness envelope of its audio; `loudness_baseline` fits the linear
map on one split (the training people) and reports, on another (the held-out people), the Pearson
correlation of the baseline's prediction with the true opening per clip, averaged per source dataset
(from the split file's "source" column) and over all clips, plus the silence measures of the true
opening (mean opening in silence / while speaking, lag from speech offset to a closed mouth).
`mel_baseline` does the same for a ridge regression from the log-mel stage 1 consumes (±5 frames of
context), its penalty chosen by cross-validation over the training people (the split file's "person").
`model_lipsync` scores a FaceMotionDiT workdir the same way: each clip's speech alone drives the model as
inference does (no history before the clip, no reference video, the default style), and the generated
expression's mouth opening (with the clip's own identity) is correlated with the true one; the same
model driven by each clip's speech with a second of silence inserted gives the silence test. With a hop
(`--hop H --lookahead L`) the model is driven through the stream's own face motion, step by step, so the
scores are those of a low-latency stream.

  python -m infer.evaluation.lipsync --data RECORDS [--motion WORKDIR [--lip WORKDIR]] [--split validation]
      [--out F.json] [--hop H [--lookahead L]] [--guidance G] [--noise-scale S]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from chatanyone_jax import template as tp
from chatanyone_jax.audio import MelConfig, log_mel_spectrogram, whisper
from chatanyone_jax.audio import num_frames as num_mel_frames
from chatanyone_jax.eval import lipsync
from chatanyone_jax.motion.lip_regressor import mouth_from_speech
from chatanyone_jax.motion.sampling import (
  CLIP_X0,
  DDIM_STEPS,
  GUIDANCE_SCALE,
  NOISE_SCALE,
  SEAM_FRAMES,
  generate_long,
)
from data import records
from data.splits import SPLIT_FILE, read_rows
from infer.avatar import default_style
from infer.evaluation.scoring import load_motion_face, load_motion_lip
from train import tasks


def clip_curves(data: str | os.PathLike, split: str, max_clips: int | None = None) -> list[dict]:
  """[{"video", "opening" (T,), "envelope" (T,), "fps", "audio" (samples,) float32, "identity"}] of the
  split's clips (records of `data`)."""
  meta = records.read_meta(data)
  if split not in meta["splits"]["clips"]:
    raise ValueError(f"{data} has no {split!r} split (have {sorted(meta['splits']['clips'])})")
  clips = records.data_source(data, "clips", split)
  template = tp.load_head_template()
  n = len(clips) if max_clips is None else min(len(clips), max_clips)
  out = []
  for i in range(n):
    c = clips[i]
    t = int(c["num_frames"])
    opening = np.asarray(tp.mouth_opening(template, np.asarray(c["exp"], np.float32),
                                          np.asarray(c["identity"], np.float32)))
    envelope = lipsync.loudness_envelope(np.asarray(c["audio"], np.float32) / 32768.0, t)
    video = c["video"].decode() if isinstance(c["video"], bytes) else str(c["video"])
    out.append({"video": video, "opening": opening, "envelope": envelope, "fps": float(meta.get("fps", 30.0)),
                "audio": np.asarray(c["audio"], np.float32) / 32768.0,
                "identity": np.asarray(c["identity"], np.float32)})
  return out


def _split_column(split_file: str | os.PathLike | None, column: str) -> dict[str, str]:
  return ({r["video"]: r[column] for r in read_rows(split_file)}
          if split_file and pathlib.Path(split_file).is_file() else {})


def _sources(split_file: str | os.PathLike | None) -> dict[str, str]:
  return _split_column(split_file, "source")


def _scores(curves: list[dict], predicted: list[np.ndarray], source_of: dict[str, str],
            silence_of: str) -> dict:
  """Mean Pearson correlation of predicted vs true opening per source and over all clips, and the silence
  measures of the `silence_of` curve ("true" or "predicted") in the true speech's silences."""
  per_source: dict[str, list[float]] = {}
  per_clip: dict[str, float | None] = {}
  silence: dict[str, list[float]] = {"silence_ratio": [], "offset_lag_s": []}
  for c, pred in zip(curves, predicted, strict=True):
    r = lipsync.pearson(pred, c["opening"])
    per_clip[c["video"]] = float(r) if np.isfinite(r) else None  # for paired comparisons of two runs
    if np.isfinite(r):
      per_source.setdefault(source_of.get(c["video"], "unknown"), []).append(r)
    curve = c["opening"] if silence_of == "true" else pred
    s = lipsync.silence_measures(curve, lipsync.speech_mask(c["envelope"]), c["fps"])
    for k in silence:
      if np.isfinite(s[k]):
        silence[k].append(s[k])
  every = [r for rs in per_source.values() for r in rs]
  return {"correlation": float(np.mean(every)) if every else float("nan"), "clips": len(every),
          "per_source": {k: {"correlation": float(np.mean(v)), "clips": len(v)}
                         for k, v in sorted(per_source.items())},
          **{f"{silence_of}_{k}": float(np.mean(v)) if v else None for k, v in silence.items()},
          "per_clip": per_clip}


def loudness_baseline(data: str | os.PathLike, *, fit_split: str = "train", eval_split: str = "validation",
                      split_file: str | os.PathLike | None = SPLIT_FILE, max_clips: int | None = None,
                      curves: list[dict] | None = None, fit_curves: list[dict] | None = None) -> dict:
  """The fitted baseline and its correlation with the true mouth opening on `eval_split` (docstring);
  curves / fit_curves: the eval / fit split's `clip_curves` when the caller has them."""
  fit = clip_curves(data, fit_split, max_clips) if fit_curves is None else fit_curves
  base = lipsync.fit_loudness_baseline([c["envelope"] for c in fit], [c["opening"] for c in fit])
  curves = clip_curves(data, eval_split, max_clips) if curves is None else curves
  scores = _scores(curves, [base(c["envelope"]) for c in curves], _sources(split_file), "true")
  return {"slope": base.slope, "intercept": base.intercept, "fit_clips": len(fit), **scores}


@functools.partial(jax.jit, static_argnums=1)
def _log_mel(audio: jax.Array, frames: int) -> jax.Array:
  return log_mel_spectrogram(audio)[:frames]


def clip_mel_features(curves: list[dict], context: int = lipsync.MEL_CONTEXT) -> list[np.ndarray]:
  """[(T, (2·context + 1)·80)] `lipsync.mel_features` of each clip's whole audio: the causal log-mel
  stage 1 consumes (`log_mel_spectrogram`), at the clip's fps."""
  cfg = MelConfig()
  out = []
  for c in curves:
    audio = np.asarray(c["audio"], np.float32)
    # Causal frames never see later samples, so zero padding to a power of two (few compiled programs)
    # leaves the clip's own frames as they are.
    padded = np.zeros(1 << max(14, int(np.ceil(np.log2(max(audio.size, 1))))), np.float32)
    padded[:audio.size] = audio
    mel = np.asarray(_log_mel(jnp.asarray(padded), num_mel_frames(audio.size, cfg)))  # (M, 80)
    out.append(lipsync.mel_features(mel, c["opening"].size, mel_rate=cfg.frame_rate, fps=c["fps"],
                                    context=context))
  return out


def mel_baseline(data: str | os.PathLike, *, fit_split: str = "train", eval_split: str = "validation",
                 split_file: str | os.PathLike | None = SPLIT_FILE, max_clips: int | None = None,
                 curves: list[dict] | None = None, fit_curves: list[dict] | None = None,
                 context: int = lipsync.MEL_CONTEXT, penalty: float | None = None) -> dict:
  """The log-mel baseline (`lipsync.fit_ridge` on `clip_mel_features`) fitted on `fit_split` and scored on
  `eval_split` like `loudness_baseline`.

  penalty: None picks the best of `lipsync.MEL_PENALTIES` by `lipsync.ridge_penalty_cv` over the fit
  clips' people (the split file's "person"; "cv_correlation" in the report is that speaker-held-out
  correlation on the fit split, a steadier estimate than a small held-out split); `lipsync.MEL_PENALTY`
  when fewer than 2 people are known for them.
  """
  fit = clip_curves(data, fit_split, max_clips) if fit_curves is None else fit_curves
  features, targets = clip_mel_features(fit, context), [c["opening"] for c in fit]
  cv = {}
  if penalty is None:
    people = _split_column(split_file, "person")
    groups = [people.get(c["video"]) for c in fit]
    if None not in groups and len(set(groups)) >= 2:
      cv = lipsync.ridge_penalty_cv(features, targets, groups)
      penalty = max(cv, key=lambda p: -np.inf if np.isnan(cv[p]) else cv[p])
    else:
      penalty = lipsync.MEL_PENALTY
  base = lipsync.fit_ridge(features, targets, penalty)
  curves = clip_curves(data, eval_split, max_clips) if curves is None else curves
  predicted = [base(x) for x in clip_mel_features(curves, context)]
  scores = _scores(curves, predicted, _sources(split_file), "true")
  return {"context": context, "penalty": base.penalty, "cv_correlation": cv.get(base.penalty),
          "cv_penalties": {f"{p:g}": r for p, r in cv.items()}, "fit_clips": len(fit), **scores}


def model_lipsync(workdir: str | os.PathLike, data: str | os.PathLike, *, split: str = "validation",
                  split_file: str | os.PathLike | None = SPLIT_FILE, max_clips: int | None = None,
                  num_steps: int = DDIM_STEPS, guidance_scale: float = GUIDANCE_SCALE, seed: int = 0,
                  clip_x0: float | None = CLIP_X0, curves: list[dict] | None = None,
                  insert_silence_s: float = 1.0, noise_scale: float = NOISE_SCALE,
                  hop: int | None = None, lookahead: int = 0, seam_frames: int = SEAM_FRAMES,
                  lip: str | os.PathLike | None = None) -> dict:
  """A FaceMotionDiT workdir (or its export) driven by each clip's speech alone (module docstring): the
  correlation of the generated mouth opening with the true one, per source and over all clips, and the
  silence measures of the generated opening, in the clips' own silences ("predicted_*") and in
  `insert_silence_s` of silence inserted into each clip's speech ("inserted_*"; 0 = skip).

  hop None: whole windows (`generate_long`). hop H (1 .. T) with `lookahead` L: the stream's own face
  motion (`stream_step.motion_step`, `StreamOptions(hop=H, lookahead=L)`), the audio fed step by step as
  a live stream receives it, so the score is the one a low-latency stream gets (H = T, L = 0 is the
  stream with whole windows). seam_frames: of the joins between windows (`sampling.join_window`).
  lip: a motion_lip workdir or export: each frame's mouth from the lip regressor, as a stream of a
  checkpoint with motion_lip/ (`lip_regressor.mouth_from_speech`)."""
  config, task, params, norm = load_motion_face(workdir)
  lip_model = None if lip is None else load_motion_lip(lip)
  if hop is not None:
    return _stream_lipsync(workdir, config, params, norm, data, split=split, split_file=split_file,
                           max_clips=max_clips, num_steps=num_steps, guidance_scale=guidance_scale,
                           seed=seed, clip_x0=clip_x0, curves=curves, insert_silence_s=insert_silence_s,
                           noise_scale=noise_scale, hop=hop, lookahead=lookahead, seam_frames=seam_frames,
                           lip=lip_model)
  if lip_model is not None and task.speech_encoder is None:
    raise ValueError(f"{lip} reads Whisper features but {workdir} has a log-mel front end")
  t = int(config.window)
  spf = tasks.SAMPLE_RATE / tasks.FPS
  n_win_samples = int(round(t * spf))
  dit = task.models.dit
  has_ref = "ref_proj" in params["face"]
  template = tp.load_head_template()
  style = jnp.asarray(default_style(t))[None]

  encoder_vars = task.speech_params()  # a Whisper front end's frozen encoder (None: log-mel)

  @functools.partial(jax.jit, static_argnums=0)
  def generate(num_windows: int, audio: jax.Array, identity: jax.Array, key: jax.Array) -> jax.Array:
    # Each window's audio after the front end's left context (zeros before the clip; none for the log-mel
    # front end, which reads each window's audio alone), as the streaming step.
    tokens = task.clip_tokens(params, encoder_vars, audio, num_windows)  # (1, num_windows · T, Da)
    ref = jnp.zeros((1, t, dit.config.ref_dim)) if has_ref else None
    motion = generate_long(dit, params["face"], tokens, style, key, schedule=task.schedule, reference=ref,
                           num_steps=num_steps, guidance_scale=guidance_scale, clip_x0=clip_x0,
                           noise_scale=noise_scale, seam_frames=seam_frames,
                           reference_valid=jnp.zeros((1,), bool) if has_ref else None)
    if lip_model is not None:  # the mouth from the lip regressor, window by window as the stream
      feats = whisper.window_features(  # (windows, n, D) of the encoder output the regressor reads
          task.speech_encoder, encoder_vars, task.clip_windows(audio, num_windows), task.speech_context,
          lip_model["model"].speech_layer)
      windows = motion.reshape(num_windows, t, -1)
      motion = mouth_from_speech(lip_model["model"], lip_model, norm, feats, windows, tasks.FPS).reshape(
          motion.shape)
    motion = motion[0] * norm["motion_std"] + norm["motion_mean"]
    return tp.mouth_opening(template, motion[:, :tp.NUM_EXP], identity)

  curves = clip_curves(data, split, max_clips) if curves is None else curves

  def drive(audio: np.ndarray, n: int, identity: np.ndarray, i: int) -> np.ndarray:
    num_windows = 1 << max(0, int(np.ceil(np.log2(-(-n // t)))))  # powers of two: few compiled programs
    padded = np.zeros(num_windows * n_win_samples, np.float32)
    padded[:min(audio.size, padded.size)] = audio[:padded.size]
    opening = generate(num_windows, jnp.asarray(padded), jnp.asarray(identity),
                       jax.random.fold_in(jax.random.key(seed), i))
    return np.asarray(opening)[:n]

  return {"workdir": str(workdir), "lip": None if lip is None else str(lip), "num_steps": num_steps,
          "guidance_scale": guidance_scale, "noise_scale": noise_scale, "seam_frames": seam_frames,
          "insert_silence_s": insert_silence_s, **_drive_scores(drive, curves, split_file, insert_silence_s)}


def _drive_scores(drive, curves: list[dict], split_file, insert_silence_s: float) -> dict:
  """The scores of `model_lipsync`: drive(audio, frames, identity, clip index) -> (frames,) opening."""
  spf = tasks.SAMPLE_RATE / tasks.FPS
  predicted = [drive(c["audio"], c["opening"].size, c["identity"], i) for i, c in enumerate(curves)]
  scores = _scores(curves, predicted, _sources(split_file), "predicted")
  # Inserted silence: the clip's speech, `insert_silence_s` of digital silence, the speech again.
  inserted: dict[str, list[float]] = {"silence_ratio": [], "offset_lag_s": []}
  gap = int(round(insert_silence_s * tasks.FPS))
  for i, c in enumerate(curves if gap else []):
    n = c["opening"].size
    speech = c["audio"][:int(round(n * spf))]
    audio = np.concatenate([speech, np.zeros(int(round(gap * spf)), np.float32), speech])
    total = 2 * n + gap
    opening = drive(audio, total, c["identity"], len(curves) + i)
    mask = np.ones(total, bool)
    mask[n:n + gap] = False
    m = lipsync.silence_measures(opening, mask, c["fps"])
    for k in inserted:
      if np.isfinite(m[k]):
        inserted[k].append(m[k])
  scores.update({f"inserted_{k}": float(np.mean(v)) if v else None for k, v in inserted.items()})
  return scores


def _stream_lipsync(workdir, config, params, norm, data, *, split, split_file, max_clips, num_steps,
                    guidance_scale, seed, clip_x0, curves, insert_silence_s, noise_scale, hop,
                    lookahead, seam_frames, lip=None) -> dict:
  """`model_lipsync` through the stream's face motion (hop, look-ahead)."""
  from chatanyone_jax import stream_spec, stream_step
  from infer.models import build_spec, speech_params
  from infer.options import StreamOptions

  t = int(config.window)
  if not 1 <= hop <= t:
    raise ValueError(f"hop must be in [1, {t}] (the model's window), got {hop}")
  options = StreamOptions(mode="head", num_steps=num_steps, guidance_scale=guidance_scale,
                          clip_x0=clip_x0, hop=hop, lookahead=lookahead, noise_scale=noise_scale,
                          seam_frames=seam_frames)
  # A head spec: the renderer is never run (motion_step), any head preset names it.
  configs = {"motion_face": config, "render": "tiny_head512"}
  if lip is not None:
    configs["motion_lip"] = lip["config"]
  spec = build_spec(configs, options)
  pf = {"params": params, "norm": norm}
  speech = speech_params(config)
  if speech is not None:
    pf["speech"] = speech
  motion_params = {"motion_face": pf}
  if lip is not None:
    motion_params["motion_lip"] = {k: lip[k] for k in ("params", "norm", "blend")}
  has_ref = "ref_proj" in params["face"]
  ref = jnp.zeros((1, spec.window, spec.face.config.ref_dim), jnp.float32) if has_ref else None
  style = default_style(t)
  template = tp.load_head_template()
  step = jax.jit(lambda p, st, b: stream_step.motion_step(spec, p, st, b), donate_argnums=1)
  std, mean = jnp.asarray(norm["motion_std"]), jnp.asarray(norm["motion_mean"])
  opening_of = jax.jit(lambda m, identity: tp.mouth_opening(template, (m * std + mean)[:, :tp.NUM_EXP],
                                                            identity))

  def drive(audio: np.ndarray, n: int, identity: np.ndarray, i: int) -> np.ndarray:
    state = stream_step.init_motion_state(spec, style, jax.random.fold_in(jax.random.key(seed), i), ref,
                                          reference_valid=False)
    chunks = []
    for block in stream_spec.step_blocks(audio, spec, -(-n // spec.step_frames)):
      state, m = step(motion_params, state, jnp.asarray(block))
      chunks.append(np.asarray(m[0]))
    motion = np.concatenate(chunks)[:n]
    return np.asarray(opening_of(jnp.asarray(motion), jnp.asarray(identity)))

  curves = clip_curves(data, split, max_clips) if curves is None else curves
  return {"workdir": str(workdir), "lip": None if lip is None else lip["path"],
          "num_steps": num_steps, "guidance_scale": guidance_scale, "noise_scale": noise_scale, "hop": hop,
          "lookahead": lookahead, "seam_frames": seam_frames,
          "insert_silence_s": insert_silence_s, **_drive_scores(drive, curves, split_file, insert_silence_s)}


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data", required=True, help="preprocessed records split with a data.splits file")
  p.add_argument("--motion", help="a motion_face workdir or export (else: the baselines only)")
  p.add_argument("--split", default="validation", help="the held-out split scored (default: validation)")
  p.add_argument("--fit-split", default="train", help="the split the baselines are fitted on")
  p.add_argument("--max-clips", type=int, help="at most this many clips of each split")
  p.add_argument("--steps", type=int, default=DDIM_STEPS, help="DDIM steps of the model's sampler")
  p.add_argument("--guidance", type=float, default=GUIDANCE_SCALE,
                 help=f"classifier-free guidance of the model's sampler (default {GUIDANCE_SCALE})")
  p.add_argument("--noise-scale", type=float, default=NOISE_SCALE,
                 help=f"scale of the sampler's starting noise (default {NOISE_SCALE})")
  p.add_argument("--hop", type=int,
                 help="drive the model as the stream does with this hop (frames per step; default: whole "
                      "windows without the stream)")
  p.add_argument("--lookahead", type=int, default=0, help="with --hop: frames of audio look-ahead")
  p.add_argument("--seam-frames", type=int, default=SEAM_FRAMES,
                 help=f"frames over which each window joins the motion before it (default {SEAM_FRAMES})")
  p.add_argument("--lip", help="with --motion: a motion_lip workdir or export whose lip regressor gives the "
                               "mouth (as a checkpoint with motion_lip/ streams)")
  p.add_argument("--no-baselines", action="store_true", help="score the model only (faster)")
  p.add_argument("--out", help="also write the report to this JSON file")
  args = p.parse_args(argv)
  try:
    curves = clip_curves(args.data, args.split, args.max_clips)
    fit = None if args.no_baselines else clip_curves(args.data, args.fit_split, args.max_clips)
    kw = {"fit_split": args.fit_split, "eval_split": args.split, "max_clips": args.max_clips,
          "curves": curves, "fit_curves": fit}
    report = {} if args.no_baselines else {"baseline": loudness_baseline(args.data, **kw),
                                            "mel_baseline": mel_baseline(args.data, **kw)}
    if args.motion:
      report["model"] = model_lipsync(args.motion, args.data, split=args.split, num_steps=args.steps,
                                      guidance_scale=args.guidance, curves=curves,
                                      noise_scale=args.noise_scale, hop=args.hop, lookahead=args.lookahead,
                                      seam_frames=args.seam_frames, lip=args.lip)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  text = json.dumps(report, indent=1)
  print(text)
  if args.out:
    pathlib.Path(args.out).write_text(text + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
