#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Trains faceanalyze's own FER2013 emotion network on the CPU and exports it as a drop-in `emotion-model` ONNX.

Contract (same as the "mini"/"big" entries of models/manifest.json, see src/inference/emotion.rs):
  input  `gray_pm1`    float32 NHWC [N, 64, 64, 1], (gray / 255 - 0.5) * 2
  output `predictions` float32 [N, 7] softmax probabilities, classes in src/face.rs EMOTIONS order
         (angry, disgust, fear, happy, sad, surprise, neutral); dynamic batch; opset 17, standard ops only.

The element (and `faceanalyze-eval emotion`) hands the model the face crop resized bilinearly to 64x64 with
half-pixel centres and border clamping (src/preprocess.rs warp_affine, src/align.rs crop_transform). For a
48x48 FER image that is exactly `F.interpolate(..., 64, bilinear, align_corners=False)`, and an augmented crop
is the same sampling done with `grid_sample(align_corners=False, padding_mode="border")`, so training sees the
64x64 inputs the element produces. Inside the network the 64x64 input is resized back to 48x48 (ONNX Resize,
linear, half-pixel), so the convolutions run at FER's native resolution and cost ~1/1.8 of running them at 64.

Data: FER2013 folder with manifest.csv (path,label,split,...). The train split trains, the validation split
(FER2013 PublicTest) picks the best epoch and gives the reported figure. Images are decoded once into a uint8
cache (npz) under --cache, which must lie outside the repository (the data is research-only).

One command, e.g.:
  python3 models/train/emotion.py --data ../shared/data/fer2013 \
      --out out/train/emotion --cache out/train/emotion-cache --epochs 20
Deterministic on the CPU: fixed seeds (torch, numpy, random), a seeded permutation per epoch, fixed thread count.
With --device cuda the seeds are fixed too, but cuDNN autotuning and bf16 kernels make runs not bit-reproducible.

GPU (see models/train/gpu_train.sh): --device cuda keeps the data on the GPU and augments there (bf16 autocast,
channels_last, cudnn autotune); --budget SECONDS picks the number of epochs from a timed warm-up so that the
whole process (start-up included) ends within about that many seconds; --teacher A_best.pt,B_best.pt distils
from nets trained by this script (averaged softened teacher probabilities, --kd-alpha, --kd-temp); a teacher may
also be any ONNX file with the element's emotion contract (e.g. models/onnx/emotion_fer_big_xception.onnx; needs
onnx2torch). --init FILE.onnx starts from a net this script exported (e.g. the committed
models/train/emotion_kd24.onnx), to fine-tune it.
"""

import time

T_PROC = time.time()  # process start (before the torch import): --budget counts from here

import argparse
import copy
import csv
import json
import math
import os
import random
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
IN_SIZE = 64  # network input (the element's crop size)
NET_SIZE = 48  # resolution the convolutions run at (FER2013's native size)


# ----------------------------------------------------------------------------------------------------------------
# data


def load_cache(data_dir, cache_dir):
    """All images of the manifest as uint8 [N, 48, 48] plus labels (EMOTIONS index) and split (0 train, 1 val),
    in manifest order sorted by path; decoded once and cached."""
    os.makedirs(cache_dir, exist_ok=True)
    cache = os.path.join(cache_dir, "fer2013_48.npz")
    if os.path.exists(cache):
        z = np.load(cache)
        return z["x"], z["y"], z["split"]
    from PIL import Image

    with open(os.path.join(data_dir, "manifest.csv"), newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["path"])
    x = np.zeros((len(rows), NET_SIZE, NET_SIZE), np.uint8)
    y = np.zeros(len(rows), np.int64)
    split = np.zeros(len(rows), np.int64)
    for i, r in enumerate(rows):
        # As the Rust eval: decode to RGB, then luma 0.299 R + 0.587 G + 0.114 B (= the value for gray JPEGs).
        img = Image.open(os.path.join(data_dir, r["path"])).convert("RGB")
        a = np.asarray(img, np.float32)
        g = 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]
        if g.shape != (NET_SIZE, NET_SIZE):
            raise SystemExit(f"{r['path']}: {g.shape}, expected 48x48")
        x[i] = np.clip(np.rint(g), 0, 255).astype(np.uint8)
        y[i] = EMOTIONS.index(r["label"])
        split[i] = {"train": 0, "validation": 1}[r["split"]]
    tmp = f"{cache[:-4]}.tmp{os.getpid()}.npz"  # written under another name, then renamed: never a partial cache
    np.savez(tmp, x=x, y=y, split=split)
    os.replace(tmp, cache)
    return x, y, split


def to_pm1(g):
    return (g / 255.0 - 0.5) * 2.0


def val_inputs(xu8):
    """uint8 [N,48,48] -> the element's input: float [N,1,64,64] in [-1,1], bilinear half-pixel resize."""
    t = torch.from_numpy(xu8).float().unsqueeze(1)
    t = F.interpolate(t, size=(IN_SIZE, IN_SIZE), mode="bilinear", align_corners=False)
    return to_pm1(t)


