#!/usr/bin/env bash
# GPU check for one H100: the torch backend on a BERT-base-shaped random model behind
# the server, against the raw in-process forward throughput, then issue 12's table
# (mixed 1-8 and bulk 32-text requests at 64 and 512 clients, GPU busy, each role's
# cores). All of it: about 8 minutes. `--matrix-only`: the table alone, about 3.
# `--router-workers N` sets the server's front processes for the table. `--smoke` runs
# the table on CPU with a tiny model, where no GPU is lent (bench/GPU_NOTES.md).
#
# The GPU machine has its own Python with torch, transformers, grpcio, protobuf,
# uvloop, tokenizers and nvidia-ml-py, but not starlette, hypercorn, msgspec or orjson:
# bring them as wheels in .whl/ (bench/gpu_wheels.sh fetches them), grpcio-tools included
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
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
"$PYTHON" proto/generate.py
timeout "${GPU_CHECK_TIMEOUT_S:-570}" "$PYTHON" -m bench.gpu_check "$@"
