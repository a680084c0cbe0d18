"""The split by person (`data.splits`, data/splits/people.tsv) and records split with it."""

from __future__ import annotations

import numpy as np
import pytest

from data import records, splits
from tests import fixtures
from tests.helpers import REPO, require

MEDIA = REPO.parent / "shared" / "data" / "media"


def test_committed_split_holds_out_whole_people_of_several_languages_and_sources():
  rows = splits.read_rows()
  held = [r for r in rows if r["split"] == "heldout"]
  train_people = {r["person"] for r in rows if r["split"] == "train"}
  assert not {r["person"] for r in held} & train_people
  assert len({r["person"] for r in held}) >= 15 and len(held) >= 50
  assert {"Arabic", "English", "German", "Mandarin"} <= {r["language"] for r in held}
  assert len({r["source"] for r in held}) >= 8
  # The three Ocasio-Cortez clips of three repositories are one person, on one side.
  aoc = [r for r in rows if r["person"] == "ocasio-cortez"]
  assert len(aoc) == 3 and len({r["split"] for r in aoc}) == 1
  # Most of the data trains: about 97 % of the videos.
  assert len(held) / len(rows) < 0.05


def test_committed_split_is_what_the_manifests_give():
  """`python -m data.splits --media ../shared/data/media` rewrites the committed file unchanged."""
  require(MEDIA / "talking" / "MANIFEST.tsv", "the shared talking clips")
  assert splits.build_rows(MEDIA) == splits.read_rows()


def test_check_split_and_read_split_errors(tmp_path):
  rows = [{"video": "a", "source": "s", "language": "x", "person": "p", "split": "train"},
          {"video": "b", "source": "s", "language": "x", "person": "p", "split": "heldout"}]
  with pytest.raises(splits.SplitError, match="person p has clips in both"):
    splits.check_split(rows)
  with pytest.raises(splits.SplitError, match="listed twice"):
    splits.check_split([rows[0], rows[0]])
  with pytest.raises(splits.SplitError, match="is not one of"):
    splits.check_split([{**rows[0], "split": "test"}])
  with pytest.raises(splits.SplitError, match="python -m data.splits"):
    splits.read_split(tmp_path / "none.tsv")
  (tmp_path / "bad.tsv").write_text("video\tsplit\na\ttrain\n")
  with pytest.raises(splits.SplitError, match="missing columns"):
    splits.read_rows(tmp_path / "bad.tsv")


LENGTHS = (40, 30, 36)


def test_records_split_by_person_with_heldout_tail(tmp_path):
  split_file = tmp_path / "people.tsv"
  splits.write_split([
      {"video": "synthetic_000", "source": "s", "language": "x", "person": "p0", "split": "train"},
      {"video": "synthetic_001", "source": "s", "language": "x", "person": "p1", "split": "train"},
      {"video": "synthetic_002", "source": "s", "language": "x", "person": "p2", "split": "heldout"},
  ], split_file)
  out = tmp_path / "data"
  meta = fixtures.write_records(out, num_clips=3, num_frames=LENGTHS, body_size=(96, 64), head_size=64,
                                split_file=split_file, heldout_tail=0.2)
  assert meta["clip_frames"] == {"train": [32, 24], "validation": [36], "heldout_frames": [8, 6]}
  assert meta["splits"]["frames"] == {"train": 56, "validation": 36, "heldout_frames": 14}
  z = np.load(out / "work" / "synthetic_000" / "clip_000_00.npz")
  train, tail = records.data_source(out, "clips", "train")[0], records.data_source(out, "clips",
                                                                                    "heldout_frames")[0]
  np.testing.assert_array_equal(train["exp"], z["exp"][:32])
  np.testing.assert_array_equal(tail["exp"], z["exp"][32:])
  np.testing.assert_array_equal(tail["source_frame"], z["source_frame"][32:])
  # Audio: each part exactly round(T · 16000 / 30) samples long, the tail ending with the clip's.
  assert train["audio"].size == round(32 * 16000 / 30) and tail["audio"].size == round(8 * 16000 / 30)
  np.testing.assert_array_equal(train["audio"], z["audio"][:train["audio"].size])
  np.testing.assert_array_equal(tail["audio"], z["audio"][-tail["audio"].size:])
  frame = records.data_source(out, "frames", "heldout_frames")[7]
  assert frame["frame_index"] == 7 and frame["clip_length"] == 8 and frame["clip_start"] == 0
  np.testing.assert_array_equal(frame["exp"], z["exp"][39])
  # Preprocessed videos that the split file does not name are an error that says what to do.
  splits.write_split([{"video": "synthetic_000", "source": "s", "language": "x", "person": "p0",
                       "split": "train"}], split_file)
  with pytest.raises(splits.SplitError, match="not in the split file"):
    records.build(out, split_file=split_file)
  with pytest.raises(ValueError, match="needs a split file"):
    records.build(out, heldout_tail=0.2)
  assert records.read_meta(out)["clip_frames"] == meta["clip_frames"]  # the records were kept
