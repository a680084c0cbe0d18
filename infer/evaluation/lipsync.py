"""The loudness baseline of lip sync on preprocessed records (`chatanyone_jax.eval.lipsync`).

`clip_curves` reads each clip's mouth opening (the template's inner-lip gap of its expression
coefficients and identity) and the loudness envelope of its audio; `loudness_baseline` fits the linear
map on one split (the training people) and reports, on another (the held-out people), the Pearson
correlation of the baseline's prediction with the true opening per clip, averaged per source dataset
(from the split file's "source" column) and over all clips, plus the silence measures of the true
opening (mean opening in silence / while speaking, lag from speech offset to a closed mouth).
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from chatanyone_jax import template as tp
from chatanyone_jax.eval import lipsync
from data import records
from data.splits import SPLIT_FILE, read_rows


def clip_curves(data: str | os.PathLike, split: str, max_clips: int | None = None) -> list[dict]:
  """[{"video", "opening" (T,), "envelope" (T,), "fps"}] of the split's clips (records of `data`)."""
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
    out.append({"video": video, "opening": opening, "envelope": envelope,
                "fps": float(meta.get("fps", 30.0))})
  return out


def loudness_baseline(data: str | os.PathLike, *, fit_split: str = "train", eval_split: str = "validation",
                      split_file: str | os.PathLike | None = SPLIT_FILE, max_clips: int | None = None
                      ) -> dict:
  """The fitted baseline and its correlation with the true mouth opening on `eval_split` (docstring)."""
  fit = clip_curves(data, fit_split, max_clips)
  base = lipsync.fit_loudness_baseline([c["envelope"] for c in fit], [c["opening"] for c in fit])
  source_of = ({r["video"]: r["source"] for r in read_rows(split_file)}
               if split_file and pathlib.Path(split_file).is_file() else {})
  per_source: dict[str, list[float]] = {}
  silence: dict[str, list[float]] = {"silence_ratio": [], "offset_lag_s": []}
  for c in clip_curves(data, eval_split, max_clips):
    r = lipsync.pearson(base(c["envelope"]), c["opening"])
    if np.isfinite(r):
      per_source.setdefault(source_of.get(c["video"], "unknown"), []).append(r)
    s = lipsync.silence_measures(c["opening"], lipsync.speech_mask(c["envelope"]), c["fps"])
    for k in silence:
      if np.isfinite(s[k]):
        silence[k].append(s[k])
  every = [r for rs in per_source.values() for r in rs]
  return {"slope": base.slope, "intercept": base.intercept, "fit_clips": len(fit),
          "correlation": float(np.mean(every)) if every else float("nan"), "clips": len(every),
          "per_source": {k: {"correlation": float(np.mean(v)), "clips": len(v)}
                         for k, v in sorted(per_source.items())},
          **{f"true_{k}": float(np.mean(v)) if v else None for k, v in silence.items()}}
