#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# One-stop set-up for building and running the faceanalyze element (Debian 12 / Ubuntu 22.04+).
# Idempotent: each step checks first and does nothing when its result is already there, so a second run takes
# a few seconds.
#
#   scripts/setup.sh [--no-build]
#
#   1. apt packages (GStreamer dev + plugins, pkg-config, python3, pip), installed only when missing;
#      checks that a Rust toolchain (cargo) exists.
#   2. ONNX Runtime 1.31.1 (CPU) shared library from the PyPI wheel into .deps/onnxruntime/lib/.
#   3. the ONNX models: python3 models/fetch.py --dest models/onnx, with FACEANALYZE_MODEL_MIRROR defaulting to
#      ../shared/models when that folder exists.
#   4. cargo build --release --locked (skipped with --no-build).
#
# Afterwards `source scripts/env.sh` exports GST_PLUGIN_PATH and FACEANALYZE_ONNXRUNTIME for gst-launch-1.0.
set -euo pipefail

ORT_VERSION=1.31.1
APT_PACKAGES=(
    libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
    gstreamer1.0-plugins-ugly gstreamer1.0-libav pkg-config python3 python3-pip build-essential
)

usage() {
    sed -n '4,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

build=1
for arg in "$@"; do
    case "$arg" in
        --no-build) build=0 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "setup.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

summary=()
note() { summary+=("$1"); }
die() { echo "setup.sh: error: $*" >&2; exit 1; }
step() { printf '==> %s\n' "$*"; }

# ----------------------------------------------------------------------------------------------- 1. packages
step "system packages"
if command -v dpkg-query >/dev/null 2>&1; then
    missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
        [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        sudo_cmd=()
        if [[ "$(id -u)" -ne 0 ]]; then
            command -v sudo >/dev/null 2>&1 || die "need root or sudo to install: ${missing[*]}"
            sudo_cmd=(sudo)
        fi
        echo "installing: ${missing[*]}"
        "${sudo_cmd[@]}" apt-get update
        "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
        note "apt: installed ${missing[*]}"
    else
        note "apt: all ${#APT_PACKAGES[@]} packages already installed"
    fi
else
    echo "dpkg-query not found (not a Debian-like system): install the equivalents of ${APT_PACKAGES[*]} yourself" >&2
    note "apt: skipped (no dpkg-query)"
fi

command -v python3 >/dev/null 2>&1 || die "python3 is required (for the ONNX Runtime wheel and models/fetch.py)"

if command -v cargo >/dev/null 2>&1; then
    note "rust: $(cargo --version)"
    for tool in fmt clippy; do
        if ! cargo "$tool" --version >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1; then
            rustup component add "$( [ "$tool" = fmt ] && echo rustfmt || echo clippy )" >/dev/null 2>&1 \
                || echo "warning: cargo $tool is missing (rustup component add rustfmt clippy)" >&2
        fi
    done
else
    msg="no Rust toolchain (cargo) found: install one with rustup (https://rustup.rs), Rust >= 1.92"
    if ((build)); then die "$msg"; fi
    echo "warning: $msg" >&2
    note "rust: MISSING (build skipped anyway)"
fi

# ------------------------------------------------------------------------------------------ 2. ONNX Runtime
step "ONNX Runtime $ORT_VERSION"
ort_dir="$repo/.deps/onnxruntime/lib"
ort_lib="$ort_dir/libonnxruntime.so.$ORT_VERSION"
if [[ -f "$ort_lib" ]]; then
    note "onnxruntime: $ort_lib already present"
else
    case "$(uname -m)" in
        x86_64 | amd64) plat=manylinux_2_28_x86_64 ;;
        aarch64 | arm64) plat=manylinux_2_28_aarch64 ;;
        *) die "no onnxruntime $ORT_VERSION wheel for machine $(uname -m); set FACEANALYZE_ONNXRUNTIME to your own build" ;;
    esac
    tmp="$work/ort"
    echo "downloading onnxruntime==$ORT_VERSION ($plat) from PyPI"
    python3 -m pip download --no-deps --disable-pip-version-check --no-cache-dir --only-binary=:all: \
        --python-version 3.11 --implementation cp --abi cp311 --platform "$plat" \
        --dest "$tmp" "onnxruntime==$ORT_VERSION" \
        || die "pip download onnxruntime==$ORT_VERSION failed (no network? put libonnxruntime.so.$ORT_VERSION in $ort_dir by hand)"
    whl=("$tmp"/onnxruntime-"$ORT_VERSION"-*.whl)
    [[ -f "${whl[0]}" ]] || die "pip download produced no onnxruntime wheel in $tmp"
    mkdir -p "$ort_dir"
    # Extract onnxruntime/capi/libonnxruntime* next to a temporary name, then rename (python3 is always here;
    # unzip may not be).
    python3 - "${whl[0]}" "$ort_dir" <<'PY'
import os, shutil, sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as zf:
    names = [n for n in zf.namelist() if n.startswith("onnxruntime/capi/libonnxruntime")]
    if not names:
        sys.exit(f"{whl} has no onnxruntime/capi/libonnxruntime*")
    for n in names:
        dst = os.path.join(out, os.path.basename(n))
        tmp = dst + ".part"
        with zf.open(n) as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        os.chmod(tmp, 0o755)
        os.replace(tmp, dst)
        print("  extracted", os.path.basename(n))
PY
    [[ -f "$ort_lib" ]] || die "the wheel did not contain libonnxruntime.so.$ORT_VERSION"
    note "onnxruntime: extracted $(basename "${whl[0]}") into ${ort_dir#"$repo"/}"
fi
if [[ "$(readlink "$ort_dir/libonnxruntime.so" 2>/dev/null || true)" != "libonnxruntime.so.$ORT_VERSION" ]]; then
    ln -sfn "libonnxruntime.so.$ORT_VERSION" "$ort_dir/libonnxruntime.so"
    note "onnxruntime: symlinked libonnxruntime.so -> libonnxruntime.so.$ORT_VERSION"
fi

# ------------------------------------------------------------------------------------------------- 3. models
step "models"
if [[ -z "${FACEANALYZE_MODEL_MIRROR:-}" && -d "$repo/../shared/models" ]]; then
    FACEANALYZE_MODEL_MIRROR="$(cd "$repo/../shared/models" && pwd)"
    export FACEANALYZE_MODEL_MIRROR
fi
echo "mirror: ${FACEANALYZE_MODEL_MIRROR:-(none, upstream sources)}"
fetch_log="$work/fetch.log"
python3 "$repo/models/fetch.py" --dest "$repo/models/onnx" 2>&1 | tee "$fetch_log" \
    || die "models/fetch.py failed (see above)"
n_ok="$(grep -c '^ok ' "$fetch_log" || true)"
n_new="$(grep -c '^ok .*(from' "$fetch_log" || true)"
if ((n_new == 0)); then
    note "models: all $n_ok already in models/onnx (verified)"
else
    note "models: $n_new fetched, $((n_ok - n_new)) already there, in models/onnx"
fi

# -------------------------------------------------------------------------------------------------- 4. build
if ((build)); then
    step "cargo build --release --locked"
    cargo build --release --locked
    note "build: cargo build --release --locked ok (target/release/libgstfaceanalyze.so)"
else
    note "build: skipped (--no-build)"
fi

echo
echo "setup.sh done:"
printf '  %s\n' "${summary[@]}"
echo "  next: source scripts/env.sh && gst-inspect-1.0 faceanalyze"
