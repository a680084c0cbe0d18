"""Lip sync against the audio-only baselines on records split by person (`infer.evaluation.lipsync`)."""

import json

import numpy as np
import pytest

from chatanyone_jax import template as tp
from chatanyone_jax.eval.lipsync import MEL_PENALTIES, MEL_PENALTY
from chatanyone_jax.motion.sampling import SEAM_FRAMES
from data import records, splits
from infer.evaluation import lipsync
from tests import fixtures
from train import trainer
from train.configs import motion_face


@pytest.fixture(scope="module")
def split_data(tmp_path_factory):
  """Four synthetic clips (20-36 frames), people 1 and 3 held out; sources A (0-2) and B (3)."""
  tmp = tmp_path_factory.mktemp("lipsync")
  split_file = tmp / "people.tsv"
  splits.write_split([{"video": f"synthetic_{i:03d}", "source": "A" if i < 3 else "B", "language": "x",
                       "person": f"p{i}", "split": "heldout" if i in (1, 3) else "train"} for i in range(4)],
                     split_file)
  data = tmp / "data"
  fixtures.write_records(data, num_clips=4, num_frames=(30, 24, 36, 20), body_size=(96, 64), head_size=64,
                         split_file=split_file)
  return data, split_file


def test_baseline_fits_on_training_people_and_scores_held_out_ones_per_source(split_data):
  data, split_file = split_data
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
  assert sorted(report["per_clip"].values()) == pytest.approx(sorted(per_clip))  # one clip per source
  with pytest.raises(ValueError, match="no 'heldout_frames' split"):
    lipsync.clip_curves(data, "heldout_frames")


def test_mel_baseline_beats_loudness_when_the_opening_is_linear_in_the_log_mel(split_data, tmp_path, capsys):
  data, split_file = split_data
  fit, val = lipsync.clip_curves(data, "train"), lipsync.clip_curves(data, "validation")
  feats = lipsync.clip_mel_features(fit + val, context=1)  # (T, 3 · 80): frames t - 1, t, t + 1
  assert [f.shape for f in feats] == [(30, 240), (36, 240), (24, 240), (20, 240)]
  # The opening follows how fast the low bands get louder (t + 1 minus t - 1): in phase with the mel's
  # change, a quarter period off the loudness of the synthetic 3-Hz modulated tone.
  target = [f[:, 160:180].mean(1) - f[:, :20].mean(1) for f in feats]
  fit = [{**c, "opening": y} for c, y in zip(fit, target[:2], strict=True)]
  val = [{**c, "opening": y} for c, y in zip(val, target[2:], strict=True)]
  loud = lipsync.loudness_baseline(data, split_file=split_file, curves=val, fit_curves=fit)
  mel = lipsync.mel_baseline(data, split_file=split_file, curves=val, fit_curves=fit, context=1)
  assert mel["fit_clips"] == 2 and mel["clips"] == 2 and set(mel["per_source"]) == {"A", "B"}
  assert mel["correlation"] > 0.8 and mel["correlation"] > loud["correlation"] + 0.5  # 0.91 and 0.07
  # The penalty is chosen over the training people (p0, p2: two folds), and reported with its CV score.
  assert mel["penalty"] in MEL_PENALTIES
  assert mel["cv_correlation"] == max(mel["cv_penalties"].values())
  fixed = lipsync.mel_baseline(data, split_file=None, curves=val, fit_curves=fit, context=1)
  assert fixed["penalty"] == MEL_PENALTY and fixed["cv_correlation"] is None
  # The CLI reports both baselines.
  assert lipsync.main(["--data", str(data), "--out", str(tmp_path / "b.json")]) == 0
  printed = json.loads(capsys.readouterr().out)
  assert set(printed) == {"baseline", "mel_baseline"} and printed["mel_baseline"]["fit_clips"] == 2
  assert printed["mel_baseline"]["context"] == 5 and -1 <= printed["mel_baseline"]["correlation"] <= 1


