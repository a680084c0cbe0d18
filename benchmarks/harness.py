"""A small, honest timing harness for jitted JAX functions.

`time_jitted` compiles once (timed separately), warms up, then times N calls
with `jax.block_until_ready` and reports the median and spread. `append_rows`
adds rows (date, commit, device, config, numbers) to `benchmarks/RESULTS.md`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import pathlib
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax

RESULTS = pathlib.Path(__file__).resolve().parent / "RESULTS.md"
HEADER = ("| date (UTC) | commit | device | jax | benchmark | config | compile s | median ms "
          "| p10 ms | p90 ms | n | throughput |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|\n")


@dataclasses.dataclass
class Timing:
  name: str
  config: str
  compile_s: float
  times_s: list[float]
  throughput: str = ""

  @property
  def median_ms(self) -> float:
    return 1e3 * statistics.median(self.times_s)

  def quantile_ms(self, q: float) -> float:
    s = sorted(self.times_s)
    return 1e3 * s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def device_name() -> str:
  d = jax.devices()[0]
  if d.platform == "cpu":
    cpu = platform.processor() or platform.machine()
    try:
      for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
    except OSError:
      pass
    import os
    return f"CPU {cpu} ({os.cpu_count()} cores)"
  return f"{d.platform.upper()} {d.device_kind}"


def git_commit() -> str:
  try:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=RESULTS.parent, check=True).stdout.strip()
    # RESULTS.md itself is excluded: appending rows must not mark later rows dirty.
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":(exclude)benchmarks/RESULTS.md"],
                           capture_output=True, text=True, cwd=RESULTS.parent.parent).stdout.strip()
    return out + ("+dirty" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def time_jitted(fn: Callable[..., Any], args: Sequence[Any], *, name: str, config: str,
                warmup: int = 2, iters: int = 10, min_time_s: float = 0.0) -> Timing:
  """Times `fn(*args)`; `fn` should already be `jax.jit`-ed.

  The first call (trace + compile + run) is reported as compile time; then
  `warmup` untimed calls, then at least `iters` timed calls (more until
  `min_time_s` has elapsed), each ended by `block_until_ready`.
  """
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  compile_s = time.perf_counter() - t0
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times: list[float] = []
  start = time.perf_counter()
  while len(times) < iters or time.perf_counter() - start < min_time_s:
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return Timing(name=name, config=config, compile_s=compile_s, times_s=times)


def format_row(t: Timing, *, device: str | None = None, commit: str | None = None) -> str:
  date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
  return (f"| {date} | {commit or git_commit()} | {device or device_name()} | {jax.__version__} "
          f"| {t.name} | {t.config} | {t.compile_s:.2f} | {t.median_ms:.2f} | {t.quantile_ms(0.1):.2f} "
          f"| {t.quantile_ms(0.9):.2f} | {len(t.times_s)} | {t.throughput} |\n")


def append_rows(timings: Sequence[Timing], path: pathlib.Path = RESULTS) -> list[str]:
  """Appends one Markdown row per timing to `path` (created with a header)."""
  rows = [format_row(t) for t in timings]
  if not path.exists() or not path.read_text().strip():
    path.write_text("# Benchmark results\n\nAppended by `benchmarks/*.py`; newest rows last.\n\n"
                    + HEADER)
  with path.open("a") as f:
    f.writelines(rows)
  return rows
