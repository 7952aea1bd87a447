#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# One GPU run of models/train/emotion.py inside a fixed wall-time budget:
#   stage 1: N_TEACHERS teachers (default 2; widths TEACHER_WIDTHS, default 64,128,256,512; seeds 1..N),
#            concurrently, each --budget 0.28 x TOTAL;
#   stage 2: the STUDENTS distilled from the teachers that exist (default "24,48,96,192 16,32,64,128": student24,
#            the committed net's shape, and student16; each is named student<first width>), concurrently, each
#            --budget 0.5 x TOTAL (less if stage 1 ran late).
# --epochs is only a cap (300 for both stages): --budget picks the number of epochs. N_TEACHERS=0 skips stage 1
# (its share of TOTAL then goes unused) and the students train without distillation.
# --budget counts each process's whole wall time (start-up and the timed warm-up included), so the stages take
# about 0.78 x TOTAL plus process start/stop; every process is also killed at a hard limit (students: 0.97 x TOTAL
# after this script started). Checkpoints are written atomically after every improving epoch, so a killed or
# crashed process still leaves its best checkpoint; no single failure stops the script.
#
# Usage: bash models/train/gpu_train.sh CACHE_DIR OUT_DIR TOTAL_SECONDS
#   CACHE_DIR holds fer2013_48.npz (see emotion.py); OUT_DIR receives NAME_best.pt, NAME_last.pt,
#   NAME_history.json, NAME_train.log, NAME_console.log (stdout+stderr) for NAME in teacher1..teacherN and the
#   students, plus gpu_train.log and logs.tar.gz (all *.log and *_history.json). No ONNX export here: do it
#   afterwards on any CPU machine with emotion.py --export OUT_DIR/student<first width>_best.pt.
# Environment: DATA (FER2013 folder with manifest.csv: builds CACHE_DIR/fer2013_48.npz first when it is missing,
#   ~5 s), DEVICE (cuda), PYTHON (python3), EXTRA (extra emotion.py arguments appended to every call, e.g.
#   "--subset 1000 --threads 1" for a CPU smoke test), TEACHER_PCT (28), STUDENT_PCT (50), TEACHER_MIN_ACC (0.6:
#   teachers below that validation accuracy are not used), N_TEACHERS (2), TEACHER_WIDTHS (64,128,256,512),
#   STUDENTS (space-separated width lists, "24,48,96,192 16,32,64,128").
# Exit status 0 when at least one student checkpoint exists.

set -u

if [ $# -ne 3 ]; then
    echo "usage: bash $0 CACHE_DIR OUT_DIR TOTAL_SECONDS" >&2
    exit 2
fi
CACHE=$1
OUT=$2
TOTAL=$3
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
EXTRA=${EXTRA:-}
TEACHER_PCT=${TEACHER_PCT:-28}
STUDENT_PCT=${STUDENT_PCT:-50}
TEACHER_MIN_ACC=${TEACHER_MIN_ACC:-0.6}
N_TEACHERS=${N_TEACHERS:-2}
TEACHER_WIDTHS=${TEACHER_WIDTHS:-64,128,256,512}
STUDENTS=${STUDENTS:-24,48,96,192 16,32,64,128}
SCRIPT="$(cd "$(dirname "$0")" && pwd)/emotion.py"
export PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in the checkout
T0=$(date +%s)

case $TOTAL in
    '' | *[!0-9]*) echo "TOTAL_SECONDS must be a whole number of seconds, got '$TOTAL'" >&2; exit 2 ;;
esac
case $N_TEACHERS in
    '' | *[!0-9]*) echo "N_TEACHERS must be a whole number, got '$N_TEACHERS'" >&2; exit 2 ;;
esac
TNAMES=()
for i in $(seq 1 "$N_TEACHERS"); do TNAMES+=("teacher$i"); done
WIDTHS_RE='^[1-9][0-9]*(,[1-9][0-9]*){3}$'
[[ $TEACHER_WIDTHS =~ $WIDTHS_RE ]] || { echo "TEACHER_WIDTHS: '$TEACHER_WIDTHS' is not four widths a,b,c,d" >&2; exit 2; }
SNAMES=()
SWIDTHS=()
for w in $STUDENTS; do
    [[ $w =~ $WIDTHS_RE ]] || { echo "STUDENTS: '$w' is not four widths a,b,c,d" >&2; exit 2; }
    for n in ${SNAMES[@]+"${SNAMES[@]}"}; do
        [ "$n" = "student${w%%,*}" ] && { echo "STUDENTS: two students named student${w%%,*}" >&2; exit 2; }
    done
    SNAMES+=("student${w%%,*}")
    SWIDTHS+=("$w")
