"""Builds the linear head template from real clips and saves it as a small .npz asset.

  python -m data.build_head_template --videos V1.mp4 V2.mp4 ... --out head_template.npz \
      [--max-frames 150] [--heldout H1.mp4 H2.mp4] [--cache DIR]

Face-mesh landmarks are extracted per clip (`data.landmarks`, tracking mode,
one identity per clip), the template is built with
`chatanyone_jax.template.build_head_template`, and, with --heldout, every
held-back clip is fitted (`fit_clip`) and its mean 2-D landmark error in
pixels at a 256² face crop is stored in the asset ("heldout_error_px") and
logged.

The default shipped template (chatanyone_jax/template/assets/head_template.npz)
is `DEFAULT_TRAIN_CLIPS` / `DEFAULT_HELDOUT_CLIPS` below under the shared media
folder: `python -m data.build_head_template --default`.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import sys

import numpy as np

from chatanyone_jax import template as ht
from data.landmarks import extract_video_landmarks

log = logging.getLogger(__name__)

DEFAULT_TRAIN_CLIPS = (
    "LivePortrait__assets_examples_driving_d0.mp4",
    "LivePortrait__assets_examples_driving_d3.mp4",
    "LivePortrait__assets_examples_driving_d6.mp4",
    "LivePortrait__assets_examples_driving_d10.mp4",
    "LivePortrait__assets_examples_driving_d11.mp4",
    "LivePortrait__assets_examples_driving_d12.mp4",
    "LivePortrait__assets_examples_driving_d13.mp4",
    "LivePortrait__assets_examples_driving_d18.mp4",
    "LivePortrait__assets_examples_driving_d20.mp4",
    "LivePortrait__assets_examples_source_s18.mp4",
    "LivePortrait__assets_examples_source_s20.mp4",
    "LivePortrait__assets_examples_source_s32.mp4",
    "SadTalker__examples_ref_video_WDA_AlexandriaOcasioCortez_000.mp4",
    "SadTalker__examples_ref_video_WDA_KatieHill_000.mp4",
    "Thin-Plate-Spline-Motion-Model__assets_driving.mp4",
    "V-Express__test_samples_short_case_AOC_gt.mp4",
    "video-retalking__examples_face_1.mp4",
    "video-retalking__examples_face_3.mp4",
    "video-retalking__examples_face_4.mp4",
    "LatentSync__assets_demo2_video.mp4",
)
# Identities that appear in no training clip.
DEFAULT_HELDOUT_CLIPS = (
    "V-Express__scripts_prepare_dataset_RD_Radio10_0_clip_0.mp4",
    "LivePortrait__assets_examples_driving_d19.mp4",
    "video-retalking__examples_face_2.mp4",
)
DEFAULT_OUT = pathlib.Path(__file__).resolve().parents[1] / "chatanyone_jax" / "template" / "assets" / (
    "head_template.npz")


def _media_videos() -> pathlib.Path:
  env = os.environ.get("CHATANYONE_MEDIA_DIR")
  repo = pathlib.Path(__file__).resolve().parents[1]
  root = pathlib.Path(env) if env else repo.parent / "shared" / "data" / "media"
  return root / "videos"


def clip_faces(path: str | os.PathLike, max_frames: int | None, cache: pathlib.Path | None = None,
               ) -> tuple[np.ndarray, np.ndarray]:
  """(T, 478, 3) face points and (T,) validity of a clip, cached as .npz under `cache` if given."""
  path = pathlib.Path(path)
  cached = cache / f"{path.stem}_{max_frames}.npz" if cache is not None else None
  if cached is not None and cached.is_file():
    with np.load(cached) as z:
      return z["face"], z["face_valid"]
  lm = extract_video_landmarks(path, max_frames=max_frames, pose=False, hands=False)
  if cached is not None:
    cached.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cached, face=lm.face, face_valid=lm.face_valid)
  return lm.face, lm.face_valid


def heldout_error(template: ht.HeadTemplate, face: np.ndarray, valid: np.ndarray, *,
                  num_iters: int = 10, crop_size: float = 256.0) -> float:
  """Mean 2-D landmark error (pixels at a `crop_size`² face crop) after fitting one clip."""
  fit = ht.fit_clip(template, face, valid, num_iters=num_iters)
  pred = ht.project(template, fit.pose, fit.scale, fit.exp, fit.identity)
  return float(ht.landmark_error(pred, face, valid, crop_size))


def build_and_save(videos: list[str], out: pathlib.Path, *, max_frames: int | None, heldout: list[str],
                   cache: pathlib.Path | None = None, num_exp: int = ht.NUM_EXP, max_id: int = 8) -> dict:
  """Extracts, builds, measures and writes the asset; returns what was written."""
  from tqdm import tqdm

  faces, valids = [], []
  for v in tqdm(videos, desc="landmarks", unit="clip"):
    f, m = clip_faces(v, max_frames, cache)
    faces.append(f)
    valids.append(m)
    log.info("%s: %d frames, %d dropped", v, len(m), int((~m).sum()))
  template, stats = ht.build_head_template(faces, valids, num_exp=num_exp, max_id=max_id)
  arrays = ht.template_to_arrays(template)
  arrays.update(stats)
  arrays["clips"] = np.array([pathlib.Path(v).name for v in videos])
  arrays["max_frames"] = np.int32(max_frames or 0)
  if heldout:
    errors = []
    for v in tqdm(heldout, desc="held-out fit", unit="clip"):
      f, m = clip_faces(v, max_frames, cache)
      errors.append(heldout_error(template, f, m))
      log.info("held-out %s: %.3f px at 256^2", pathlib.Path(v).name, errors[-1])
    arrays["heldout_clips"] = np.array([pathlib.Path(v).name for v in heldout])
    arrays["heldout_error_px"] = np.array(errors, np.float32)
    log.info("mean held-out error: %.3f px at 256^2", float(np.mean(errors)))
  out.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(out, **arrays)
  log.info("wrote %s (%.1f kB)", out, out.stat().st_size / 1024)
  return arrays


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--videos", nargs="+", help="training clips (one person each)")
  p.add_argument("--out", type=pathlib.Path, help="output .npz")
  p.add_argument("--max-frames", type=int, default=150, help="first N frames per clip (0 = all)")
  p.add_argument("--heldout", nargs="*", default=[], help="clips to measure the fit error on")
  p.add_argument("--cache", type=pathlib.Path, help="folder to cache per-clip landmarks in")
  p.add_argument("--num-exp", type=int, default=ht.NUM_EXP)
  p.add_argument("--max-id", type=int, default=8)
  p.add_argument("--default", action="store_true",
                 help="rebuild the shipped template from the shared media clips")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  if args.default:
    root = _media_videos()
    videos = [str(root / c) for c in DEFAULT_TRAIN_CLIPS]
    heldout = [str(root / c) for c in DEFAULT_HELDOUT_CLIPS]
    out = args.out or DEFAULT_OUT
  else:
    if not args.videos or not args.out:
      p.error("give --videos and --out (or --default)")
    videos, heldout, out = args.videos, args.heldout, args.out
  build_and_save(videos, out, max_frames=args.max_frames or None, heldout=heldout, cache=args.cache,
                 num_exp=args.num_exp, max_id=args.max_id)
  return 0


if __name__ == "__main__":
  sys.exit(main())
