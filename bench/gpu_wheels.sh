#!/usr/bin/env bash
# Wheels the GPU machine lacks (Python 3.12 there), for bench/gpu_check.sh and
# bench/gpu_issue16.sh: run here, in the repository root, then carry .whl/ with the
# device call. The versions are this venv's; grpcio-tools/health/reflection follow the
# grpcio installed there (1.84 when last read: GRPC_VERSION overrides). PY_VERSION picks
# the wheels' Python (3.12, the GPU machine's; 3.11 for a dry run here). Keep .whl/ out
# of git (.gitignore). swagger-ui-bundle: router/app.py imports it unconditionally
# (its Jinja2 is there); OpenTelemetry is imported only with --otlp-endpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TARGET=${1:-.whl}
GRPC_VERSION=${GRPC_VERSION:-1.84.0}
PY_VERSION=${PY_VERSION:-3.12}
version() { "$PYTHON" -c "import importlib.metadata as m; print(m.version('$1'))"; }
packages=()
for name in starlette hypercorn h2 hpack hyperframe priority wsproto msgspec orjson swagger-ui-bundle; do
  packages+=("$name==$(version "$name")")
done
packages+=("grpcio-tools==$GRPC_VERSION" "grpcio-health-checking==$GRPC_VERSION" "grpcio-reflection==$GRPC_VERSION")
mkdir -p "$TARGET"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$TARGET" "${packages[@]}"
ls "$TARGET"
du -sh "$TARGET"
