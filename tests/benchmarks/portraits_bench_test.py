"""benchmarks.portraits_bench: a portrait without a face is a row with the CLI's message, the table is written
after every portrait (a stopped run keeps its rows), and an empty folder is an error."""

import numpy as np
from PIL import Image

from benchmarks import portraits_bench


def test_faceless_image_is_a_row_with_the_message_and_the_table_is_written(tmp_path):
  folder = tmp_path / "portraits"
  folder.mkdir()
  Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(folder / "grey.png")
  (folder / "notes.txt").write_text("not an image")
  out = tmp_path / "table.md"
  assert portraits_bench.main(["--portraits", str(folder), "--out", str(out)]) == 0
  text = out.read_text()
  assert "face found in 0 of 1 portraits" in text and "Partial run" not in text
  (row,) = [line for line in text.splitlines() if line.startswith("| grey.png")]
  cells = [c.strip() for c in row.strip("|").split("|")]
  assert cells[1:5] == ["no", "-", "-", "no"] and "face" in cells[5].lower(), cells


def test_partial_table_says_how_many_of_how_many():
  row = {"portrait": "a.png", "found": True, "error": "", "frames": 30, "face_frames": 30,
         "identity_distance": 0.5, "kept": True}
  text = portraits_bench.to_markdown([row], "head", 1.0, total=3)
  assert text.startswith("Partial run (1 of 3 portraits).")
  assert "face found in 1 of 1 portraits, a face in every generated frame in 1, identity kept" in text
  assert "| a.png | yes | 30 / 30 | 0.500 | yes |  |" in text
  assert not portraits_bench.to_markdown([row], "head", 1.0, total=1).startswith("Partial")


def test_empty_folder_is_an_error(tmp_path, capsys):
  assert portraits_bench.main(["--portraits", str(tmp_path), "--out", str(tmp_path / "t.md")]) == 2
  assert "no images in" in capsys.readouterr().err
