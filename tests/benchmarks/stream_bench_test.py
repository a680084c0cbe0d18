"""benchmarks/stream_bench.py: one tiny configuration end to end, and the arithmetic of its summaries."""

import numpy as np
import pytest

from benchmarks import harness, render_bench
from benchmarks import inputs as bench_inputs
from benchmarks import stream_bench as bench
from chatanyone_jax import stream_spec
from data.media import MediaError
from infer.avatar import load_portrait
from infer.models import build_spec
from infer.options import StreamOptions
from infer.streaming import ASSETS_PORTRAIT
from tests.helpers import SMOKE_STREAM
from train.configs import motion_face


@SMOKE_STREAM
def test_tiny_head_stream_benchmark_runs_from_prepared_inputs_without_writing(capsys, tmp_path):
  path = bench_inputs.write(tmp_path / "inputs")  # what gpu_wheels carries to a GPU without MediaPipe / PyAV
  portrait, speech = bench_inputs.load(path)
  want = load_portrait(ASSETS_PORTRAIT)
  assert np.array_equal(portrait.image, want.image) and portrait.annotation.keys() == want.annotation.keys()
  for k, v in want.annotation.items():
    assert np.array_equal(portrait.annotation[k], v) and np.shape(portrait.annotation[k]) == np.shape(v), k
  assert speech.dtype == np.float32 and speech.size > 16000
  before = harness.RESULTS.read_text() if harness.RESULTS.exists() else None
  (r,) = bench.main(["--modes", "head", "--steps", "2", "--iters", "2", "--dtypes", "bfloat16", "--no-write",
                     "--inputs", str(path)])
  assert (harness.RESULTS.read_text() if harness.RESULTS.exists() else None) == before
  assert r.case == bench.Case("head", False, 2, "bfloat16") and len(r.timing.times_s) == 2
  assert r.window == 16 and np.isclose(r.frames_per_s, 16 / r.block_s)
  assert 0 < r.first_warm_s and 0 < r.render_s and r.refine_s == 0  # (render alone ~ the whole step)
  assert "tiny_head512" in r.timing.config and "renderer bfloat16" in r.timing.config
  flops = render_bench.flops_per_frame("tiny_head512")["frame"].per_item
  assert r.render_flops == flops and np.isclose(r.render_tflops, 16 * flops / r.render_s / 1e12)
  out = capsys.readouterr().out
  assert "| head | off | bfloat16 | 2 |" in out and f"{r.frames_per_s:.1f}" in out
  assert f"| {flops / 1e9:.4g} | {r.render_tflops:.3g} |" in out
  with pytest.raises(MediaError, match="python -m benchmarks.gpu_wheels --inputs-only"):
    bench_inputs.load(tmp_path / "missing.npz")


def _result(mode, refine, steps, block_s, render_s=0.01, refine_s=0.0):
  t = harness.Timing("stream step", "", 1.0, [block_s])
  return bench.Result(bench.Case(mode, refine, steps), t, 16, 1.0, block_s, render_s, refine_s)


def test_sampling_cost_and_dominant_part_from_step_counts():
  results = [_result("upper", True, 5, 0.10, 0.01, 0.02), _result("upper", True, 10, 0.15, 0.01, 0.02),
             _result("head", False, 5, 0.05, 0.04)]
  costs = bench.sampling_costs(results)
  key = ("upper", True, "float32")
  assert set(costs) == {key} and np.isclose(costs[key], 0.01)  # (0.15 - 0.10) / 5
  (line,) = bench.dominant(results)  # head has one step count: no sampling estimate
  # 10 steps: sampling 0.10 s of 0.15 (67%), renderer 7%, refine 13%, other 0.02 s (13%).
  assert line.startswith("upper + refine (float32): DDIM sampling (10 steps) dominates") and "67%" in line


def test_blocks_follow_the_window_bounds_and_wrap():
  configs = {"motion_face": motion_face.get_config("tiny"), "render": "tiny_head512"}  # no parameters
  spec = build_spec(configs, StreamOptions(mode="head"))
  assert spec.window == 16  # 8533.3 samples per window
  audio = np.arange(5 * 8534, dtype=np.float32)  # 5 windows and a bit
  blocks = bench._blocks(spec, audio, 7)
  assert all(b.shape == (stream_spec.block_samples(spec),) for b in blocks)
  for i in range(5):
    a0, a1 = stream_spec.window_bounds(i % 5, spec.window, spec.spf)
    assert blocks[i][0] == a0 and blocks[i][a1 - a0 - 1] == a1 - 1
  assert blocks[5][0] == 0  # wrapped
  assert blocks[6][0] == stream_spec.window_bounds(1, spec.window, spec.spf)[0]


def test_cases_cover_refine_for_upper_only():
  assert bench.cases(["head", "upper"], [5], ["bfloat16"], refine="on") == [
      bench.Case("head", False, 5, "bfloat16"), bench.Case("upper", True, 5, "bfloat16")]
  assert len(bench.cases(["head", "upper"], [5, 10], ["float32", "bfloat16"])) == 12  # gpu.sh's stream rows
  assert [c.refine for c in bench.cases(["upper"], [5], refine="off")] == [False]


def test_lean_family_is_the_full_presets_lean_layout_and_needs_full():
  from chatanyone_jax.render import presets

  assert bench.FULL_LEAN.keys() == bench.FULL.keys()
  for key, name in bench.FULL.items():
    assert presets.get(bench.FULL_LEAN[key]) == presets.lean_full(presets.get(name)), key
  with pytest.raises(SystemExit):
    bench.main(["--lean"])
  with pytest.raises(ValueError, match="lean=True needs full=True"):
    bench.run(lean=True, write=False)
