"""Any portrait: animate every image of a folder with the bundled (or a given) checkpoint and report, per
portrait, whether a face was found, animated in every frame and its identity kept.

  python -m benchmarks.portraits_bench [--portraits ../shared/data/media/portraits] [--mode head]
      [--checkpoint DIR] [--seconds 1] [--stride K] [--max N] [--out benchmarks/figures/portraits.md]

Per portrait: `infer.avatar.load_portrait` (a portrait that cannot be animated fails there with the
message the CLI prints), `infer.stream` on the first seconds of the bundled speech, then MediaPipe's face
mesh on every generated frame (animated: a face in every frame, `infer.evaluation.mouth`) and dlib's face
descriptor distance of each frame to the portrait's (kept: the mean below dlib's same-person distance,
0.6). Writes a Markdown table; the summary line counts found / animated / kept.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys
import time
from collections.abc import Sequence

import numpy as np

from data.media import MediaError, read_audio, read_image
from infer.avatar import load_portrait
from infer.evaluation.backends import face_analyzer
from infer.evaluation.mouth import frame_mouth_opening
from infer.models import default_checkpoint, load_checkpoint
from infer.options import StreamOptions
from infer.streaming import ASSETS_SPEECH, SAMPLE_RATE, stream

SAME_PERSON = 0.6  # dlib's face-descriptor distance below which two faces are the same person
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def animate_portrait(path: pathlib.Path, audio: np.ndarray, options: StreamOptions, models: tuple[dict, dict],
                     analyzer) -> dict:
  """{"portrait", "found", "error", "frames", "face_frames", "identity_distance", "kept", "seconds"}."""
  row = {"portrait": path.name, "found": False, "error": "", "frames": 0, "face_frames": 0,
         "identity_distance": None, "kept": False}
  t0 = time.perf_counter()
  try:
    portrait = load_portrait(path)
  except MediaError as e:
    row["error"] = str(e).splitlines()[0][:160]
    return row
  row["found"] = True
  params, configs = models
  frames = np.stack(list(stream(portrait, [audio], options=options, params=params, configs=configs)))
  row["frames"] = len(frames)
  row["face_frames"] = int(np.isfinite(frame_mouth_opening(frames)).sum())
  _, source = analyzer.analyse(read_image(path))
  if source is not None:
    d = analyzer.analyse_frames(frames)["descriptors"]
    dist = np.linalg.norm(d - source, axis=-1)
    if np.isfinite(dist).any():
      row["identity_distance"] = float(np.nanmean(dist))
      row["kept"] = row["identity_distance"] < SAME_PERSON
  row["seconds"] = round(time.perf_counter() - t0, 1)
  return row


def to_markdown(rows: list[dict], mode: str, seconds: float, total: int | None = None) -> str:
  """The table; with `total` above len(rows) it opens with "Partial run (k of total portraits)"."""
  n = len(rows)
  found = sum(r["found"] for r in rows)
  animated = sum(r["found"] and r["face_frames"] == r["frames"] for r in rows)
  kept = sum(r["kept"] for r in rows)
  partial = [f"Partial run ({n} of {total} portraits).", ""] if total is not None and total > n else []
  lines = [*partial, f"Mode {mode}, {seconds:g} s of the bundled speech: face found in {found} of {n} "
           f"portraits, a face in every generated frame in {animated}, identity kept (mean dlib distance "
           f"< {SAME_PERSON}) in {kept}.", "",
           "| portrait | face found | frames with a face | identity distance | kept | error |",
           "|---|---|---|---|---|---|"]
  for r in rows:
    dist = "-" if r["identity_distance"] is None else f"{r['identity_distance']:.3f}"
    faces = f"{r['face_frames']} / {r['frames']}" if r["found"] else "-"
    lines.append(f"| {r['portrait']} | {'yes' if r['found'] else 'no'} | {faces} | {dist} | "
                 f"{'yes' if r['kept'] else 'no'} | {r['error']} |")
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m benchmarks.portraits_bench", description=__doc__.split("\n")[0])
  p.add_argument("--portraits", default=str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
                                            / "media" / "portraits"))
  p.add_argument("--mode", default="head", choices=("head", "upper"))
  p.add_argument("--checkpoint", default=None, help="default: the bundled models")
  p.add_argument("--seconds", type=float, default=1.0, help="seconds of the bundled speech per portrait")
  p.add_argument("--max", type=int, default=None, help="first N portraits (sorted by name)")
  p.add_argument("--stride", type=int, default=1, help="every k-th portrait (sorted by name)")
  p.add_argument("--out", default="benchmarks/figures/portraits.md")
  a = p.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  folder = pathlib.Path(a.portraits)
  paths = sorted(q for q in folder.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
  if not paths:
    print(f"error: no images in {folder}", file=sys.stderr)
    return 2
  paths = paths[::max(1, a.stride)]
  paths = paths[:a.max] if a.max else paths
  audio = read_audio(ASSETS_SPEECH, SAMPLE_RATE)[:int(a.seconds * SAMPLE_RATE)]
  options, analyzer = StreamOptions(mode=a.mode), face_analyzer()
  checkpoint = a.checkpoint or default_checkpoint()
  if checkpoint is None:
    print("error: no --checkpoint and no bundled checkpoint (infer/assets/checkpoint/)", file=sys.stderr)
    return 2
  models = load_checkpoint(checkpoint, a.mode)
  rows = []
  out = pathlib.Path(a.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  for q in paths:  # the table is rewritten after every portrait: a stopped run keeps what it finished
    rows.append(animate_portrait(q, audio, options, models, analyzer))
    print(rows[-1], flush=True)
    out.write_text(to_markdown(rows, a.mode, a.seconds, total=len(paths)))
  print(out.read_text())
  return 0


if __name__ == "__main__":
  sys.exit(main())
