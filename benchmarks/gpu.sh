#!/usr/bin/env bash
# GPU measurements in one command: rows in benchmarks/RESULTS.md (and, with --out, a copy of the new rows).
#
#   python -m benchmarks.gpu_wheels                  # once, where a package index is reachable: .whl/
#   bash benchmarks/gpu.sh [--out DIR]               # on the GPU machine, .whl/ carried beside the repo
#   JAX_PLATFORMS=cpu bash benchmarks/gpu.sh --tiny  # the same path on CPU, tiny presets (a rehearsal)
#   bash benchmarks/gpu.sh --check                   # only install and check what the run needs
#
# On a machine with a Python that lacks this project's dependencies (the GPU machine's image has jax, flax,
# optax, orbax and torch, not grain, ml_collections, librosa, tensorflow-datasets), the wheels in .whl/ are
# installed with --no-index into a folder of their own (GPU_SH_SITE, default /tmp/chatanyone-gpu-site) and
# put first on PYTHONPATH. Anything still missing stops the run before it measures, with what to do. The
# portrait's MediaPipe annotation and the decoded speech come from .whl/inputs.npz when there (made by
# gpu_wheels; their wheels would not fit the upload), else mediapipe and av must be importable.
#
# Measured, in this order, each part cut at its own time cap and at the overall budget (GPU_SH_BUDGET_S,
# default 480 s = 8 min; GPU_SH_CAP_SCALE multiplies every part's cap, e.g. 4 for a --tiny rehearsal on a
# slow CPU; rows are appended as they are measured, so a part cut short keeps its rows):
#   stream    stream fps, per-block and first-frame latency, renderers' achieved TFLOP/s: head512 and
#             upper512x768 with and without face refine, float32 and bfloat16, 5 and 10 DDIM steps
#   stream_lean  the same for upper512x768_lean + face_refine_lean (bfloat16, 5 and 10 DDIM steps)
#   profile   a jax.profiler trace of the upper + refine stream step (bfloat16, 5 steps), its top ops
#   latency   speech-to-frame latency, whole windows and the low-latency hop (bfloat16)
#   train     train-step time and images/s of every full config (synthetic batches)
#   render    renderer FLOPs per frame and W + G frames/s, float32 and bfloat16, the lean layouts first
#   grid      the grid_sample ops alone, and their GPU-vs-reference parity tests
# The exit status is non-zero when any part failed or was cut, and the summary says which.
set -uo pipefail
cd "$(dirname "$0")/.."

TINY=0
CHECK=0
OUT=""
PARTS="stream stream_lean profile latency train render grid"
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) TINY=1 ;;
    --check) CHECK=1 ;;
    --out) OUT="$2"; shift ;;
    --parts) PARTS="$2"; shift ;;
    -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PY="${PYTHON:-python3}"
