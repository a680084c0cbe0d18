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

.PHONY: demo test lint bench clean-venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m infer.demo --out $(OUT)

# Lint, then the tests. pytest exits 5 when it collected no test: a failure here too.
test: $(STAMP)
	$(BIN)/ruff check .
	@$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m benchmarks.grid_sample_bench

clean-venv:
	rm -rf $(VENV)
