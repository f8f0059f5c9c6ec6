#!/usr/bin/env sh
# Builds audit-as.wasm with the AssemblyScript compiler and json-as pinned in package-lock.json.
# Output: ../audit-as.wasm (or the path given as $1).
set -eu
cd "$(dirname "$0")"
[ -x node_modules/.bin/asc ] || npm ci --no-audit --no-fund --silent
OUT=${1:-../audit-as.wasm}
node_modules/.bin/asc src/index.ts --transform json-as/transform --outFile "$OUT" \
  --optimize --runtime incremental --use abort=src/index/abort
