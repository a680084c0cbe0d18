"""`python -m infer.evaluate` on the demo's checkpoint and records (conftest `demo_run`)."""

import json

import numpy as np
import pytest

from chatanyone_jax.eval import i3d, inception, lpips, syncnet
from infer import evaluate
from infer.evaluation import scoring
from tests.chatanyone_jax.eval.reference.seeded import seeded_state_dict

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("demo")]


def _save(path, shapes, seed, scales=None):
  sd = seeded_state_dict(shapes, seed)
  for k, s in (scales or {}).items():  # keep raw-pixel inputs from blowing activations up
    sd[k] = sd[k] * s
  np.savez(path, **sd)
  return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  """Seeded (random) weights in the public files' layouts, as .npz conversions under the public names."""
  d = tmp_path_factory.mktemp("weights")
  _save(d / "pt_inception-2015-12-05-6726825d.npz", inception.expected_shapes(), 0)
  backbone, lin = lpips.expected_keys("alex")
  _save(d / "alexnet-owt-7be5be79.npz", backbone, 1)
  np.savez(d / "alex.npz", **{k: np.abs(v) for k, v in seeded_state_dict(lin, 2).items()})
  _save(d / "syncnet_v2.npz", syncnet.expected_shapes(), 3,
        {"netcnnlip.0.weight": 1 / 256, "netcnnaud.0.weight": 1 / 16})
  return d


def test_cli_prints_and_writes_all_tables(demo_run, weights, tmp_path, capsys):
  """Every table from the command line, with LPIPS and SyncNet weights named one by one (no Inception, no
  I3D: their columns say so). 48 frames: SyncNet needs 44 at 30 fps for its 31 offsets."""
  out = tmp_path / "eval"
  rc = evaluate.main(["--checkpoint", str(demo_run / "runs"), "--data", str(demo_run / "data"),
                      "--split", "train", "--max-frames", "48", "--steps", "2", "--out", str(out),
                      "--lpips-backbone", str(weights / "alexnet-owt-7be5be79.npz"),
                      "--lpips-lin", str(weights / "alex.npz"), "--syncnet", str(weights / "syncnet_v2.npz")])
  assert rc == 0
  printed = capsys.readouterr().out
  report = json.loads((out / "eval.json").read_text())
  assert (out / "eval.md").read_text().strip() in printed
  assert set(report["missing_weights"]) == {"FID", "FVD"}
  t1, t3, t4 = (report["tables"][k] for k in ("table1", "table3", "table4"))
  ours, copy = t1["rows"]["ours"], t1["rows"]["copy source"]
  # Frames 1-47: the source frame itself (frame 0, where copying it is exact) is not scored.
  assert t1["counts"]["PSNR"] == 47 and 0 < ours["PSNR"] < 60 and 0 < ours["SSIM"] <= 1
  assert ours["PSNR"] < copy["PSNR"] < 60  # a 30-step tiny renderer is worse than doing nothing
  assert 0 < ours["LPIPS"] and 0 <= copy["LPIPS"] < ours["LPIPS"]  # seeded LPIPS weights
  assert ours["FPS"] > 0 and ours["resolution"] == "64x96"
  assert ours["FID"] == ours["FVD"] == evaluate.NA_WEIGHTS
  assert t3["rows"]["ours"]["FID"] == evaluate.NA_WEIGHTS
  # SyncNet (seeded weights: any value) on the real clip's face crops; the tiny model's frames have no face.
  gt = t3["rows"]["ground truth"]
  assert np.isfinite(gt["Sync"]) and t3["counts"]["gt_Sync"] == 1
  assert t3["counts"]["Sync_clips_without_face"] == 1
  # Stage 1's mouth opening against the truth, and the audio-only baselines it must beat (one clip each).
  for row in ("ours", "loudness baseline", "log-mel baseline"):
    assert -1 <= t3["rows"][row]["MouthCorr"] <= 1, row
  # The mouth on the videos: the tiny model's frames have no face, so no correlation and no scale.
  assert t3["rows"]["ours"]["VideoMouthCorr"] is None and t3["rows"]["ours"]["VideoMouthScale"] is None
  assert ours["MouthCorr"] is None and ours["MouthScale"] is None
  assert "| VideoMouthScale |" in printed and "| MouthScale |" in printed
  assert "| loudness baseline |" in printed and "| log-mel baseline |" in printed
  # The real frames of the clip have a face at their stored size: CSIM to the portrait and Diversity.
  assert gt["CSIM"] > 0.9 and gt["Diversity"] > 0
  assert set(t4["rows"]) == {"with reference", "without reference", "with reference, no history",
                             "without reference, no history"}
  assert t4["guidance_scale"] == 2.0 and t3["guidance_scale"] == 2.0
  assert all(r["MAE"] > 0 and -1 <= r["SSIM"] <= 1 for r in t4["rows"].values())
  assert "n/a (no weights)" in printed and "Table 4" in printed


