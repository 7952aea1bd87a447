#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# The device-machine side of scripts/gpu/pack.sh. Run from the repository root on the GPU machine; one device
# call per piece, the machine kept warm between them (state lives in $STAGE):
#
#   call 1:  bash scripts/gpu/run.sh stage .gpu/p0 && bash scripts/gpu/run.sh train SECONDS; bash scripts/gpu/run.sh probe
#   call 2:  bash scripts/gpu/run.sh stage .gpu/p1
#   call 3:  bash scripts/gpu/run.sh stage .gpu/p2 && bash scripts/gpu/run.sh bench
#
# `train` starts models/train/gpu_train.sh in the background (its own session, pinned to the last 4 cores) so
# the transfer of the next piece overlaps it. `bench` runs examples/bench_streams on street_1080p.mp4 (I420,
# the decoder's format) through CPU (the other 12 cores) while training runs, then waits for training, copies
# its results to $OUT, and runs the CUDA and TensorRT cases with the GPU to itself, sampling GPU memory.
set -uo pipefail
STAGE=${STAGE:-/tmp/faceanalyze-stage}
OUT=${OUT:-$STAGE/out}
mkdir -p "$STAGE" "$OUT"
say() { echo "[$(date +%T)] $*"; }

# extract NAME: cut file NAME out of the staged pieces (manifest: name offset size sha256) into $STAGE/NAME
extract() {
    local name=$1 off size sum
    read -r _ off size sum < <(grep "^$name " "$STAGE/manifest.txt") || { say "no $name in manifest"; return 1; }
    cat "$STAGE"/piece.* | tail -c +$((off + 1)) | head -c "$size" >"$STAGE/$name"
    echo "$sum  $STAGE/$name" | sha256sum -c --quiet - || { say "$name: sha256 mismatch (pieces missing?)"; return 1; }
}

# unzst IN OUT: the zstd command where there is one, else Python (zstandard, or pyarrow's codec)
unzst() {
    if command -v zstd >/dev/null; then zstd -q -d -f "$1" -o "$2"; return; fi
    python3 - "$1" "$2" <<'PY'
import sys
src, dst = sys.argv[1], sys.argv[2]
try:
    import zstandard
    with open(src, "rb") as i, open(dst, "wb") as o:
        zstandard.ZstdDecompressor().copy_stream(i, o)
except ImportError:
    import pyarrow as pa
    with pa.CompressedInputStream(pa.OSFile(src), "zstd") as i, open(dst, "wb") as o:
        while b := i.read(1 << 24):
            o.write(b)
PY
}

cuda_lib_path() {
    [ -s "$STAGE/cuda_lib_path" ] && { cat "$STAGE/cuda_lib_path"; return; }
    find / -xdev \( -path /proc -o -path /sys -o -path "$STAGE" \) -prune -o \
        \( -name 'libcudart.so.13*' -o -name 'libcublasLt.so.13*' -o -name 'libcudnn.so.9*' -o -name 'libcufft.so.12*' \
        -o -name 'libcurand.so.10*' -o -name 'libnvrtc.so.13*' \) -print 2>/dev/null | xargs -r -n1 dirname | sort -u |
        paste -sd: | tee "$STAGE/cuda_lib_path"
}

case "${1:-}" in
stage)
    n=$(basename "$2")
    cp "$2/piece" "$STAGE/piece.${n#p}" && cp "$2/manifest.txt" "$STAGE/"
    say "staged $n: $(du -sh "$STAGE" | cut -f1) in $STAGE"
    ;;
probe)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'
    say "CUDA libraries: $(cuda_lib_path)"
    nproc; free -g | head -2; cat /etc/os-release | head -2
    ;;
train)
    secs=${2:-300}
    extract fer.tar.xz || exit 1
    mkdir -p "$STAGE/cache" "$STAGE/train" "$STAGE/src" "$STAGE/data"
    tar -C "$STAGE/data" -xJf "$STAGE/fer.tar.xz" && rm -f "$STAGE/fer.tar.xz"
    cp -r models/train "$STAGE/src/"
    # gpu_train.sh builds the uint8 cache from the JPEGs first (DATA), then trains
    pin=(); [ "$(nproc)" -ge 16 ] && pin=(taskset -c 12-15)
    cd "$STAGE/src" && DATA="$STAGE/data/fer2013" setsid nohup ${pin[@]+"${pin[@]}"} bash train/gpu_train.sh \
        "$STAGE/cache" "$STAGE/train" "$secs" >"$STAGE/train.log" 2>&1 </dev/null &
    touch "$STAGE/train.started" # (setsid forks: the script is found by name, not by this PID)
    sleep 20
    say "training started (budget ${secs} s):"
    tail -5 "$STAGE/train.log"
    ;;
