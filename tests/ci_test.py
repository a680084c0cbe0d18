"""The README's test command (`make test`) must fail when pytest runs no test, and CI must not skip tests."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.helpers import require

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_test_fails_when_no_test_is_collected():
  venv = pathlib.Path(sys.executable).parent.parent
  stamp = venv / ".installed"
  if not stamp.exists():
    pytest.skip("not running inside the Makefile's virtual environment")
  env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
  r = subprocess.run(
      ["make", "-s", "test", f"VENV={venv}",  # (collecting this file alone: the whole suite takes seconds)
       "PYTEST_ARGS=-q -p no:cacheprovider -k zz_no_such_test_zz tests/ci_test.py"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode != 0, r.stdout + r.stderr
  assert "pytest collected no tests: failing" in r.stdout + r.stderr


def test_missing_shared_data_skips_locally_and_fails_under_ci(tmp_path, monkeypatch):
  """`tests.helpers.require`: without ../shared data a local run skips, CI (which has it) fails."""
  missing = tmp_path / "nowhere"
  monkeypatch.delenv("CI", raising=False)
  with pytest.raises(pytest.skip.Exception, match="reference vectors not found at"):
    require(missing, "reference vectors")
  monkeypatch.setenv("CI", "true")
  with pytest.raises(pytest.fail.Exception, match="reference vectors not found at"):
    require(missing, "reference vectors")
  assert require(tmp_path, "reference vectors") == tmp_path
