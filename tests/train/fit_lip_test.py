"""The closed-form fit of the lip regressor (`train.fit_lip`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax import template as tp
from chatanyone_jax.audio import whisper
from chatanyone_jax.motion.lip_regressor import LipRegressor
from data.pipelines import MotionWindowConfig, WindowIndex
from train import export, fit_lip, tasks
from train.configs import motion_lip


def test_every_training_frame_counts_once():
  config = MotionWindowConfig(window=16, history=4, stride=3, short_min_frames=8)
  frames = [61, 30, 12, 5]  # long clips, a short one (one padded window), one too short for any
  index = WindowIndex(frames, config)
  weights = fit_lip.frame_weights(frames, index, 4, 16)
  total = [np.zeros_like(w) for w in weights]
  for c, s in index.rows:
    total[c][s + 8:s + 24] += weights[c][s + 8:s + 24]
  for c, n in enumerate(frames):
    covered = total[c][4:4 + n]  # the clip's own frames (4 frames of padding before them)
    np.testing.assert_allclose(covered[covered > 0], 1.0)
  assert (total[0][4 + 4:4 + 61 - 2] > 0).all()  # a long clip: all but its first history and last frames
  assert not total[3].any()


def test_stacked_context_is_the_convolution_input():
  model = LipRegressor(context=2)
  x = jax.random.normal(jax.random.key(0), (2, 12, 7))
  params = model.init(jax.random.key(1), x)["params"]
  stacked = fit_lip.stack_context(x, 2)  # (2, 12, 35)
  expected = stacked @ params["conv"]["kernel"].reshape(35, -1) + params["conv"]["bias"]
  np.testing.assert_allclose(np.asarray(model.apply({"params": params}, x)), np.asarray(expected), atol=1e-5)


def test_fit_lip_learns_the_training_mouth_and_exports(motion_records, tmp_path):
  from data import records, whisper_weights
  from tests.helpers import require_module

  require_module(whisper_weights.PACKAGE, whisper_weights.INSTALL_HINT)
  config = motion_lip.get_config("tiny")
  config.update(data_dir=str(motion_records), batch_size=16, stats_batches=2)
  weights, report = fit_lip.fit(config, split_file=None)
  assert report["penalty"] in config.lip_penalties and report["frames"] > 0
  assert 0.5 < report["gain"] < 20 and np.isfinite(report["train_mse"])
  out = tmp_path / "motion_lip"
  export.check_arrays(config, {"params": weights["params"]}, str(out))
  export.write_export(out, config, weights, step=0, source="test", fit=report)
  loaded = export.load_weights(out)
  # In sample, the regressor's mouth follows the clip's (one clip: a fit, not a held-out score).
  task = tasks.get_task(config)
  assert task.speech_layer == 2 and "-L2-" in task.speech_cache("train")  # its own cache of that block
  # The speech gate (the map's 53rd output): lower inside silence spans than on speech, in sample.
  assert task.model.gate and loaded["params"]["conv"]["kernel"].shape[-1] == tp.NUM_EXP + 1
  assert loaded["params"]["rest"].shape == (tp.NUM_EXP,) and report["rest_frames"] > 0
  batch = task.adapt(next(iter(task.loader(16, seed=1))))
  norm = jax.tree.map(jnp.asarray, loaded["norm"])
  plain = LipRegressor(context=task.model.context, out_dim=tp.NUM_EXP + 1)
  gate = np.asarray(plain.apply({"params": {"conv": loaded["params"]["conv"]}},
                                task.frame_inputs(jnp.asarray(batch["speech"]), norm)))[..., -1]
  quiet = batch["silence"][:, config.history:]
  assert quiet.max() == 1.0 and gate[quiet == 1.0].mean() < gate[quiet == 0.0].mean() - 0.3
  clip = records.data_source(motion_records, "clips", "train")[0]
  audio = np.asarray(clip["audio"], np.float32) / 32768.0
  w, ctx, t = task.window_samples, task.speech_context, config.window
  n = int(clip["num_frames"]) // t
  x = np.concatenate([np.zeros(ctx, np.float32), audio])
  idx = np.arange(n)[:, None] * w + np.arange(ctx + w)[None]
  features = whisper_features(task, x[idx])
  pred = np.asarray(task.predict(loaded["params"], features, norm)) * loaded["norm"]["exp_std"] + \
      loaded["norm"]["exp_mean"]
  template = tp.load_head_template()
  identity = np.asarray(clip["identity"], np.float32)
  opening = np.asarray(tp.mouth_opening(template, pred.reshape(-1, tp.NUM_EXP), identity))
  truth = np.asarray(tp.mouth_opening(template, np.asarray(clip["exp"], np.float32)[:n * t], identity))
  assert np.corrcoef(opening, truth)[0, 1] > 0.5


def test_speech_layer_out_of_range_is_refused():
  config = motion_lip.get_config("tiny")
  config.model.lip.speech_layer = 5  # Whisper tiny has 4 blocks
  with pytest.raises(ValueError, match=r"speech_layer: Whisper layers must be None .* or 1 \.\. 4"):
    tasks.get_task(config)


def whisper_features(task, audio: np.ndarray) -> jax.Array:
  # the encoder output the regressor reads (config.model.lip.speech_layer), as the stream computes it
  fn = jax.jit(lambda p, a: whisper.window_features(task.speech_encoder, p, a, task.speech_context,
                                                    task.speech_layer))
  return fn(task.speech_params(), jnp.asarray(audio))