bench)
    extract cuda.zst && extract rest.tar.zst || exit 1
    mkdir -p "$STAGE/rest" && unzst "$STAGE/rest.tar.zst" "$STAGE/rest.tar" && tar -C "$STAGE/rest" -xf "$STAGE/rest.tar"
    unzst "$STAGE/cuda.zst" "$STAGE/rest/ort/libonnxruntime_providers_cuda.so"
    cp models/int8/*.onnx models/train/emotion_kd24.onnx "$STAGE/rest/models/"
    R=$STAGE/rest
    export LD_LIBRARY_PATH="$R/gst/lib:$R/ort:$(cuda_lib_path)"
    export GST_PLUGIN_SYSTEM_PATH_1_0="$R/gst/plugins" GST_PLUGIN_SYSTEM_PATH="$R/gst/plugins" GST_PLUGIN_PATH_1_0= \
        GST_PLUGIN_PATH= GST_REGISTRY_1_0="$STAGE/registry.bin" GST_REGISTRY_FORK=no
    export FACEANALYZE_ONNXRUNTIME="$R/ort/libonnxruntime.so.1.31.1" FACEANALYZE_MODEL_DIR="$R/models"
    say "ldd of the CUDA provider (missing libraries):"
    ldd "$R/ort/libonnxruntime_providers_cuda.so" | grep -i "not found" || echo "  none"
    V=$R/videos/street_1080p.mp4
    bench() { # label cpus args...   (FRAMES, ONLY=regex of labels: for a rehearsal on a small machine)
        local label=$1 cpus=$2; shift 2
        [[ $label =~ ${ONLY:-.} ]] || return 0
        [ "$(nproc)" -ge 16 ] || cpus=0-$(($(nproc) - 1))
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$STAGE/mem.$label" 2>/dev/null &
        local mp=$!
        say "== $label (cores $cpus): bench_streams $*"
        timeout "${CASE_TIMEOUT:-120}" taskset -c "$cpus" "$R/bin/bench_streams" "$V" --format I420 --frames "${FRAMES:-105}" --warmup "${WARMUP:-10}" "$@" 2>&1 |
            grep -v "^$" | tail -8
        kill $mp 2>/dev/null; wait $mp 2>/dev/null
        say "   GPU memory used, max over the run: $(sort -n "$STAGE/mem.$label" | tail -1) MiB (idle $(head -1 "$STAGE/mem.$label") MiB)"
    }
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
    # CPU, while training has the GPU and cores 12-15
    bench cpu-1 0-11 --streams 1 --threads 0 --set execution-provider=cpu
    bench cpu-16 0-11 --streams 16 --threads 1 --shared-only --set execution-provider=cpu
    bench cpu-1-float 0-11 --streams 1 --threads 0 --set execution-provider=cpu --set age-model=hse --set emotion-model=own
    # training must end before the GPU cases
    if [ -f "$STAGE/train.started" ]; then
        while pgrep -f train/gpu_train.sh >/dev/null; do sleep 5; done
        say "training finished:"; tail -25 "$STAGE/train.log"
        cp "$STAGE/train.log" "$OUT/gpu_train.log"
        (cd "$STAGE/train" && tar -cf - ./student*_best.pt ./*.log ./*_history.json 2>/dev/null) | gzip >"$OUT/train_results.tar.gz"
        # the teachers too, for later CPU sessions to distil from: fp16 weights (a 64-wide teacher 9.6 MB instead
        # of 19), one file each. The device tool brings back at most 8 files of 16 MiB, 64 MiB in all: what is
        # already in $OUT counts, a copy is written in $STAGE first and moved only when it fits.
        "${PYTHON:-python3}" - "$STAGE/train" "$OUT" "$STAGE" <<'PY' || say "teacher checkpoints: not copied"
import glob, os, re, sys, torch
src, out, stage = sys.argv[1:]
files = [os.path.join(out, f) for f in os.listdir(out)]
room = (63 << 20) - sum(os.path.getsize(f) for f in files)
for f in files:
    if os.path.getsize(f) > 16 << 20:
        print(f"WARNING: {f} is over 16 MiB and will not come back")
teachers = sorted(glob.glob(os.path.join(src, "teacher*_best.pt")),
                  key=lambda p: int(re.sub(r"\D", "", os.path.basename(p)) or 0))
if not teachers:
    print("no teacher checkpoint to copy")
copied = 0
for p in teachers:
    name = os.path.basename(p)[: -len(".pt")] + ".fp16.pt"
    if copied == 4 or len(files) + copied >= 8:
        print(f"{name}: left out (at most 8 files come back)")
        continue
    try:
        ck = torch.load(p, map_location="cpu", weights_only=False)
        ck["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
        tmp = os.path.join(stage, name)
        torch.save(ck, tmp)
        size = os.path.getsize(tmp)
        if size > 15 << 20 or size > room:
            os.remove(tmp)
            print(f"{name}: {size >> 20} MiB does not fit what comes back; left out")
            continue
        os.replace(tmp, os.path.join(out, name))
    except Exception as e:  # one bad checkpoint must not cost the others
        print(f"{name}: not copied ({type(e).__name__}: {e})")
        continue
    room -= size
    copied += 1
    print(f"{name}: {size / 1e6:.1f} MB")
PY
    fi
    # most telling first (a 10-minute call may end before the last ones; CASE_TIMEOUT bounds each)
    bench tensorrt-strict 0-15 --streams 1 --threads 0 --set execution-provider=tensorrt --set strict-provider=true
    bench cuda-1 0-15 --streams 1 --threads 0 --set execution-provider=cuda --set strict-provider=true
    bench cuda-1-float 0-15 --streams 1 --threads 0 --set execution-provider=cuda --set strict-provider=true --set age-model=hse --set emotion-model=own
    bench cuda-16-float 0-15 --streams 16 --threads 1 --shared-only --set execution-provider=cuda --set strict-provider=true --set age-model=hse --set emotion-model=own
    bench cuda-16 0-15 --streams 16 --threads 1 --set execution-provider=cuda --set strict-provider=true
    bench cuda-16-every 0-15 --streams 16 --threads 1 --shared-only --set execution-provider=cuda --set strict-provider=true --set age-model=hse --set emotion-model=own --set reclassify-interval=1 --set smoothing=0
    bench auto-1 0-15 --streams 1 --threads 0 --set execution-provider=auto
    bench cpu-16-all 0-15 --streams 16 --threads 1 --shared-only --set execution-provider=cpu
    ;;
*)
    sed -n 3,14p "$0"
    exit 2
    ;;
esac