def augment(xu8, gen, args, device=None):
    """Random similarity transform (rotation, scale, shift, mirror) sampled straight from the 48x48 source into
    64x64 (as the element's warp), then brightness/contrast jitter and random erasing. xu8: uint8 tensor [B,48,48]
    on `device` (default: xu8's), gen: a torch.Generator on that device; the result is on that device."""
    dev = xu8.device if device is None else torch.device(device)
    b = xu8.shape[0]
    src = xu8.to(dev).float().unsqueeze(1)
    u = lambda: torch.rand(b, generator=gen, device=dev)
    ang = (u() * 2 - 1) * math.radians(args.rot)
    scale = 1.0 + (u() * 2 - 1) * args.scale
    tx = (u() * 2 - 1) * args.shift * 2 / NET_SIZE  # shift in source pixels -> normalised coordinates
    ty = (u() * 2 - 1) * args.shift * 2 / NET_SIZE
    flip = torch.where(u() < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
    )  # output -> input normalised coords; identity theta = the plain half-pixel resize
    grid = F.affine_grid(theta, (b, 1, IN_SIZE, IN_SIZE), align_corners=False)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # brightness / contrast
    c = 1.0 + (torch.rand(b, 1, 1, 1, generator=gen, device=dev) * 2 - 1) * args.contrast
    br = (torch.rand(b, 1, 1, 1, generator=gen, device=dev) * 2 - 1) * args.brightness * 255
    m = out.mean(dim=(2, 3), keepdim=True)
    out = ((out - m) * c + m + br).clamp(0, 255)
    out = to_pm1(out)
    # random erasing: one rectangle of 2-20 % of the area, filled with noise, with probability args.erase
    if args.erase > 0:
        area = (0.02 + u() * 0.18) * IN_SIZE * IN_SIZE
        ratio = torch.exp((u() * 2 - 1) * math.log(3.0))
        h = (area * ratio).sqrt().clamp(4, IN_SIZE - 1)
        w = (area / ratio).sqrt().clamp(4, IN_SIZE - 1)
        y0 = u() * (IN_SIZE - h)
        x0 = u() * (IN_SIZE - w)
        on = u() < args.erase
        yy = torch.arange(IN_SIZE, device=dev).view(1, IN_SIZE, 1)
        xx = torch.arange(IN_SIZE, device=dev).view(1, 1, IN_SIZE)
        mask = (
            (yy >= y0.view(b, 1, 1))
            & (yy < (y0 + h).view(b, 1, 1))
            & (xx >= x0.view(b, 1, 1))
            & (xx < (x0 + w).view(b, 1, 1))
            & on.view(b, 1, 1)
        ).unsqueeze(1)
        noise = torch.rand(out.shape, generator=gen, device=dev) * 2 - 1
        out = torch.where(mask, noise, out)
    return out


# ----------------------------------------------------------------------------------------------------------------
# model


class ConvBN(nn.Sequential):
    def __init__(self, cin, cout, stride=1):
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
        )


class Block(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection (1x1 projection where the width changes)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.c1 = ConvBN(cin, cout)
        self.c2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.proj = (
            None if cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x):
        s = x if self.proj is None else self.proj(x)
        return F.relu(self.c2(self.c1(x)) + s)


class EmotionNet(nn.Module):
    """48x48 gray -> 7 logits. Stem at 48x48, then residual stages at 24, 12, 6 (max-pool between), global
    average pooling, dropout, linear."""

    def __init__(self, widths=(32, 64, 128, 256), dropout=0.3):
        super().__init__()
        w0, w1, w2, w3 = widths
        self.stem = ConvBN(1, w0)  # 48x48
        self.s1 = Block(w0, w1)  # 24x24
        self.s2 = Block(w1, w2)  # 12x12
        self.s3 = Block(w2, w3)  # 6x6
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(w3, len(EMOTIONS))

    def forward(self, x):  # x: [N,1,64,64] in [-1,1]
        # A constant scale (0.75 exactly) rather than a size keeps the ONNX Resize free of shape arithmetic; the
        # sampling is the same (half-pixel, src = (dst + 0.5) * 64 / 48 - 0.5).
        x = F.interpolate(x, scale_factor=NET_SIZE / IN_SIZE, mode="bilinear", align_corners=False)
        x = self.stem(x)
        x = self.s1(F.max_pool2d(x, 2))
        x = self.s2(F.max_pool2d(x, 2))
        x = self.s3(F.max_pool2d(x, 2))
        x = x.mean(dim=(2, 3))
        return self.fc(self.drop(x))


class OnnxWrapper(nn.Module):
    """NHWC [N,64,64,1] `gray_pm1` -> softmax `predictions`."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, gray_pm1):
        return torch.softmax(self.net(gray_pm1.permute(0, 3, 1, 2)), dim=1)


def count_macs(model):
    """Multiply-accumulates of one 64x64 forward pass (convs and linear; BN/ReLU/pool/resize ignored)."""
    macs = [0]

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
            macs[0] += out.numel() * k
        elif isinstance(m, nn.Linear):
            macs[0] += m.in_features * m.out_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, IN_SIZE, IN_SIZE))
    model.train(was)
    for h in hs:
        h.remove()
    return macs[0]


# ----------------------------------------------------------------------------------------------------------------
# train / evaluate


def val_logits(model, xv, bs=512, amp=False):
    """float32 logits [N,7] of `model` (eval mode) on xv, on xv's device."""
    model.eval()
    logits = []
    with torch.no_grad(), torch.autocast(xv.device.type, dtype=torch.bfloat16, enabled=amp):
        for i in range(0, len(xv), bs):
            logits.append(model(xv[i : i + bs].contiguous(memory_format=torch.channels_last)).float())
    return torch.cat(logits)


def acc_of(lg, yv):
    """(7-class accuracy, happy/sad/neutral accuracy) of scores lg [N,7] (logits or probabilities)."""
    acc7 = (lg.argmax(1) == yv).float().mean().item()
    idx = torch.tensor([3, 4, 6], device=yv.device)
    sel = torch.isin(yv, idx)
    p3 = idx[lg[sel][:, idx].argmax(1)]
    return acc7, (p3 == yv[sel]).float().mean().item()


def acc3(model, xv, yv, bs=512, amp=False):
    return acc_of(val_logits(model, xv, bs, amp), yv)


def cpu_state(m):
    """state_dict with CPU tensors (checkpoints load on a CPU-only machine)."""
    return {k: v.detach().cpu() for k, v in m.state_dict().items()}


def save_atomic(obj, path):
    """torch.save to a temporary name, then rename: a process killed mid-write leaves the previous file intact."""
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=False)  # our own files (they hold an args dict)


def load_teacher(path, dev):
    """A net written by this script (*_best.pt, any widths), in eval mode, frozen, on dev, channels_last."""
    ck = load_ckpt(path)
    net = EmotionNet(tuple(ck["widths"]), ck["dropout"])
    net.load_state_dict(ck["state_dict"])
    net = net.to(dev, memory_format=torch.channels_last).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, ck


