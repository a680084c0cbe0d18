"""The tiny head renderer, trained by `train.main`'s loop on the first 3 s of a real clip, reconstructs
held-out frames (1 s later, never seen in training) much better than the untrained model."""

from __future__ import annotations

import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from chatanyone_jax.render import train_step
from data import pipelines, records
from tests.helpers import media_dir, require
from tests.train.conftest import CLIP
from train import checkpoint, parallel, tasks, trainer
from train.configs import render_head512

STEPS = 60


@pytest.fixture(scope="module")
def heldout_records(tmp_path_factory):
  """Records of the whole clip (137 frames); frames >= 100 were never in the 90-frame training records."""
  from data.preprocess import PreprocessConfig, run

  clip = require(media_dir() / "videos" / CLIP, "shared media clip")
  root = tmp_path_factory.mktemp("heldout_records")
  (root / "videos").mkdir()
  shutil.copy(clip, root / "videos" / CLIP)
  config = PreprocessConfig(body_size=(192, 128), head_size=128, max_seconds=5.0, min_frames=50)
  summary = run(root / "videos", root / "out", config, progress=False)
  assert summary["clips"] == 1 and summary["frames"] > 120, summary
  return root / "out"


@pytest.mark.slow
def test_trained_tiny_renderer_beats_untrained_on_heldout_frames(motion_records, heldout_records, tmp_path):
  config = render_head512.get_config("tiny")
  config.update(data_dir=str(motion_records), num_steps=STEPS, warmup_steps=10, log_every=20,
                checkpoint_every=1000, image_every=0, progress=False)
  trainer.train_and_evaluate(config, tmp_path)

  task = tasks.get_task(config)
  r = task.renderer
  frames = records.data_source(heldout_records, "frames", "train")
  meta = records.read_meta(heldout_records)
  decode = pipelines.DecodePair(pipelines.RenderPairConfig(crop="head", input_size=r.image_size,
                                                           output_size=r.output_size),
                                (meta["head_size"],) * 2, meta["head_size"])
  pairs = [decode.map({"source": frames[0], "driving": frames[i]}) for i in range(100, len(frames), 4)]
  batch = task.adapt({k: np.stack([p[k] for p in pairs]) for k in pairs[0]})

  def l1(params, stats):
    pred = train_step.reconstruct(r, params, stats, batch["source"], batch["driving"],
                                  kp_head=(batch["kp_head_source"], batch["kp_head_driving"]))
    return float(jnp.mean(jnp.abs(jnp.clip(pred, 0, 1) - batch["driving_target"])))

  prog = trainer.build(task, config, parallel.make_mesh(config.mesh))
  untrained = prog.compile_init()(prog.init_key, {})  # the state the trained run started from
  trained = checkpoint.load_params(tmp_path)
  err_untrained = l1(untrained["ema"], untrained["gen"]["batch_stats"])
  err_trained = l1(trained["params"], trained["batch_stats"])
  print(f"held-out L1 ({len(pairs)} frames): untrained {err_untrained:.4f}, trained {STEPS} steps "
        f"{err_trained:.4f}")
  assert err_trained < 0.65 * err_untrained, (err_trained, err_untrained)
