#!/usr/bin/env sh
# Builds audit-c.wasm with Debian's clang, lld, wasi-libc and libclang-rt-14-dev-wasm32; no
# network. A WASI "reactor" (no main): the host calls its _initialize once per instance.
# Output: ../audit-c.wasm (or the path given).
set -eu
cd "$(dirname "$0")"
CC=${CC:-clang}
"$CC" --target=wasm32-wasi -O2 -mexec-model=reactor -Wall -Wextra -Werror \
  -Wl,--strip-all -o "${1:-../audit-c.wasm}" src/audit.c
