#!/usr/bin/env bash
# Does bulk slicing (backends/server.py, issue 13) cap served throughput on a GPU?
# The same two matrix rows (mixed 1-8 and bulk 32, 64 clients) on one server with bulk
# slicing on, then one with EMBEDSERVE_BULK_SLICES=off (bulk batches run whole).
# Device call: carry [".whl"]; about 2 minutes. `--smoke`: CPU, tiny model.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SITE_DIR=${SITE_DIR:-/tmp/site}
PKG_DIR=${PKG_DIR:-/tmp/pkg}
export OUT=${OUT:-$PWD/bench/results/slicing_ab}
mkdir -p "$OUT" "$PKG_DIR"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
[ -d .whl ] && "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE_DIR" .whl/*.whl
ln -sfn "$PWD" "$PKG_DIR/embedserve"
export PYTHONPATH="$SITE_DIR:$PKG_DIR:$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" proto/generate.py >/dev/null
args=(--matrix-only --matrix-clients 64 --matrix-texts "${AB_TEXTS:-6000}" --matrix-bulk-per-client "${AB_BULK:-4}")
[ "${1:-}" = "--smoke" ] && args=(--matrix-only --smoke)
for slices in on off; do
  echo "=== bulk slices $slices"
  EMBEDSERVE_BULK_SLICES=$slices timeout -k 5 "${AB_BOX_S:-80}" "$PYTHON" -m bench.gpu_check "${args[@]}" 2>&1 \
    | grep -v "Writing model shards" | tee "$OUT/slices_$slices.log"
done
