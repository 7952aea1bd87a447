#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Single-thread ONNX Runtime speed of fp32 vs quantized variants (the numbers in README.md).

    python models/quantize/bench.py [--out DIR] [--only NAME,...] [--variants fp32,qdq_u8s8,...] [--json FILE]

Each session: CPU provider, intra_op_num_threads=1, inter_op_num_threads=1, graph_optimization_level ALL,
session.set_denormal_as_zero=1, and flush-to-zero / denormals-are-zero set on the calling thread (the element does
both, see src/inference/session.rs; with one thread ORT computes on the calling thread). Inputs are real
pre-processed samples from the calibration arrays. Classifiers: batches 1/8/32 (faces/s); detector: 1x3x384x640
(frames/s). Per point: 3 warm-up runs, then --reps timed rounds (each >= --min-round s) per variant, the variants
alternating round by round; reported: median and best round.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quantize import MODELS  # noqa: E402

FTZ_C = r"""
#include <xmmintrin.h>
void ftz_on(void) { _mm_setcsr(_mm_getcsr() | 0x8040); }
"""


def set_ftz(scratch: Path):
    so = scratch / "ftz.so"
    if not so.exists():
        src = scratch / "ftz.c"
        src.write_text(FTZ_C)
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    ctypes.CDLL(str(so)).ftz_on()


def session(path: Path) -> ort.InferenceSession:
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.add_session_config_entry("session.set_denormal_as_zero", "1")
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def runs_per_round(sess, feed, min_round: float) -> int:
    for _ in range(3):  # warm-up
        sess.run(None, feed)
    t0 = time.perf_counter()
    sess.run(None, feed)
    return max(1, int(min_round / max(time.perf_counter() - t0, 1e-6)))


def timed_round(sess, feed, k: int) -> float:
    t0 = time.perf_counter()
    for _ in range(k):
        sess.run(None, feed)
    return (time.perf_counter() - t0) / k


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).resolve().parent
    ap.add_argument("--models", type=Path, default=here.parent / "onnx")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "out" / "quant")
    ap.add_argument("--only", default=",".join(MODELS))
    ap.add_argument("--variants", default="fp32,qdq_u8s8")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--min-round", type=float, default=0.3)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    set_ftz(a.out)
    calib = a.out / "calib"
    results = []
    for name in a.only.split(","):
        file, input_name, kind = MODELS[name]
        x = np.load(calib / f"{'emotion' if kind == 'emotion' else name}.npy")
        sessions = {}
        for var in a.variants.split(","):
            path = {"fp32": a.models / file, "pre": a.out / "pre" / file}.get(var, a.out / "out" / f"{name}.{var}.onnx")
            if path.exists():
                sessions[var] = (path, session(path))
        batches = [1] if kind == "detector" else [int(b) for b in a.batches.split(",")]
        for b in batches:
            if kind == "detector":
                feed = {input_name: x[len(x) - 1:len(x)]}  # a video frame, 1x3x384x640
            else:
                feed = {input_name: np.ascontiguousarray(x[np.arange(b) * 7 % len(x)])}
            k = {v: runs_per_round(s, feed, a.min_round) for v, (_, s) in sessions.items()}
            # Variants are timed in alternation (round 1 of each, round 2 of each, ...) so that load from other
            # processes on the machine affects them alike.
            times = {v: [] for v in sessions}
            for _ in range(a.reps):
                for v, (_, s) in sessions.items():
                    times[v].append(timed_round(s, feed, k[v]))
            for v, (path, _) in sessions.items():
                t, tmin = statistics.median(times[v]), min(times[v])
                r = dict(model=name, variant=v, batch=b, ms_median=round(t * 1e3, 3), ms_min=round(tmin * 1e3, 3),
                         per_s_median=round(b / t, 1), per_s_best=round(b / tmin, 1),
                         unit="frames/s" if kind == "detector" else "faces/s", bytes=path.stat().st_size)
                results.append(r)
                print(json.dumps(r), flush=True)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
