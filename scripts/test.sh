#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# Sets everything up (scripts/setup.sh --no-build) and runs the whole test suite, as CI does:
#   1. cargo fmt --check
#   2. cargo clippy --all-targets -- -D warnings
#   3. cargo build (the plugin library, the main command and the evaluation command)
#   4. gst-inspect-1.0 faceanalyze on the built plugin library, through GST_PLUGIN_PATH
#   5. G_DEBUG=fatal_warnings cargo test
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

bash scripts/setup.sh --no-build

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

step "cargo build"
cargo build --locked

step "gst-inspect-1.0 faceanalyze (plugin loaded from target/debug through GST_PLUGIN_PATH)"
inspect="$(mktemp)"
trap 'rm -f "$inspect"' EXIT
# No ONNX Runtime is needed to load the plugin and document it.
GST_PLUGIN_PATH="$repo/target/debug" FACEANALYZE_ONNXRUNTIME=/nonexistent/libonnxruntime.so \
    gst-inspect-1.0 faceanalyze > "$inspect"
grep -q "Filter/Analyzer/Video" "$inspect"
grep -q "execution-provider" "$inspect"
grep -q "label-format" "$inspect"
echo "gst-inspect-1.0 faceanalyze: $(grep -c '^  [a-z-]* *:' "$inspect") properties documented"

step "G_DEBUG=fatal_warnings cargo test"
G_DEBUG=fatal_warnings cargo test --locked --no-fail-fast -- --test-threads=2
