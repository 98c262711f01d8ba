#!/usr/bin/env bash
# GPU check for one H100, under 5 minutes: the torch backend on a BERT-base-shaped
# random model behind the server, against the raw in-process forward throughput.
#
# The GPU machine has its own Python with torch, transformers, grpcio, protobuf,
# uvloop and tokenizers, but not starlette, hypercorn, msgspec or orjson: bring
# them as wheels in .whl/ (see the device tool's README), grpcio-tools included
# so the protobuf modules are generated against the grpcio installed there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
"$PYTHON" proto/generate.py
timeout 290 "$PYTHON" -m bench.gpu_check "$@"
