"""Unit tests of the library: they compile small programs and run them once or a few times, so they run
under `tests.helpers.fast_compile` (faster compiles). Tests marked `slow` run their compiled programs
many times (overfitting, streaming windows): they keep XLA's optimisations."""

import pytest

from tests.helpers import fast_compile


@pytest.fixture(autouse=True)
def _fast_compile(request):
  if "slow" in request.keywords:
    yield
    return
  with fast_compile():
    yield
