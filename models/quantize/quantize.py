#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Rebuild the int8 / fp16 variants of the faceanalyze models from the fp32 files, deterministically.

    python models/quantize/quantize.py [--out DIR] [--data DIR] [--models DIR] [--only NAME,...] [--variants V,...]

Steps (each output is rebuilt only when missing, so a rerun after a partial run is cheap; --force rebuilds):

1. ``calib/*.npy``: calibration inputs, built with the element's pre-processing (see README.md): FER2013
   ``train/`` for the emotion nets (never validation); for the age nets, the even positions of the path-sorted
   UTKFace manifest (the "fit" half of ``faceanalyze-eval age``'s calibration split; UTKFace has no training split
   here, so these images are also part of the age evaluation); for YuNet, the project's sample photos plus video
   frames (not FDDB, the detector's test set). The arrays stay under --out, never in the repository.
2. ``pre/*.onnx``: ``onnxruntime.quantization.preprocess`` (shape inference + ORT basic optimisation). For HSE the
   TF ReLU6 pattern Relu -> Min(6) -> Max(0) is also rewritten to one Clip(0, 6) (identical in fp32) so that the
   quantizer can fold it into the preceding Conv.
3. ``out/<model>.<variant>.onnx``: the variants (see VARIANTS below).

Needs numpy, onnx 1.23, onnxruntime 1.31.1, opencv-python-headless and sympy (pip install numpy onnx==1.23.2 onnxruntime==1.31.1 opencv-python-headless sympy).
Everything is deterministic: the calibration samples are chosen by position in sorted lists, and ORT's calibration
and quantization are deterministic for a given input set.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

MODELS = {
    # short name: (file, input name, kind)
    "yunet": ("yunet_n_dynamic.onnx", "input", "detector"),
    "dlib": ("age_dlib_v1.onnx", "images", "dlib"),
    "hse": ("age_gender_hse_faceres.onnx", "input_1:0", "hse"),
    "mini": ("emotion_fer_mini_xception.onnx", "gray_pm1", "emotion"),
    "big": ("emotion_fer_big_xception.onnx", "gray_pm1", "emotion"),
    # this project's own emotion nets (models/train/emotion.py; --models models/train)
    "kd24": ("emotion_kd24.onnx", "gray_pm1", "emotion"),
    "kd16": ("emotion_kd16.onnx", "gray_pm1", "emotion"),
    "kd32": ("emotion_kd32.onnx", "gray_pm1", "emotion"),
}

# Calibration set sizes (samples).
N_AGE = 320
N_EMOTION_PER_CLASS = 50
N_VIDEO_FRAMES = 24  # per video
DET_W, DET_H = 640, 384  # detector calibration canvas (the element's input for 16:9 frames at detection-size 640)

# Variants: name -> settings. "fmt": qdq | qop | dynamic | fp16. "act"/"wt": u8 | s8. "calib": minmax | percentile
# | entropy. "head": keep the classifier head (final Gemm/MatMul/Conv producing logits, and the softmax/sigmoid) in
# fp32. Ops never quantized: Softmax, Sigmoid (their 8-bit outputs would quantize the probabilities).
VARIANTS = {
    "fp32opt": dict(fmt="copy"),  # step 2's output as is: fp32, offline-optimised (+ ReLU6 -> Clip for HSE)
    "qdq_u8s8": dict(fmt="qdq", act="u8", wt="s8", calib="minmax", head=False),
    "qdq_s8s8": dict(fmt="qdq", act="s8", wt="s8", calib="minmax", head=False),
    "qop_u8s8": dict(fmt="qop", act="u8", wt="s8", calib="minmax", head=False),
    "qdq_u8s8_head": dict(fmt="qdq", act="u8", wt="s8", calib="minmax", head=True),
    "qdq_u8s8_pct": dict(fmt="qdq", act="u8", wt="s8", calib="percentile", head=False),
    "qdq_u8s8_pct_head": dict(fmt="qdq", act="u8", wt="s8", calib="percentile", head=True),
    "qdq_u8s8_ent": dict(fmt="qdq", act="u8", wt="s8", calib="entropy", head=False),
    "qdq_u8s8_pt": dict(fmt="qdq", act="u8", wt="s8", calib="minmax", head=False, per_tensor=True),
    "dyn_u8": dict(fmt="dynamic"),
    "fp16w": dict(fmt="fp16"),
}
DEFAULT_VARIANTS = "fp32opt,qdq_u8s8,qdq_s8s8,qop_u8s8,qdq_u8s8_head,qdq_u8s8_pct,qdq_u8s8_pt,fp16w"
# (dyn_u8 and qdq_u8s8_ent are built only on request: --variants dyn_u8 --only dlib,hse)

# Op types the static variants quantize (Softmax and Sigmoid deliberately left out).
QUANT_OPS = ["Conv", "Gemm", "MatMul", "Relu", "Clip", "MaxPool", "AveragePool", "Add", "Mul", "Pad", "Reshape",
             "Transpose", "Squeeze", "Flatten", "Resize", "GlobalAveragePool", "Concat"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Pre-processing (mirrors src/preprocess.rs, src/align.rs, src/inference/*.rs)
# ----------------------------------------------------------------------------------------------------------------

DLIB_MEAN_RGB = np.array([122.782, 117.001, 104.298], np.float32)
HSE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)
DLIB_EYE_LEFT = ((0.12057506 + 0.33408506) / 2.0, (0.21372745 + 0.22906424) / 2.0)
DLIB_EYE_RIGHT = ((0.85956746 + 0.6460605) / 2.0, (0.21349815 + 0.22896744) / 2.0)


def letterbox_input(bgr: np.ndarray, size: int) -> np.ndarray:
    """src/preprocess.rs Letterboxer: scale so the long side is `size` (never up), pad right/bottom to x32."""
    import cv2

    h, w = bgr.shape[:2]
    long = max(w, h)
    scale = 1.0 if size == 0 or long <= size else size / long
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    img = bgr if (sw, sh) == (w, h) else cv2.resize(bgr, (sw, sh), interpolation=cv2.INTER_LINEAR)
    iw, ih = -(-sw // 32) * 32, -(-sh // 32) * 32
    out = np.zeros((3, ih, iw), np.float32)
    out[:, :sh, :sw] = img.transpose(2, 0, 1).astype(np.float32)
    return out


def yunet_best(sess, bgr: np.ndarray, threshold=0.6):
    """Most confident YuNet face at native size: (x, y, w, h, score, landmarks[5][2]) or None."""
    x = letterbox_input(bgr, 0)[None]
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x})))
    ih, iw = x.shape[2:]
    best = None
    for s in (8, 16, 32):
        cols = iw // s
        cls, obj = outs[f"cls_{s}"][0, :, 0], outs[f"obj_{s}"][0, :, 0]
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        i = int(np.argmax(score))
        if score[i] < threshold or (best is not None and score[i] <= best[4]):
            continue
        c, r = i % cols, i // cols
        b = outs[f"bbox_{s}"][0, i]
        k = outs[f"kps_{s}"][0, i].reshape(5, 2)
        cx, cy, w, h = (c + b[0]) * s, (r + b[1]) * s, np.exp(b[2]) * s, np.exp(b[3]) * s
        lm = np.stack([(c + k[:, 0]) * s, (r + k[:, 1]) * s], 1)
        best = (cx - w / 2, cy - h / 2, w, h, float(score[i]), lm)
    return best


def similarity(src, dst):
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    den = (s ** 2).sum()
    a = (s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum() / den
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / den
    tx = md[0] - (a * ms[0] - b * ms[1])
    ty = md[1] - (b * ms[0] + a * ms[1])
    return np.array([[a, -b, tx], [b, a, ty]])


def dlib_chip(rgb: np.ndarray, lm, size=64, padding=0.2) -> np.ndarray:
    """align.rs dlib_chip_transform with AlignPoints::Eyes (the default), then (p - mean) / 256, CHW."""
    import cv2

    el, er = (lm[0], lm[1]) if lm[0][0] <= lm[1][0] else (lm[1], lm[0])
    sc = size / (1 + 2 * padding)
    to_chip = lambda p: ((padding + p[0]) * sc, (padding + p[1]) * sc)  # noqa: E731
    fwd = similarity([el, er], [to_chip(DLIB_EYE_LEFT), to_chip(DLIB_EYE_RIGHT)])
    chip = cv2.warpAffine(rgb.astype(np.float32), fwd, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    return ((chip - DLIB_MEAN_RGB) / 256.0).transpose(2, 0, 1)


def crop(img: np.ndarray, box, margin: float, size: int) -> np.ndarray:
    """align.rs crop_transform + warp_affine (pixel-centre aligned bilinear, border replicate)."""
    import cv2

    x, y, w, h = box
    x1, y1 = x - w * margin, y - h * margin
    sx, sy = w * (1 + 2 * margin) / size, h * (1 + 2 * margin) / size
    m = np.array([[sx, 0, x1 + 0.5 * sx - 0.5], [0, sy, y1 + 0.5 * sy - 0.5]])
    return cv2.warpAffine(img.astype(np.float32), m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


# ----------------------------------------------------------------------------------------------------------------
# Step 1: calibration arrays
# ----------------------------------------------------------------------------------------------------------------


def build_age_calib(data: Path, model_dir: Path, out: Path):
    import cv2
    import onnxruntime as ort

    rows = sorted(csv.DictReader(open(data / "utkface" / "manifest.csv")), key=lambda r: r["path"])
    even = rows[0::2]  # faceanalyze-eval's fit half
    pick = [even[int(i * len(even) / N_AGE)] for i in range(N_AGE)]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    det = ort.InferenceSession(str(model_dir / MODELS["yunet"][0]), so, providers=["CPUExecutionProvider"])
    dl, hs, used = [], [], []
    for r in pick:
        bgr = cv2.imread(str(data / "utkface" / r["path"]), cv2.IMREAD_COLOR)
        f = yunet_best(det, bgr)
        if f is None:
            continue
        x, y, w, h, _, lm = f
        dl.append(dlib_chip(bgr[:, :, ::-1], lm))
        hs.append(crop(bgr, (x, y, w, h), 0.1, 224) - HSE_MEAN_BGR)  # NHWC, BGR
        used.append(r["path"])
    np.save(out / "dlib.npy", np.stack(dl).astype(np.float32))
    np.save(out / "hse.npy", np.stack(hs).astype(np.float32))
    (out / "age_files.txt").write_text("\n".join(used) + "\n")
    log(f"age calibration: {len(used)} of {len(pick)} UTKFace fit-half images had a face")


def build_emotion_calib(data: Path, out: Path):
    import cv2

    root = data / "fer2013" / "train"
    xs, used = [], []
    for cls in sorted(os.listdir(root)):
        files = sorted(os.listdir(root / cls))
        for i in range(N_EMOTION_PER_CLASS):
            f = files[int(i * len(files) / N_EMOTION_PER_CLASS)]
            g = cv2.imread(str(root / cls / f), cv2.IMREAD_GRAYSCALE).astype(np.float32)
            g = cv2.resize(g, (64, 64), interpolation=cv2.INTER_LINEAR)
            xs.append(((g / 255.0 - 0.5) * 2.0)[:, :, None])
            used.append(f"{cls}/{f}")
    np.save(out / "emotion.npy", np.stack(xs).astype(np.float32))
    (out / "emotion_files.txt").write_text("\n".join(used) + "\n")
    log(f"emotion calibration: {len(xs)} FER2013 train images")


def build_detector_calib(data: Path, out: Path):
    import cv2

    imgs, used = [], []
    for p in sorted((data / "images").rglob("*")):
        if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
            im = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if im is not None:
                imgs.append(im)
                used.append(str(p.relative_to(data)))
    for v in sorted((data / "videos").glob("*.mp4")):
        cap = cv2.VideoCapture(str(v))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        for i in range(N_VIDEO_FRAMES):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int((i + 0.5) * n / N_VIDEO_FRAMES))
            ok, fr = cap.read()
            if ok:
                imgs.append(fr)
                used.append(f"{v.relative_to(data)}#{int((i + 0.5) * n / N_VIDEO_FRAMES)}")
        cap.release()
    xs = []
    for im in imgs:
        h, w = im.shape[:2]
        s = min(1.0, DET_W / w, DET_H / h)  # the element never upscales
        sw, sh = max(1, round(w * s)), max(1, round(h * s))
        im = im if s == 1.0 else cv2.resize(im, (sw, sh), interpolation=cv2.INTER_LINEAR)
        canvas = np.zeros((3, DET_H, DET_W), np.float32)
        canvas[:, :sh, :sw] = im.transpose(2, 0, 1)
        xs.append(canvas)
    np.save(out / "yunet.npy", np.stack(xs).astype(np.float32))
    (out / "yunet_files.txt").write_text("\n".join(used) + "\n")
    log(f"detector calibration: {len(xs)} images/frames (1x3x{DET_H}x{DET_W})")


# ----------------------------------------------------------------------------------------------------------------
# Step 2: preprocessed fp32 models
# ----------------------------------------------------------------------------------------------------------------


def relu6_to_clip(path: Path):
    """Relu -> Min(c) -> Max(0) (tf2onnx's ReLU6) becomes Clip(0, c): identical values, one op the quantizer folds."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    drop, new_nodes, changed = set(), [], 0
    for n in g.node:
        if n.op_type != "Relu" or id(n) in drop:
            continue
        c1 = consumers.get(n.output[0], [])
        if len(c1) != 1 or c1[0].op_type != "Min":
            continue
        mn = c1[0]
        c2 = consumers.get(mn.output[0], [])
        if len(c2) != 1 or c2[0].op_type != "Max":
            continue
        mx = c2[0]
        hi = consts.get(mn.input[1])
        lo = consts.get(mx.input[1])
        if hi is None or lo is None or hi.size != 1 or lo.size != 1 or float(lo.reshape(-1)[0]) != 0.0:
            continue
        hi_name = f"{mn.name or mn.output[0]}_clip_max"
        lo_name = f"{mx.name or mx.output[0]}_clip_min"
        g.initializer.extend([numpy_helper.from_array(np.array(float(lo.reshape(-1)[0]), np.float32), lo_name),
                              numpy_helper.from_array(np.array(float(hi.reshape(-1)[0]), np.float32), hi_name)])
        new_nodes.append((n, helper.make_node("Clip", [n.input[0], lo_name, hi_name], [mx.output[0]],
                                              name=(n.name or n.output[0]) + "_relu6")))
        drop.update({id(n), id(mn), id(mx)})
        changed += 1
    repl = {id(old): new for old, new in new_nodes}
    nodes = [repl.get(id(n), n) for n in g.node if id(n) not in drop or id(n) in repl]
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    log(f"  {path.name}: {changed} ReLU6 patterns -> Clip")


def build_pre(name: str, model_dir: Path, pre: Path):
    file = MODELS[name][0]
    final = pre / file
    dst = pre / ("tmp." + file)  # renamed into place only when complete
    cmd = [sys.executable, "-m", "onnxruntime.quantization.preprocess", "--input", str(model_dir / file),
           "--output", str(dst)]
    if name == "yunet":
        # YuNet is opset 11, where DequantizeLinear has no `axis` (per-channel weights need opset >= 13): convert
        # it first. Symbolic shape inference is incomplete on its dynamic H/W, so only ONNX shape inference runs.
        import onnx
        from onnx import version_converter

        up = pre / "yunet_opset13.onnx"
        onnx.save(version_converter.convert_version(onnx.load(str(model_dir / file)), 13), str(up))
        cmd[cmd.index("--input") + 1] = str(up)
        cmd += ["--skip_symbolic_shape", "True"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    if name == "hse":
        relu6_to_clip(dst)
    dst.replace(final)


# ----------------------------------------------------------------------------------------------------------------
# Step 3: variants
# ----------------------------------------------------------------------------------------------------------------


class Reader:
    def __init__(self, input_name: str, x: np.ndarray, batch: int):
        self.input_name, self.x, self.batch, self.i = input_name, x, batch, 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        b = self.x[self.i:self.i + self.batch]
        self.i += self.batch
        return {self.input_name: b}

    def rewind(self):
        self.i = 0


def head_nodes(name: str, model) -> list[str]:
    """Nodes to keep in fp32 for the *_head variants: the ones producing the logits/regressions."""
    g = model.graph
    outs = {o.name for o in g.output}
    producer = {o: n for n in g.node for o in n.output}
    keep = []
    compute = ("Conv", "Gemm", "MatMul")
    for o in outs:
        # walk back through cheap ops (Softmax, Sigmoid, Reshape, Transpose, Squeeze, Flatten) to the compute op
        n = producer.get(o)
        while n is not None and n.op_type not in compute:
            keep.append(n.name)
            n = producer.get(n.input[0])
        if n is not None:
            keep.append(n.name)
    return sorted(set(keep))


def quantize_variant(name: str, variant: str, pre: Path, calib: Path, out_dir: Path, dst: Path):
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    import onnx

    v = VARIANTS[variant]
    file, input_name, _ = MODELS[name]
    src = pre / file
    if v["fmt"] == "copy":
        import shutil

        shutil.copyfile(src, dst)
        return
    if v["fmt"] == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        m = onnx.load(str(src))
        m16 = convert_float_to_float16(m, keep_io_types=True, op_block_list=["Resize", "Softmax"])
        onnx.save(m16, str(dst))
        return
    if v["fmt"] == "dynamic":
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm"])
        return
    qt = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[v["calib"]]
    x = np.load(calib / f"{'emotion' if MODELS[name][2] == 'emotion' else name}.npy")
    if v["calib"] != "minmax" and name in ("hse", "yunet"):
        x = x[: len(x) // 2]  # histogram calibration keeps every activation in memory
    model = onnx.load(str(src))
    exclude = head_nodes(name, model) if v["head"] else []
    # (CalibMaxIntermediateOutputs is not used: in ORT 1.31.1 MinMaxCalibrater drops the collected batches instead
    # of reducing them. MinMax only keeps per-tensor min/max per run anyway; histogram methods keep everything.)
    extra = {}
    if v["calib"] == "percentile":
        extra["CalibPercentile"] = 99.999
    cache = out_dir / "cache" / f"{name}.{v['calib']}.json"
    cache.parent.mkdir(exist_ok=True)
    quantize_static(
        str(src), str(dst), Reader(input_name, x, 8 if v["calib"] == "minmax" else 1),
        calibration_cache_path=str(cache),
        quant_format=QuantFormat.QDQ if v["fmt"] == "qdq" else QuantFormat.QOperator,
        activation_type=qt[v["act"]], weight_type=qt[v["wt"]], per_channel=not v.get("per_tensor", False),
        reduce_range=False,
        calibrate_method=method, op_types_to_quantize=QUANT_OPS, nodes_to_exclude=exclude,
        extra_options=extra,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).resolve().parent
    ap.add_argument("--models", type=Path, default=here.parent / "onnx", help="fp32 model folder")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("FACEANALYZE_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data")))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "out" / "quant", help="output folder (default: out/quant, git-ignored)")
    ap.add_argument("--only", default="yunet,dlib,hse,mini,big",
                    help="models, comma-separated (kd24 / kd16 / kd32, our own emotion nets, only on request, with --models "
                    "models/train for kd24)")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--force", action="store_true", help="rebuild everything")
    a = ap.parse_args()
    calib, pre, out = a.out / "calib", a.out / "pre", a.out / "out"
    for d in (calib, pre, out):
        d.mkdir(parents=True, exist_ok=True)
    names = [n for n in a.only.split(",") if n]
    need = {MODELS[n][2] for n in names}
    if (need & {"dlib", "hse"}) and (a.force or not (calib / "dlib.npy").exists() or not (calib / "hse.npy").exists()):
        build_age_calib(a.data, a.models, calib)
    if "emotion" in need and (a.force or not (calib / "emotion.npy").exists()):
        build_emotion_calib(a.data, calib)
    if "detector" in need and (a.force or not (calib / "yunet.npy").exists()):
        build_detector_calib(a.data, calib)
    if a.force:
        for c in (out / "cache").glob("*.json"):
            c.unlink()
    for n in names:
        if a.force or not (pre / MODELS[n][0]).exists():
            log(f"preprocess {n}")
            build_pre(n, a.models, pre)
    for n in names:
        for v in [v for v in a.variants.split(",") if v]:
            dst = out / f"{n}.{v}.onnx"
            if dst.exists() and not a.force:
                continue
            log(f"quantize {n} {v}")
            quantize_variant(n, v, pre, calib, out, dst)
            log(f"  -> {dst} ({dst.stat().st_size:,} bytes)")
    sizes = {p.name: p.stat().st_size for p in sorted(out.glob("*.onnx"))}
    (out / "sizes.json").write_text(json.dumps(sizes, indent=1) + "\n")


if __name__ == "__main__":
    main()
