"""End-to-end training on real records: motion_face / motion_body tiny, checkpoints, metrics, resume."""

from __future__ import annotations

import copy
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from chatanyone_jax import template as tp
from train import checkpoint, metrics, optim, parallel, tasks, trainer
from train.configs import motion_body, motion_face
from train.task_base import Task


def _config(module, data_dir, **overrides):
  c = module.get_config("tiny")
  c.data_dir = str(data_dir)
  c.progress = False
  c.update(overrides)
  return c


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def test_motion_face_trains_checkpoints_and_logs(motion_records, tmp_path):
  config = _config(motion_face, motion_records, num_steps=4, log_every=2, checkpoint_every=2)
  state = trainer.train_and_evaluate(config, tmp_path)
  assert int(state["step"]) == 4
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [2, 4]
  for r in rows:
    assert {"loss", "grad_norm", "learning_rate", "steps_per_sec", "frames_per_sec"} <= set(r)
    assert np.isfinite(r["loss"]) and 0.1 < r["loss"] < 10 and r["grad_norm"] > 0
  assert rows[0]["learning_rate"] > 0 and rows[1]["learning_rate"] != rows[0]["learning_rate"]
  # TensorBoard event file (tensorboardX): the same scalars.
  (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
  decoded = metrics.read_events(events)
  assert [s for s, v in decoded if v] == [2, 4]
  np.testing.assert_allclose(decoded[-1][1]["loss"], rows[-1]["loss"], rtol=1e-6)
  # The stage-1 summary: a sampled window plotted against the ground truth (image_every = 4).
  assert metrics.read_image_tags(events) == {4: [("motion/sample_vs_ground_truth", 3 * 110, 480)]}
  # Inference loading: EMA params (they lag the trained params), normalisation stats.
  loaded = checkpoint.load_params(tmp_path)
  assert loaded["step"] == 4 and set(loaded["params"]) == {"audio", "face"}
  jax.tree.map(np.testing.assert_allclose, loaded["params"], _host(state["ema"]))
  raw = checkpoint.load_params(tmp_path, ema=False)["params"]
  jax.tree.map(np.testing.assert_allclose, raw, _host(state["params"]))
  assert loaded["norm"]["motion_std"].shape == (58,) and np.all(loaded["norm"]["motion_std"] > 0)
  # A finished run resumes to the same state without training.
  again = trainer.train_and_evaluate(config, tmp_path)
  assert int(again["step"]) == 4
  jax.tree.map(np.testing.assert_array_equal, _host(again["params"]), raw)
  # The stage-1 benchmark (benchmarks/motion_style.py) measures this checkpoint: every number is there
  # and finite, the ground-truth statistics are those of the records, and the rows for RESULTS.md format.
  from benchmarks import motion_style
  from chatanyone_jax.template import NUM_EXP
  from infer.evaluate import motion_windows

  out = motion_style.evaluate(config, tmp_path, num_steps=2, split="train")
  assert out["guidance_scale"] == 2.0 and out["validation_clips"] == 1
  for key in ("expression_std_by_amplitude_with_reference", "pose_range_by_pose_scale_without_reference"):
    assert list(out[key]) == [0.5, 1.0, 2.0] and all(np.isfinite(v) and v > 0 for v in out[key].values())
  for key in ("reference", "reference_no_history"):
    assert set(out[key]) == {"same_clip", "other_clip", "none"}
    assert all(v["mae"] > 0 and -1 <= v["ssim"] <= 1 for v in out[key].values())
  # One clip: no window of another clip to measure the pull against.
  assert set(out["reference_pull"].values()) == {None}
  w = motion_windows(config, tasks.get_task(config), config.data_dir, "train")
  target = (w["motion"][:, config.history:] - loaded["norm"]["motion_mean"]) / loaded["norm"]["motion_std"]
  np.testing.assert_allclose(out["ground_truth"]["expression_std"],
                             np.std(target[..., :NUM_EXP], axis=1).mean(), rtol=1e-5)
  np.testing.assert_allclose(out["frame_change"]["ground_truth"]["pose"],
                             np.abs(np.diff(target[..., NUM_EXP:], axis=1)).mean(), rtol=1e-5)
  assert out["frame_change"]["generated"]["pose"] > 0
  seams = out["seam"]["seam_frames_8"]
  assert seams["clips"] == 1 and 0 < seams["boundary"] and 0 < seams["inside"]
  rows = motion_style.result_rows(out)
  assert [name for name, _ in rows] == ["stage-1 style: amplitude", "stage-1 style: pose range",
                                        "stage-1 reference (Table 4)", "stage-1 reference pull",
                                        "stage-1 lips / seams"]
  assert "n/a (one clip)" in rows[3][1] and "nan" not in " ".join(v for _, v in rows)


def test_resume_equals_uninterrupted(motion_records, tmp_path):
  """Steps 1-2, then 3-4 in a fresh call == steps 1-4 in one: data position, RNG and optimizer resume."""
  kw = dict(lr_decay_steps=4, log_every=1, checkpoint_every=100)
  first = trainer.train_and_evaluate(_config(motion_face, motion_records, num_steps=2, **kw), tmp_path / "a")
  assert int(first["step"]) == 2
  config = _config(motion_face, motion_records, num_steps=4, **kw)
  program = trainer.cached_build(tasks.get_task(config), config, parallel.make_mesh(config.mesh))
  resumed = _host(trainer.train_and_evaluate(_config(motion_face, motion_records, num_steps=4, **kw),
                                             tmp_path / "a"))
  straight = _host(trainer.train_and_evaluate(_config(motion_face, motion_records, num_steps=4, **kw),
                                              tmp_path / "b"))
  assert int(resumed["step"]) == int(straight["step"]) == 4
  # All three runs (2 steps, and 4 steps twice) used one Program: one trace and compile of the step.
  assert program.step._cache_size() == 1 and program.compile_init()._cache_size() == 1
  rows = lambda d: [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
  ra, rb = rows(tmp_path / "a"), rows(tmp_path / "b")
  assert [r["step"] for r in ra] == [1, 2, 3, 4] == [r["step"] for r in rb]
  np.testing.assert_allclose([r["loss"] for r in ra], [r["loss"] for r in rb], rtol=1e-5)
  for part in ("params", "ema", "opt_state", "norm"):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7), resumed[part],
                 straight[part])
  # The runs moved the parameters (the comparison above is not of two untouched inits).
  moved = jax.tree.leaves(jax.tree.map(lambda x, y: np.abs(x - y).max(), _host(first["params"]),
                                       straight["params"]))
  assert max(moved) > 0


