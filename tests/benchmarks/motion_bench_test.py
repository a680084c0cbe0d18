from benchmarks import motion_bench


def test_tiny_stage1_window_benchmark_runs():
  timings = motion_bench.run(steps=(2,), iters=1, tiny=True)
  assert [("CFG on" in t.config) for t in timings] == [False, True]
  assert all(t.median_ms > 0 and "frames/s" in t.throughput for t in timings)
