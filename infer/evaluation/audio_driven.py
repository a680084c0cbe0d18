"""Table 3, audio-driven: the whole chain (`infer.stream`) from each clip's first frame and its audio.

Columns: FID, CSIM, Sync (SyncNet confidence on the face crops), Diversity (temporal variance of
normalised face landmarks), LMD (mouth landmark distance to the ground truth), MouthCorr (the correlation
of stage 1's mouth opening, driven by each clip's speech alone, with the true one:
`infer.evaluation.lipsync.model_lipsync`, with the checkpoint's lip regressor when it has one),
VideoMouthCorr (the same on the videos: MediaPipe's mouth opening on the generated frames against the real
ones, `infer.evaluation.mouth`; per clip in the report) and VideoMouthScale (the ratio of the two openings'
standard deviations, per clip: 1 when the generated mouth moves as far as the real one). A "ground truth"
row scores the real frames the same way, for scale, and "loudness baseline" and "log-mel baseline" rows
give the MouthCorr of the audio-only baselines fitted on the records' "train" split (`loudness_baseline`,
`mel_baseline`), the bars stage 1 must clear. Faces of the real frames are found at their stored size;
clips whose portrait has no face are skipped and counted.
"""

from __future__ import annotations

import logging
import os
import pathlib

import numpy as np

from chatanyone_jax.eval.faces import landmark_diversity, mouth_landmark_distance, syncnet_crops
from chatanyone_jax.motion.sampling import GUIDANCE_SCALE
from chatanyone_jax.render import presets
from data import encoding
from infer import avatar, models, streaming
from infer.evaluation import lipsync
from infer.evaluation.backends import NA_WEIGHTS, Backends
from infer.evaluation.mouth import curve_correlation, curve_scale, frame_mouth_opening
from infer.evaluation.scoring import (
  Accumulator,
  add_features,
  add_identity,
  clip_indices,
  frechet,
  open_split,
  resize,
)
from infer.options import StreamOptions
from train import checkpoint as ckpt

log = logging.getLogger(__name__)


def infer_mode(checkpoint: str | os.PathLike) -> str:
  """'upper' when the renderer workdir drives body keypoints, else 'head'."""
  preset = ckpt.load_config(pathlib.Path(checkpoint) / "render").get("model", {}).get("preset")
  if preset is None:
    raise ValueError(f"{checkpoint}/render/config.json names no model.preset: not a renderer workdir")
  return "upper" if presets.keypoint_layout(presets.get(preset)) == "hybrid_body" else "head"