def test_program_key_ignores_only_what_steers_the_loop():
  c = motion_face.get_config("tiny")
  mesh = parallel.make_mesh(c.mesh)
  key = trainer.program_key(c, mesh)
  other = copy.deepcopy(c)
  other.update(log_every=7, checkpoint_every=9, progress=not c.progress, image_every=3, keep_checkpoints=1)
  assert trainer.program_key(other, mesh) == key
  for change in (dict(learning_rate=0.5), dict(batch_size=2 * c.batch_size), dict(seed=c.seed + 1),
                 dict(num_steps=c.num_steps + 1)):  # num_steps is the schedule's length when not set apart
    changed = copy.deepcopy(c)
    changed.update(change)
    assert trainer.program_key(changed, mesh) != key, change
  fixed = copy.deepcopy(c)
  fixed.lr_decay_steps = c.num_steps
  longer = copy.deepcopy(fixed)
  longer.num_steps = 10 * c.num_steps
  assert trainer.program_key(fixed, mesh) == trainer.program_key(longer, mesh) == key


def test_motion_body_trains(motion_records, tmp_path):
  state = trainer.train_and_evaluate(_config(motion_body, motion_records, num_steps=2, log_every=1), tmp_path)
  assert int(state["step"]) == 2 and set(state["params"]) == {"audio", "body", "appearance"}
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert len(rows) == 2 and all(np.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in rows)
  norm = checkpoint.load_params(tmp_path)["norm"]
  assert norm["target_mean"].shape == (96 + 63 + 1 + 3 + 130,)
  (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
  # The last step writes the summary.
  assert metrics.read_image_tags(events) == {2: [("motion/sample_vs_ground_truth", 5 * 110, 480)]}


def test_motion_face_whisper_trains_on_cached_window_features(motion_records, tmp_path):
  """The Whisper front end: the split's features are cached per window row before the first step (the
  streaming step's window policy, `whisper.window_features` of 2 s of context + the window), the loader
  serves each drawn window its row, the adapter trains, and the checkpoint holds no encoder weights; a
  cache built for other settings is refused."""
  from data import lookahead, records, silence, speech_features, whisper_weights
  from data.pipelines import WindowIndex
  from tests.helpers import require_module

  require_module(whisper_weights.PACKAGE, whisper_weights.INSTALL_HINT)
  config = motion_face.get_config("tiny_whisper")
  config.update(data_dir=str(motion_records), progress=False, num_steps=2, log_every=1, silence_prob=0.5,
                lookahead_prob=0.5, mouth_loss_weight=1.0)  # the lip loss too
  state = trainer.train_and_evaluate(config, tmp_path)
  assert int(state["step"]) == 2 and set(state["params"]) == {"audio", "face"}
  assert "norm_in" in state["params"]["audio"] and "conv0" not in state["params"]["audio"]  # the adapter
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert len(rows) == 2 and all(np.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in rows)
  # The cache: one row per window of the index, equal to the features of the row's audio with context.
  task = tasks.get_task(config)
  cfg = task.window_config()
  path = speech_features.ensure(motion_records, "train", cfg, task.speech_context, build_missing=False)
  cache = np.load(path)
  index = WindowIndex(records.read_meta(motion_records)["clip_frames"]["train"], cfg)
  assert cache.shape == (len(index), 27, 384) and cache.dtype == np.float16
  clip = records.data_source(motion_records, "clips", "train")[0]
  speech = task.speech_params()
  front_end = jax.jit(task.front_end_input)
  for row in (0, len(index) - 1):
    audio = speech_features.row_audio(clip, index[row]["start"], cfg, task.speech_context)
    expected = np.asarray(front_end(speech, jnp.asarray(audio)[None]))[0]
    np.testing.assert_allclose(cache[row], expected, atol=2e-2, rtol=1e-2)  # float16 storage
  first = speech_features.row_audio(clip, 0, cfg, task.speech_context)
  assert not first[:task.speech_context - 4 * 534].any() and first[-100:].any()  # zeros before the clip
  # Silence augmentation's cache: the same rows' features with each row's span of faint noise.
  silent = np.load(speech_features.ensure(motion_records, "train", cfg, task.speech_context,
                                          build_missing=False, variant="silent"))
  assert silent.shape == cache.shape
  spf = 16000 / 30
  for row in (0, len(index) - 1):
    audio = speech_features.row_audio(clip, index[row]["start"], cfg, task.speech_context)
    quiet = silence.silence_audio(audio, row, cfg, cfg.history - task.speech_context / spf, spf)
    a, b = silence.silence_span(row, cfg)
    lo = task.speech_context + round((a - cfg.history) * spf)
    assert np.abs(quiet[lo:lo + 200]).max() < 0.02 and not np.array_equal(quiet[lo:], audio[lo:])
    np.testing.assert_array_equal(quiet[:lo], audio[:lo])  # context and speech before the span kept
    expected = np.asarray(front_end(speech, jnp.asarray(quiet)[None]))[0]
    np.testing.assert_allclose(silent[row], expected, atol=2e-2, rtol=1e-2)
    assert np.abs(silent[row].astype(np.float32) - cache[row]).max() > 0.1
  # Look-ahead augmentation's cache: the same rows' features of the audio cut after each row's look-ahead.
  ahead = np.load(speech_features.ensure(motion_records, "train", cfg, task.speech_context,
                                         build_missing=False, variant="lookahead"))
  for row in (0, len(index) - 1):
    audio = speech_features.row_audio(clip, index[row]["start"], cfg, task.speech_context)
    cut = lookahead.lookahead_audio(audio, row, cfg, cfg.history - task.speech_context / spf, spf)
    lo = task.speech_context + round(lookahead.lookahead_cut(row, cfg) * spf)
    np.testing.assert_array_equal(cut[:lo], audio[:lo])
    assert not cut[lo:].any() and audio[lo:].any()
    expected = np.asarray(front_end(speech, jnp.asarray(cut)[None]))[0]
    np.testing.assert_allclose(ahead[row], expected, atol=2e-2, rtol=1e-2)
  # A loaded batch carries its rows' features (a silenced window: the silenced audio's; a cut one: the cut
  # audio's).
  batch = next(iter(task.loader(8, seed=0)))
  cut_rows = ~batch["audio_valid"].all(1)
  assert 0 < batch["silenced"].sum() < 8 and cut_rows.any() and not (cut_rows & batch["silenced"]).any()
  for b in range(8):
    row = [i for i in range(len(index)) if index[i]["start"] == batch["start"][b]][0]
    features = silent[row] if batch["silenced"][b] else ahead[row] if cut_rows[b] else cache[row]
    np.testing.assert_array_equal(batch["speech"][b], features.astype(np.float32))
  # A cache of other window settings is not silently reused.
  other = speech_features.cache_name("train", cfg, task.speech_context).replace("S2", "S3")
  (path.parent / f"{other}.json").write_text((path.parent / path.name.replace(".npy", ".json")).read_text())
  np.save(path.parent / f"{other}.npy", cache)
  with pytest.raises(ValueError, match="delete it"):
    other_cfg = type(cfg)(cfg.window, cfg.history, 3, cfg.short_min_frames)
    speech_features.ensure(motion_records, "train", other_cfg, task.speech_context, build_missing=False)
  assert "speech" not in checkpoint.load_params(tmp_path)["params"]


def test_motion_lip_trains_on_the_face_models_windows_and_exports(motion_records, tmp_path):
  """The lip regressor: the face model's cached Whisper windows (the same cache files), the window's
  expression as target (unheard frames of look-ahead windows left out), statistics of the features at the
  frame rate and of the expression; its export loads for a stream and a log-mel config is refused."""
  from data import whisper_weights
  from tests.helpers import require_module
  from train import export
  from train.configs import motion_lip

  require_module(whisper_weights.PACKAGE, whisper_weights.INSTALL_HINT)
  config = motion_lip.get_config("tiny")
  config.update(data_dir=str(motion_records), progress=False, num_steps=3, log_every=1, silence_prob=0.5,
                lookahead_prob=0.5)
  task = tasks.get_task(config)
  assert task.window_config() == tasks.get_task(motion_face.get_config("tiny_whisper")).window_config()
  state = trainer.train_and_evaluate(config, tmp_path / "run")
  assert int(state["step"]) == 3 and set(state["params"]) == {"conv", "rest"}  # with the speech gate
  assert state["params"]["conv"]["kernel"].shape == (5, 384, tp.NUM_EXP + 1)
  norm = jax.device_get(state["norm"])
  assert {k: v.shape for k, v in norm.items()} == {"feature_mean": (384,), "feature_std": (384,),
                                                    "exp_mean": (52,), "exp_std": (52,)}
  assert (norm["feature_std"] > 0).all() and (norm["exp_std"] > 0).all()
  rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert len(rows) == 3 and all(np.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in rows)
  # The loss: squared error of the normalised expression over the heard, valid frames of the window only.
  batch = task.adapt(next(iter(task.loader(8, seed=0))))
  params = jax.device_get(state["ema"])
  pred = np.asarray(task.predict(params, jnp.asarray(batch["speech"]), norm))
  h = config.history
  target = (batch["motion"][:, h:, :52] - norm["exp_mean"]) / norm["exp_std"]
  mask = (batch["valid"][:, h:] > 0.5) & (batch["audio_valid"] > 0.5)
  assert 0 < mask.sum() < mask.size  # look-ahead windows have unheard frames
  expected = ((pred - target) ** 2).mean(-1)[mask].mean()
  loss = float(task.loss(params, jax.tree.map(jnp.asarray, batch), jax.random.key(0), norm))
  np.testing.assert_allclose(loss, expected, rtol=1e-4)
  export.export(tmp_path / "run", tmp_path / "export")
  loaded = export.load_weights(tmp_path / "export")
  np.testing.assert_allclose(loaded["params"]["conv"]["kernel"], params["conv"]["kernel"], rtol=1e-6)
  config.model.speech_features = "log_mel"
  with pytest.raises(ValueError, match="whisper_tiny_en"):
    tasks.get_task(config)


def test_missing_data_dir_fails_before_compiling(tmp_path, monkeypatch):
  def no_compile(*a, **k):
    raise AssertionError("compiled before validating the data dir")

  monkeypatch.setattr(jax, "jit", no_compile)
  monkeypatch.setattr(jax, "eval_shape", no_compile)
  t0 = time.perf_counter()
  with pytest.raises(ValueError, match=r"config\.data_dir is not set.*python -m data\.preprocess"):
    trainer.train_and_evaluate(motion_face.get_config("tiny"), tmp_path / "w")
  config = motion_face.get_config("tiny")
  config.data_dir = str(tmp_path / "nothing_here")
  with pytest.raises(FileNotFoundError, match=r"config\.data_dir=.*nothing_here.*python -m data\.preprocess"):
    trainer.train_and_evaluate(config, tmp_path / "w")
  assert time.perf_counter() - t0 < 5
  assert not (tmp_path / "w" / "checkpoints").exists()


class _ToyTask(Task):
  """loss = mean((w · x - 1)²): enough to exercise the generic step without a model."""

  def loss(self, params, batch, rng, norm):
    return jax.numpy.mean((batch["x"] @ params["w"] * norm["s"] - 1.0) ** 2)


def test_step_guard_freezes_the_state_at_the_first_nonfinite_step(tmp_path):
  config = motion_face.get_config("tiny")
  schedule = optim.learning_rate_schedule(config)
  tx = optim.optimizer(config, schedule)
  params = {"w": jax.numpy.ones((3, 2))}
  state = {"params": params, "opt_state": tx.init(params), "ema": params,
           "step": jax.numpy.zeros((), "int32"),
           "norm": {"s": jax.numpy.ones(())}}
  step = jax.jit(trainer.guard_nonfinite(_ToyTask(config).make_step(tx, schedule, 0.9, jax.random.key(0))))
  guard = trainer.new_guard({"x": jax.ShapeDtypeStruct((4, 3), np.float32)})
  history = []
  for x in (1.0, np.nan, 2.0, 3.0):  # step 2's batch is NaN; steps 3 and 4 are finite again
    state, m, guard = step(state, {"x": np.full((4, 3), x, np.float32)}, guard)
    history.append(m)
    if x == 1.0:
      assert bool(m["finite"]) and int(state["step"]) == 1
      trainer.check_finite(history, 1, state, guard, tmp_path)  # all finite: returns
      before = _host(state)
  # "finite" stays False after the first non-finite step, and the state stays the one before it.
  assert [bool(h["finite"]) for h in history] == [True, False, False, False]
  jax.tree.map(np.testing.assert_array_equal, _host(state), before)
  with pytest.raises(trainer.NonFiniteError, match=r"at step 2 \(of steps \[1, 4\].*nonfinite_step_1"):
    trainer.check_finite(history, 4, state, guard, tmp_path)
  saved = tmp_path / "nonfinite_step_1"
  assert np.isnan(np.load(saved / "batch.npz")["x"]).all()  # step 2's batch, not the last one
  restored = ocp.StandardCheckpointer().restore(saved / "state")
  assert int(restored["step"]) == 1
  jax.tree.map(np.testing.assert_array_equal, _host(restored["params"]), before["params"])


def test_nonfinite_step_stops_training_without_checkpointing_it(motion_records, tmp_path, monkeypatch):
  """Step 3's batch is NaN: the checkpoint of step 2 stays the last one; the log step 4 raises."""
  adapt, calls = tasks.MotionFace.adapt, []

  def nan_third_training_batch(self, batch):
    out = adapt(self, batch)
    calls.append(1)
    if len(calls) == self.config.stats_batches + 3:  # after the statistics' batches: steps 1, 2, 3
      out["audio"] = np.full_like(out["audio"], np.nan)
    return out

  monkeypatch.setattr(tasks.MotionFace, "adapt", nan_third_training_batch)
  # lr_decay_steps=4 as test_resume_equals_uninterrupted: the same compiled step.
  config = _config(motion_face, motion_records, num_steps=4, lr_decay_steps=4, log_every=2,
                   checkpoint_every=2)
  with pytest.raises(trainer.NonFiniteError, match=r"at step 3 \(of steps \[3, 4\]"):
    trainer.train_and_evaluate(config, tmp_path)
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
  assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [2]
  assert np.isnan(np.load(tmp_path / "nonfinite_step_2" / "batch.npz")["audio"]).all()
  saved = ocp.StandardCheckpointer().restore(tmp_path / "nonfinite_step_2" / "state")
  assert int(saved["step"]) == 2
  at_2 = checkpoint.load_params(tmp_path, ema=False)["params"]  # the last checkpoint: step 2
  jax.tree.map(np.testing.assert_array_equal, _host(saved["params"]), at_2)


def test_motion_face_training_batch_randomness():
  """In training (only) the reference / history are dropped at their rates and the style is rescaled."""
  config = motion_face.get_config("tiny")
  config.update(p_reference_drop=0.3, p_history_drop=0.1, style_augment=2.0, p_style_augment=0.5)
  task = tasks.get_task(config)
  b, h, t = 256, config.history, config.window
  rng = np.random.default_rng(0)
  batch = {"motion": np.cumsum(rng.normal(size=(b, h + t, 58)), axis=1).astype(np.float32),
           "audio": rng.normal(scale=0.1, size=(b, int(round(t * 16000 / 30)))).astype(np.float32),
           "ref_motion": rng.normal(size=(b, t, 58)).astype(np.float32)}
  norm = {"motion_mean": np.zeros(58, np.float32), "motion_std": np.ones(58, np.float32)}
  f = jax.jit(task.model_batch, static_argnames="train")
  train = f(batch, jax.random.key(0), norm, train=True)
  plain = f(batch, jax.random.key(0), norm, train=False)
  assert np.all(np.asarray(plain["reference_valid"])) and np.all(np.asarray(plain["history_valid"]))
  np.testing.assert_allclose(np.asarray(plain["motion"]), batch["motion"][:, h:], rtol=1e-6)
  assert abs(np.mean(np.asarray(train["reference_valid"])) - 0.7) < 0.1
  assert abs(np.mean(np.asarray(train["history_valid"])) - 0.9) < 0.07
  ratio = np.asarray(train["style"]) / np.asarray(plain["style"])  # the style_augment factors
  for k in range(2):
    assert 0.3 < np.mean(np.isclose(ratio[:, k], 1.0, atol=1e-4)) < 0.7
    assert ratio[:, k].min() > 0.5 - 1e-3 and ratio[:, k].max() < 2.0 + 1e-3
  np.testing.assert_array_equal(np.asarray(train["reference"]), np.asarray(plain["reference"]))


def test_resume_on_grown_records_keeps_the_state_and_restarts_the_data(motion_records, tmp_path):
  from tests import fixtures

  kw = dict(log_every=1, lr_decay_steps=4)
  first = _host(trainer.train_and_evaluate(_config(motion_face, motion_records, num_steps=2, **kw),
                                           tmp_path / "w"))
  grown = tmp_path / "grown"  # other clips: the saved data position means nothing there
  fixtures.write_records(grown, num_clips=3, num_frames=40, body_size=(96, 64), head_size=64, hands=False)
  with pytest.raises(ValueError, match="resume with --config.restore_data=False"):
    trainer.train_and_evaluate(_config(motion_face, grown, num_steps=3, **kw), tmp_path / "w")
  state = _host(trainer.train_and_evaluate(_config(motion_face, grown, num_steps=3, restore_data=False, **kw),
                                           tmp_path / "w"))
  assert int(state["step"]) == 3
  rows = [json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3]
  jax.tree.map(np.testing.assert_array_equal, state["norm"], first["norm"])  # the run's statistics kept


def test_lip_loss_is_the_mouth_opening_and_needs_x0_prediction():
  """config.mouth_loss_weight: `curve_loss` of the template's mouth opening of the de-normalised motion
  (zero when the prediction moves no expression); an ε-predicting face model is refused."""
  c = motion_face.get_config("tiny_whisper")
  c.mouth_loss_weight = 2.0
  norm = {"motion_mean": jnp.zeros((58,)), "motion_std": jnp.full((58,), 0.5)}
  loss = tasks.get_task(c).mouth_loss(norm)
  x0 = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 58)), jnp.float32)
  pose_only = x0.at[..., tp.NUM_EXP:].add(1.0)
  assert float(loss(pose_only, x0, None)) < 1e-8 < float(loss(x0.at[..., :tp.NUM_EXP].add(0.5), x0, None))
  assert tasks.get_task(motion_face.get_config("tiny_whisper")).mouth_loss(norm) is None  # weight 0
  c = motion_face.get_config("tiny")
  c.mouth_loss_weight = 1.0
  with pytest.raises(ValueError, match="mouth_loss_weight needs an x0-predicting DiT"):
    tasks.get_task(c).mouth_loss(norm)
