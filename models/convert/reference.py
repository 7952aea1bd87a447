#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Deterministic reference inputs and recorded outputs for the numerical parity check of converted models.

A converted model (Keras hdf5 or TF.js -> ONNX) can never be byte-identical to the file whose sha256 the manifest
records, so `fetch.py` checks it numerically instead: the manifest entry's `reference` field describes a few
synthetic inputs (made from a formula and a seed below, never from a data set) and the outputs the mirrored,
sha256-verified ONNX file gives on them. A freshly converted file must reproduce those outputs within
`atol + rtol * |expected|`.

Needs numpy; `check` and `record` also need onnxruntime (both are in the model-tools venv that `fetch.py` creates).

    reference.py check  --manifest models/manifest.json --name mini --onnx /tmp/x.onnx   # prints one JSON line
    reference.py record --manifest models/manifest.json --mirror ../shared/models [--names hse,mini,big]

`record` rewrites the manifest's `reference` fields from the mirrored files (run it only when a model changes).

Input generator (version "faceanalyze-ref-v1"), for batch item b with pattern {kind, seed} and element (y, x, c) of
an H x W x C image (the layout field says where the axes sit in the tensor):
    hash   u = mix32((((y * W) + x) * C + c) ^ (seed * 0x9E3779B9)) / 2**32      (Wellons' lowbias32 mixer)
    wave   u = 0.5 + 0.5 * sin(2 pi (2.5 x / W + 1.5 y / H) + 0.7 c + seed)
    blend  u = 0.5 * hash + 0.5 * wave
    face   u = 0.25 + 0.5 * [inside the face ellipse] - 0.35 * [in an eye or the mouth] + 0.1 * hash
value = u * scale + offset[c] (offset broadcast over channels), cast to float32.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

GENERATOR = "faceanalyze-ref-v1"
# Outputs with at most this many elements are recorded in full; larger ones every `stride`-th element.
FULL_LIMIT = 400
SAMPLES = 96


def _mix32(x):
    x = x.astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def pattern(kind, seed, h, w, c):
    """u in [0, 1) with shape (h, w, c), float64."""
    y, x, ch = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")

    def hashed():
        idx = ((y * w + x) * c + ch).astype(np.uint32)
        key = np.uint32((seed * 0x9E3779B9) & 0xFFFFFFFF)
        return _mix32(idx ^ key).astype(np.float64) / 4294967296.0

    def wave():
        return 0.5 + 0.5 * np.sin(2.0 * math.pi * (2.5 * x / w + 1.5 * y / h) + 0.7 * ch + seed)

    if kind == "hash":
        return hashed()
    if kind == "wave":
        return wave()
    if kind == "blend":
        return 0.5 * hashed() + 0.5 * wave()
    if kind == "face":
        nx, ny = (x + 0.5) / w, (y + 0.5) / h
        face = ((nx - 0.5) / 0.34) ** 2 + ((ny - 0.52) / 0.44) ** 2 <= 1.0
        eyes = (((nx - 0.36) / 0.07) ** 2 + ((ny - 0.42) / 0.04) ** 2 <= 1.0) | (
            ((nx - 0.64) / 0.07) ** 2 + ((ny - 0.42) / 0.04) ** 2 <= 1.0
        )
        mouth = (np.abs(nx - 0.5) <= 0.12) & (np.abs(ny - 0.72) <= 0.025)
        return np.clip(0.25 + 0.5 * face - 0.35 * (eyes | mouth) + 0.1 * hashed(), 0.0, 0.999)
    raise ValueError(f"unknown reference pattern kind {kind!r}")


def make_input(spec):
    """The float32 tensor described by one entry of reference.inputs."""
    layout = spec["layout"]
    shape = spec["shape"]
    if layout == "NHWC":
        _, h, w, c = shape
    elif layout == "NCHW":
        _, c, h, w = shape
    else:
        raise ValueError(f"unknown layout {layout!r}")
    if len(spec["patterns"]) != shape[0]:
        raise ValueError("reference input needs one pattern per batch item")
    scale = float(spec["scale"])
    offset = np.asarray(spec["offset"], dtype=np.float64).reshape(1, 1, -1)
    items = [pattern(p["kind"], int(p["seed"]), h, w, c) * scale + offset for p in spec["patterns"]]
    batch = np.stack(items).astype(np.float32)  # N H W C
    if layout == "NCHW":
        batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
    return batch


def make_inputs(ref):
    if ref.get("generator") != GENERATOR:
        raise ValueError(f"reference generator {ref.get('generator')!r} is not {GENERATOR!r}")
    return {spec["name"]: make_input(spec) for spec in ref["inputs"]}


def _session(path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_model(path, inputs):
    sess = _session(path)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, inputs))), sess


