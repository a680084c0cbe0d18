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


def test_expected_shapes_traced_once_per_config(monkeypatch):
  """A second load of the same networks reuses the first abstract trace; another config traces its own,
  and what a caller edits in its result does not reach the next one."""
  traced = []
  trace = export._trace_shapes
  monkeypatch.setattr(export, "_trace_shapes", lambda c: traced.append(c.model.preset) or trace(c))
  monkeypatch.setattr(export, "_EXPECTED", {})
  config = render_head512.get_config("tiny")
  first = export.expected_shapes(config)
  first["params"].pop("G")
  again = export.expected_shapes(render_head512.get_config("tiny"))
  assert traced == ["tiny_head512"] and set(again["params"]) == {"F", "M", "W", "G"}
  assert set(again["batch_stats"]) == {"F", "M", "W", "G"}
  config.model.preset = "tiny_head512_skip"
  export.expected_shapes(config)
  assert traced == ["tiny_head512", "tiny_head512_skip"]


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


def test_warm_start_from_an_export_continues_its_weights_and_step(motion_records, tmp_path):
  from train import optim, trainer
  from train.configs import motion_body

  def config(**kw):
    c = motion_face.get_config("tiny")
    c.update(data_dir=str(motion_records), progress=False, log_every=1, lr_decay_steps=4, **kw)
    return c

  trained = trainer.train_and_evaluate(config(num_steps=2), tmp_path / "a")
  export.export(tmp_path / "a", tmp_path / "export")
  weights = export.load_weights(tmp_path / "export")
  # A fresh workdir warm-started at the export's step: nothing left to train, the weights are the export's.
  start = trainer.train_and_evaluate(config(num_steps=2, warm_start=str(tmp_path / "export")), tmp_path / "b")
  assert int(start["step"]) == 2
  for part in ("params", "ema"):
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, start[part]), weights["params"])
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, start["norm"]), weights["norm"])
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, start["ema"]),
               jax.tree.map(np.asarray, trained["ema"]))
  # On to step 3 (the schedule continues), with a fresh optimiser: the weights move.
  on = trainer.train_and_evaluate(config(num_steps=3, warm_start=str(tmp_path / "export")), tmp_path / "b")
  rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
  assert int(on["step"]) == 3 and [r["step"] for r in rows] == [3]
  schedule = optim.learning_rate_schedule(config(num_steps=3))
  assert rows[0]["learning_rate"] == pytest.approx(float(schedule(2)))  # not the fresh optimiser's 0
  assert max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()), on["params"],
                                          weights["params"]))) > 0
  body = motion_body.get_config("tiny")
  body.update(data_dir=str(motion_records), progress=False, warm_start=str(tmp_path / "export"))
  with pytest.raises(ValueError, match="warm-start from weights of the same task and model"):
    trainer.train_and_evaluate(body, tmp_path / "c")


def test_renderer_takes_generator_weights_and_keeps_a_fresh_discriminator():
  from train import tasks

  c = render_head512.get_config("tiny")
  task = tasks.get_task(c)
  z = lambda *s: np.zeros(s, np.float32)
  state = {"gen": {"params": {"G": {"w": z(2)}}, "batch_stats": {"G": {"m": z(3)}}, "opt_state": "g-opt"},
           "disc": {"params": {"D": z(1)}, "opt_state": "d-opt"}, "ema": {"G": {"w": z(2)}},
           "step": np.int32(0), "norm": {}}
  weights = {"params": {"G": {"w": np.ones(2)}}, "batch_stats": {"G": {"m": np.full(3, 2.0)}}, "norm": {}}
  out = task.with_weights(state, weights)
  np.testing.assert_array_equal(out["gen"]["params"]["G"]["w"], 1.0)
  np.testing.assert_array_equal(out["ema"]["G"]["w"], 1.0)
  np.testing.assert_array_equal(out["gen"]["batch_stats"]["G"]["m"], 2.0)
  assert out["gen"]["params"]["G"]["w"].dtype == np.float32 and out["gen"]["opt_state"] == "g-opt"
  assert out["disc"] is state["disc"]


def test_warm_start_icnr_projects_the_generators_sub_pixel_heads():
  """config.warm_start_icnr: G's conv_img / conv_alpha (PixelShuffle(2) heads) start as the mean of their
  four sub-pixel kernels (params and EMA); every other array as exported."""
  from train import tasks

  c = render_head512.get_config("tiny")
  c.warm_start_icnr = True
  with pytest.raises(ValueError, match="warm_start_icnr projects the weights of config.warm_start"):
    tasks.get_task(c)
  c.warm_start = "EXPORT"
  task = tasks.get_task(c)
  rng = np.random.default_rng(0)
  head = lambda c_out: {"kernel": rng.normal(size=(3, 3, 2, 4 * c_out)).astype(np.float32),
                        "bias": rng.normal(size=4 * c_out).astype(np.float32)}
  weights = {"params": {"G": {"conv_img": head(3), "conv_alpha": head(1), "fc": {"kernel": np.ones(2)}}},
             "batch_stats": {}, "norm": {}}
  z = jax.tree.map(np.zeros_like, weights["params"])
  state = {"gen": {"params": z, "batch_stats": {}}, "disc": {}, "ema": z, "step": np.int32(0), "norm": {}}
  out = task.with_weights(state, weights)
  for tree in (out["gen"]["params"], out["ema"]):
    for name, c_out in (("conv_img", 3), ("conv_alpha", 1)):
      k, b = tree["G"][name]["kernel"], tree["G"][name]["bias"]
      src = weights["params"]["G"][name]
      mean_k = src["kernel"].reshape(3, 3, 2, c_out, 4).mean(-1)
      np.testing.assert_allclose(k.reshape(3, 3, 2, c_out, 4), np.repeat(mean_k[..., None], 4, -1), rtol=1e-6)
      np.testing.assert_allclose(b, np.repeat(src["bias"].reshape(c_out, 4).mean(-1), 4), rtol=1e-6)
    np.testing.assert_array_equal(tree["G"]["fc"]["kernel"], 1.0)
  c = render_head512.get_config("tiny")  # off by default: the weights as exported
  out = tasks.get_task(c).with_weights(state, weights)
  np.testing.assert_array_equal(out["gen"]["params"]["G"]["conv_img"]["kernel"],
                                weights["params"]["G"]["conv_img"]["kernel"])
