# SPDX-License-Identifier: MIT OR Apache-2.0
# shellcheck shell=bash
#
# Source this (bash or zsh; from POSIX sh only in the repository root) to use the locally built element from gst-launch-1.0 / gst-inspect-1.0:
#
#   source scripts/env.sh
#   gst-inspect-1.0 faceanalyze
#
# Exports GST_PLUGIN_PATH (target/release prepended) and FACEANALYZE_ONNXRUNTIME (the library that
# scripts/setup.sh put in .deps/onnxruntime/lib). The element finds both on its own when run from this checkout;
# this is for shells and gst-launch users.

if [ -n "${BASH_SOURCE:-}" ]; then
    _faceanalyze_src="${BASH_SOURCE[0]}"
elif [ -n "${ZSH_VERSION:-}" ]; then
    eval '_faceanalyze_src="${(%):-%x}"'
else
    # POSIX sh cannot tell a sourced file its path: use $0 if it is this file, else ./scripts/env.sh.
    case "$0" in
        *env.sh) _faceanalyze_src="$0" ;;
        *) _faceanalyze_src="$PWD/scripts/env.sh" ;;
    esac
fi
_faceanalyze_repo="$(cd "$(dirname "$_faceanalyze_src")/.." && pwd)"

case ":${GST_PLUGIN_PATH:-}:" in
    *":$_faceanalyze_repo/target/release:"*) ;;
    *) GST_PLUGIN_PATH="$_faceanalyze_repo/target/release${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}" ;;
esac
export GST_PLUGIN_PATH
export FACEANALYZE_ONNXRUNTIME="$_faceanalyze_repo/.deps/onnxruntime/lib/libonnxruntime.so.1.31.1"

if [ ! -f "$FACEANALYZE_ONNXRUNTIME" ]; then
    echo "env.sh: $FACEANALYZE_ONNXRUNTIME is missing; run scripts/setup.sh" >&2
fi
if [ ! -f "$_faceanalyze_repo/target/release/libgstfaceanalyze.so" ]; then
    echo "env.sh: target/release/libgstfaceanalyze.so is not built yet; run scripts/setup.sh or cargo build --release" >&2
fi
unset _faceanalyze_src _faceanalyze_repo
