"""Held-out evaluation inside renderer training (`train.render_eval`) on synthetic records split by person."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from chatanyone_jax.render import train_step
from data import records, splits
from tests import fixtures
from train import render_eval, tasks
from train.configs import render_head512

LENGTHS = (20, 15, 12)


@pytest.fixture(scope="module")
def split_records(tmp_path_factory):
  root = tmp_path_factory.mktemp("split_records")
  split_file = root / "people.tsv"
  splits.write_split([{"video": f"synthetic_{i:03d}", "source": "s", "language": "x", "person": f"p{i}",
                       "split": "heldout" if i == 2 else "train"} for i in range(3)], split_file)
  fixtures.write_records(root / "data", num_clips=3, num_frames=LENGTHS, body_size=(96, 64), head_size=64,
                         split_file=split_file, heldout_tail=0.25)
  return root / "data"


def test_pairs_take_sources_from_training_frames(split_records):
  held = render_eval.eval_pairs(str(split_records), "heldout_frames", max_clips=8, frames_per_clip=3)
  # Clips 0 and 1 keep their last 5 and 4 frames out of training; the source is each clip's frame 0.
  assert [c for *_, c in held] == [0, 0, 0, 1, 1, 1]
  for source, driving, _ in held:
    assert source["clip_name"] == driving["clip_name"] and source["frame_index"] == 0
  train0 = records.data_source(split_records, "frames", "train")[0]
  np.testing.assert_array_equal(held[0][0]["exp"], train0["exp"])
  assert [d["frame_index"] for _, d, c in held if c == 0] == [0, 2, 4]  # spread over the 5 held-out frames
  val = render_eval.eval_pairs(str(split_records), "validation", max_clips=8, frames_per_clip=2)
  assert [(s["frame_index"], d["frame_index"]) for s, d, _ in val] == [(0, 1), (0, 11)]
  assert render_eval.eval_pairs(str(split_records), "test", 8, 2) == []


def test_evaluator_scores_generator_and_copy_source(split_records):
  config = render_head512.get_config("tiny")
  config.data_dir = str(split_records)
  config.evals.update(every=1, max_clips=2, frames_per_clip=2, batch_size=3)
  task = tasks.get_task(config)
  evaluator = task.make_evaluator()
  assert evaluator.splits == ["heldout_frames", "validation"]
  tx = optax.adam(1e-3)
  state = train_step.create_train_state(task.renderer, jax.random.key(0), (1, *task.renderer.image_size, 3),
                                        tx, tx, ema=True)
  scalars, images = evaluator.run(state)
  for split, clips in (("heldout_frames", 2), ("validation", 1)):
    p = f"eval/{split}/"
    for m in ("l1", "psnr", "ssim", "alternation", "specks"):
      assert np.isfinite(scalars[p + m]) and np.isfinite(scalars[p + "copy_source_" + m])
    assert 0 < scalars[p + "target_alternation"] < 2 and scalars[p + "alternation"] > 0
    assert 0 <= scalars[p + "target_specks"] < 5 and scalars[p + "specks"] >= 0  # per 10,000 pixels
    assert 0 < scalars[p + "l1"] < 1 and -1 <= scalars[p + "ssim"] <= 1
    assert scalars[p + "psnr_gain_db"] == pytest.approx(scalars[p + "psnr"] - scalars[p + "copy_source_psnr"])
    # Head crops: a face in every frame, no hand mask; the error inside the face is its own number.
    assert 0 < scalars[p + "face_l1"] < 1 and 0 <= scalars[p + "copy_source_face_l1"] < 1
    assert scalars[p + "face_l1"] != scalars[p + "l1"] and p + "hand_l1" not in scalars
    sheet = images[p + "source_target_generated_copy"]
    ho, wo = task.renderer.output_size
    assert sheet.shape == (clips * ho, 4 * wo, 3)  # a row per clip: source | target | generated | copy
  # An evaluator is built only when config.evals.every > 0.
  config.evals.every = 0
  assert tasks.get_task(config).make_evaluator() is None
