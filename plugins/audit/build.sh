#!/usr/bin/env sh
# Builds audit.wasm with Debian's Rust toolchain (rustc, cargo, libstd-rust-dev-wasm32) and the
# serde crates from /usr/share/cargo/registry; no network. Output: ../audit.wasm
set -eu
cd "$(dirname "$0")"
CARGO=${CARGO:-/usr/bin/cargo}
RUSTC=${RUSTC:-/usr/bin/rustc}
export RUSTC
TARGET_DIR=${CARGO_TARGET_DIR:-target}
"$CARGO" build --quiet --offline --release --target wasm32-wasi --target-dir "$TARGET_DIR"
cp "$TARGET_DIR/wasm32-wasi/release/arcana_audit_plugin.wasm" "${1:-../audit.wasm}"
