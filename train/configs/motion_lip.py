"""Stage 1, the mouth: the lip regressor (`chatanyone_jax.motion.lip_regressor`) on the face model's windows.

  python -m train.fit_lip --out=DIR --config=train/configs/motion_lip.py --config.data_dir=PREPROCESSED
  python -m train.main --workdir=DIR --config=train/configs/motion_lip.py ...  (gradient steps instead)
  python -m train.main --workdir=DIR --config=train/configs/motion_lip.py:tiny ...  (tests)

The linear regressor (the default) is fitted in closed form by `train.fit_lip` (ridge regression, its
penalty cross-validated over people): exact, and minutes on a CPU; `train.main` trains the same model (or
one with a hidden layer) by Adam steps.

Put the workdir (or its `python -m train.export`) beside motion_face/ as motion_lip/ in a checkpoint
directory and the stream takes each frame's mouth from it (`infer.options.StreamOptions.lip`). It reads the
face model's frozen Whisper features, cached per window as for `motion_face.py:small_whisper` (the same
window, history, stride and short_min_frames share one cache).
"""

from __future__ import annotations

import ml_collections

from train.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.task = "motion_lip"
  c.window, c.history, c.stride = 40, 10, 5  # as motion_face: the regressor sees the window's T frames
  c.short_min_frames = 16
  # Silence spans with the mouth eased shut (more often than the face model's 0.2: the regressor sees each
  # window once in `train.fit_lip`, and in inserted silence its mouth then opens 0.38 of the speaking
  # opening against 0.48 at 0.2, benchmarks/RESULTS.md), and audio cut after a look-ahead (the cut frames
  # are left out of the loss), as the bundled face model.
  c.silence_prob = 0.5
  c.lookahead_prob = 0.5
  c.model = ml_collections.ConfigDict({
      "speech_features": "whisper_tiny_en",
      "speech_context_s": 2.0,
      # LipRegressor: ±2 frames, linear, on the output of Whisper's second block (a linear map of it
      # predicts the mouth of held-out speakers better than one of the final output, benchmarks/RESULTS.md)
      # The speech gate: the regressed mouth eased into a closed one where the map hears no speech.
      "lip": {"context": 2, "hidden": 0, "speech_layer": 2, "gate": True},
  })
  # `python -m train.fit_lip` (the closed-form fit of the linear regressor): folds of people and the
  # ridge penalties (per training frame) its cross-validation picks from.
  c.lip_folds = 5
  c.lip_penalties = (0.1, 0.3, 1.0, 3.0, 10.0)
  # Scale the fitted map so that its mouth moves as much within a window as the training clips' mouths:
  # least squares shrinks it to a fraction (the renderer then shows next to no motion).
  c.lip_match_variance = True
  # The speech gate's fit (ridge on 1 for speech, 0 in silence spans) steepened about 1/2 by this factor: at 1
  # the mouth in inserted silence stayed 0.27 of its speaking opening, at 2 0.23 (bar 0.25), lip sync level
  # (benchmarks/RESULTS.md, "Whisper layers for the lip regressor, and a speech gate").
  c.lip_gate_sharpness = 2.0
  # Gradient training (`train.main`): a linear model, so a high learning rate and a little weight decay.
  c.update(batch_size=64, num_steps=20_000, learning_rate=1e-3, warmup_steps=200, weight_decay=0.05,
           checkpoint_every=1_000, image_every=0)
  if arg == "tiny":
    common.shrink_for_cpu(c)
    c.window, c.history, c.stride = 16, 4, 2
  elif arg == "small":
    c.batch_size = 32
    c.num_steps = c.lr_decay_steps = 4_000
    c.log_every = 100
    c.checkpoint_every = 500
    c.keep_checkpoints = 2
    c.worker_count = 1
  elif arg:
    raise ValueError(f"unknown motion_lip variant {arg!r} (have: tiny, small)")
  return c
