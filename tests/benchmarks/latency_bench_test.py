"""benchmarks/latency_bench.py: the per-frame latency arithmetic, and the tiny head case end to end."""

import numpy as np
import pytest

from benchmarks import harness
from benchmarks import latency_bench as bench
from infer.models import build_spec
from infer.options import LOW_LATENCY, StreamOptions
from tests.helpers import SMOKE_STREAM
from train.configs import motion_face


def test_algorithmic_latency_is_the_rest_of_the_hop_and_the_lookahead():
  configs = {"motion_face": motion_face.get_config("tiny"), "render": "tiny_head512"}  # no parameters: T = 16
  whole = build_spec(configs, StreamOptions(mode="head"))
  low = build_spec(configs, StreamOptions(mode="head", **LOW_LATENCY))
  alg, comp = bench.frame_latencies(whole, [1, 2], [0.5, 0.25])
  assert alg.shape == comp.shape == (32,) and np.all(comp == np.repeat([0.5, 0.25], 16))
  # Whole windows: a window's first frame waits for the 15 frames after it, its last for none (±1 sample).
  np.testing.assert_allclose(alg[[0, 15, 16, 31]], [15 / 30, 0, 15 / 30, 0], atol=1 / 16000)
  alg, _ = bench.frame_latencies(low, [3], [0.1])
  np.testing.assert_allclose(alg, (9 - np.arange(8)) / 30, atol=1 / 16000)  # hop 8 + look-ahead 2 - 1 .. 2
  r = bench.Latency("head", 16, 8, 2, [0.1, 0.3, 0.2], alg, np.full(8, 0.2), 1.0)
  s = r.summary()
  assert s["algorithmic_max_s"] == pytest.approx(0.3, abs=1e-4) and s["compute_median_s"] == 0.2
  assert r.real_time and r.playout_s == pytest.approx(9 / 30 + 0.2)  # 0.2 s <= 8 / 30 s per step
  assert not bench.Latency("head", 16, 8, 2, [0.3], alg, np.full(8, 0.3), 1.0).real_time


@SMOKE_STREAM
def test_tiny_head_latency_benchmark_runs_without_writing(capsys):
  before = harness.RESULTS.read_text() if harness.RESULTS.exists() else None
  # The head specs of tests/infer/streaming_test.py and live_test.py (whole windows, LOW_HEAD).
  whole, low = bench.main(["--modes", "head", "--steps", "2", "--seconds", "1", "--no-write"])
  assert (harness.RESULTS.read_text() if harness.RESULTS.exists() else None) == before
  assert (whole.hop, whole.lookahead, low.hop, low.lookahead) == (16, 0, 8, 2)
  assert len(whole.step_s) == 2 and len(low.step_s) == 4 and low.algorithmic_s.shape == (32,)
  assert whole.summary()["algorithmic_max_s"] > 0.49 and low.summary()["algorithmic_max_s"] < 0.301
  out = capsys.readouterr().out
  assert "| head | 16 | 8 | 2 |" in out and "| head | 16 | 16 | 0 |" in out