def audio_driven(checkpoint: str | os.PathLike, data: str | os.PathLike, split: str, b: Backends, *,
                 mode: str | None = None, max_clips: int | None = None, max_frames: int | None = None,
                 num_steps: int = 10, seed: int = 0, params: dict | None = None,
                 configs: dict | None = None, guidance_scale: float = GUIDANCE_SCALE) -> dict:
  """Table 3 (module docstring) -> {"rows": {"ours": {...}, "ground truth": {...}}, "counts", ...}.

  params, configs: models already loaded with `infer.models.load_checkpoint` (else loaded here).
  """
  if params is None:
    params, configs = models.load_checkpoint(checkpoint, mode or infer_mode(checkpoint))
  mode = mode or ("upper" if "motion_body" in configs else "head")
  meta, clips, frames_src = open_split(data, split)
  crop = "body" if mode == "upper" else "head"
  if crop == "body" and not meta.get("body_size"):
    raise ValueError(f"mode 'upper' needs body crops but the records at {data} have none")
  renderer = models.renderer_config(configs["render"])
  out_size = tuple(renderer.output_size)
  ours, gt = Accumulator(), Accumulator()
  real_inception, skipped, video_corr = [], {}, {}
  for c in clip_indices(clips, max_clips):
    clip = clips[c]
    start, length = int(clip["frame_offset"]), int(clip["num_frames"])
    length = length if max_frames is None else min(length, max_frames)
    key = "body_jpeg" if crop == "body" else "head_jpeg"
    portrait = encoding.decode_image(frames_src[start][key])
    audio = np.asarray(clip["audio"], np.float32) / 32768.0
    audio = audio[:int(round(length * streaming.SAMPLE_RATE / streaming.FPS))]
    try:
      options = StreamOptions(mode=mode, num_steps=num_steps, seed=seed, guidance_scale=guidance_scale)
      frames = np.stack(list(streaming.stream(portrait, [audio], options=options, params=params,
                                              configs=configs)))
    except avatar.AvatarError as e:
      log.warning("clip %d skipped: %s", c, e)
      skipped["clips_no_face_in_portrait"] = skipped.get("clips_no_face_in_portrait", 0) + 1
      continue
    real_full = np.stack([encoding.decode_image(frames_src[start + i][key])
                          for i in range(len(frames))])
    real = np.stack([resize(f, out_size) for f in real_full])
    gen_mouth, real_mouth = frame_mouth_opening(frames), frame_mouth_opening(real_full)
    corr = curve_correlation(gen_mouth, real_mouth)
    video = clip["video"].decode() if isinstance(clip["video"], bytes) else str(clip["video"])
    video_corr[video] = corr
    if corr is not None:
      ours.add("VideoMouthCorr", corr, count=1)
      ours.add("VideoMouthScale", curve_scale(gen_mouth, real_mouth), count=1)
    add_features(b, ours, frames)
    if b.inception is not None:
      real_inception.append(np.asarray(b.inception(real)))
    # The real frames' faces at the stored size (as Table 1); the portrait is the stored first frame.
    a_gen = add_identity(b, ours, portrait, frames)
    a_real = add_identity(b, gt, portrait, real_full)
    if a_gen is None:
      continue
    lmd, n = mouth_landmark_distance(a_gen["landmarks"], a_real["landmarks"])
    ours.add("LMD", [lmd] * n if n else [], count=n)
    ours.add("Diversity", landmark_diversity(a_gen["landmarks"]))  # counts clips with a value
    gt.add("Diversity", landmark_diversity(a_real["landmarks"]))
    if b.syncnet is not None:
      for acc, fr, an in ((ours, frames, a_gen), (gt, real_full, a_real)):
        crops = syncnet_crops(fr, an["boxes"], an["found"])
        if crops is None:
          acc.counts["Sync_clips_without_face"] = acc.counts.get("Sync_clips_without_face", 0) + 1
          continue
        try:
          r = b.syncnet(crops, streaming.FPS, audio, sample_rate=streaming.SAMPLE_RATE)
        except ValueError as e:  # too short for SyncNet's windows and offsets
          log.warning("clip %d: no Sync score: %s", c, e)
          acc.counts["Sync_clips_too_short"] = acc.counts.get("Sync_clips_too_short", 0) + 1
          continue
        acc.add("Sync", r["confidence"], count=1)
        acc.add("Sync_offset", r["offset"], count=1)
  rows = {}
  for name, acc in (("ours", ours), ("ground truth", gt)):
    rows[name] = {"CSIM": acc.mean("CSIM"),
                  "Sync": acc.mean("Sync") if b.syncnet is not None else NA_WEIGHTS,
                  "Diversity": acc.mean("Diversity")}
  rows["ours"].update(FID=frechet(real_inception, ours.inception, b.inception, "FID"), LMD=ours.mean("LMD"),
                      VideoMouthCorr=ours.mean("VideoMouthCorr"),
                      VideoMouthScale=ours.mean("VideoMouthScale"))
  curves = lipsync.clip_curves(data, split, max_clips)
  lip = pathlib.Path(checkpoint) / "motion_lip"  # as the stream: the lip regressor's mouth when there is one
  rows["ours"]["MouthCorr"] = lipsync.model_lipsync(
      pathlib.Path(checkpoint) / "motion_face", data, split=split, num_steps=num_steps, seed=seed,
      guidance_scale=guidance_scale, curves=curves, split_file=None, insert_silence_s=0.0,
      lip=lip if "motion_lip" in configs else None)["correlation"]
  fit = lipsync.clip_curves(data, "train", max_clips)
  rows["loudness baseline"] = {"MouthCorr": lipsync.loudness_baseline(
      data, fit_split="train", eval_split=split, max_clips=max_clips, curves=curves, fit_curves=fit,
      split_file=None)["correlation"]}
  # The default split file: its "person" column picks the ridge penalty (MEL_PENALTY for unknown people).
  rows["log-mel baseline"] = {"MouthCorr": lipsync.mel_baseline(
      data, fit_split="train", eval_split=split, max_clips=max_clips, curves=curves,
      fit_curves=fit)["correlation"]}
  return {"rows": rows, "counts": {**ours.counts, **{f"gt_{k}": v for k, v in gt.counts.items()}, **skipped},
          "clips": len(clip_indices(clips, max_clips)), "video_mouth_corr_per_clip": video_corr,
          "mode": mode, "num_steps": num_steps,
          "guidance_scale": guidance_scale}
