#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# The speed figures of docs/PERFORMANCE.md in one run (after scripts/setup.sh): the element alone on decoded
# frames (BGRx and I420), decode + analyse pipelines with and without a full-frame videoconvert, the Python peer at
# the same settings, the main command end to end, and several streams on shared or separate engines.
# Run it on an otherwise idle machine; every figure is for this machine (it prints the CPU).
#
#   scripts/bench.sh [quick]      # quick: skips the peer and the stream counts above 4
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
source scripts/env.sh
videos="$repo/../shared/data/videos"
street="$videos/street_1080p.mp4"
quick="${1:-}"
cargo build --release --lib --bins --examples --quiet
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

echo "== element alone, street_1080p, BGRx then I420 (decoding not measured)"
for f in BGRx I420; do
    target/release/examples/bench_pipeline "$street" --format "$f"
done
echo "== element alone, street_1080p, I420, busy-wait=true (ONNX Runtime threads spin; see docs/PERFORMANCE.md)"
target/release/examples/bench_pipeline "$street" --format I420 --set busy-wait=true
echo "== element alone, stage_360p (640x360, the detector's native size), I420"
target/release/examples/bench_pipeline "$videos/stage_360p.mp4" --format I420

echo "== decode + analyse, every face every frame (peer settings), street_1080p: wall seconds"
every="draw=false reclassify-interval=1 smoothing=0 emotion-model=mini"
for age in dlib hse dlib-int8 hse-int8; do
    for conv in "videoconvert ! video/x-raw,format=BGRx !" ""; do
        start=$(date +%s.%N)
        gst-launch-1.0 -q filesrc location="$street" ! decodebin ! $conv faceanalyze $every age-model=$age ! fakesink
        end=$(date +%s.%N)
        echo "age-model=$age ${conv:-(decoder I420, no videoconvert)}: $(echo "$end - $start" | bc) s"
    done
done
if [ "$quick" != quick ]; then
    echo "== Python peer (OpenCV decode, onnxruntime, one face at a time), street_1080p: wall seconds"
    for age in dlib hse; do
        start=$(date +%s.%N)
        bash ../shared/peers/run_peer.sh "$street" --age-model "$age" > /dev/null
        end=$(date +%s.%N)
        echo "peer --age-model $age: $(echo "$end - $start" | bc) s"
    done
fi

echo "== main command (decode, analyse with the defaults, draw, encode), street_1080p"
mkdir -p out/bench
/usr/bin/time -f "wall %e s, peak RSS %M KB" target/release/faceanalyze "$street" -o out/bench/street.mp4 \
    --json out/bench/street.faces.jsonl 2>&1 | tail -3

echo "== streams, stage_360p, threads=1 per element"
streams=1,4,8
[ "$quick" = quick ] && streams=1,4
target/release/examples/bench_streams "$videos/stage_360p.mp4" --streams "$streams" --format I420
target/release/examples/bench_streams "$videos/stage_360p.mp4" --streams "$streams" --format I420 --shared-only \
    --set batch-timeout=0
