"""benchmarks/vs_liveportrait.py without torch: skips, the clone check, kwargs, inputs, timing helpers.

With torch importable and LIVEPORTRAIT_DIR naming a LivePortrait clone, the reduced agreement check runs too.
"""

import dataclasses
import json
import os
import pathlib
import sys

import numpy as np
import pytest

from benchmarks import vs_liveportrait as vs
from chatanyone_jax.render import presets


def _fake_clone(root: pathlib.Path, files=vs.CLONE_FILES) -> pathlib.Path:
  for f in files:
    (root / f).parent.mkdir(parents=True, exist_ok=True)
    (root / f).write_text("")
  return root


# ---- skips and errors -----------------------------------------------------------------------------------

def test_no_dir_skips_with_how_to(capsys):
  assert vs.main([]) == 0
  out = capsys.readouterr().out
  assert out.startswith("vs_liveportrait: skipped: no LivePortrait clone given: pass --liveportrait-dir DIR")
  assert vs.UPSTREAM in out
  assert vs.main(["--strict"]) == 2


def test_no_torch_skips_with_how_to(tmp_path, monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError, installed or not
  clone = _fake_clone(tmp_path)
  assert vs.main(["--liveportrait-dir", str(clone)]) == 0
  out = capsys.readouterr().out
  assert out.startswith("vs_liveportrait: skipped: torch is not importable")
  assert "pip install --target /tmp/torchsite torch" in out and "PYTHONPATH=/tmp/torchsite" in out
  assert vs.main(["--liveportrait-dir", str(clone), "--strict"]) == 2


def test_not_a_clone_is_an_error(tmp_path, monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "torch", None)  # the directory is checked first
  partial = _fake_clone(tmp_path / "partial", vs.CLONE_FILES[1:])
  assert vs.main(["--liveportrait-dir", str(partial)]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"vs_liveportrait: error: --liveportrait-dir {partial} is not a LivePortrait clone: "
                        "missing src/modules/warping_network.py (pass the root of a clone of")
  assert vs.main(["--liveportrait-dir", str(tmp_path / "nowhere")]) == 2
  assert "is not a directory" in capsys.readouterr().err


def test_help_shows_usage(capsys):
  with pytest.raises(SystemExit) as e:
    vs.main(["--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  assert "python -m benchmarks.vs_liveportrait --liveportrait-dir DIR --reduced" in out
  assert "--compile" in out and "--parts" in out


def test_pick_device():
  assert vs.pick_device("cpu", False, "fp32") == "cpu"
  assert vs.pick_device("cpu", True, "fp32") == "cpu"
  assert vs.pick_device("gpu", True, "bf16") == "cuda"
  with pytest.raises(vs.UsageError, match="this torch has no CUDA"):
    vs.pick_device("gpu", False, "fp32")
  with pytest.raises(vs.UsageError, match="--dtype fp16 needs a GPU"):
    vs.pick_device("cpu", True, "fp16")
  assert vs.tolerance("cpu", "fp32") == 1e-3


# ---- LivePortrait kwargs and inputs ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def manifest(lp_reference):
  return json.loads((lp_reference / "full_manifest.json").read_text())


def test_full_kwargs_equal_models_yaml(manifest):
  """The `liveportrait` preset gives exactly the upstream models.yaml kwargs of W, G and M."""
  kwargs = vs.torch_kwargs(presets.liveportrait)
  assert kwargs == {k: manifest["config"][k] for k in kwargs}


def test_reduced_kwargs_equal_reference_vectors(lp_reference):
  kwargs = vs.torch_kwargs(presets.reference_reduced)
  ref = {n: json.loads((lp_reference / f"{n}.json").read_text())["kwargs"]
         for n in ("W_warping_network", "G_spade_decoder", "M_motion_extractor")}
  assert kwargs["warping_module_params"] == ref["W_warping_network"]
  assert kwargs["spade_generator_params"] == ref["G_spade_decoder"]
  m, m_ref = kwargs["motion_extractor_params"], ref["M_motion_extractor"]
  backbone = m_ref["backbone_class_kwargs"]
  assert m == {"num_kp": 5, "backbone": vs.CUSTOM_BACKBONE, "depths": backbone["depths"],
               "dims": backbone["dims"]}


def test_full_kwargs_are_checked_against_the_clones_models_yaml(tmp_path, manifest):
  yaml = pytest.importorskip("yaml")
  clone = _fake_clone(tmp_path)
  (clone / vs.MODELS_YAML).parent.mkdir(parents=True)
  params = json.loads(json.dumps(manifest["config"]))
  (clone / vs.MODELS_YAML).write_text(yaml.safe_dump({"model_params": params}))
  want = vs.torch_kwargs(presets.liveportrait)
  assert vs.resolve_kwargs(presets.liveportrait, clone, reduced=False) == want
  params["warping_module_params"]["num_kp"] = 24
  del params["spade_generator_params"]["upscale"]
  (clone / vs.MODELS_YAML).write_text(yaml.safe_dump({"model_params": params}))
  with pytest.raises(vs.UsageError, match=r"^the clone's src/config/models.yaml differs from the "
                                          r"`liveportrait` preset \(yaml vs preset\): "
                                          r"spade_generator_params.upscale: <missing> vs 2; "
                                          r"warping_module_params.num_kp: 24 vs 21$"):
    vs.resolve_kwargs(presets.liveportrait, clone, reduced=False)
  assert vs.resolve_kwargs(presets.reference_reduced, clone, reduced=True)  # no yaml for the reduced configs


def test_inexpressible_configs_are_named():
  small = presets.small_head
  small = dataclasses.replace(small, warping_network=dataclasses.replace(small.warping_network,
                                                                         max_features=32))
  with pytest.raises(ValueError, match=r"mask_kernel_size 3 \(LivePortrait: 7\); spade_hidden 16 "
                                       r"\(LivePortrait: 128\); W's volume C x D = 16 x 4 != "
                                       r"max_features 32"):
    vs.torch_kwargs(small)
  with pytest.raises(ValueError, match="hand injection"):
    vs.torch_kwargs(presets.upper512x768)
  g = dataclasses.replace(presets.liveportrait.spade_generator, out_channels=32)
  assert vs.torch_kwargs(dataclasses.replace(presets.liveportrait, spade_generator=g))[
      "spade_generator_params"]["out_channels"] == 32


def test_full_size_inputs_match_upstream_shapes(manifest):
  mods = manifest["modules"]
  wg = vs.make_inputs(presets.liveportrait, "wg", 0)
  assert {k: list(v.shape) for k, v in wg.items()} == mods["W_warping_network"]["inputs"]
  m = vs.make_inputs(presets.liveportrait, "m", 0)
  assert {k: list(v.shape) for k, v in m.items()} == mods["M_motion_extractor"]["inputs"]
  assert all(v.dtype == np.float32 for v in [*wg.values(), *m.values()])
  assert np.abs(wg["kp_source"]).max() <= 0.9 and 0 < np.abs(wg["kp_driving"] - wg["kp_source"]).max() < 0.5
  np.testing.assert_array_equal(vs.make_inputs(presets.liveportrait, "m", 0)["x"], m["x"])
  assert not np.array_equal(vs.make_inputs(presets.liveportrait, "m", 1)["x"], m["x"])
  with pytest.raises(ValueError, match="unknown part"):
    vs.make_inputs(presets.liveportrait, "f", 0)


# ---- agreement, timing, summary ------------------------------------------------------------------------

def test_differences_names_nested_leaves():
  assert vs.differences({"a": {"b": 1, "c": [1]}}, {"a": {"b": 1, "c": [1]}}) == []
  assert vs.differences({"a": {"b": 1}, "x": 2}, {"a": {"b": 2, "d": 3}, "x": 2}) == [
      "a.b: 1 vs 2", "a.d: <missing> vs 3"]


def test_agreement_and_failures():
  ref = {"a": np.array([1.0, -4.0]), "b": np.array([2.0])}
  errs = vs.agreement({"a": np.array([1.0, -3.9]), "b": np.array([2.0])}, ref)
  assert errs["a"] == pytest.approx((0.1, 0.025)) and errs["b"] == (0.0, 0.0)
  assert vs.failures(errs, 0.03) == [] and vs.failures(errs, 0.02) == ["a"]
  nan = vs.agreement({"a": np.array([np.nan, 0.0]), "b": np.array([2.0])}, ref)
  assert vs.failures(nan, 1e9) == ["a"]
  with pytest.raises(ValueError, match=r"a: shape \(1,\) vs LivePortrait's \(2,\)"):
    vs.agreement({"a": np.zeros(1), "b": np.zeros(1)}, ref)
  with pytest.raises(ValueError, match="outputs differ"):
    vs.agreement({"a": np.zeros(2)}, ref)


def test_interleaved_order_rotates():
  order = vs.interleaved_order(["o", "e", "c"], 4)
  assert order == [["o", "e", "c"], ["e", "c", "o"], ["c", "o", "e"], ["o", "e", "c"]]
  assert vs.interleaved_order(["o"], 2) == [["o"], ["o"]]


def test_time_interleaved_warms_up_then_times_each_call():
  log, now = [], [0.0]
  cost = {"ours": 3.0, "eager": 1.0}

  def make(name):
    def call():
      log.append(name)
      now[0] += cost[name]
    return call

  calls = {n: make(n) for n in cost}
  times = vs.time_interleaved(calls, iters=3, warmup=1, clock=lambda: now[0])
  assert log == ["ours", "eager", "ours", "eager", "eager", "ours", "ours", "eager"]
  assert times == {"ours": [3.0] * 3, "eager": [1.0] * 3}
  first = vs.first_calls({"eager": lambda: now.__setitem__(0, now[0] + 2) or "out"}, clock=lambda: now[0])
  assert first == {"eager": (2.0, "out")}


def test_ratios_summary_and_rows():
  times = {vs.OURS: [2.0, 2.2, 9.0], vs.EAGER: [1.0, 1.1, 1.2], vs.COMPILED: [4.4, 4.0, 4.8]}
  assert vs.ratios(times) == pytest.approx({vs.EAGER: 2.0, vs.COMPILED: 0.5})
  r = vs.PartResult("wg", "cfg", 1e-3, {vs.OURS: {"image": (1e-6, 2e-6)}, vs.COMPILED: {"image": (0.1, 0.2)}},
                    {vs.OURS: 30.0, vs.EAGER: 2.0, vs.COMPILED: 60.0}, times)
  text = vs.summary(r)
  assert "agreement ours (JAX jit) vs torch eager: image max abs 1.00e-06 rel 2.00e-06 -> ok" in text
  assert "agreement torch.compile vs torch eager: image max abs 1.00e-01 rel 2.00e-01 -> FAIL" in text
  assert "ours/torch eager 2.00x (ours slower)" in text and "ours/torch.compile 0.50x (ours faster)" in text
  rows = {t.name: t for t in r.timings()}
  assert set(rows) == {f"vs LivePortrait W+G: {n}" for n in times}
  ours = rows["vs LivePortrait W+G: ours (JAX jit)"]
  assert ours.median_ms == pytest.approx(2200.0) and ours.compile_s == 30.0
  assert ours.throughput == "ours/torch eager 2.00x (ours slower), ours/torch.compile 0.50x (ours faster)"


# ---- with torch and a clone (not in CI) ----------------------------------------------------------------

def test_reduced_parts_agree_with_liveportrait(tmp_path, capsys):
  pytest.importorskip("torch")
  lp_dir = os.environ.get("LIVEPORTRAIT_DIR")
  if not lp_dir:
    pytest.skip("set LIVEPORTRAIT_DIR to a clone of LivePortrait to compare with it")
  results = tmp_path / "RESULTS.md"
  assert vs.main(["--liveportrait-dir", lp_dir, "--reduced", "--iters", "1", "--warmup", "0", "--write",
                  "--results", str(results)]) == 0
  out = capsys.readouterr().out
  assert out.count("-> ok (rel tol 0.001)") == 2
  assert results.read_text().count("| vs LivePortrait ") == 4