def test_model_driven_by_speech_alone_is_scored_like_the_baseline(split_data, tmp_path, capsys):
  data, split_file = split_data
  c = motion_face.get_config("tiny")
  c.data_dir, c.num_steps, c.progress = str(data), 2, False
  trainer.train_and_evaluate(c, tmp_path / "motion_face")
  report = lipsync.model_lipsync(tmp_path / "motion_face", data, split_file=split_file, num_steps=2)
  again = lipsync.model_lipsync(tmp_path / "motion_face", data, split_file=split_file, num_steps=2)
  assert report["clips"] == 2 and set(report["per_source"]) == {"A", "B"}
  assert -1 <= report["correlation"] <= 1 and report["correlation"] == again["correlation"]  # seeded
  assert {"predicted_silence_ratio", "predicted_offset_lag_s"} <= set(report)
  assert report["insert_silence_s"] == 1.0 and report["inserted_silence_ratio"] >= 0  # speech, 1 s, speech
  assert report["inserted_offset_lag_s"] is None or report["inserted_offset_lag_s"] >= 0
  with pytest.raises(FileNotFoundError, match="not a `python -m train.main` workdir"):
    lipsync.model_lipsync(tmp_path / "nope", data)

  # Through the stream's own face motion: whole windows and a hop with look-ahead, seeded as well.
  t = c.window
  kw = dict(split_file=split_file, num_steps=2)
  stream_whole = lipsync.model_lipsync(tmp_path / "motion_face", data, hop=t, insert_silence_s=0, **kw)
  hop = lipsync.model_lipsync(tmp_path / "motion_face", data, hop=4, lookahead=2, insert_silence_s=0.5,
                              seam_frames=2, **kw)
  assert (stream_whole["hop"], hop["hop"], hop["lookahead"], hop["seam_frames"]) == (t, 4, 2, 2)
  assert stream_whole["seam_frames"] == report["seam_frames"] == SEAM_FRAMES
  assert hop["clips"] == 2 and -1 <= hop["correlation"] <= 1
  assert hop["correlation"] != stream_whole["correlation"]
  assert hop["inserted_silence_ratio"] >= 0
  with pytest.raises(ValueError, match="hop must be in"):
    lipsync.model_lipsync(tmp_path / "motion_face", data, hop=t + 1, **kw)
  # A lip regressor reads Whisper features: with this log-mel face model it is refused, whole or streamed.
  lip = _random_lip_export(tmp_path / "motion_lip")
  with pytest.raises(ValueError, match="log-mel"):
    lipsync.model_lipsync(tmp_path / "motion_face", data, lip=lip, **kw)
  with pytest.raises(ValueError, match="log-mel"):
    lipsync.model_lipsync(tmp_path / "motion_face", data, hop=4, lip=lip, **kw)

  out = tmp_path / "lipsync.json"
  assert lipsync.main(["--data", str(data), "--motion", str(tmp_path / "motion_face"), "--steps", "2",
                       "--out", str(out)]) == 0
  printed = json.loads(capsys.readouterr().out)
  assert printed == json.loads(out.read_text())
  assert printed["model"]["correlation"] == pytest.approx(report["correlation"])
  assert printed["baseline"]["fit_clips"] == 2 and printed["mel_baseline"]["fit_clips"] == 2
  assert lipsync.main(["--data", str(tmp_path / "missing")]) == 2
  assert "error:" in capsys.readouterr().err


def _random_lip_export(out):
  """A motion_lip export (`train.export` layout) with random weights: loadable, meaningless."""
  import jax

  from train import export, tasks
  from train.configs import motion_lip

  config = motion_lip.get_config("tiny")
  task = tasks.get_task(config)
  params = task.init_params(jax.random.key(0), task.batch_spec(1))
  norm = {k: np.ones(v.shape, np.float32) for k, v in task.norm_spec().items()}
  export.write_export(out, config, {"params": jax.device_get(params), "norm": norm}, step=0, source="test")
  return out
