import jax
import jax.numpy as jnp
import pytest

from benchmarks import render_bench


def test_tiny_flops_positive_and_linear_in_batch():
  one, two = render_bench.flops_per_frame("tiny", 1), render_bench.flops_per_frame("tiny", 2)
  for part in ("F", "frame"):
    assert one[part].flops > 0 and one[part].params > 0
    assert two[part].flops == pytest.approx(2 * one[part].flops, rel=0.05)
    assert two[part].per_item == pytest.approx(one[part].per_item, rel=0.05)
  assert one["frame"].flops > one["F"].flops  # W + G dominate; F is per source
  floor = one["frame"].floor_fps()
  assert floor["H100 bf16"] > floor["4090 bf16"] > 0 and floor["4090 fp32"] > floor["H100 fp32"]


def test_cost_flops_of_a_function_and_of_a_jitted_one_with_compiler_options():
  """The trainer's step is a jit with compiler options on CPU (`xla_options.cpu_options`), which JAX does
  not allow nested in another jit: `cost_flops` lowers a jitted function as it is (train_bench,
  scale_bench)."""
  from chatanyone_jax import xla_options

  f = lambda a, b: a @ b
  args = (jax.ShapeDtypeStruct((8, 16), jnp.float32), jax.ShapeDtypeStruct((16, 4), jnp.float32))
  options = xla_options.cpu_options() or {"xla_backend_optimization_level": 1}
  jitted = jax.jit(f, compiler_options=options)
  assert render_bench.cost_flops(f, *args) == render_bench.cost_flops(jitted, *args) == 2 * 8 * 16 * 4


def test_upper_costs_more_than_head_at_same_channels():
  # tiny_upper = tiny's channels, 64x32 instead of 32x32 input, 7 instead of 4 keypoints, hand injection.
  head, upper = render_bench.flops_per_frame("tiny", 1), render_bench.flops_per_frame("tiny_upper", 1)
  assert upper["frame"].flops > 1.5 * head["frame"].flops
  assert upper["F"].flops > 1.5 * head["F"].flops
  assert upper["frame"].part.endswith("(+ hand injection)") and head["frame"].part == "W + G"


def test_cli_tiny_table_and_write(tmp_path, capsys):
  results = tmp_path / "RESULTS.md"
  flop_rows, timings = render_bench.main(["--flops", "--cpu", "--presets", "tiny", "--iters", "2", "--write",
                                          "--results", str(results)])
  assert [r[0] for r in flop_rows] == ["tiny", "tiny"]
  assert [t.name for t in timings] == ["render F (per source)", "render frame"]
  assert all(t.median_ms > 0 for t in timings) and timings[1].throughput.endswith("frames/s")
  out = capsys.readouterr().out
  assert "| tiny | W + G, B=1" in out and "H100 bf16" in out
  lines = results.read_text().splitlines()
  assert lines[4].startswith("| date") and sum("| render FLOPs | tiny" in l for l in lines) == 2
  assert sum("| render frame | tiny" in l for l in lines) == 1
  flop_line = next(l for l in lines if "| render FLOPs |" in l)
  assert flop_line.count("|") == lines[4].count("|")  # same columns as the harness rows


def test_bf16_frame_traces():
  """The --gpu bfloat16 variant (module dtype + bf16 images) traces; executing it is XLA's business."""
  r = render_bench.Renderer("face_refine", render_bench.config("face_refine"), dtype=jnp.bfloat16)
  var = r.variable_shapes()
  shapes = r.frame_input_shapes(1)
  assert shapes["volume"].dtype == jnp.bfloat16 and list(shapes) == ["volume", "kp_driving", "kp_source",
                                                                     "inject", "frame"]
  out = jax.eval_shape(r.frame, {"W": var["W"], "G": var["G"]}, shapes)
  assert out.shape == (1, *render_bench.PASTE_FRAME, 3)


def test_source_skip_frame_takes_the_source_image():
  r = render_bench.Renderer("tiny_head512_skip", render_bench.config("tiny_head512_skip"))
  shapes = r.frame_input_shapes(2)
  assert list(shapes) == ["volume", "kp_driving", "kp_source", "source"]
  out = jax.eval_shape(r.frame, {"W": r.variable_shapes()["W"], "G": r.variable_shapes()["G"]}, shapes)
  assert out.shape == (2, *r.cfg.output_size, 3)


def test_unknown_config_and_gpu_flag_on_cpu():
  with pytest.raises(ValueError, match="unknown renderer config"):
    render_bench.config("nope")
  with pytest.raises(SystemExit):
    render_bench.main(["--gpu", "--presets", "tiny"])