def test_metric_networks_from_a_weights_dir(demo_run, weights):
  """A weights folder: every network found under its public name; FID (Inception) in Table 1. Table 3's
  FID is the same code path and its Sync is scored by the CLI test."""
  b = evaluate.load_backends(weights)
  assert b.missing == {"FVD": "one of rgb_imagenet.pt, i3d_pretrained_400.pt not given"}
  assert {"inception", "lpips_backbone", "lpips_lin", "syncnet"} <= set(b.files)
  t1 = evaluate.self_reenactment(demo_run / "runs", demo_run / "data", "train", b, max_frames=10)
  ours, copy = t1["rows"]["ours"], t1["rows"]["copy source"]
  assert np.isfinite(ours["FID"]) and ours["FID"] > 0
  assert 0 < ours["LPIPS"] and 0 <= copy["LPIPS"] < ours["LPIPS"]  # frame 0 of the copy is exact


def test_errors_name_the_problem(demo_run, tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    evaluate.evaluate(tmp_path / "nope", demo_run / "data", tables=["4"])
  with pytest.raises(ValueError, match="no 'validation' split.*--val-fraction"):
    evaluate.evaluate(demo_run / "runs", demo_run / "data", tables=["4"])
  with pytest.raises(ValueError, match="unknown tables"):
    evaluate.evaluate(demo_run / "runs", demo_run / "data", tables=["2"])
  with pytest.raises(FileNotFoundError, match="SyncNet weights"):
    evaluate.load_backends(syncnet=str(tmp_path / "syncnet_v2.model"), faces=False, hands=False)
  # A workdir of the wrong task where the renderer should be.
  runs = tmp_path / "runs"
  runs.mkdir()
  (runs / "render").symlink_to(demo_run / "runs" / "motion_face")
  with pytest.raises(ValueError, match="not a renderer"):
    evaluate.evaluate(runs, demo_run / "data", split="train", tables=["1"],
                      backends=evaluate.Backends())
  assert evaluate.main(["--checkpoint", str(tmp_path / "nope"), "--data", str(demo_run / "data")]) == 2


def test_markdown_marks_missing_values():
  report = {"checkpoint": "c", "data": "d", "split": "s", "tables": {"table4": {
      "rows": {"with reference": {"MAE": 0.5, "SSIM": float("nan")}}, "windows": 3}}, "missing_weights": {}}
  md = evaluate.to_markdown(report)
  assert "| with reference | 0.500 | n/a |" in md and "windows: 3" in md


def test_segments_and_frechet_guards():
  frames = np.arange(40 * 2 * 2 * 3).reshape(40, 2, 2, 3)
  seg = scoring.segments(frames)
  assert seg.shape == (2, 16, 2, 2, 3)  # the last 8 frames make no segment
  np.testing.assert_array_equal(seg[1, 3], frames[19])
  assert scoring.frechet([np.zeros((1, 3))], [np.zeros((5, 3))], object(), "FID").startswith("n/a (fewer")
  assert scoring.frechet([], [], None, "FVD") == evaluate.NA_WEIGHTS
  assert i3d.MIN_FRAMES <= evaluate.FVD_SEGMENT