done
[ ${#SNAMES[@]} -gt 0 ] || { echo "STUDENTS is empty" >&2; exit 2; }
mkdir -p "$OUT" || exit 2
LOG="$OUT/gpu_train.log"

say() {
    local s
    s="[$(date +%H:%M:%S) +$(($(date +%s) - T0))s] $*"
    echo "$s"
    echo "$s" >>"$LOG"
}

say "gpu_train: cache=$CACHE out=$OUT total=${TOTAL}s device=$DEVICE python=$PY extra='$EXTRA'"

# ---- preflight (seconds)
if ! PRE=$($PY -c "import sys, torch; print('torch', torch.__version__, 'python', sys.version.split()[0], end=' '); \
ok = '$DEVICE' != 'cuda' or torch.cuda.is_available(); \
print('cuda', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'); sys.exit(0 if ok else 1)" 2>&1); then
    say "FATAL: python/torch check failed (DEVICE=$DEVICE): $PRE"
    exit 1
fi
say "preflight: $PRE"
if ! $PY -c "import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])" "$SCRIPT"; then
    say "FATAL: $SCRIPT does not compile"
    exit 1
fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>&1 | tee -a "$LOG"

# ---- stage 0: the uint8 cache, decoded from the FER2013 JPEGs (DATA = folder with manifest.csv) if missing
if [ ! -s "$CACHE/fer2013_48.npz" ]; then
    if [ -n "${DATA:-}" ] && [ -s "$DATA/manifest.csv" ]; then
        say "stage 0: building $CACHE/fer2013_48.npz from $DATA"
        $PY -c "import sys; sys.path.insert(0, sys.argv[1]); import emotion; \
x, y, s = emotion.load_cache(sys.argv[2], sys.argv[3]); print('cache', x.shape, 'train', (s == 0).sum(), 'val', (s == 1).sum())" \
            "$(dirname "$SCRIPT")" "$DATA" "$CACHE" 2>&1 | tee -a "$LOG"
    fi
    if [ ! -s "$CACHE/fer2013_48.npz" ]; then
        say "FATAL: $CACHE/fer2013_48.npz missing (set DATA=FER2013 folder with manifest.csv to build it)"
        exit 1
    fi
fi

# stale results of an earlier run in the same OUT_DIR must not be mistaken for this run's (logs are appended to)
# (any teacherN / studentN results, also those of an earlier run with other N_TEACHERS or STUDENTS)
rm -f "$OUT"/teacher[0-9]*_*.pt "$OUT"/teacher[0-9]*_*.pt.tmp "$OUT"/teacher[0-9]*_history.json \
    "$OUT"/student[0-9]*_*.pt "$OUT"/student[0-9]*_*.pt.tmp "$OUT"/student[0-9]*_history.json

HAVE_TIMEOUT=1
if ! command -v timeout >/dev/null 2>&1; then
    HAVE_TIMEOUT=0
    say "warning: no 'timeout' command: processes only stop themselves (--budget)"
fi

COMMON=(--device "$DEVICE" --cache "$CACHE" --out "$OUT" --batch 256 --lr 0.2 --erase 0.25 --dropout 0.3
    --no-export)

# launch NAME BUDGET KILL_AFTER ARGS...: background process; sets LAST_PID
launch() {
    local name=$1 budget=$2 kill=$3
    shift 3
    say "start $name: budget ${budget}s, hard kill after ${kill}s: emotion.py --name $name --budget $budget $* $EXTRA"
    # shellcheck disable=SC2086  # EXTRA is split into words on purpose
    local -a pre=()
    [ $HAVE_TIMEOUT = 1 ] && pre=(timeout -k 10 "$kill")
    ${pre[@]+"${pre[@]}"} $PY "$SCRIPT" "${COMMON[@]}" --name "$name" --budget "$budget" "$@" $EXTRA \
        >"$OUT/${name}_console.log" 2>&1 &
    LAST_PID=$!
}

# wait_all NAME PID NAME PID ...: progress line every ~20 s, then each one's exit status and last lines
wait_all() {
    local -a names=() pids=()
    while [ $# -gt 0 ]; do
        names+=("$1")
        pids+=("$2")
        shift 2
    done
    local tick=0 running i
    while :; do
        running=0
        for i in "${!pids[@]}"; do
            kill -0 "${pids[$i]}" 2>/dev/null && running=1
        done
        [ $running = 0 ] && break
        sleep 2
        tick=$((tick + 2))
        if [ $((tick % 20)) = 0 ]; then
            for i in "${!names[@]}"; do
                local last
                last=$(grep -E '^(epoch|budget|teacher)' "$OUT/${names[$i]}_train.log" 2>/dev/null | tail -n 1)
                say "  ${names[$i]}: ${last:-(starting)}"
            done
        fi
    done
    for i in "${!pids[@]}"; do
        local rc=0
        wait "${pids[$i]}" || rc=$?
        local what="ok"
        { [ $rc = 124 ] || [ $rc = 137 ]; } && what="KILLED at its hard limit"
        [ $rc != 0 ] && [ $rc != 124 ] && [ $rc != 137 ] && what="FAILED"
        say "${names[$i]} exited $rc ($what); best checkpoint: $([ -s "$OUT/${names[$i]}_best.pt" ] && echo yes || echo NO)"
        tail -n 4 "$OUT/${names[$i]}_console.log" 2>/dev/null | sed "s/^/    ${names[$i]}| /" | tee -a "$LOG"
    done
}

# ---- stage 1: teachers
TB=$((TOTAL * TEACHER_PCT / 100))
TK=$((TB * 3 / 2 + 20))
WAIT=()
if [ "$N_TEACHERS" -gt 0 ]; then
    say "stage 1: $N_TEACHERS teachers ($TEACHER_WIDTHS), budget ${TB}s each, concurrently"
    for i in "${!TNAMES[@]}"; do
        launch "${TNAMES[$i]}" "$TB" "$TK" --widths "$TEACHER_WIDTHS" --seed $((i + 1)) --epochs 300
        WAIT+=("${TNAMES[$i]}" "$LAST_PID")
    done
    wait_all "${WAIT[@]}"
fi

# ---- stage 2: students
TEACHERS=""
for n in ${TNAMES[@]+"${TNAMES[@]}"}; do
    if [ -s "$OUT/${n}_best.pt" ]; then
        TEACHERS="${TEACHERS:+$TEACHERS,}$OUT/${n}_best.pt"
    fi
done
KD=()
if [ -n "$TEACHERS" ]; then
    KD=(--teacher "$TEACHERS" --teacher-min-acc "$TEACHER_MIN_ACC")
    say "stage 2: students distilled from $TEACHERS (teachers under val $TEACHER_MIN_ACC are skipped by emotion.py)"
else
    say "stage 2: no teacher checkpoint: students train WITHOUT distillation"
fi
ELAPSED=$(($(date +%s) - T0))
SB=$((TOTAL * STUDENT_PCT / 100))
LEFT=$((TOTAL * 90 / 100 - ELAPSED - 5)) # keep 10 % of TOTAL unused
[ $LEFT -lt $SB ] && SB=$LEFT
[ $SB -lt 10 ] && SB=10
SK=$((TOTAL * 97 / 100 - ELAPSED))
[ $SK -lt $((SB + 10)) ] && SK=$((SB + 10))
say "stage 2: students, budget ${SB}s each (${ELAPSED}s elapsed), concurrently"
WAIT=()
for i in "${!SNAMES[@]}"; do
    launch "${SNAMES[$i]}" "$SB" "$SK" --widths "${SWIDTHS[$i]}" --seed 0 --epochs 300 ${KD[@]+"${KD[@]}"}
    WAIT+=("${SNAMES[$i]}" "$LAST_PID")
done
wait_all "${WAIT[@]}"

# ---- summary
$PY - "$OUT" ${TNAMES[@]+"${TNAMES[@]}"} "${SNAMES[@]}" <<'EOF' 2>&1 | tee -a "$LOG"
import json, os, sys
out = sys.argv[1]
for n in sys.argv[2:]:
    p = os.path.join(out, f"{n}_history.json")
    try:
        h = json.load(open(p))
        b, hs, bud = h["best"], h["history"], h.get("budget") or {}
        print(f"summary {n}: best val {b['val_acc']:.4f} at epoch {b['epoch']} ({b['which']}) of {len(hs)} run "
              f"(planned {bud.get('epochs', '?')}, est {bud.get('est_epoch_s', 0):.2f} s/epoch), "
              f"last epoch val {hs[-1]['val_acc']:.4f} ema {hs[-1].get('ema_val_acc', float('nan')):.4f}, "
              f"teachers {h.get('teachers', 0)}, stopped early {h.get('stopped_after')}")
    except Exception as e:
        print(f"summary {n}: no history ({type(e).__name__}: {e})")
EOF
(cd "$OUT" && tar -czf logs.tar.gz -- *.log *_history.json 2>/dev/null)
ls -l "$OUT" | tee -a "$LOG"
say "done in $(($(date +%s) - T0))s of ${TOTAL}s"
for n in "${SNAMES[@]}"; do
    [ -s "$OUT/${n}_best.pt" ] && exit 0
done
say "no student checkpoint"
exit 1
