"""Fetches what benchmarks/gpu.sh needs on a machine without a package index: wheels and prepared inputs.

  python -m benchmarks.gpu_wheels                 # .whl/: the wheels of gpu_requirements.txt + inputs.npz
  python -m benchmarks.gpu_wheels --inputs-only   # only .whl/inputs.npz

Run it here (with network access to the package index); then carry `.whl` to the GPU machine, where
`bash benchmarks/gpu.sh` installs from it with `--no-index`. The wheels are the exact pins of
benchmarks/gpu_requirements.txt for CPython 3.12 on manylinux x86-64 (`--python-version` to change); a
package that publishes no wheel (promise) is built into one here (pure Python). `inputs.npz` is the bundled
portrait annotated with MediaPipe and the bundled speech decoded with PyAV (`benchmarks.inputs`), so the GPU
machine needs neither. Prints the folder's size beside the repository's, against the 64 MiB that one upload
to the GPU machine may carry.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import subprocess
import sys
from collections.abc import Sequence

REPO = pathlib.Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "benchmarks" / "gpu_requirements.txt"
UPLOAD_LIMIT = 64 * 2**20  # bytes, the GPU machine's working tree + carried folders
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
NO_WHEEL = {"promise"}  # sdist only on PyPI: built here


def requirements(path: pathlib.Path = REQUIREMENTS) -> list[str]:
  """The pinned `name==version` lines (comments and blanks dropped); every line must pin one version."""
  reqs = []
  for n, line in enumerate(path.read_text().splitlines(), 1):
    line = line.split("#", 1)[0].strip()
    if not line:
      continue
    name, sep, version = line.partition("==")
    if not sep or not name.strip() or not version.strip() or any(c in version for c in "<>=!,;*"):
      raise ValueError(f"{path}:{n}: {line!r} must pin one exact version (name==version)")
    reqs.append(f"{name.strip()}=={version.strip()}")
  return reqs


def _name(req: str) -> str:
  return req.split("==")[0].lower().replace("_", "-")


def download(dest: pathlib.Path, python_version: str = "3.12") -> list[pathlib.Path]:
  """Downloads the binary wheels and builds the sdist-only ones into `dest`; returns the wheels there."""
  dest.mkdir(parents=True, exist_ok=True)
  reqs = requirements()
  binary = [r for r in reqs if _name(r) not in NO_WHEEL]
  built = [r for r in reqs if _name(r) in NO_WHEEL]
  pip = [sys.executable, "-m", "pip"]
  cmd = [*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", python_version,
         "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "--platform", "any",
         "-d", str(dest), *binary]
  subprocess.run(cmd, check=True)
  if built:
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(dest), *built], check=True)
  wheels = sorted(dest.glob("*.whl"))
  have = {w.name.split("-")[0].lower().replace("_", "-") for w in wheels}
  missing = [r for r in reqs if _name(r) not in have]
  if missing:
    raise RuntimeError(f"no wheel in {dest} for {missing}")
  return wheels


def repo_bytes() -> int:
  """Bytes of the tracked files (what an upload to the GPU machine sends besides carried folders)."""
  out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
  return sum((REPO / p).stat().st_size for p in out.decode().split("\0") if p and (REPO / p).is_file())


def main(argv: Sequence[str] | None = None) -> pathlib.Path:
  p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_wheels", description=__doc__.split("\n\n")[0],
                              epilog=__doc__.split("\n\n", 1)[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--dir", type=pathlib.Path, default=REPO / ".whl", help="where to put them (default .whl)")
  p.add_argument("--python-version", default="3.12", help="the GPU machine's Python (default 3.12)")
  p.add_argument("--inputs-only", action="store_true", help="write only inputs.npz")
  a = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  from benchmarks import inputs  # MediaPipe, PyAV and the models: only here, not for --help

  if not a.inputs_only:
    wheels = download(a.dir, a.python_version)
    logging.info("%d wheels in %s", len(wheels), a.dir)
  path = inputs.write(a.dir / "inputs.npz")
  logging.info("wrote %s", path)
  carried = sum(f.stat().st_size for f in a.dir.iterdir() if f.is_file())
  tracked = repo_bytes()
  logging.info("%s: %.1f MB; repository %.1f MB; together %.1f of the %.0f MB an upload to the GPU machine "
               "may carry", a.dir, carried / 1e6, tracked / 1e6, (carried + tracked) / 1e6,
               UPLOAD_LIMIT / 1e6)
  if carried + tracked > UPLOAD_LIMIT:
    raise SystemExit(f"{a.dir} and the repository exceed the GPU machine's upload limit: drop wheels "
                     "the run does not import")
  return a.dir


if __name__ == "__main__":
  main()
