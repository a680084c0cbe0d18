"""End-to-end renderer training on real records (render_head512 tiny).

One run, so that the step program compiles once: 2 steps write a checkpoint, metrics and TensorBoard
scalars and images; resumed to 3 steps it equals an uninterrupted 3-step run (same data position, RNG,
optimizer and EMA; the resume code is shared by every task); on records split with the repository's split
file and a held-out tail (the clip's last 20 % never enter training) it goes on to HELDOUT_STEPS with the
in-loop evaluation on (`train.render_eval`) and must reconstruct those held-out frames much better than
its untrained initial state. The other two renderer layouts (render_upper512x768 with every loss term,
face_refine) train in the demo, whose test checks their loss terms (tests/infer/demo_test.py).
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from PIL import Image

from chatanyone_jax.render import presets
from data import records, splits
from train import checkpoint, metrics, parallel, tasks, trainer
from train import evaluate as train_evaluate
from train.configs import face_refine, render_head512, render_upper512x768

HELDOUT_STEPS = 60


def _config(module, data_dir, **overrides):
  c = module.get_config("tiny")
  c.data_dir = str(data_dir)
  c.progress = False
  c.update(overrides)
  return c


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def _rows(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def split_records(motion_records, tmp_path_factory):
  """The clips of `motion_records` split by data/splits/people.tsv, the last 20 % of each held out."""
  root = tmp_path_factory.mktemp("split_records")
  (root / "config.json").write_text((motion_records / "config.json").read_text())
  (root / "work").symlink_to(motion_records / "work")
  meta = records.build(root, split_file=splits.SPLIT_FILE, heldout_tail=0.2)
  assert meta["clip_frames"] == {"train": [72], "heldout_frames": [18]}, meta["clip_frames"]
  return root


@pytest.mark.slow
def test_render_head512_trains_checkpoints_resumes_exactly_and_beats_its_start(split_records, tmp_path):
  # Without most XLA optimisations (as every test compiles), although it trains HELDOUT_STEPS steps:
  # compiling dominates even so (measured beside a training run: 205 s optimised -> 180 s).
  module = render_head512
  # The schedule is part of the step program: with lr_decay_steps fixed, every run (2 steps, resumed to 3,
  # an uninterrupted 3, then on to HELDOUT_STEPS) reuses the same compiled step.
  kw = dict(lr_decay_steps=HELDOUT_STEPS, warmup_steps=10, log_every=1, checkpoint_every=100, image_every=2)
  a, b = tmp_path / "a", tmp_path / "b"
  first = trainer.train_and_evaluate(_config(module, split_records, num_steps=2, **kw), a)
  assert int(first["step"]) == 2
  assert [p.name for p in (a / "checkpoints").iterdir() if p.name.isdigit()] == ["2"]
  rows = _rows(a)
  assert [r["step"] for r in rows] == [1, 2]
  for r in rows:
    assert np.isfinite(r["loss"]) and r["grad_norm"] > 0 and r["disc_grad_norm"] > 0
    assert r["l1"] > 0.01 and r["perceptual_enabled"] == 0
    assert r["landmark"] == 0 and r["equivariance"] == 0  # the head layout has neither term
  assert rows[0]["deformation_prior"] == 0  # M's offset head is zero-initialised
  assert "frames_per_sec" in rows[1]
  (events,) = (a / "tensorboard").glob("events.out.tfevents.*")
  assert [s for s, v in metrics.read_events(events) if v] == [1, 2]
  c = _config(module, split_records)
  ho, wo = presets.get(c.model.preset).output_size
  images = metrics.read_image_tags(events)  # source | target | generated, one row per example (up to 4)
  assert images == {2: [("reconstruction/source_target_generated", ho * 4, wo * 3)]}

  resumed = _host(trainer.train_and_evaluate(_config(module, split_records, num_steps=3, **kw), a))
  assert int(resumed["step"]) == 3
  ra = _rows(a)
  assert [r["step"] for r in ra] == [1, 2, 3]
  assert ra[2]["deformation_prior"] > 0  # ΔX_head moved at step 2
  moved = jax.tree.leaves(jax.tree.map(lambda x, y: np.abs(x - y).max(), _host(first["gen"]["params"]),
                                       resumed["gen"]["params"]))
  assert max(moved) > 0
  # Resumed equals uninterrupted: same data position, RNG, optimizer and EMA.
  straight = _host(trainer.train_and_evaluate(_config(module, split_records, num_steps=3, **kw), b))
  assert int(straight["step"]) == 3
  rb = _rows(b)
  assert [r["step"] for r in rb] == [1, 2, 3]
  np.testing.assert_allclose([r["loss"] for r in ra], [r["loss"] for r in rb], rtol=1e-5)
  for part in ("gen", "disc", "ema"):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6), resumed[part],
                 straight[part])

  # Inference loading: EMA generator params and the BatchNorm statistics.
  loaded = checkpoint.load_params(b)
  assert loaded["step"] == 3 and set(loaded["params"]) == {"F", "M", "W", "G"}
  jax.tree.map(np.testing.assert_allclose, loaded["params"], straight["ema"])
  jax.tree.map(np.testing.assert_allclose, loaded["batch_stats"], straight["gen"]["batch_stats"])
  assert checkpoint.load_config(b).model.preset == c.model.preset

  # Go on training with the held-out evaluation on, then compare with the untrained state.
  long = _config(module, split_records, num_steps=HELDOUT_STEPS,
                 **{**kw, "log_every": 20, "image_every": 1000})
  long.evals.update(every=HELDOUT_STEPS, splits=("heldout_frames", "validation"), frames_per_clip=6)
  trainer.train_and_evaluate(long, a)
  row = _rows(a)[-1]
  assert row["step"] == HELDOUT_STEPS and "eval/validation/l1" not in row  # no such split: skipped
  task = tasks.get_task(long)
  prog = trainer.cached_build(task, long, parallel.make_mesh(long.mesh))
  untrained, _ = task.make_evaluator().run(prog.compile_init()(prog.init_key, {}))
  trained = row["eval/heldout_frames/l1"]
  print(f"held-out L1: untrained {untrained['eval/heldout_frames/l1']:.4f}, trained {HELDOUT_STEPS} "
        f"steps {trained:.4f}, copy source {row['eval/heldout_frames/copy_source_l1']:.4f}")
  assert trained < 0.65 * untrained["eval/heldout_frames/l1"], (trained, untrained)
  assert row["eval/heldout_frames/copy_source_l1"] == untrained["eval/heldout_frames/copy_source_l1"]
  events = max((a / "tensorboard").glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
  sheet = ("eval/heldout_frames/source_target_generated_copy", ho, 4 * wo)  # one clip: one row
  assert sheet in metrics.read_image_tags(events)[HELDOUT_STEPS]
  # The same evaluation outside training (`python -m train.evaluate`) on the final checkpoint's EMA weights.
  out = tmp_path / "eval"
  assert train_evaluate.main(["--workdir", str(a), "--out", str(out)]) == 0
  scalars = json.loads((out / "eval.json").read_text())
  assert scalars["step"] == HELDOUT_STEPS
  np.testing.assert_allclose(scalars["eval/heldout_frames/l1"], trained, rtol=1e-4)
  (png,) = out.glob("*.png")  # the contact sheet: one row (one clip), source | target | generated | copy
  assert png.name == "eval_heldout_frames_source_target_generated_copy.png"
  assert np.asarray(Image.open(png)).shape == (ho, 4 * wo, 3)
  fewer, _, _ = train_evaluate.evaluate(a, frames_per_clip=2)
  assert fewer["eval/heldout_frames/copy_source_l1"] != row["eval/heldout_frames/copy_source_l1"]


def test_evaluate_cli_says_what_is_missing(motion_records, tmp_path, capsys):
  assert train_evaluate.main(["--workdir", str(tmp_path)]) == 2  # not a workdir
  assert "not a `python -m train.main` workdir" in capsys.readouterr().err
  c = _config(render_head512, motion_records, num_steps=1)
  c.data_dir = str(tmp_path / "moved")
  checkpoint.save_config(tmp_path, c)
  assert train_evaluate.main(["--workdir", str(tmp_path)]) == 2
  assert "pass --data-dir" in capsys.readouterr().err


def test_workdir_of_another_model_is_refused(motion_records, tmp_path):
  c = _config(render_head512, motion_records, num_steps=1)
  (tmp_path / "w").mkdir()
  checkpoint.save_config(tmp_path / "w", c)
  other = _config(face_refine, motion_records, num_steps=1)
  with pytest.raises(ValueError, match=r"holds a run with config\.model=.*use a new --workdir"):
    trainer.train_and_evaluate(other, tmp_path / "w")


def test_render_batch_matches_spec_for_every_config(motion_records):
  """adapt() of a real batch has exactly batch_spec's keys and shapes (what the sharded step is built for)."""
  for module in (render_head512, render_upper512x768, face_refine):
    c = _config(module, motion_records)
    task = tasks.get_task(c)
    batch = task.adapt(next(iter(task.loader(2, 0))))
    spec = task.batch_spec(2)
    assert {k: v.shape for k, v in batch.items()} == {k: s.shape for k, s in spec.items()}, c.model.preset
    if c.face_refine:  # G's injection image: the driving crop with the face blacked out
      face = batch["face_mask"]
      assert face.mean() > 0.05
      small = face.reshape(2, face.shape[1] // 2, 2, face.shape[2] // 2, 2, 1).mean((2, 4))
      inside = small[..., 0] > 0.99
      assert np.all(batch["hand_image"][inside] == 0) and batch["hand_image"][~inside].mean() > 0.05
