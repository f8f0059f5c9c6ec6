#!/usr/bin/env sh
# Builds audit-wasip1.wasm, a Rust `std` plugin for WASI preview 1, with Debian's Rust
# toolchain (rustc, cargo, libstd-rust-dev-wasm32) and the serde crates from
# /usr/share/cargo/registry; no network. Debian's rustc 1.63 names the preview 1 target
# `wasm32-wasi` (rustc 1.78+ calls it `wasm32-wasip1`; set TARGET=wasm32-wasip1 with such a
# toolchain). Output: ../audit-wasip1.wasm (or the path given).
set -eu
cd "$(dirname "$0")"
CARGO=${CARGO:-/usr/bin/cargo}
RUSTC=${RUSTC:-/usr/bin/rustc}
TARGET=${TARGET:-wasm32-wasi}
export RUSTC
# The Rust plugin's target directory: same dependencies and profile, so serde is built once.
TARGET_DIR=${CARGO_TARGET_DIR:-../audit/target}
"$CARGO" build --quiet --offline --release --target "$TARGET" --target-dir "$TARGET_DIR"
cp "$TARGET_DIR/$TARGET/release/arcana_audit_wasip1.wasm" "${1:-../audit-wasip1.wasm}"
