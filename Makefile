# Two-command set-up: `make demo` runs the main job on bundled data, `make test`
# runs the test suite. Both create .venv on first use and reuse it afterwards;
# editing pyproject.toml triggers a reinstall.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= outputs/demo
PYTEST_ARGS ?=
# Test processes (pytest-xdist). Tests that share the demo fixture run in one of them (--dist loadgroup).
PYTEST_WORKERS ?= 2
# Python writes its bytecode caches (into .venv and the ignored __pycache__ folders) even where the
# environment asks it not to (PYTHONDONTWRITEBYTECODE, set on our 2-core development machines): otherwise
# every process the suite starts compiles each module it imports from source again (about 3 s of CPU for
# jax, flax, orbax, tfds and the project's modules, per process).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo serve test lint bench chromium clean-venv

# The install uses uv (from PyPI, into the venv): the same packages as pip resolves (checked: identical
# `pip freeze`), in about 30 s instead of about 110 s on a cold cache; pip if uv cannot be installed.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if $(BIN)/python -m pip install --quiet --disable-pip-version-check uv; then \
	  $(BIN)/uv pip install --quiet --python $(BIN)/python -e ".[dev]"; \
	else \
	  $(BIN)/python -m pip install --quiet --upgrade pip && $(BIN)/python -m pip install --quiet -e ".[dev]"; \
	fi
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m infer.demo --out $(OUT)

# The live avatar server on http://127.0.0.1:8000/ (README: Live). SERVE_ARGS: e.g. --checkpoint DIR --port 8080.
SERVE_ARGS ?=
serve: $(STAMP)
	$(BIN)/python -m infer.serve $(SERVE_ARGS)

# The browser of the live server's test: Debian's chromium (Playwright drives it; it downloads no browser).
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

# Lint, then the tests. pytest exits 5 when it collected no test: a failure here too.
# The venv and the browser install side by side (both mostly wait on downloads).
test:
	@$(MAKE) --no-print-directory -j2 $(STAMP) chromium
	$(BIN)/ruff check .
	@$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m benchmarks.grid_sample_bench

clean-venv:
	rm -rf $(VENV)
