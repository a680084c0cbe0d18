"""The README's test command (`make test`) must fail when pytest runs no test."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_test_fails_when_no_test_is_collected():
  venv = pathlib.Path(sys.executable).parent.parent
  stamp = venv / ".installed"
  if not stamp.exists():
    pytest.skip("not running inside the Makefile's virtual environment")
  env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
  r = subprocess.run(
      ["make", "-s", "test", f"VENV={venv}", "PYTEST_ARGS=-q -p no:cacheprovider -k zz_no_such_test_zz"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode != 0, r.stdout + r.stderr
  assert "pytest collected no tests: failing" in r.stdout + r.stderr
