#!/usr/bin/env bash
# GPU measurements for the foundation ops; appends rows to benchmarks/RESULTS.md.
#
#   bash benchmarks/gpu.sh
#
# Needs only jax with a CUDA backend (plus pytest for the parity check), so it
# runs as-is on a machine whose Python already has `jax[cuda12|13]`, without
# installing this package: the repository root is put on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"

"$PY" - <<'PYEOF'
import jax
backend = jax.default_backend()
print("jax", jax.__version__, "devices:", jax.devices())
if backend == "cpu":
  raise SystemExit("no accelerator visible to jax: install jax[cuda12] / jax[cuda13] first")
PYEOF

"$PY" -m benchmarks.grid_sample_bench --iters 50
"$PY" -m benchmarks.grid_sample_bench --iters 50 --bf16
"$PY" -m benchmarks.grid_sample_bench --iters 20 --batch 8

# The renderer frame rate needs flax and optax as well (the networks themselves).
if "$PY" -c "import flax, optax" 2>/dev/null; then
  "$PY" -m benchmarks.render_bench --gpu --write --iters 50
fi

if "$PY" -c "import pytest" 2>/dev/null; then
  JAX_PLATFORMS="" CHATANYONE_REFERENCE_DIR="${CHATANYONE_REFERENCE_DIR:-$PWD/../shared/data/reference}" \
    "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/chatanyone_jax/ops/grid_sample_test.py
fi

# Training throughput of the full configs (synthetic batches; no preprocessed data needed).
if "$PY" -c "import flax, optax, orbax.checkpoint, grain, ml_collections" 2>/dev/null; then
  "$PY" -m benchmarks.train_bench --full
fi

# Streaming inference (full presets, random weights): frames/s, per-block and first-frame latency.
if "$PY" -c "import flax, optax, ml_collections, mediapipe, av" 2>/dev/null; then
  "$PY" -m benchmarks.stream_bench --full
fi