WHEELS="${GPU_SH_WHEELS:-.whl}"
BUDGET="${GPU_SH_BUDGET_S:-480}"
CAP_SCALE="${GPU_SH_CAP_SCALE:-1}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  SITE="${GPU_SH_SITE:-/tmp/chatanyone-gpu-site}"
  echo "gpu.sh: installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE (--no-index)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
    --upgrade --target "$SITE" "$WHEELS"/*.whl || { echo "gpu.sh: installing the wheels failed" >&2; exit 2; }
  export PYTHONPATH="$SITE:$PYTHONPATH"
fi
INPUTS=""
[ -f "$WHEELS/inputs.npz" ] && INPUTS="$WHEELS/inputs.npz"

GPU_SH_TINY=$TINY GPU_SH_INPUTS="$INPUTS" "$PY" - <<'PYEOF' || exit 2
import importlib, os, sys
need = ["numpy", "scipy", "jax", "flax", "optax", "orbax.checkpoint", "chex", "ml_collections", "grain",
        "librosa", "tensorflow_datasets", "tensorboardX", "PIL", "pytest"]
if not os.environ["GPU_SH_INPUTS"]:
  need += ["mediapipe", "av"]  # to annotate the portrait and decode the speech here
missing = []
for name in need:
  try:
    importlib.import_module(name)
  except Exception as e:  # an import that fails for any reason is missing for this run
    missing.append(f"{name} ({type(e).__name__}: {e})")
if missing:
  sys.exit("gpu.sh: cannot run, missing:\n  " + "\n  ".join(missing) + "\nwhere a package index is reachable, "
           "run `python -m benchmarks.gpu_wheels` (wheels and inputs.npz into .whl/) and carry .whl/ here; or "
           "`pip install -e .[dev]` on a machine with network access")
import jax
backend = jax.default_backend()
print(f"gpu.sh: python {sys.version.split()[0]}, jax {jax.__version__}, devices {jax.devices()}")
if backend == "cpu" and os.environ["GPU_SH_TINY"] != "1":
  sys.exit("gpu.sh: no accelerator visible to jax (backend cpu): install jax[cuda12] / jax[cuda13], or rehearse "
           "on CPU with --tiny")
PYEOF
[ $CHECK = 1 ] && { echo "gpu.sh: everything the run needs is importable${INPUTS:+ (inputs from $INPUTS)}"; exit 0; }

if [ $TINY = 1 ]; then
  SIZE=()  # the tiny presets and motion configs (the benchmarks' defaults)
  VARIANT=(--variant tiny)
  ITERS=2
else
  SIZE=(--full)
  VARIANT=(--full)
  ITERS=5
fi
IN=(${INPUTS:+--inputs "$INPUTS"})
RESULTS=benchmarks/RESULTS.md
LINES_BEFORE=$(wc -l < "$RESULTS")
TRACE="${OUT:-/tmp/chatanyone-gpu}/trace"
START=$SECONDS
FAILED=()

part() {  # part NAME CAP_S command...: runs it within min(CAP_S, what is left of the budget)
  local name=$1 cap=$2; shift 2
  case " $PARTS " in *" $name "*) ;; *) return 0 ;; esac
  local left=$((BUDGET - (SECONDS - START)))
  cap=$((cap * CAP_SCALE))
  [ "$cap" -gt "$left" ] && cap=$left
  if [ "$cap" -le 0 ]; then
    echo "gpu.sh: $name skipped: the ${BUDGET} s budget is spent" >&2; FAILED+=("$name (no time left)"); return 0
  fi
  echo "gpu.sh: [$((SECONDS - START)) s] $name (at most $cap s): $*"
  timeout --kill-after=10 "$cap" "$@"
  local rc=$?
  if [ $rc = 124 ] || [ $rc = 137 ]; then FAILED+=("$name (cut at $cap s)"); elif [ $rc != 0 ]; then FAILED+=("$name (exit $rc)"); fi
}

part stream 210 "$PY" -m benchmarks.stream_bench "${SIZE[@]}" "${IN[@]}" --iters $ITERS
if [ $TINY = 0 ]; then  # the lean full-size renderers (presets.lean_full): the upper + refine chain
  part stream_lean 60 "$PY" -m benchmarks.stream_bench --full --lean "${IN[@]}" --modes upper --refine on \
    --dtypes bfloat16 --iters $ITERS
fi
part profile 45 "$PY" -m benchmarks.stream_bench "${SIZE[@]}" "${IN[@]}" --modes upper --refine on --steps 5 \
  --dtypes bfloat16 --iters 2 --no-write --profile "$TRACE"
part profile 15 "$PY" -m benchmarks.profile_top "$TRACE" --write \
  --title "the upper + refine stream step (bfloat16, 5 DDIM steps, 2 blocks)"
part latency 75 "$PY" -m benchmarks.latency_bench "${SIZE[@]}" "${IN[@]}" --bf16
part train 75 "$PY" -m benchmarks.train_bench "${VARIANT[@]}" --warmup 1 --iters 3
if [ $TINY = 1 ]; then
  part render 30 "$PY" -m benchmarks.render_bench --flops --write
else
  part render 90 "$PY" -m benchmarks.render_bench --flops --gpu --write --iters 20
fi
part grid 15 "$PY" -m benchmarks.grid_sample_bench --iters 20
if [ $TINY = 0 ]; then
  part grid 20 env JAX_PLATFORMS="" CHATANYONE_REFERENCE_DIR="${CHATANYONE_REFERENCE_DIR:-$PWD/../shared/data/reference}" \
    "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/chatanyone_jax/ops/grid_sample_test.py
fi

echo "gpu.sh: done in $((SECONDS - START)) s of the ${BUDGET} s budget; $(( $(wc -l < "$RESULTS") - LINES_BEFORE )) lines added to $RESULTS"
if [ -n "$OUT" ]; then
  mkdir -p "$OUT"
  tail -n +$((LINES_BEFORE + 1)) "$RESULTS" > "$OUT/gpu_rows.md"
  echo "gpu.sh: the new lines are in $OUT/gpu_rows.md"
fi
if [ ${#FAILED[@]} -gt 0 ]; then
  printf 'gpu.sh: FAILED or cut: %s\n' "${FAILED[@]}" >&2
  exit 1
fi
