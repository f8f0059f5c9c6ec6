#!/usr/bin/env bash
# System packages the test suite uses beyond Python: nginx (the cluster suite's load
# balancer), Debian's Rust toolchain for wasm32-wasi, clang + wasi-libc (C plugin) and npm
# packages (the example plugins are rebuilt from source by the tests), Chromium (admin console
# browser tests), PgBouncer (transaction-mode pooling tests), promtool (alert rules check) and
# h2load (gRPC benchmark load generator), wrk (HTTP benchmarks). Installs what is missing when run as root; otherwise it
# says what to install. Idempotent and quiet when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_missing=()
[ -x /usr/sbin/nginx ] || apt_missing+=(nginx-light)
if ! { [ -x /usr/bin/cargo ] && [ -d /usr/lib/rustlib/wasm32-wasi ] \
       && ls -d /usr/share/cargo/registry/serde_json-* >/dev/null 2>&1 \
       && ls -d /usr/share/cargo/registry/serde_derive-* >/dev/null 2>&1; }; then
  apt_missing+=(rustc cargo libstd-rust-dev-wasm32 librust-serde-json-dev librust-serde-derive-dev)
fi
[ -x /usr/bin/clang ] && [ -x /usr/bin/wasm-ld ] || apt_missing+=(clang lld)
[ -d /usr/lib/wasm32-wasi ] || [ -d /usr/share/wasi-sysroot ] || apt_missing+=(wasi-libc)
ls /usr/lib/llvm-14/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1 \
  || apt_missing+=(libclang-rt-14-dev-wasm32)
[ -x /usr/bin/chromium ] || apt_missing+=(chromium fonts-liberation)
[ -x /usr/sbin/pgbouncer ] || apt_missing+=(pgbouncer)
[ -x /usr/bin/promtool ] || apt_missing+=(prometheus)
[ -x /usr/bin/h2load ] || apt_missing+=(nghttp2-client)
[ -x /usr/bin/wrk ] || apt_missing+=(wrk)
if ((${#apt_missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing system packages: ${apt_missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null
  else
    echo "missing system packages (install them, e.g. with sudo apt-get install): ${apt_missing[*]}" >&2
  fi
fi
if [ ! -x plugins/audit-as/node_modules/.bin/asc ] && command -v npm >/dev/null; then
  echo "installing the AssemblyScript toolchain (npm ci)"
  (cd plugins/audit-as && npm ci --no-audit --no-fund --silent)
fi