def _round(v):
    return float(f"{float(v):.8g}")


def record_outputs(outputs):
    rec = {}
    for name, arr in outputs.items():
        flat = np.asarray(arr, dtype=np.float64).reshape(-1)
        stride = 1 if flat.size <= FULL_LIMIT else int(math.ceil(flat.size / SAMPLES))
        rec[name] = {
            "shape": list(arr.shape),
            "stride": stride,
            "values": [_round(v) for v in flat[::stride]],
        }
    return rec


def compare(outputs, ref):
    """Returns (ok, report dict) comparing model outputs with the recorded reference."""
    atol, rtol = float(ref["atol"]), float(ref["rtol"])
    worst, worst_excess, problems, count = 0.0, -math.inf, [], 0
    for name, exp in ref["outputs"].items():
        if name not in outputs:
            problems.append(f"output {name!r} missing (model has {sorted(outputs)})")
            continue
        got = np.asarray(outputs[name], dtype=np.float64)
        if list(got.shape) != exp["shape"]:
            problems.append(f"output {name!r} shape {list(got.shape)} != {exp['shape']}")
            continue
        g = got.reshape(-1)[:: int(exp["stride"])]
        e = np.asarray(exp["values"], dtype=np.float64)
        if g.size != e.size:
            problems.append(f"output {name!r}: {g.size} sampled values, reference has {e.size}")
            continue
        diff = np.abs(g - e)
        count += int(diff.size)
        if diff.size:
            worst = max(worst, float(diff.max()))
            excess = diff - (atol + rtol * np.abs(e))
            worst_excess = max(worst_excess, float(excess.max()))
            bad = int((excess > 0).sum())
            if bad:
                i = int(excess.argmax())
                problems.append(
                    f"output {name!r}: {bad} of {diff.size} values off (worst got {g[i]:.6g}, expected {e[i]:.6g})"
                )
    ok = not problems
    return ok, {
        "ok": ok,
        "max_abs_diff": worst,
        "values_compared": count,
        "atol": atol,
        "rtol": rtol,
        "problems": problems,
    }


def _entry(manifest, name):
    for m in manifest["models"]:
        if m["name"] == name:
            return m
    raise SystemExit(f"model {name!r} is not in the manifest")


def check_contract(sess, entry):
    problems = []
    got_in = {i.name for i in sess.get_inputs()}
    got_out = {o.name for o in sess.get_outputs()}
    for t in entry["inputs"]:
        if t["name"] not in got_in:
            problems.append(f"input {t['name']!r} missing (model has {sorted(got_in)})")
    for t in entry["outputs"]:
        if t["name"] not in got_out:
            problems.append(f"output {t['name']!r} missing (model has {sorted(got_out)})")
    return problems


def cmd_check(args):
    manifest = json.loads(Path(args.manifest).read_text())
    entry = _entry(manifest, args.name)
    ref = entry.get("reference")
    if not ref:
        print(json.dumps({"ok": False, "problems": [f"manifest entry {args.name!r} has no reference"]}))
        return 1
    try:
        outputs, sess = run_model(args.onnx, make_inputs(ref))
    except Exception as e:  # any load/run failure is a parity failure with a reason
        print(json.dumps({"ok": False, "problems": [f"onnxruntime could not run the model: {e}"]}))
        return 1
    ok, report = compare(outputs, ref)
    contract = check_contract(sess, entry)
    if contract:
        ok = False
        report["ok"] = False
        report["problems"] = contract + report["problems"]
    print(json.dumps(report))
    return 0 if ok else 1


