#!/usr/bin/env bash
# Issue 16's device check, one call on one H100, about 8 minutes (bench/GPU_NOTES.md):
#   1. environment: wheels from .whl/ into /tmp/site, `import embedserve` resolving to
#      this tree (a /tmp/pkg/embedserve link; the tree is copied there without pip
#      install), the protobuf modules generated, GPU and versions printed, the server's
#      modules imported (a missing wheel shows here, not in the middle of a table);
#   2. bench.issue16: the torch engine alone, eager against CUDA graphs against
#      compiled layers, fp16 and bf16, parity against float32 transformers, start-up
#      seconds ($OUT/issue16.json);
#   3. issue 12's load table (bench.gpu_check --matrix-only, $OUT/gpu_check.json);
#   4. issue 13's query-under-bulk, torch backend, 128 bulk clients of 32 texts, idle
#      baseline ($OUT/query_under_bulk.json), shortened to fit.
# Each section has its own time box (and none starts without 30 s left of ISSUE16_BUDGET_S,
# default 500); a failing section prints its error and the next one runs. `--smoke`: every
# section on CPU with tiny models and few clients, to check the script where no GPU is lent
# (tests/bench/test_issue16_smoke.py runs section 2 that way).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SMOKE=""
[ "${1:-}" = "--smoke" ] && SMOKE="--smoke"
BUDGET_S=${ISSUE16_BUDGET_S:-500}
# Where the wheels go and where the embedserve link lives (a dry run here keeps its own).
SITE_DIR=${SITE_DIR:-/tmp/site}
PKG_DIR=${PKG_DIR:-/tmp/pkg}
export OUT=${OUT:-$PWD/bench/results/issue16}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
began=$(date +%s)
failed=()

section() {  # section NAME CAP_S COMMAND...: runs COMMAND under min(CAP_S, what is left), logs to $OUT/NAME.log
  local name=$1 cap=$2
  shift 2
  local left=$((BUDGET_S - ($(date +%s) - began)))
  local box=$((cap < left ? cap : left))
  if [ "$box" -lt 30 ]; then
    echo "=== $name: skipped, ${left}s of ${BUDGET_S}s left"
    failed+=("$name (skipped)")
    return
  fi
  echo "=== $name: up to ${box}s ($(date -u +%H:%M:%S))"
  local t0 rc
  t0=$(date +%s)
  timeout -k 10 "$box" "$@" 2>&1 | tee "$OUT/$name.log"
  rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $(($(date +%s) - t0))s$([ "$rc" = 124 ] && echo ' (time box hit)')"
  [ "$rc" = 0 ] || failed+=("$name (exit $rc)")
}

environment() {
  set -e
  if [ -d .whl ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE_DIR" .whl/*.whl
  else
    echo "no .whl/: starlette, hypercorn, msgspec, orjson, swagger-ui-bundle and grpcio-tools must be installed already"
  fi
  "$PYTHON" proto/generate.py
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PYTHON" - <<'PY'
import importlib, platform, shutil
import torch, transformers, tokenizers, grpc, google.protobuf, numpy
print(f"python {platform.python_version()}, torch {torch.__version__} (cuda {torch.version.cuda}, available "
      f"{torch.cuda.is_available()}), transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, "
      f"grpcio {grpc.__version__}, protobuf {google.protobuf.__version__}, numpy {numpy.__version__}")
if torch.cuda.is_available():
    print("gpu:", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
try:
    import triton
    print("triton", triton.__version__)
except ImportError as exc:
    print("triton missing:", exc)
print("C compiler:", shutil.which("cc") or shutil.which("gcc") or "none (torch.compile will fall back)")
import embedserve
print("embedserve from", list(embedserve.__path__))
for name in ("embedserve.launcher", "embedserve.router.app", "embedserve.router.grpc_api.servicers",
             "embedserve.backends.server", "embedserve.backends.torch_backend", "embedserve.backends.cuda_graphs",
             "embedserve.tokenizer_pool.worker", "bench.issue16", "bench.gpu_check", "bench.query_under_bulk"):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(name):  # that module is not in this tree: fine
            continue
        raise
print("imports ok")
PY
}

mkdir -p "$PKG_DIR"
ln -sfn "$PWD" "$PKG_DIR/embedserve"
export PYTHONPATH="$SITE_DIR:$PKG_DIR:$PWD${PYTHONPATH:+:$PYTHONPATH}"

section env 90 bash -c "$(declare -f environment); PYTHON='$PYTHON' SITE_DIR='$SITE_DIR' environment"

if [ -n "$SMOKE" ]; then
  section issue16 240 "$PYTHON" -m bench.issue16 --smoke --budget-s 180
  section matrix 240 "$PYTHON" -m bench.gpu_check --smoke
  model=$("$PYTHON" -c "import tempfile; from pathlib import Path; from bench.gpu_check import build_model; print(build_model(Path(tempfile.mkdtemp()) / 'bert', tiny=True))")
  section query_under_bulk 240 "$PYTHON" -m bench query-under-bulk --backend torch --model-id "$model" \
    --bulk-clients 4 --bulk-texts 4 --idle --policies priority --runs 1 --seconds 3 --ramp-s 1 --drain-s 10 \
    --warmup-s 1 --json-out "$OUT/query_under_bulk.json"
else
  # ISSUE16_ARGS: more flags for bench.issue16 (e.g. --rows ... --profile); ISSUE16_ONLY=1: no sections after it.
  # shellcheck disable=SC2086
  section issue16 260 "$PYTHON" -m bench.issue16 --budget-s 220 ${ISSUE16_ARGS:-}
  if [ -z "${ISSUE16_ONLY:-}" ]; then
    section matrix 220 "$PYTHON" -m bench.gpu_check --matrix-only
    model=$("$PYTHON" -c "import tempfile; from pathlib import Path; from bench.gpu_check import build_model; print(build_model(Path(tempfile.mkdtemp()) / 'bert'))")
    section query_under_bulk 150 "$PYTHON" -m bench query-under-bulk --backend torch --model-id "$model" \
      --server-args "--dtype float16" --bulk-clients 128 --bulk-texts 32 --idle --policies priority --runs 1 \
      --seconds 10 --ramp-s 2 --drain-s 20 --json-out "$OUT/query_under_bulk.json"
  fi
fi

echo "=== done in $(($(date +%s) - began))s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
if [ ${#failed[@]} -gt 0 ]; then
  echo "=== sections not ok: ${failed[*]}"
  exit 1
fi
echo "=== all sections ok"
