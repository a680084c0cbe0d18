"""Compact exports (`train.export`): EMA weights and statistics only, loadable like a workdir, checked."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from train import checkpoint, export
from train.configs import motion_face, render_head512


def _fake_workdir(path, config, tree, step=7):
  """A workdir as `load_weights` sees it, without training: its config and an export-less loader."""
  path.mkdir(parents=True)
  checkpoint.save_config(path, config)
  return tree


def test_render_export_round_trip_bfloat16_and_wrong_preset(tmp_path, monkeypatch):
  config = render_head512.get_config("tiny")
  config.data_dir = "unused"
  shapes = export.expected_shapes(config)
  rng = np.random.default_rng(0)
  tree = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)
  workdir = tmp_path / "run"
  _fake_workdir(workdir, config, tree)
  monkeypatch.setattr(checkpoint, "load_params", lambda w: {**tree, "norm": {}, "step": 7})
  for bf16 in (False, True):
    out = tmp_path / f"export_{bf16}"
    info = export.export(workdir, out, bfloat16=bf16)
    assert info["step"] == 7 and info["dtype"] == ("bfloat16" if bf16 else "float32")
    assert json.loads((out / export.EXPORT_FILE).read_text())["model"] == {"preset": "tiny_head512"}
    loaded = export.load_weights(out)
    assert loaded["step"] == 7 and checkpoint.load_config(out).model.preset == "tiny_head512"
    tol = 1e-2 if bf16 else 0.0  # bfloat16 keeps 8 bits of mantissa; statistics stay float32
    for a, b in zip(jax.tree.leaves(loaded["params"]), jax.tree.leaves(tree["params"]), strict=True):
      np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    jax.tree.map(np.testing.assert_array_equal, loaded["batch_stats"], tree["batch_stats"])
    assert all(x.dtype == np.float32 for x in jax.tree.leaves([loaded["params"], loaded["batch_stats"]]))
  assert (tmp_path / "export_True" / export.PARAMS_FILE).stat().st_size < 0.6 * (
      tmp_path / "export_False" / export.PARAMS_FILE).stat().st_size
  # The same file under a config of another preset: a clear error naming what differs.
  other = tmp_path / "export_False"
  cfg = json.loads((other / "config.json").read_text())
  cfg["model"]["preset"] = "small_head"
  (other / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match=r"does not hold the networks of its config \(model small_head\)"):
    export.load_weights(other)


def test_motion_export_keeps_normalisation_and_rejects_a_foreign_file(tmp_path, monkeypatch):
  config = motion_face.get_config("tiny")
  config.data_dir = "unused"
  params = jax.tree.map(lambda s: np.ones(s.shape, np.float32), export.expected_shapes(config)["params"])
  norm = {"motion_mean": np.arange(3.0, dtype=np.float32), "motion_std": np.ones(3, np.float32)}
  workdir = tmp_path / "run"
  _fake_workdir(workdir, config, params)
  monkeypatch.setattr(checkpoint, "load_params", lambda w: {"params": params, "norm": norm, "step": 3})
  export.export(workdir, tmp_path / "out")
  loaded = export.load_weights(tmp_path / "out")
  np.testing.assert_array_equal(loaded["norm"]["motion_mean"], norm["motion_mean"])
  (tmp_path / "out" / export.EXPORT_FILE).write_text(json.dumps({"format": "other", "version": 1}))
  with pytest.raises(ValueError, match="not a version-1 chatanyone-jax-export"):
    export.load_weights(tmp_path / "out")
  assert export.main(["--workdir", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_exported_demo_checkpoint_loads_for_streaming_like_its_workdirs(demo_run, tmp_path):
  from infer.models import load_checkpoint

  runs = demo_run / "runs"
  for name in ("motion_face", "motion_body", "render", "face_refine"):
    export.main(["--workdir", str(runs / name), "--out", str(tmp_path / name)])
    assert not list((tmp_path / name).glob("checkpoints"))  # no optimizer state, no orbax folders
  params, configs = load_checkpoint(tmp_path, "upper")
  want, want_configs = load_checkpoint(runs, "upper")
  assert configs["render"] == want_configs["render"] and configs["face_refine"] == want_configs["face_refine"]
  jax.tree.map(np.testing.assert_array_equal, params, want)
