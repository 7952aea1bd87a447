#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# Packs what a GPU device machine needs for scripts/gpu/run.sh (the CUDA/CPU stream benchmark) and
# models/train/gpu_train.sh (emotion training) into pieces that fit one device call each (64 MiB per call,
# the repository's own ~17 MiB included), under .gpu/ (git-ignored through .git/info/exclude):
#
#   scripts/gpu/pack.sh [DATA_DIR]
#
# The device machine has CUDA 13, cuDNN 9 and PyTorch but no GStreamer and no ONNX Runtime GPU build, and
# nothing can be fetched there. So this carries:
#   - the FER2013 folder (research-only data: it travels, it is never committed), xz-compressed and first, so
#     training can start while the rest is still on its way;
#   - onnxruntime-gpu 1.31.1's libraries (CUDA 13 build, PyPI wheel), the CUDA provider pruned to sm_90
#     (scripts/gpu/prune_fatbin.py);
#   - this machine's GStreamer 1.22 libraries and the few plugins the benchmark needs (decodebin, qtdemux,
#     h264parse, openh264dec, videoconvert, app, core), glibc/libstdc++ excluded (the device's are newer);
#   - target/release/examples/bench_streams (cargo build --release --examples first), the float models, and
#     the shared videos.
# One stream (payload.bin) is cut into .gpu/pN/piece files; manifest.txt says where each file lies in it.
# .gpu/ is git-ignored, so each device call must name its piece in `carry` (e.g. carry [".gpu/p0"]); with the
# repository's ~17 MiB, a 46 MiB piece keeps a call under the 64 MiB it may carry.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
data=${1:-$repo/../shared/data}
piece_mib=${PIECE_MIB:-46}
out=$repo/.gpu
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
exclude=$(git -C "$repo" rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >>"$exclude"
rm -rf "$out" && mkdir -p "$out" "$work/rest"

echo "== FER2013"
tar -C "$data" -cf - fer2013 | xz -T0 -6 >"$work/fer.tar.xz"

echo "== onnxruntime-gpu 1.31.1"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 -d "$work/wheel" onnxruntime-gpu==1.31.1
(cd "$work/wheel" && unzip -q -o ./*.whl 'onnxruntime/capi/libonnxruntime*')
capi=$work/wheel/onnxruntime/capi
python3 "$repo/scripts/gpu/prune_fatbin.py" "$capi/libonnxruntime_providers_cuda.so" "$work/libonnxruntime_providers_cuda.so" 90
zstd -q -T0 -15 "$work/libonnxruntime_providers_cuda.so" -o "$work/cuda.zst"
mkdir -p "$work/rest/ort"
cp "$capi/libonnxruntime.so.1.31.1" "$capi/libonnxruntime_providers_shared.so" "$capi/libonnxruntime_providers_tensorrt.so" "$work/rest/ort/"

echo "== GStreamer 1.22 bundle"
plugdir=$(pkg-config --variable=pluginsdir gstreamer-1.0)
mkdir -p "$work/rest/gst/plugins" "$work/rest/gst/lib" "$work/rest/bin"
for p in coreelements app playback typefindfunctions isomp4 videoparsersbad openh264 videoconvertscale; do
    cp "$plugdir/libgst$p.so" "$work/rest/gst/plugins/"
done
cp "$repo/target/release/examples/bench_streams" "$work/rest/bin/"
for f in "$work"/rest/gst/plugins/*.so "$work/rest/bin/bench_streams"; do
    ldd "$f" | awk '$3 ~ /^\// {print $3}'
done | sort -u | grep -Ev '/(libc|libm|libpthread|libdl|librt|libresolv|ld-linux-x86-64|libstdc\+\+|libgcc_s)\.so' |
    while read -r lib; do cp -L "$lib" "$work/rest/gst/lib/"; done

echo "== models and videos"
mkdir -p "$work/rest/models" "$work/rest/videos"
for m in yunet_n_dynamic.onnx emotion_fer_mini_xception.onnx emotion_fer_big_xception.onnx age_gender_hse_faceres.onnx; do
    cp "$repo/models/onnx/$m" "$work/rest/models/"
done
cp "$data/videos/street_1080p.mp4" "$data/videos/stage_360p.mp4" "$work/rest/videos/"
tar -C "$work/rest" -cf - . | zstd -q -T0 -19 -o "$work/rest.tar.zst"

echo "== pieces of ${piece_mib} MiB"
: >"$out/manifest.txt"
off=0
for f in fer.tar.xz cuda.zst rest.tar.zst; do
    size=$(stat -c %s "$work/$f")
    echo "$f $off $size $(sha256sum "$work/$f" | cut -c1-64)" >>"$out/manifest.txt"
    off=$((off + size))
    cat "$work/$f" >>"$work/payload.bin"
done
split -b "${piece_mib}M" -d -a 1 "$work/payload.bin" "$work/piece."
for p in "$work"/piece.*; do
    n=${p##*.}
    mkdir -p "$out/p$n" && mv "$p" "$out/p$n/piece" && cp "$out/manifest.txt" "$out/p$n/"
done
cat "$out/manifest.txt"
du -sh "$out"/p*
