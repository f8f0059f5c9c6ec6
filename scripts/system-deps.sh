#!/usr/bin/env bash
# System packages the test suite uses beyond Python: nginx (the cluster suite's load
# balancer), Debian's Rust toolchain for wasm32-wasi and npm packages (the example plugins are
# rebuilt from source by the tests). Installs what is missing when run as root; otherwise it
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
