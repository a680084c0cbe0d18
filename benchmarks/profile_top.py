"""The top ops of a jax.profiler trace: time per op name, summed over a Perfetto trace's device events.

  python -m benchmarks.profile_top DIR [--top 15] [--write]

DIR is a `jax.profiler.trace(DIR, create_perfetto_trace=True)` directory (`benchmarks.stream_bench --profile
DIR` writes one per configuration; the newest `*.trace.json.gz` under DIR is read). On a GPU the events of
the device processes' streams (`/device:GPU:N`, `Stream #...`: the kernels) are summed; on CPU, where no
device process exists, those of XLA's execution threads. The runtime's own events (the CPU's
`ThunkExecutor::Execute` around a whole program, thread-pool waits) are left out and an op's events nested
inside another op's on the same thread (its parallel subtasks) count as part of it, so nothing is counted
twice. `--write` appends the table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gzip
import json
import pathlib
from collections.abc import Sequence

import jax

from benchmarks import harness

# CPU runtime markers, program wrappers and waits, not ops
_HOUSEKEEPING = ("ThreadpoolListener", "ThunkExecutor", "SlinkyThreadPool", "end: ")


@dataclasses.dataclass(frozen=True)
class Op:
  name: str
  where: str  # process (device) or thread
  calls: int
  total_us: float


def find_trace(path: str | pathlib.Path) -> pathlib.Path:
  """The newest `*.trace.json.gz` at or under `path`."""
  path = pathlib.Path(path)
  if path.is_file():
    return path
  traces = sorted(path.rglob("*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
  if not traces:
    raise FileNotFoundError(f"no *.trace.json.gz under {path}: trace with jax.profiler.trace(DIR, "
                            "create_perfetto_trace=True), e.g. `python -m benchmarks.stream_bench --profile "
                            "DIR`")
  return traces[-1]


def top_ops(trace: str | pathlib.Path, top: int = 15) -> tuple[list[Op], float, str]:
  """(the `top` ops by total time, the summed time of all counted events in us, what was counted)."""
  with gzip.open(find_trace(trace), "rt") as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  meta = [e for e in events if e.get("ph") == "M"]
  processes = {e["pid"]: e["args"]["name"] for e in meta if e.get("name") == "process_name"}
  threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in meta if e.get("name") == "thread_name"}
  devices = {pid for pid, name in processes.items() if name.startswith("/device:")}
  if devices:
    kept = {k for k in threads if k[0] in devices}
    streams = {k for k in kept if threads[k].startswith("Stream")}
    kept = streams or kept  # kernels on streams; not the module / step summaries beside them
    where = lambda k: processes[k[0]]  # noqa: E731
    counted = "device streams (" + ", ".join(sorted({processes[k[0]] for k in kept})) + ")"
  else:
    kept = {k for k, name in threads.items() if "XLA" in name}
    where = lambda k: threads[k].split("/")[0]  # noqa: E731
    counted = "XLA execution threads (no device process: CPU)"
  per_thread: dict[tuple, list[dict]] = collections.defaultdict(list)
  for e in events:
    key = (e.get("pid"), e.get("tid"))
    if e.get("ph") == "X" and "dur" in e and key in kept and not e["name"].startswith(_HOUSEKEEPING):
      per_thread[key].append(e)
  totals: dict[tuple[str, str], list[float]] = collections.defaultdict(lambda: [0, 0.0])
  for key, evs in per_thread.items():
    evs.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
    end = -float("inf")
    for e in evs:
      if float(e["ts"]) < end:
        continue  # inside the op before it on this thread: part of that op
      end = float(e["ts"]) + float(e["dur"])
      t = totals[(e["name"], where(key))]
      t[0] += 1
      t[1] += float(e["dur"])
  if not totals:
    raise ValueError(f"{trace}: no op events in the trace (was anything run inside jax.profiler.trace?)")
  ops = [Op(name, w, int(n), us) for (name, w), (n, us) in totals.items()]
  ops.sort(key=lambda o: -o.total_us)
  return ops[:top], sum(o.total_us for o in ops), counted


def table(ops: Sequence[Op], total_us: float) -> str:
  rows = ["| op | where | calls | total ms | share |", "|---|---|---|---|---|"]
  for o in ops:
    name = o.name if len(o.name) <= 80 else o.name[:77] + "..."
    share = 100 * o.total_us / total_us
    rows.append(f"| `{name}` | {o.where} | {o.calls} | {o.total_us / 1e3:.2f} | {share:.1f}% |")
  return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> str:
  p = argparse.ArgumentParser(prog="python -m benchmarks.profile_top", description=__doc__.split("\n\n")[0],
                              epilog=__doc__.split("\n\n", 1)[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("trace", help="a jax.profiler trace directory (or its .trace.json.gz)")
  p.add_argument("--top", type=int, default=15)
  p.add_argument("--title", default="", help="what was traced (written above the table)")
  p.add_argument("--write", action="store_true", help="append the table to benchmarks/RESULTS.md")
  a = p.parse_args(argv)
  path = find_trace(a.trace)
  ops, total, counted = top_ops(path, a.top)
  text = (f"Top {len(ops)} ops of {a.title or path.name} on {harness.device_name()} (jax {jax.__version__}, "
          f"commit {harness.git_commit()}): {counted}, {total / 1e3:.1f} ms in all\n\n{table(ops, total)}\n")
  print(text)
  if a.write:
    with open(harness.RESULTS, "a") as f:
      f.write("\n" + text)
  return text


if __name__ == "__main__":
  main()
