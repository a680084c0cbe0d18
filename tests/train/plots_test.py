"""The PIL line plots behind the stage-1 TensorBoard images."""

import numpy as np

from train import plots
from train.tasks import face_motion_plot


def test_curves_image_draws_each_series_in_its_colour():
  t = np.linspace(0, 1, 40)
  img = plots.curves_image({"a": {"ground truth": np.sin(6 * t), "sample": np.cos(6 * t)},
                            "b": {"ground truth": t, "sample": t[::-1]}}, width=200, panel_height=80)
  assert img.shape == (160, 200, 3) and img.dtype == np.float32
  px = (img * 255).round().astype(int).reshape(-1, 3)
  for colour in plots.COLOURS.values():
    assert np.sum(np.all(px == colour, axis=1)) > 50, colour
  # The rising line of panel b: its sample falls, so the red pixels of panel b move down left to right.
  red = np.all((img[80:] * 255).round().astype(int) == plots.COLOURS["sample"], axis=-1)
  ys, xs = np.nonzero(red)
  assert np.corrcoef(xs, ys)[0, 1] > 0.9


def test_face_motion_plot_has_three_panels_and_tracks_the_mouth():
  rng = np.random.default_rng(0)
  target = rng.normal(size=(20, 58)).astype(np.float32) * 0.5
  img = face_motion_plot(target, target)
  assert img.shape == (330, 480, 3)
  assert np.all(np.isfinite(img)) and img.min() < 0.5  # something was drawn


def test_learning_curve_from_metrics_rows_and_cli(tmp_path):
  import json

  import pytest
  from PIL import Image

  rows = [{"step": s, "l1": 0.3 / (1 + s / 100)} for s in range(50, 1001, 50)]
  for r in rows:
    if r["step"] % 500 == 0:  # evals at 500 and 1000
      r.update({"eval/validation/l1": 0.2 - r["step"] / 1e4, "eval/validation/copy_source_l1": 0.15,
                "eval/validation/psnr": 15 + r["step"] / 500, "eval/validation/copy_source_psnr": 16.0})
  img = plots.learning_curve(rows)
  assert img.shape == (3 * 110, 640, 3)  # train L1, validation L1, validation PSNR
  (tmp_path / "w").mkdir()
  (tmp_path / "w" / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  assert plots.main(["--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "c" / "curve.png")]) == 0
  assert Image.open(tmp_path / "c" / "curve.png").size == (640, 330)
  with pytest.raises(ValueError, match="not a renderer run"):
    plots.learning_curve([{"step": 1, "loss": 1.0}])