def net_from_onnx(path, dropout, xcal):
    """An EmotionNet equal to an ONNX file this script exported (BatchNorm folded into the convolutions), for
    --init. The ONNX convolutions carry the folded weight W and bias b; each BatchNorm is rebuilt from the
    statistics of its input z = W * x over the calibration inputs xcal (mean m, variance v): running stats (m, v),
    gamma sqrt(v + eps), beta b + m. In eval mode that is exactly z + b, and in training mode the batch statistics
    are close to (m, v), so training resumes from the file's function with BatchNorm working as usual."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(path).graph
    init = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in g.initializer}
    convs, fc = {}, None
    for n in g.node:
        if n.op_type == "Conv":
            parts = n.output[0].split("/")  # /net/s1/c1/c1.0/Conv_output_0 -> s1.c1.0; /net/stem/stem.0/... -> stem.0
            if len(parts) < 4 or parts[1] != "net":
                raise SystemExit(f"{path}: convolution {n.output[0]} is not from a net of this script")
            convs[".".join(parts[2:-3] + [parts[-2]])] = (init[n.input[1]], init[n.input[2]])
        elif n.op_type == "Gemm":
            fc = (init[n.input[1]], init[n.input[2]])
    try:
        widths = tuple(int(convs[k][0].shape[0]) for k in ("stem.0", "s1.c1.0", "s2.c1.0", "s3.c1.0"))
    except KeyError as e:
        raise SystemExit(f"{path}: no convolution {e} (not a net of this script)") from None
    net = EmotionNet(widths, dropout).eval()
    mods = dict(net.named_modules())
    if fc is None or set(convs) != {k for k, m in mods.items() if isinstance(m, nn.Conv2d)}:
        raise SystemExit(f"{path}: its layers are not those of EmotionNet{widths}")
    bns = {}
    with torch.no_grad():
        for k, (w, b) in convs.items():
            mods[k].weight.copy_(w)
            bn = mods[k[:-1] + "1"]  # the BatchNorm after conv `...0` is `...1`
            bn.running_mean.zero_()
            bn.running_var.fill_(1 - bn.eps)
            bn.weight.fill_(1)
            bn.bias.copy_(b)
            bns[bn] = [b, 0, 0.0, 0.0]  # folded bias, count, sum, sum of squares
        net.fc.weight.copy_(fc[0])
        net.fc.bias.copy_(fc[1])

        def hook(m, inp, out):
            z = inp[0].double()
            st = bns[m]
            st[1] += z.shape[0] * z.shape[2] * z.shape[3]
            st[2] = st[2] + z.sum((0, 2, 3))
            st[3] = st[3] + (z * z).sum((0, 2, 3))

        hs = [bn.register_forward_hook(hook) for bn in bns]
        for i in range(0, len(xcal), 512):
            net(xcal[i : i + 512])
        for h in hs:
            h.remove()
        for bn, (b, n, s1, s2) in bns.items():
            m = s1 / n
            v = (s2 / n - m * m).clamp_min(0)
            bn.running_mean.copy_(m)
            bn.running_var.copy_(v)
            bn.weight.copy_((v + bn.eps).sqrt())
            bn.bias.copy_(b + m)
    return net


def onnx_teacher(path, dev):
    """Any ONNX file with the element's emotion contract (NHWC [N,64,64,1] `gray_pm1` -> [N,7] probabilities) as a
    frozen teacher module taking this script's NCHW inputs and returning log-probabilities (softmax(log p / T) is
    p^(1/T) renormalised, the softened distribution of the file's own logits). Needs the onnx2torch package."""
    from onnx2torch import convert

    class Wrap(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return torch.log(self.m(x.permute(0, 2, 3, 1).contiguous()).float().clamp_min(1e-12))

    net = Wrap(convert(path)).to(dev).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def seed_all(s):
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def export_onnx(net, path, opset=17):
    net = copy.deepcopy(net).float().eval()
    w = OnnxWrapper(net).eval()
    dummy = torch.zeros(2, IN_SIZE, IN_SIZE, 1)
    kw = dict(
        input_names=["gray_pm1"],
        output_names=["predictions"],
        dynamic_axes={"gray_pm1": {0: "N"}, "predictions": {0: "N"}},
        opset_version=opset,
        do_constant_folding=True,
    )
    try:
        torch.onnx.export(w, (dummy,), path, dynamo=False, **kw)
    except TypeError:
        torch.onnx.export(w, (dummy,), path, **kw)
    import onnx

    m = onnx.load(path)
    onnx.checker.check_model(m)
    return m


def check_onnx(path, net, xv):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    i, o = s.get_inputs()[0], s.get_outputs()[0]
    assert i.name == "gray_pm1" and o.name == "predictions", (i.name, o.name)
    x = xv[:256].permute(0, 2, 3, 1).contiguous().numpy()
    got = s.run(["predictions"], {"gray_pm1": x})[0]
    net = copy.deepcopy(net).float().eval()
    with torch.no_grad():
        want = torch.softmax(net(xv[:256]), 1).numpy()
    return float(np.abs(got - want).max()), (i.name, i.shape, o.name, o.shape)


def onnx_macs(path):
    """MACs of one face (batch 1) of an ONNX model: Conv, ConvTranspose-free graphs, Gemm and MatMul, from the
    shapes ONNX shape inference gives at batch 1."""
    import onnx
    from onnx import shape_inference

    m = onnx.load(path)
    for t in list(m.graph.input) + list(m.graph.output):
        d = t.type.tensor_type.shape.dim[0]
        if not d.HasField("dim_value"):
            d.ClearField("dim_param")
            d.dim_value = 1
    m = shape_inference.infer_shapes(m)
    shapes = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    inits = {t.name: list(t.dims) for t in m.graph.initializer}
    shapes.update(inits)
    total = 0
    for n in m.graph.node:
        if n.op_type == "Conv":
            w = shapes[n.input[1]]
            out = shapes.get(n.output[0])
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            k = int(np.prod(w[1:]))  # (cin / group) * kh * kw
            total += int(np.prod(out)) * k
        elif n.op_type in ("Gemm", "MatMul"):
            a, b = shapes.get(n.input[0]), shapes.get(n.input[1])
            if a and b:
                total += int(np.prod(a)) * b[-1]
    return total


def speed(paths, reps=200):
    """Per-face latency with onnxruntime, 1 thread, batch 1 and 16; MACs from the ONNX graph."""
    import onnxruntime as ort

    for p in paths:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        s = ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])
        name = s.get_inputs()[0].name
        res = []
        for bs in (1, 16):
            x = np.random.default_rng(0).uniform(-1, 1, (bs, IN_SIZE, IN_SIZE, 1)).astype(np.float32)
            for _ in range(10):
                s.run(None, {name: x})
            n = max(10, reps // bs)
            ts = []
            for _ in range(n):
                t = time.perf_counter()
                s.run(None, {name: x})
                ts.append(time.perf_counter() - t)
            res.append(f"batch {bs}: {1000 * np.median(ts) / bs:.3f} ms/face (median of {n})")
        macs = onnx_macs(p)
        print(f"{os.path.basename(p)}: {macs / 1e6:.2f} M MACs ({2 * macs / 1e9:.4f} GFLOP), "
              f"{os.path.getsize(p)} bytes; " + "; ".join(res), flush=True)


def fp16_weights(src, dst):
    """Copy of an ONNX model with its float weights stored as float16 and cast back to float32 at load (Cast
    nodes; computation stays fp32): half the file size, slightly rounded weights."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(src)
    g = m.graph
    casts = []
    for t in list(g.initializer):
        a = numpy_helper.to_array(t)
        if a.dtype != np.float32 or a.size < 16:
            continue
        h = numpy_helper.from_array(a.astype(np.float16), t.name + "_fp16")
        g.initializer.remove(t)
        g.initializer.append(h)
        casts.append(helper.make_node("Cast", [h.name], [t.name], to=onnx.TensorProto.FLOAT, name=t.name + "_cast"))
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(m)
    onnx.save(m, dst)
    print(f"{dst}: {len(casts)} weights as float16, {os.path.getsize(dst)} bytes", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/fer2013", help="FER2013 folder with manifest.csv")
    ap.add_argument("--out", default="out/train/emotion")
    ap.add_argument("--cache", default="out/train/emotion-cache")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1, help="peak SGD learning rate (one-cycle, cosine)")
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--smoothing", type=float, default=0.1)
    ap.add_argument("--widths", default="32,64,128,256")
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--rot", type=float, default=10.0, help="max rotation, degrees")
    ap.add_argument("--scale", type=float, default=0.1, help="max relative scale change")
    ap.add_argument("--shift", type=float, default=4.0, help="max shift, source pixels")
    ap.add_argument("--contrast", type=float, default=0.2)
    ap.add_argument("--brightness", type=float, default=0.1)
    ap.add_argument("--erase", type=float, default=0.5, help="random-erasing probability")
    ap.add_argument("--ema", type=float, default=0.999, help="weight EMA decay (0 = off)")
    ap.add_argument("--bf16", type=int, default=1, help="bf16 autocast for training (1/0; --bench 2: time both)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--subset", type=int, default=0, help="smoke test: only this many train/val images")
    ap.add_argument("--bench", type=int, default=0, help="only time this many training steps, fp32 vs bf16")
    ap.add_argument("--name", default="emotion_own")
    ap.add_argument("--deadline", default="", help="HH:MM local time: stop before an epoch that would end after it "
                    "(a safety net; the learning-rate schedule still assumes --epochs); without --budget it leaves "
                    "the state for --resume and exports nothing")
    ap.add_argument("--export", default="", help="only export this checkpoint (e.g. OUT/emotion_own_best.pt)")
    ap.add_argument("--speed", default="", help="only measure these comma-separated ONNX files (1 thread)")
    ap.add_argument("--fp16", default="", help="only write a float16-weights copy SRC.onnx,DST.onnx")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: data, augmentation and training on the GPU (bf16 autocast, channels_last)")
    ap.add_argument("--budget", type=float, default=0.0,
                    help="wall seconds for this process, counted from its start (0 = off): a timed warm-up "
                    "(--budget-steps steps on a throwaway copy + one validation pass) estimates s/epoch, and "
                    "epochs = min(--epochs, floor(seconds left / (1.15 * s/epoch))), at least 1; the one-cycle "
                    "schedule then fits. Safety: stops after an epoch once 1.3x the budget is (about to be) passed")
    ap.add_argument("--budget-steps", type=int, default=20, help="timed warm-up training steps for --budget (at "
                    "least; the timing also lasts at least min(3 s, 3 %% of the budget))")
    ap.add_argument("--replan-epoch", type=int, default=2, help="with --budget: after this epoch, re-fit the number "
                    "of epochs to the measured epoch time once (one-cycle schedule rebuilt and fast-forwarded; "
                    "0 = off)")
    ap.add_argument("--teacher", default="", help="comma-separated *_best.pt checkpoints of this script (any "
                    "widths) or ONNX files with the element's emotion contract (needs onnx2torch) to distil from: loss "
                    "(1-a) CE + a T^2 KL(mean teacher softmax_T || student softmax_T)")
    ap.add_argument("--init", default="", help="start from the weights of an ONNX file this script exported "
                    "(e.g. models/train/emotion_kd24.onnx; --widths must match), to fine-tune a committed net")
    ap.add_argument("--init-calib", type=int, default=4096, help="training images that re-estimate the "
                    "BatchNorm statistics for --init")
    ap.add_argument("--kd-alpha", type=float, default=None, help="a: distillation weight (default 0.7 with --teacher)")
    ap.add_argument("--kd-temp", type=float, default=4.0, help="T: distillation temperature")
    ap.add_argument("--teacher-min-acc", type=float, default=0.0,
                    help="skip a teacher whose checkpoint val_acc is below this (also unreadable ones are skipped)")
    ap.add_argument("--no-export", action="store_true", help="skip the ONNX export of the best checkpoint at the end")
    ap.add_argument("--stop-after", type=int, default=0, help="stop after epoch N of the run (counted from its "
                    "start, also when resumed; 0 = off), leaving the schedule of --epochs unfinished for --resume "
                    "(CPU training in slices); no ONNX export then")
    ap.add_argument("--val-every", type=int, default=1, help="validate (and so consider for the best checkpoint) "
                    "only every N-th epoch, and every epoch of the last tenth of the schedule, where the best one "
                    "lies; one validation pass is a quarter of a wide net's CPU epoch. It does not alter the "
                    "training, so a resumed run may change it")
    ap.add_argument("--resume", action="store_true", help="continue OUT/NAME_state.pt (written after every epoch of "
                    "a run without --budget: weights, EMA, optimizer, schedule, RNG states, history) where it stopped, "
                    "e.g. after --stop-after, --deadline or a killed process. The training arguments must be the "
                    "saved run's; on the CPU with the same --threads the result is the uninterrupted run's")
    args = ap.parse_args()
    if args.kd_alpha is None:
        args.kd_alpha = 0.7 if args.teacher else 0.0
    if args.val_every < 1:
        ap.error("--val-every must be at least 1")
    if args.resume and args.budget > 0:
        ap.error("--resume and --budget exclude each other (a --budget run keeps no resumable state)")
    if args.init and not os.path.isfile(args.init):
        ap.error(f"--init {args.init}: no such file (models/onnx/ is filled by scripts/setup.sh)")
    if args.fp16:
        return fp16_weights(*args.fp16.split(","))
    if args.speed:
        torch.set_num_threads(1)
        return speed(args.speed.split(","))

    torch.set_num_threads(args.threads)
    seed_all(args.seed)
    os.makedirs(args.out, exist_ok=True)
    log_path = os.path.join(args.out, f"{args.name}_train.log")
    logf = open(log_path, "a")

    def log(*a):
        s = " ".join(str(v) for v in a)
        print(s, flush=True)
        logf.write(s + "\n")
        logf.flush()

    log(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}")
    log(f"args {vars(args)} torch {torch.__version__}")

    dev = torch.device("cpu") if args.export else torch.device(args.device)  # --export always runs on the CPU
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device")
        dev = torch.device("cuda", torch.cuda.current_device())
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        pr = torch.cuda.get_device_properties(dev)
        log(f"device {dev}: {pr.name}, {pr.total_memory / 2**30:.0f} GiB, {pr.multi_processor_count} SMs, "
            f"cudnn {torch.backends.cudnn.version()}")

    t0 = time.time()
    x, y, split = load_cache(args.data, args.cache)
    xt, yt = torch.from_numpy(x[split == 0]), torch.from_numpy(y[split == 0])
    xv_u8, yv = x[split == 1], torch.from_numpy(y[split == 1])
    if args.subset:
        g = np.random.default_rng(args.seed)
        ti = np.sort(g.permutation(len(xt))[: args.subset])
        vi = np.sort(g.permutation(len(xv_u8))[: args.subset])
        xt, yt, xv_u8, yv = xt[ti], yt[ti], xv_u8[vi], yv[vi]
    xv = val_inputs(xv_u8)
    log(f"data: train {len(xt)} val {len(xv)} ({time.time() - t0:.1f} s)")
    if args.export:
        return export_best(args.export, os.path.join(args.out, f"{args.name}.onnx"), xv, yv, log)
    xv_cpu, yv_cpu = xv, yv  # for the final ONNX export / check, which run on the CPU
    # the whole train set is ~66 MB of uint8 and the validation inputs ~59 MB: moved to the device once
    xt, yt, xv, yv = (t.to(dev) for t in (xt, yt, xv, yv))

    widths = tuple(int(v) for v in args.widths.split(","))
    if args.init:
        model = net_from_onnx(args.init, args.dropout, val_inputs(xt[: args.init_calib].cpu().numpy()))
        got = tuple(m[0].out_channels for m in (model.stem, model.s1.c1, model.s2.c1, model.s3.c1))
        if got != widths:
            raise SystemExit(f"--init {args.init}: its widths differ from --widths {args.widths}")
        a7, a3 = acc3(model, xv, yv)
        log(f"init {args.init}: val {a7:.4f} (3c {a3:.4f}), BatchNorm statistics from {args.init_calib} "
            "training images")
    else:
        model = EmotionNet(widths, args.dropout)
    macs = count_macs(model)
    params = sum(p.numel() for p in model.parameters())
    log(f"model widths {widths}: {params} parameters, {macs / 1e6:.2f} M MACs ({2 * macs / 1e9:.4f} GFLOP) / face")
    model = model.to(dev, memory_format=torch.channels_last)

    if args.bench:
        crit = nn.CrossEntropyLoss(label_smoothing=args.smoothing)
        gen = torch.Generator(device=dev).manual_seed(args.seed)
        for amp in ((False, True) if args.bf16 == 2 else (bool(args.bf16),)):
            m = copy.deepcopy(model).train()
            opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True)
            ts = []
            for it in range(args.bench + 2):
                idx = torch.randint(len(xt), (args.batch,), generator=gen, device=dev)
                sync(dev)
                t1 = time.time()
                xb = augment(xt[idx], gen, args, dev).contiguous(memory_format=torch.channels_last)
                sync(dev)
                ta = time.time() - t1
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                    loss = crit(m(xb).float(), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sync(dev)
                ts.append((time.time() - t1, ta))
            ts = ts[2:]
            step = sum(t for t, _ in ts) / len(ts)
            aug = sum(a for _, a in ts) / len(ts)
            log(
                f"bench bf16={amp}: {step * 1000:.0f} ms/step of {args.batch} (augment {aug * 1000:.0f} ms), "
                f"~{step * len(xt) / args.batch:.0f} s/epoch on {len(xt)} images"
            )
        return

    # teachers (knowledge distillation)
    teachers = []
    if args.teacher:
        tprobs = []
        for path in (p_.strip() for p_ in args.teacher.split(",")):
            if not path:
                continue
            if not os.path.isfile(path):  # onnx2torch would name a temporary file instead
                log(f"teacher {path}: no such file; skipped")
                continue
            try:
                if path.endswith(".onnx"):
                    net, ck = onnx_teacher(path, dev), {"widths": ("onnx",), "epoch": None, "which": "onnx"}
                else:
                    net, ck = load_teacher(path, dev)
            except Exception as e:  # a missing / broken teacher must not cost the run
                log(f"teacher {path}: cannot load ({type(e).__name__}: {e}); skipped")
                continue
            if ck.get("val_acc", 1.0) < args.teacher_min_acc:
                log(f"teacher {path}: checkpoint val_acc {ck['val_acc']:.4f} < --teacher-min-acc "
                    f"{args.teacher_min_acc}; skipped")
                continue
            lg = val_logits(net, xv)
            a7, a3 = acc_of(lg, yv)
            log(f"teacher {path}: widths {tuple(ck['widths'])}, epoch {ck.get('epoch')} ({ck.get('which')}), "
                f"val {a7:.4f} (3c {a3:.4f})")
            teachers.append(net)
            tprobs.append(torch.softmax(lg, 1))
        if teachers:
            a7, a3 = acc_of(torch.stack(tprobs).mean(0), yv)
            log(f"teachers averaged ({len(teachers)}): val {a7:.4f} (3c {a3:.4f}); distillation alpha "
                f"{args.kd_alpha} temperature {args.kd_temp}")
        else:
            log("no usable teacher: training without distillation")
        del tprobs

    crit = nn.CrossEntropyLoss(label_smoothing=args.smoothing)
    amp = bool(args.bf16)
    kd_t, kd_a = args.kd_temp, args.kd_alpha

    def make_opt(m):
        decay, no_decay = [], []
        for n_, p in m.named_parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)
        return torch.optim.SGD(
            [{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
            lr=args.lr,
            momentum=0.9,
            nesterov=True,
        )

    def train_step(m, opt, xb, yb):
        """One SGD step; returns the (detached) loss and logits. No host sync."""
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            out = m(xb).float()
        loss = crit(out, yb)
        if teachers:
            with torch.no_grad():
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                    tl = [t(xb).float() for t in teachers]
                pt = torch.stack([torch.softmax(v / kd_t, 1) for v in tl]).mean(0)
            kl = F.kl_div(F.log_softmax(out / kd_t, 1), pt, reduction="batchmean")
            loss = (1 - kd_a) * loss + (kd_a * kd_t * kd_t) * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach(), out.detach()

    def ema_update(ema_p, model_p, step):
        # parameters only: the buffers (BN statistics) are copied from the model before each evaluation, which is
        # what copying them after every step amounts to
        d = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_mul_(ema_p, d)
            torch._foreach_add_(ema_p, model_p, alpha=1 - d)

    steps_per_epoch = len(xt) // args.batch
    if steps_per_epoch < 1:
        raise SystemExit(f"{len(xt)} training images < one batch of {args.batch}")
    n_eval = 2 if args.ema > 0 else 1
    budget_info = None
    if args.budget > 0:
        # Time the real step (augment, student, teachers, SGD, EMA) on throwaway copies; the RNG states are put
        # back afterwards, so the run that follows is the one --budget 0 with the chosen --epochs would give.
        rng_cpu = torch.get_rng_state()
        rng_cuda = torch.cuda.get_rng_state_all() if dev.type == "cuda" else None
        m = copy.deepcopy(model).train()
        o = make_opt(m)
        e = copy.deepcopy(m).eval() if args.ema > 0 else None
        ep_, mp_ = (list(e.parameters()), list(m.parameters())) if e is not None else (None, None)
        wgen = torch.Generator(device=dev).manual_seed(args.seed + 7919)
        n_untimed = 3 if dev.type == "cuda" else 1  # cudnn autotune / first-call allocations
        min_steps = max(1, args.budget_steps)
        window = min(3.0, 0.03 * args.budget)  # a GPU step is ~10 ms: time long enough to see concurrent runs
        tw = time.time()
        acc_l = torch.zeros((), dtype=torch.float64, device=dev)
        it = n_timed = 0
        while True:
            if it == n_untimed:
                sync(dev)
                t1 = time.time()
            if it >= n_untimed:
                if n_timed >= min_steps and time.time() - t1 >= window:
                    break
                n_timed += 1
            idx = torch.randint(len(xt), (args.batch,), generator=wgen, device=dev)
            xb = augment(xt[idx], wgen, args, dev).contiguous(memory_format=torch.channels_last)
            l_, out_ = train_step(m, o, xb, yt[idx])
            if e is not None:
                ema_update(ep_, mp_, it + 1)
            acc_l += l_.double() * len(idx) + (out_.argmax(1) == yt[idx]).sum()
            it += 1
        sync(dev)
        t_step = (time.time() - t1) / n_timed
        if dev.type == "cuda":
            acc3(m, xv, yv)  # autotune the validation shapes
        sync(dev)
        t1 = time.time()
        acc3(m, xv, yv)
        t_val = time.time() - t1
        t1 = time.time()
        probe = os.path.join(args.out, f".{args.name}_budget_probe.pt")
        save_atomic({"state_dict": cpu_state(m)}, probe)  # one best-checkpoint save per epoch at most
        os.remove(probe)
        t_save = time.time() - t1
        finite = bool(torch.isfinite(acc_l).item())
        del m, o, e, ep_, mp_, acc_l
        torch.set_rng_state(rng_cpu)
        if rng_cuda is not None:
            torch.cuda.set_rng_state_all(rng_cuda)
        est = steps_per_epoch * t_step + n_eval * t_val + t_save
        elapsed = time.time() - T_PROC
        left = args.budget - elapsed
        fit = int(math.floor(left / (1.15 * est))) if left > 0 else 0
        chosen = max(1, min(args.epochs, fit))
        budget_info = {"budget_s": args.budget, "step_s": t_step, "val_s": t_val, "save_s": t_save, "est_epoch_s": est,
                       "elapsed_before_training_s": elapsed, "fit_epochs": fit, "epochs_cap": args.epochs,
                       "epochs": chosen, "warmup_s": time.time() - tw}
        log(f"budget {args.budget:.0f} s: warm-up {time.time() - tw:.1f} s ({n_untimed} + {n_timed} steps"
            f"{'' if finite else ', NON-FINITE loss'}): {t_step * 1000:.1f} ms/step x {steps_per_epoch} steps + "
            f"{n_eval} x {t_val:.2f} s validation + {t_save:.2f} s save = {est:.2f} s/epoch estimated; {elapsed:.1f} s elapsed since "
            f"start, {left:.1f} s left -> {fit} epochs fit (x1.15 margin); epochs = {chosen} (cap {args.epochs})")
        args.epochs = chosen

    model.train()
    opt = make_opt(model)

    def make_sched(epochs):
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=args.lr, total_steps=steps_per_epoch * epochs, pct_start=0.15, div_factor=20,
            final_div_factor=200
        )

    sched = make_sched(args.epochs)
    ema = copy.deepcopy(model).eval() if args.ema > 0 else None
    ema_p, model_p = (list(ema.parameters()), list(model.parameters())) if ema is not None else (None, None)
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    perm_rng = np.random.default_rng(args.seed)

    best = (-1.0, None, None)  # acc, epoch, which
    hist = []
    step = 0
    t_start = time.time()
    deadline = None
    if args.deadline:
        hh, mm = (int(v) for v in args.deadline.split(":"))
        lt = time.localtime()
        deadline = time.mktime(lt[:3] + (hh, mm, 0) + lt[6:])
        if deadline < time.time() - 12 * 3600:
            deadline += 24 * 3600
    stopped = None

    def write_hist():
        with open(os.path.join(args.out, f"{args.name}_history.json"), "w") as f:
            json.dump({"history": hist, "best": {"val_acc": best[0], "epoch": best[1], "which": best[2]},
                       "params": params, "macs": macs, "stopped_after": stopped,
                       **({"budget": budget_info} if budget_info is not None else {}),
                       **({"teachers": len(teachers)} if args.teacher else {})}, f, indent=1)

    # The resumable state (about 3x the weights: weights, EMA, momentum) after every epoch, except in --budget runs
    # (one-off GPU runs, where saving it would eat into the timed epochs). A run without --resume starts by removing
    # an earlier run's state, so that state can never be resumed by mistake after this run dies in its first epoch.
    state_file = os.path.join(args.out, f"{args.name}_state.pt")
    state_path = state_file if args.budget <= 0 else None
    if not args.resume:
        for p_ in (state_file, state_file + ".tmp"):
            if os.path.exists(p_):
                os.remove(p_)
    # the arguments a resumed run may change: they do not alter the training itself
    free_args = ("resume", "stop_after", "deadline", "no_export", "threads", "val_every")

    def save_state():
        if state_path is None:
            return
        save_atomic(
            {"epoch": ep, "step": step, "epochs": args.epochs, "widths": widths, "model": cpu_state(model),
             "ema": cpu_state(ema) if ema is not None else None, "opt": opt.state_dict(), "sched": sched.state_dict(),
             "gen": gen.get_state().cpu(), "perm_rng": perm_rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if dev.type == "cuda" else None,
             "best": best, "hist": hist, "args": vars(args)},
            state_path,
        )

    ep = 0
    if args.resume:
        if not os.path.exists(state_path):
            raise SystemExit(f"--resume: {state_path} does not exist")
        st = load_ckpt(state_path)
        if tuple(st["widths"]) != widths:
            raise SystemExit(f"--resume: {state_path} has widths {tuple(st['widths'])}, not {widths}")
        changed = {k: (v, getattr(args, k, None)) for k, v in st["args"].items()
                   if k not in free_args and getattr(args, k, None) != v}
        if changed:
            raise SystemExit(f"--resume: {state_path} was trained with other arguments (saved, now): {changed}; only "
                             f"{', '.join('--' + a.replace('_', '-') for a in free_args)} may change")
        if args.stop_after and args.stop_after <= st["epoch"]:
            raise SystemExit(f"--resume: --stop-after {args.stop_after} is not after the saved epoch {st['epoch']} "
                             "(it counts epochs from the run's start)")
        model.load_state_dict(st["model"])
        if ema is not None and st["ema"] is not None:
            ema.load_state_dict(st["ema"])
        args.epochs = st["epochs"]
        sched = make_sched(args.epochs)  # sets the learning rate of step 0 ...
        sched.load_state_dict(st["sched"])
        opt.load_state_dict(st["opt"])  # ... which the saved optimizer state (the current step's rate) replaces
        gen.set_state(st["gen"].to(gen.get_state().device))
        perm_rng.bit_generator.state = st["perm_rng"]
        torch.set_rng_state(st["torch_rng"])
        if st.get("cuda_rng") is not None and dev.type == "cuda":
            torch.cuda.set_rng_state_all(st["cuda_rng"])
        ep, step, best, hist = st["epoch"], st["step"], tuple(st["best"]), st["hist"]
        log(f"--resume: {state_path}: continuing after epoch {ep} of {args.epochs} (step {step}, best val "
            f"{best[0]:.4f} at epoch {best[1]})")
    while ep < args.epochs:  # a while loop: --budget's re-plan may change args.epochs
        ep += 1
        # the longest of the last few epochs: with --val-every, the next one may validate where the last did not
        if deadline is not None and hist and time.time() + 1.1 * max(h["sec_total"] for h in hist[-5:]) > deadline:
            stopped = ep - 1
            log(f"deadline {args.deadline}: stopping after epoch {stopped} of {args.epochs}")
            break
        te = time.time()
        model.train()
        perm = torch.from_numpy(perm_rng.permutation(len(xt))).to(dev, non_blocking=True)
        # running sums stay on the device (no host sync per step); read once per epoch
        tot_loss = torch.zeros((), dtype=torch.float64, device=dev)
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        tot_n = 0
        for b in range(steps_per_epoch):
            idx = perm[b * args.batch : (b + 1) * args.batch]
            xb = augment(xt[idx], gen, args, dev).contiguous(memory_format=torch.channels_last)
            yb = yt[idx]
            loss, out = train_step(model, opt, xb, yb)
            sched.step()
            step += 1
            if ema is not None:
                ema_update(ema_p, model_p, step)
            tot_loss += loss.double() * len(idx)
            tot_n += len(idx)
            correct += (out.argmax(1) == yb).sum()
        if ema is not None:
            with torch.no_grad():
                for be, bm in zip(ema.buffers(), model.buffers()):
                    be.copy_(bm)
        sync(dev)
        t_train = time.time() - te
        row = {
            "epoch": ep,
            "loss": tot_loss.item() / tot_n,
            "train_acc": correct.item() / tot_n,
            "lr": sched.get_last_lr()[0],
        }
        validate = (ep % args.val_every == 0 or ep > args.epochs - max(1, args.epochs // 10)
                    or ep == args.stop_after or (budget_info is not None and ep == args.replan_epoch))
        cands = []
        if validate:
            acc, acc_3 = acc3(model, xv, yv)
            row["val_acc"], row["val_acc3"] = acc, acc_3
            cands.append(("raw", acc, model))
            if ema is not None:
                ea, ea3 = acc3(ema, xv, yv)
                row["ema_val_acc"], row["ema_val_acc3"] = ea, ea3
                cands.append(("ema", ea, ema))
        # the epoch's better candidate (raw on ties), saved once if it beats the best so far
        which, a, m = (cands[1] if len(cands) > 1 and cands[1][1] > cands[0][1] else cands[0]) if cands else (
            None, -1.0, None)
        if a > best[0]:
            best = (a, ep, which)
            save_atomic(
                {"state_dict": cpu_state(m), "widths": widths, "dropout": args.dropout, "epoch": ep,
                 "which": which, "val_acc": a, "args": vars(args)},
                os.path.join(args.out, f"{args.name}_best.pt"),
            )
        row["sec_train"] = t_train
        row["sec_total"] = time.time() - te
        hist.append(row)
        log(
            f"epoch {ep:3d}/{args.epochs} loss {row['loss']:.4f} train {row['train_acc']:.4f} "
            + (f"val {acc:.4f} (3c {acc_3:.4f})" if validate else "val -")
            + (f" ema {row['ema_val_acc']:.4f} (3c {row['ema_val_acc3']:.4f})" if validate and ema is not None else "")
            + f" lr {row['lr']:.4g} | {t_train:.0f} s train, {row['sec_total']:.0f} s total, "
            f"elapsed {time.time() - t_start:.0f} s"
        )
        if budget_info is not None and ep == args.replan_epoch and ep < args.epochs:
            # re-fit once to the measured epoch (steady state, the concurrent runs all going)
            el = time.time() - T_PROC
            fit = ep + int(math.floor(max(0.0, args.budget - el) / (1.15 * row["sec_total"])))
            new = max(ep + 1, min(budget_info["epochs_cap"], fit))
            if abs(new - args.epochs) > max(1, 0.03 * args.epochs):
                log(f"budget re-plan after epoch {ep}: {row['sec_total']:.2f} s/epoch measured (estimate "
                    f"{budget_info['est_epoch_s']:.2f}), {el:.0f} s elapsed -> epochs {args.epochs} -> {new}")
                budget_info.update(replan_epoch=ep, replan_epoch_s=row["sec_total"], epochs_before_replan=args.epochs,
                                   epochs=new)
                args.epochs = new
                sched = make_sched(new)  # same optimizer; fast-forward to the current step
                for _ in range(step):
                    sched.step()
        if args.budget > 0 and ep < args.epochs:
            el = time.time() - T_PROC
            if el + row["sec_total"] > 1.3 * args.budget:
                stopped = ep
                log(f"budget safety: {el:.0f} s since start + {row['sec_total']:.1f} s/epoch > 1.3 x "
                    f"{args.budget:.0f} s: stopping after epoch {ep} of {args.epochs}")
        if args.stop_after and ep >= args.stop_after and ep < args.epochs and stopped is None:
            stopped = ep
            log(f"--stop-after {args.stop_after}: stopping after epoch {ep} of {args.epochs} (continue with --resume)")
        write_hist()
        save_state()
        if stopped is not None:
            break
    save_atomic(
        {"state_dict": cpu_state(model), "widths": widths, "dropout": args.dropout,
         "epoch": hist[-1]["epoch"] if hist else 0, "epochs_planned": args.epochs,
         "args": vars(args), "ema_state_dict": cpu_state(ema) if ema is not None else None},
        os.path.join(args.out, f"{args.name}_last.pt"),
    )
    log(f"best val {best[0]:.4f} at epoch {best[1]} ({best[2]}); stopped early: {stopped}; wall {time.time() - t_start:.0f} s training"
        f", {time.time() - T_PROC:.0f} s since start")
    write_hist()

    if args.no_export:
        return
    if stopped is not None and args.budget <= 0:
        # --stop-after or --deadline: the state file is kept, so the schedule is to be continued, not shipped
        log(f"stopped after epoch {stopped} of {args.epochs}: no ONNX export of an unfinished schedule (continue "
            f"with --resume, or export its best checkpoint with --export {args.out}/{args.name}_best.pt)")
        return
    export_best(os.path.join(args.out, f"{args.name}_best.pt"), os.path.join(args.out, f"{args.name}.onnx"),
                xv_cpu, yv_cpu, log)


def export_best(ckpt, onnx_path, xv, yv, log):
    """Exports the best-on-validation weights (fp32) and checks the ONNX against PyTorch."""
    ck = load_ckpt(ckpt)
    net = EmotionNet(tuple(ck["widths"]), ck["dropout"])
    net.load_state_dict(ck["state_dict"])
    net.eval()
    a7, a3 = acc3(net, xv, yv)
    log(f"best checkpoint (epoch {ck['epoch']}, {ck['which']}): fp32 val {a7:.4f} (3c {a3:.4f})")
    export_onnx(net, onnx_path)
    diff, sig = check_onnx(onnx_path, net, xv)
    log(f"exported {onnx_path} ({os.path.getsize(onnx_path)} bytes), io {sig}, max |onnx - torch| {diff:.2e}")


if __name__ == "__main__":
    main()
