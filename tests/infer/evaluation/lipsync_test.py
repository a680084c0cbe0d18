"""The loudness baseline on records split by person (`infer.evaluation.lipsync`)."""

import numpy as np
import pytest

from chatanyone_jax import template as tp
from data import records, splits
from infer.evaluation import lipsync
from tests import fixtures


def test_baseline_fits_on_training_people_and_scores_held_out_ones_per_source(tmp_path):
  split_file = tmp_path / "people.tsv"
  splits.write_split([{"video": f"synthetic_{i:03d}", "source": "A" if i < 3 else "B", "language": "x",
                       "person": f"p{i}", "split": "heldout" if i in (1, 3) else "train"} for i in range(4)],
                     split_file)
  data = tmp_path / "data"
  fixtures.write_records(data, num_clips=4, num_frames=(30, 24, 36, 20), body_size=(96, 64), head_size=64,
                         split_file=split_file)
  curves = lipsync.clip_curves(data, "validation")
  assert [c["video"] for c in curves] == ["synthetic_001", "synthetic_003"]
  clip = records.data_source(data, "clips", "validation")[0]
  np.testing.assert_allclose(curves[0]["opening"], tp.mouth_opening(tp.load_head_template(), clip["exp"],
                                                                    clip["identity"]), rtol=1e-6)
  assert curves[0]["envelope"].shape == (24,) and curves[0]["fps"] == 30.0
  report = lipsync.loudness_baseline(data, split_file=split_file)
  assert report["fit_clips"] == 2 and report["clips"] == 2
  assert set(report["per_source"]) == {"A", "B"}
  assert all(-1 <= v["correlation"] <= 1 and v["clips"] == 1 for v in report["per_source"].values())
  per_clip = [v["correlation"] for v in report["per_source"].values()]
  assert report["correlation"] == pytest.approx(np.mean(per_clip))
  with pytest.raises(ValueError, match="no 'heldout_frames' split"):
    lipsync.clip_curves(data, "heldout_frames")