# Reference input descriptions per model contract (what `record` writes). Patterns: batch of 4.
_PATTERNS = [
    {"kind": "face", "seed": 1},
    {"kind": "blend", "seed": 2},
    {"kind": "wave", "seed": 3},
    {"kind": "hash", "seed": 4},
]
_INPUTS = {
    # gray face crop 64x64, x = (g/255 - 0.5) * 2
    "gray_pm1": {"layout": "NHWC", "shape": [4, 64, 64, 1], "scale": 2.0, "offset": [-1.0]},
    # BGR 0..255 minus the ImageNet-caffe means, no scaling
    "input_1:0": {
        "layout": "NHWC",
        "shape": [4, 224, 224, 3],
        "scale": 255.0,
        "offset": [-103.939, -116.779, -123.68],
    },
    # RGB (pixel - mean) / 256
    "images": {
        "layout": "NCHW",
        "shape": [4, 3, 64, 64],
        "scale": 255.0 / 256.0,
        "offset": [-122.782 / 256.0, -117.001 / 256.0, -104.298 / 256.0],
    },
}


def cmd_record(args):
    path = Path(args.manifest)
    manifest = json.loads(path.read_text())
    names = args.names.split(",") if args.names else [
        m["name"] for m in manifest["models"] if m["source"].get("convert")
    ]
    for name in names:
        entry = _entry(manifest, name)
        onnx_path = Path(args.mirror) / entry["file"]
        import hashlib

        digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
        if digest != entry["sha256"]:
            raise SystemExit(f"{name}: mirrored {onnx_path} has sha256 {digest}, manifest says {entry['sha256']}")
        specs = []
        for t in entry["inputs"]:
            spec = {"name": t["name"], **_INPUTS[t["name"]], "patterns": _PATTERNS}
            specs.append(spec)
        ref = {
            "generator": GENERATOR,
            "computed_from": f"{entry['file']} sha256 {entry['sha256'][:16]}..., onnxruntime CPU, 1 thread",
            "atol": 1e-4,
            "rtol": 1e-3,
            "inputs": specs,
        }
        outputs, sess = run_model(onnx_path, make_inputs(ref))
        problems = check_contract(sess, entry)
        if problems:
            raise SystemExit(f"{name}: {problems}")
        ref["outputs"] = record_outputs(outputs)
        ok, report = compare(outputs, ref)
        assert ok, report
        entry["reference"] = ref
        print(f"recorded reference for {name}: {sum(len(o['values']) for o in ref['outputs'].values())} values")
    path.write_text(dump_manifest(manifest))
    return 0


def dump_manifest(obj):
    """JSON with short objects and number arrays kept on one line (diff-friendly, human-readable)."""

    def inline(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(json.dumps(k) + ": " + inline(x) for k, x in v.items()) + " }" if v else "{}"
        if isinstance(v, list):
            return "[" + ", ".join(inline(x) for x in v) + "]"
        return json.dumps(v, ensure_ascii=False)

    def enc(v, ind):
        pad = "  " * ind
        flat = inline(v)
        if not isinstance(v, (dict, list)) or (len(flat) + len(pad) <= 118 and not (isinstance(v, dict) and len(v) > 6)):
            return flat
        if isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            lines, cur = [], []
            for x in v:
                cur.append(json.dumps(x))
                if len(", ".join(cur)) > 100:
                    lines.append(", ".join(cur))
                    cur = []
            if cur:
                lines.append(", ".join(cur))
            return "[\n" + ",\n".join(pad + "  " + line for line in lines) + "\n" + pad + "]"
        if isinstance(v, list):
            return "[\n" + ",\n".join(pad + "  " + enc(x, ind + 1) for x in v) + "\n" + pad + "]"
        inner = ",\n".join(pad + "  " + json.dumps(k) + ": " + enc(x, ind + 1) for k, x in v.items())
        return "{\n" + inner + "\n" + pad + "}"

    return enc(obj, 0) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="compare a converted ONNX file with the manifest's reference outputs")
    c.add_argument("--manifest", required=True)
    c.add_argument("--name", required=True)
    c.add_argument("--onnx", required=True)
    r = sub.add_parser("record", help="(re)compute the manifest's reference outputs from mirrored files")
    r.add_argument("--manifest", required=True)
    r.add_argument("--mirror", required=True)
    r.add_argument("--names", default="")
    args = ap.parse_args(argv)
    return cmd_check(args) if args.cmd == "check" else cmd_record(args)


if __name__ == "__main__":
    sys.exit(main())
