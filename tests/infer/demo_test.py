"""`python -m infer.demo --train`: preprocess the bundled clip, train tiny models briefly, animate the
portrait (the bundled models' demo: tests/infer/bundled_test.py)."""

import json

import numpy as np
import pytest

from chatanyone_jax.render import presets
from data import media
from infer import demo
from infer.models import WORKDIRS, load_checkpoint

STAGES = {"preprocess", "train_motion_face", "train_motion_body", "train_render", "train_face_refine",
          "prepare_upper", "first_frame_upper", "animate_upper", "write", "total"}


def _rows(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_demo_trains_and_writes_video_with_speech_sheet_and_summary(demo_run):
  tmp_path = demo_run  # conftest runs `demo.main` with DEMO_ARGS
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert set(summary["seconds"]) == STAGES
  assert {k: v["steps"] for k, v in summary["trained"].items()} == {
      "motion_face": 3, "motion_body": 3, "render": 2, "face_refine": 2}
  assert all(np.isfinite(v["final"]["loss"]) for v in summary["trained"].values())
  # The two renderer layouts not trained in tests/train/render_trainer_test.py: every loss term of the
  # upper-body layout is live, the face-refine run trains G on its region term (M's offset head starts at 0).
  render, refine = (_rows(tmp_path / "runs" / name) for name in ("render", "face_refine"))
  for r in render + refine:
    assert np.isfinite(r["loss"]) and r["grad_norm"] > 0 and r["disc_grad_norm"] > 0 and r["l1"] > 0.01
  for term in ("equivariance", "keypoint_prior", "deformation_prior", "landmark"):
    assert all(r[term] > 0 for r in render), term
  assert all(r["region"] > 0 for r in refine) and refine[0]["deformation_prior"] == 0
  # The runs are a checkpoint directory infer.stream reads (with the refine pass).
  _, configs = load_checkpoint(tmp_path / "runs", "upper")
  assert {"motion_face", "motion_body", "render", "face_refine"} <= set(configs)

  speech = media.read_audio(summary["audio"])  # conftest: the first second of the bundled speech
  expected = len(speech) / 16000 * 30
  frames, fps = media.read_video(tmp_path / "demo.mp4")
  assert fps == 30 and abs(len(frames) - expected) <= 1 and summary["frames"] == len(frames)
  assert summary["modes"] == ["upper"] and set(summary["outputs"]["videos"]) == {"upper"}
  h, w = summary["size"]["upper"]
  assert frames.shape[1:] == (h, w, 3) == (96, 64, 3)  # tiny_upper512x768 output
  import av
  with av.open(str(tmp_path / "demo.mp4")) as c:
    kinds = sorted((s.type, s.codec_context.name) for s in c.streams)
  assert kinds == [("audio", "aac"), ("video", "h264")]
  audio = media.read_audio(tmp_path / "demo.mp4")
  assert abs(len(audio) / 16000 - len(frames) / 30) < 0.1 and float(np.abs(audio).max()) > 0.1
  sheet = media.read_image(tmp_path / "contact_sheet.png")
  assert sheet.shape == (h, 8 * w, 3)
  from PIL import Image
  with Image.open(tmp_path / "preview.webp") as im:  # animated, 160 rows high (WebP merges repeated frames)
    assert im.size[1] == demo.PREVIEW_HEIGHT and 1 < im.n_frames <= (len(frames) + 1) // 2
  assert np.abs(frames.astype(int) - frames[:1]).mean() > 0.5  # the avatar moves


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_refine_ablation_scores_the_demo_renderer_with_and_without_its_face_refine(demo_run, capsys):
  from train import evaluate as train_evaluate

  runs, out = demo_run / "runs", demo_run / "ablation"
  assert train_evaluate.main(["--workdir", str(runs / "render"), "--refine", str(runs / "face_refine"),
                              "--data-dir", str(demo_run / "data"), "--splits", "train", "--max-clips", "1",
                              "--frames-per-clip", "3", "--out", str(out)]) == 0
  scores = json.loads((out / "eval.json").read_text())
  assert scores["refine"] == str(runs / "face_refine")
  for metric in ("face_l1", "l1", "psnr", "head_face_l1"):
    ours, base = (scores[f"refine_ablation/train/{k}/{metric}"] for k in ("refine", "no_refine"))
    assert np.isfinite(ours) and np.isfinite(base), metric
  # The paste-back changes the face and little else: the whole frame's L1 moves less than the face's.
  prefix = "refine_ablation/train/"
  face = abs(scores[prefix + "refine/face_l1"] - scores[prefix + "no_refine/face_l1"])
  whole = abs(scores[prefix + "refine/l1"] - scores[prefix + "no_refine/l1"])
  assert face > whole > 0
  sheet = media.read_image(out / "refine_ablation_train_target_body_refined.png")
  preset = json.loads((runs / "face_refine" / "config.json").read_text())["model"]["preset"]
  h, w = presets.get(preset).output_size
  assert sheet.shape == (3 * h, 3 * w, 3)  # a row per pair: target | body renderer's head | refined
  assert "refine_ablation/train/refine/face_l1" in capsys.readouterr().out
  # A --refine that is not a face-refine network: a clear error, no scores.
  assert train_evaluate.main(["--workdir", str(runs / "render"), "--refine", str(runs / "render"),
                              "--splits", "train"]) == 2
  assert "face-refine network" in capsys.readouterr().err


def test_preview_is_the_first_seconds_at_half_rate_and_side_by_side_keeps_the_first_height():
  frames = [np.full((4, 2, 3), i, np.uint8) for i in range(200)]
  shown = demo.preview(frames, seconds=3.0, height=8)
  assert len(shown) == 45 and shown[1].shape == (8, 4, 3) and shown[1][0, 0, 0] == 2
  both = demo.side_by_side(frames[:3], [np.zeros((8, 8, 3), np.uint8)] * 3)
  assert len(both) == 3 and both[0].shape == (4, 2 + 4, 3)
  with pytest.raises(ValueError):
    demo.side_by_side(frames[:3], frames[:2])


def test_contact_sheet_takes_evenly_spaced_frames_first_and_last():
  frames = [np.full((4, 2, 3), i, np.uint8) for i in range(15)]
  sheet = demo.contact_sheet(frames, n=4)
  assert sheet.shape == (4, 8, 3)
  assert sheet[0, ::2, 0].tolist() == [0, 5, 9, 14]
  assert demo.contact_sheet(frames[:2]).shape == (4, 4, 3)
  with pytest.raises(ValueError, match="no frames"):
    demo.contact_sheet([])


def test_runs_are_the_checkpoint_layout_and_configs_are_short(tmp_path):
  assert set(demo.RUNS) == set(WORKDIRS)
  c = demo.train_config("render", tmp_path, 7)
  assert (c.task, c.model.preset, c.data_dir) == ("render", "tiny_upper512x768", str(tmp_path))
  assert c.num_steps == 7
  assert c.checkpoint_every == 7 and c.image_every == 0
  assert demo.train_config("face_refine", tmp_path, 7).model.preset == "tiny_face_refine"
  assert demo.train_config("motion_body", tmp_path, 7).task == "motion_body"


def test_final_losses_reads_the_last_metrics_row(tmp_path):
  assert demo.final_losses(tmp_path) == {}
  rows = [{"step": 5, "loss": 2.0, "l1_loss": 1.0, "grad_norm": 3.0},
          {"step": 10, "loss": 1.5, "gen_loss": 0.5, "grad_norm": 2.0}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert demo.final_losses(tmp_path) == {"step": 10, "loss": 1.5, "gen_loss": 0.5}


def test_bad_inputs_fail_before_any_training(tmp_path, capsys):
  bad = tmp_path / "broken.jpg"
  bad.write_bytes(b"not an image")
  assert demo.main(["--image", str(bad), "--out", str(tmp_path / "o")]) == 2
  assert "error: cannot read image" in capsys.readouterr().err
  assert demo.main(["--audio", str(tmp_path / "missing.wav"), "--out", str(tmp_path / "o")]) == 2
  assert "error: audio not found" in capsys.readouterr().err
  assert demo.main(["--steps-render", "0", "--out", str(tmp_path / "o")]) == 2
  assert "--steps-render and --steps-motion must be >= 1" in capsys.readouterr().err
  assert demo.main(["--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
  assert "does not exist" in capsys.readouterr().err
  assert demo.main(["--train", "--clip", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o")]) == 2
  assert "training clip not found" in capsys.readouterr().err
  assert demo.main(["--train", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
  assert "--train builds its own checkpoint" in capsys.readouterr().err
  assert demo.main(["--checkpoint", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
  assert "holds no streamable models" in capsys.readouterr().err
  assert not (tmp_path / "o" / "runs").exists()
