#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Age head for the HSE faceres network, trained on UTKFace (models/train/README.md, "Age head").

HSE's 1024-d embedding ('global_pooling/Mean') stays frozen; a new head (1024 -> 256 ReLU -> 100 softmax over ages
1..100, so the element's decoder, age = sum(p_i * (i + 1)) / sum(p_i), is unchanged; optionally blended with HSE's
own age head, alpha * p_new + (1 - alpha) * p_hse) is trained on the UTKFace train split, chosen on dev, and grafted
onto the HSE graph in place of the old age head, keeping HSE's input and output contract. `age_head.py graft`
rebuilds the grafted model from the HSE file and the head ONNX alone.

The embeddings are computed exactly as the Rust evaluation (`faceanalyze-eval age`) computes HSE's input: the
`image` crate's JPEG decoding (zune-jpeg, replicated bit-exactly), YuNet on the whole image at its native size,
the most confident face (or the fallback box), HSE's crop with margin 0.1, bilinear sampling with border
replicate, BGR minus the Caffe means. The script checks this against a Rust predictions CSV.

    python models/train/age_head.py --data ../shared/data --out OUT [--eval-bin faceanalyze-eval ...]

Needs numpy, onnx, onnxruntime, torch (CPU) and jpeglib (libjpeg's DCT coefficients).
"""
import numpy as np

HSE_SIZE = 224
HSE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
F32 = np.float32


def _idct_pass(v, bias, shift):
    """One pass of zune-jpeg's integer IDCT (stb_image's): v is a list of 8 int32 arrays (the 8 inputs of the
    1-D transform), returns the 8 outputs before clamping."""
    p2, p3 = v[2], v[6]
    p1 = (p2 + p3) * 2217
    t2 = p1 + p3 * -7567
    t3 = p1 + p2 * 3135
    t0 = (v[0] + v[4]) << 12
    t1 = (v[0] - v[4]) << 12
    x0, x3, x1, x2 = t0 + t3 + bias, t0 - t3 + bias, t1 + t2 + bias, t1 - t2 + bias
    t0, t1, t2, t3 = v[7], v[5], v[3], v[1]
    q3, q4, q1, q2 = t0 + t2, t1 + t3, t0 + t3, t1 + t2
    p5 = (q3 + q4) * 4816
    t0, t1, t2, t3 = t0 * 1223, t1 * 8410, t2 * 12586, t3 * 6149
    q1 = p5 + q1 * -3685
    q2 = p5 + q2 * -10497
    q3 = q3 * -8034
    q4 = q4 * -1597
    t3 = t3 + q1 + q4
    t2 = t2 + q2 + q3
    t1 = t1 + q2 + q4
    t0 = t0 + q1 + q3
    return [(x0 + t3) >> shift, (x1 + t2) >> shift, (x2 + t1) >> shift, (x3 + t0) >> shift,
            (x3 - t0) >> shift, (x2 - t1) >> shift, (x1 - t2) >> shift, (x0 - t3) >> shift]


def _idct_plane(coef, qt):
    """Dequantised blocks (nby, nbx, 8, 8, natural order) -> pixel plane, as zune-jpeg 0.5 computes it (its
    1x1 and 4x4 shortcuts give the same integers as the full transform)."""
    d = coef.astype(np.int32) * qt.astype(np.int32)
    nby, nbx = d.shape[:2]
    b = d.reshape(-1, 8, 8)
    cols = _idct_pass([b[:, k, :] for k in range(8)], 512, 10)  # vertical: 8 rows of (N, 8 columns)
    tmp = np.stack(cols, axis=1)  # (N, row, col)
    rows = _idct_pass([tmp[:, :, c] for c in range(8)], 512 + 65536 + (128 << 17), 17)  # horizontal
    out = np.clip(np.stack(rows, axis=2), 0, 255)  # (N, row, col)
    return out.reshape(nby, nbx, 8, 8).transpose(0, 2, 1, 3).reshape(nby * 8, nbx * 8)


def _upsample_h2v2(c):
    """zune-jpeg's chroma upsampling for 2x2 subsampling: vertical triangle filter, rounded, then horizontal,
    rounded, each ((3 * near + far + 2) >> 2) with the edge sample repeated."""
    c = c.astype(np.int32)
    up = np.concatenate([c[:1], c[:-1]])
    down = np.concatenate([c[1:], c[-1:]])
    v = np.empty((2 * c.shape[0], c.shape[1]), np.int32)
    v[0::2] = (3 * c + 2 + up) >> 2
    v[1::2] = (3 * c + 2 + down) >> 2
    left = np.concatenate([v[:, :1], v[:, :-1]], axis=1)
    right = np.concatenate([v[:, 1:], v[:, -1:]], axis=1)
    o = np.empty((v.shape[0], 2 * v.shape[1]), np.int32)
    o[:, 0::2] = (3 * v + 2 + left) >> 2
    o[:, 1::2] = (3 * v + 2 + right) >> 2
    return o


def decode_jpeg_zune(path):
    """Baseline YCbCr JPEG -> RGB uint8, bit-exact with the `image` crate 0.25 (zune-jpeg 0.5) that the Rust
    evaluation decodes with. Coefficients come from libjpeg (python package `jpeglib`); the IDCT, upsampling
    and colour conversion are zune-jpeg's. Returns None for layouts not handled here (caller falls back)."""
    import jpeglib
    j = jpeglib.read_dct(path)
    h, w = j.height, j.width
    sf = np.asarray(j.samp_factor).tolist()
    if j.Cb is None or j.progressive_mode or sf not in ([[2, 2], [1, 1], [1, 1]], [[1, 1], [1, 1], [1, 1]]):
        return None
    qn = np.asarray(j.quant_tbl_no)
    planes = [_idct_plane(c, j.qt[qn[i]]) for i, c in enumerate((j.Y, j.Cb, j.Cr))]
    y = planes[0][:h, :w]
    if sf[0] == [2, 2]:
        cb, cr = (_upsample_h2v2(p)[:h, :w] for p in planes[1:])
    else:
        cb, cr = (p[:h, :w] for p in planes[1:])
    y0 = y.astype(np.int32) * 16384 + 8191
    cb, cr = cb.astype(np.int32) - 128, cr.astype(np.int32) - 128
    r = (y0 + cr * 22970) >> 14
    g = (y0 + cr * -11700 + cb * -5638) >> 14
    b = (y0 + cb * 29032) >> 14
    return np.clip(np.stack([r, g, b], axis=2), 0, 255).astype(np.uint8)


def load_rgb(path):
    """RGB uint8 HxWx3 as the Rust evaluation sees it (decode_jpeg_zune; PIL for anything else)."""
    if str(path).lower().endswith(('.jpg', '.jpeg')):
        img = decode_jpeg_zune(path)
        if img is not None:
            return img
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert('RGB'), dtype=np.uint8)


def crop_transform(x, y, w, h, margin, out_w, out_h):
    """src/align.rs crop_transform, in float32 step by step as Rust evaluates it."""
    x, y, w, h, margin = F32(x), F32(y), F32(w), F32(h), F32(margin)
    x1 = F32(x - F32(w * margin))
    y1 = F32(y - F32(h * margin))
    k = F32(F32(1.0) + F32(F32(2.0) * margin))
    sx = F32(F32(w * k) / F32(out_w))
    sy = F32(F32(h * k) / F32(out_h))
    return (sx, F32(F32(x1 + F32(F32(0.5) * sx)) - F32(0.5)), sy, F32(F32(y1 + F32(F32(0.5) * sy)) - F32(0.5)))


def _taps(scale, off, n_out, n_src):
    """src/preprocess.rs resize_crop taps: clamp to the image (border replicate), floor, weight."""
    s = (scale * np.arange(n_out, dtype=F32)).astype(F32) + off
    s = np.clip(s.astype(F32), F32(0.0), F32(n_src - 1))
    i0 = s.astype(np.int64)  # s >= 0: truncation is floor
    i1 = np.minimum(i0 + 1, n_src - 1)
    return i0, i1, (s - i0.astype(F32)).astype(F32)


def resize_crop(img, m, out_w, out_h):
    """Bilinear sample of `img` (HxWx3 uint8) at the scale-and-translate map m = (sx, tx, sy, ty): float32 RGB."""
    h, w, _ = img.shape
    sx, tx, sy, ty = m
    xi0, xi1, wx = _taps(sx, tx, out_w, w)
    yi0, yi1, wy = _taps(sy, ty, out_h, h)
    f = img.astype(F32)
    r0, r1 = f[yi0], f[yi1]  # out_h x W x 3
    wx = wx[None, :, None]
    a, b = r0[:, xi0], r0[:, xi1]
    top = a + (b - a) * wx
    a, b = r1[:, xi0], r1[:, xi1]
    bot = a + (b - a) * wx
    return (top + (bot - top) * wy[:, None, None]).astype(F32)


def hse_input(img, box, margin, flip=False):
    """One HSE input, NHWC 224x224 BGR minus the Caffe means (src/inference/age.rs prepare_batch)."""
    m = crop_transform(*box, margin, HSE_SIZE, HSE_SIZE)
    rgb = resize_crop(img, m, HSE_SIZE, HSE_SIZE)
    bgr = rgb[:, :, ::-1] - HSE_MEAN_BGR
    if flip:
        bgr = bgr[:, ::-1]
    return np.ascontiguousarray(bgr, dtype=F32)


def hse_session(path, threads=1):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=['CPUExecutionProvider'])


def run_hse(sess, x):
    emb, probs = sess.run(['global_pooling/Mean', 'age_pred/Softmax:0'], {'input_1:0': x})
    return emb, probs


AGES = np.arange(1, 101, dtype=np.float64)


def decode_age(probs):
    """src/postprocess.rs age_stats value: sum(p * age) / sum(p), ages 1..100, in float64."""
    p = probs.astype(np.float64)
    return (p * AGES).sum(1) / p.sum(1)


# ---------------------------------------------------------------------------------------------------------------
# Detection: src/preprocess.rs Letterboxer (size 0 = native), src/postprocess.rs decode_stride / nms / to_frame,
# src/inference/detector.rs; the evaluation takes the most confident face or the fallback box (src/eval/age.rs).

DET_THRESHOLD, NMS_IOU, MIN_FACE = F32(0.6), F32(0.3), F32(16.0)
FALLBACK_BOX = (0.2, 0.2, 0.6, 0.6)


def detector_session(path, threads=1):
    return hse_session(path, threads)


def _iou(a, b):
    ax2, ay2, bx2, by2 = F32(a[0] + a[2]), F32(a[1] + a[3]), F32(b[0] + b[2]), F32(b[1] + b[3])
    iw = max(F32(min(ax2, bx2) - max(a[0], b[0])), F32(0))
    ih = max(F32(min(ay2, by2) - max(a[1], b[1])), F32(0))
    inter = F32(iw * ih)
    area = lambda r: F32(max(r[2], F32(0)) * max(r[3], F32(0)))
    union = F32(F32(area(a) + area(b)) - inter)
    return F32(inter / union) if union > 0 and np.isfinite(inter) else F32(0)


def detect_face(sess, img):
    """The box the Rust age evaluation uses for `img` (detection size 0): ((x, y, w, h) float32, score, source)."""
    h, w, _ = img.shape
    ih, iw = -(-h // 32) * 32, -(-w // 32) * 32
    x = np.zeros((1, 3, ih, iw), dtype=F32)
    x[0, :, :h, :w] = img[:, :, ::-1].transpose(2, 0, 1)  # BGR planes, scale 1: taps land on pixels exactly
    names = [f'{k}_{s}' for s in (8, 16, 32) for k in ('cls', 'obj', 'bbox')]
    outs = dict(zip(names, sess.run(names, {'input': x})))
    cands = []  # (score, box) in stride order, then cell order, as decode_stride pushes them
    for s in (8, 16, 32):
        cols, n = iw // s, (iw // s) * (ih // s)
        cls = outs[f'cls_{s}'].reshape(-1)[:n]
        obj = outs[f'obj_{s}'].reshape(-1)[:n]
        bb = outs[f'bbox_{s}'].reshape(-1, 4)[:n]
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1)).astype(F32)
        sf = F32(s)
        for i in np.nonzero(score >= DET_THRESHOLD)[0]:
            c, r = F32(i % cols), F32(i // cols)
            cx, cy = F32(F32(c + bb[i, 0]) * sf), F32(F32(r + bb[i, 1]) * sf)
            bw, bh = F32(np.exp(bb[i, 2]) * sf), F32(np.exp(bb[i, 3]) * sf)
            if not (np.isfinite([cx, cy, bw, bh]).all() and bw > 0 and bh > 0):
                continue
            cands.append((score[i], (F32(cx - F32(bw / F32(2))), F32(cy - F32(bh / F32(2))), bw, bh)))
    cands.sort(key=lambda t: -float(t[0]))  # stable, like Rust's sort_by(total_cmp) descending
    kept = []
    for sc, b in cands:
        if all(_iou(k, b) <= NMS_IOU for _, k in kept):
            kept.append((sc, b))
    W, H = F32(w), F32(h)
    for sc, (bx, by, bw, bh) in kept:  # to_frame (scale 1) and clip, then the min-face-size filter
        x1, y1 = np.clip(bx, F32(0), W), np.clip(by, F32(0), H)
        x2, y2 = np.clip(F32(bx + bw), F32(0), W), np.clip(F32(by + bh), F32(0), H)
        x2, y2 = max(x2, x1), max(y2, y1)
        cw, ch = F32(x2 - x1), F32(y2 - y1)
        if max(cw, ch) >= MIN_FACE and F32(cw * ch) > 0:
            return (F32(x1), F32(y1), cw, ch), float(sc), 'detected'
    fb = tuple(F32(F32(f) * F32(d)) for f, d in zip(FALLBACK_BOX, (w, h, w, h)))
    return fb, 0.0, 'fallback'


# ---------------------------------------------------------------------------------------------------------------
# Data, split, embedding cache

SPLIT_NAMES = {0: 'train', 1: 'train', 2: 'train', 3: 'dev', 4: 'test'}


def load_manifest(data_dir):
    """UTKFace manifest rows (path, age) sorted by path in byte order (Rust's String sort), with the split."""
    import csv
    import os
    with open(os.path.join(data_dir, 'manifest.csv'), newline='') as f:
        rd = csv.DictReader(f)
        rows = [(r['path'].strip(), float(r['age'])) for r in rd]
    rows.sort(key=lambda r: r[0].encode('utf-8'))
    return [dict(path=p, age=a, split=SPLIT_NAMES[i % 5]) for i, (p, a) in enumerate(rows)]


def jitter_box(box, rng, shift=0.05, scale=0.05):
    """A box moved by up to `shift` of its size and scaled by up to `scale` (uniform), for training crops."""
    x, y, w, h = (float(v) for v in box)
    s = 1.0 + rng.uniform(-scale, scale)
    a = 1.0 + rng.uniform(-scale / 2, scale / 2)
    nw, nh = w * s * a, h * s / a
    cx = x + w / 2 + rng.uniform(-shift, shift) * w
    cy = y + h / 2 + rng.uniform(-shift, shift) * h
    return (cx - nw / 2, cy - nh / 2, nw, nh)


# Augmented views per training image: (flip, jitter box, margin range). View 0 is the Rust pipeline's own crop.
AUG_VIEWS = [(True, False, None), (False, True, (0.05, 0.15)), (True, True, (0.05, 0.15))]
MARGIN = 0.1
SEED = 20240611


def extract(items, data_dir, hse_path, det_path, cache_dir, threads=2, chunk=256, log=print):
    """Embeddings (1024-d), HSE's own age softmax and the detection of every image, plus AUG_VIEWS for the
    training split; cached per chunk in `cache_dir` (resumable). Returns a dict of arrays."""
    import hashlib
    import os
    import time
    os.makedirs(cache_dir, exist_ok=True)
    key = hashlib.sha256((sha256_file(hse_path) + sha256_file(det_path) + repr(AUG_VIEWS) + repr(MARGIN) +
                          str(SEED) + '\n'.join(it['path'] for it in items)).encode()).hexdigest()[:12]
    hse = det = None
    parts = []
    t0 = time.time()
    for c0 in range(0, len(items), chunk):
        fn = os.path.join(cache_dir, f'emb-{key}-{c0:05d}.npz')
        if not os.path.exists(fn):
            if hse is None:
                hse, det = hse_session(hse_path, threads), detector_session(det_path, threads)
            emb, probs, boxes, scores, src, aug_idx, aug_view, aug_emb = [], [], [], [], [], [], [], []
            for i in range(c0, min(c0 + chunk, len(items))):
                it = items[i]
                img = load_rgb(os.path.join(data_dir, it['path']))
                box, score, s = detect_face(det, img)
                crops = [hse_input(img, box, MARGIN)]
                if it['split'] == 'train':
                    rng = np.random.default_rng([SEED, i])
                    for v, (flip, jit, mr) in enumerate(AUG_VIEWS):
                        b = jitter_box(box, rng) if jit else box
                        m = rng.uniform(*mr) if mr else MARGIN
                        crops.append(hse_input(img, b, m, flip=flip))
                        aug_idx.append(i)
                        aug_view.append(v + 1)
                e, p = run_hse(hse, np.stack(crops))
                emb.append(e[0])
                probs.append(p[0])
                aug_emb.extend(e[1:])
                boxes.append(np.array(box, np.float32))
                scores.append(score)
                src.append(s == 'detected')
            np.savez(fn + '.tmp.npz', emb=np.array(emb, np.float32), probs=np.array(probs, np.float32),
                     boxes=np.array(boxes), scores=np.array(scores, np.float32), detected=np.array(src),
                     aug_idx=np.array(aug_idx, np.int64), aug_view=np.array(aug_view, np.int64),
                     aug_emb=np.array(aug_emb, np.float32).reshape(-1, 1024))
            os.replace(fn + '.tmp.npz', fn)
            done = min(c0 + chunk, len(items))
            el = time.time() - t0
            log(f'  embeddings {done}/{len(items)}  {el:.0f} s')
        with np.load(fn) as z:
            parts.append({k: z[k] for k in z.files})
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return out


def sha256_file(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for b in iter(lambda: f.read(1 << 20), b''):
            h.update(b)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Metrics (src/eval/age.rs `metrics`: decades by true age, 100+ in one bucket, ages 21-60 inclusive)

def decade(age):
    return np.minimum(np.floor(np.maximum(age, 0) / 10).astype(int), 10)


def decade_label(d):
    return '100+' if d == 10 else f'{d * 10}-{d * 10 + 9}'


def metrics(true, pred):
    true, pred = np.asarray(true, np.float64), np.asarray(pred, np.float64)
    err = pred - true
    mid = (true >= 21) & (true <= 60)
    dec = decade(true)
    out = dict(n=int(len(true)), mae=float(np.abs(err).mean()), bias=float(err.mean()),
               rmse=float(np.sqrt((err ** 2).mean())), mae_21_60=float(np.abs(err[mid]).mean()),
               n_21_60=int(mid.sum()), decades={})
    for d in range(11):
        s = dec == d
        if s.any():
            out['decades'][decade_label(d)] = dict(n=int(s.sum()), mae=float(np.abs(err[s]).mean()),
                                                   bias=float(err[s].mean()))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Heads: softmax over the 100 bins of HSE (ages 1..100), trained with label distributions (DLDL)

N_BINS = 100


def hse_head_weights(hse_path):
    """HSE's own age head (feats 1024->256 ReLU, age_pred 256->100) as numpy arrays."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(hse_path)
    w = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return dict(w1=w['feats/kernel:0'], b1=w['Reshape__161:0'], w2=w['age_pred/kernel:0'], b2=w['Reshape__165:0'])


def head_forward_np(p, x):
    """Softmax of the head `p` on embeddings x, float32 as ONNX Runtime computes it. `p` holds w1, b1 (and w2, b2
    for an MLP); with 'alpha' and 'base' (HSE's own head) the output is alpha * p_new + (1 - alpha) * p_hse."""
    x = x.astype(np.float32)
    h = x @ p['w1'] + p['b1']
    if 'w2' in p:
        h = np.maximum(h, 0) @ p['w2'] + p['b2']
    h = h - h.max(1, keepdims=True)
    e = np.exp(h)
    out = e / e.sum(1, keepdims=True)
    if 'alpha' in p:
        a = np.float32(p['alpha'])
        out = out * a + head_forward_np(p['base'], x) * (np.float32(1) - a)
    return out


def label_dist(ages, sigma):
    import torch
    bins = torch.arange(1, N_BINS + 1, dtype=torch.float32)
    a = ages.clamp(1, N_BINS)[:, None]
    q = torch.exp(-0.5 * ((bins[None] - a) / sigma) ** 2)
    return q / q.sum(1, keepdim=True)


def train_head(cfg, xtr, ytr, xdev, ydev, init=None, log=print):
    """Trains one head; returns (params as numpy, history). cfg keys: arch (linear | mlp | hse-ft), hidden,
    dropout, sigma, l1 (weight of |E[age] - age|), wd, lr, epochs, batch, w2160 (extra weight of ages 21-60),
    select (dev criterion: mae | mae_21_60 | mix)."""
    import torch
    torch.manual_seed(cfg.get('seed', SEED))
    torch.use_deterministic_algorithms(True)
    g = torch.Generator().manual_seed(cfg.get('seed', SEED))
    arch, hidden = cfg['arch'], cfg.get('hidden', 256)
    mu = xtr.mean(0)
    sd = xtr.std(0) + 1e-3
    if arch == 'hse-ft':  # raw inputs: HSE's weights expect them
        mu, sd = np.zeros_like(mu), np.ones_like(sd)
    X = torch.tensor((xtr - mu) / sd, dtype=torch.float32)
    Y = torch.tensor(ytr, dtype=torch.float32)
    Xd = torch.tensor((xdev - mu) / sd, dtype=torch.float32)
    if arch == 'linear':
        net = torch.nn.Sequential(torch.nn.Dropout(cfg.get('dropout', 0.0)), torch.nn.Linear(1024, N_BINS))
    else:
        net = torch.nn.Sequential(torch.nn.Dropout(cfg.get('in_dropout', 0.0)), torch.nn.Linear(1024, hidden),
                                  torch.nn.ReLU(), torch.nn.Dropout(cfg.get('dropout', 0.0)),
                                  torch.nn.Linear(hidden, N_BINS))
        if arch == 'hse-ft':
            with torch.no_grad():
                net[1].weight.copy_(torch.tensor(init['w1'].T))
                net[1].bias.copy_(torch.tensor(init['b1']))
                net[4].weight.copy_(torch.tensor(init['w2'].T))
                net[4].bias.copy_(torch.tensor(init['b2']))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg['lr'], weight_decay=cfg['wd'])
    epochs, bs = cfg['epochs'], cfg.get('batch', 256)
    steps = epochs * ((len(X) + bs - 1) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg['lr'], total_steps=steps, pct_start=0.1)
    bins = torch.arange(1, N_BINS + 1, dtype=torch.float32)
    wts = torch.where((Y >= 21) & (Y <= 60), 1.0 + cfg.get('w2160', 0.0), 1.0)
    if cfg.get('balance', 0.0):  # weight each decade by (its share of the training set) ** -balance
        dec = torch.tensor(decade(ytr))
        cnt = torch.bincount(dec, minlength=11).float().clamp(min=1)
        wts = wts * (cnt[dec] / len(dec)) ** -cfg['balance']
    for lo, hi, w in cfg.get('wrange', ()):  # extra weights on age ranges
        wts = wts * torch.where((Y >= lo) & (Y <= hi), w, 1.0)
    Q = label_dist(Y, cfg['sigma'])
    best, hist = None, []
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(len(X), generator=g)
        tot = 0.0
        for k in range(0, len(X), bs):
            idx = perm[k:k + bs]
            logits = net(X[idx])
            logp = torch.log_softmax(logits, 1)
            kl = (Q[idx] * (torch.log(Q[idx] + 1e-12) - logp)).sum(1)
            exp = (logp.exp() * bins).sum(1)
            l1 = (exp - Y[idx].clamp(1, N_BINS)).abs()
            loss = ((kl + cfg['l1'] * l1) * wts[idx]).sum() / wts[idx].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
        net.eval()
        with torch.no_grad():
            pd = torch.softmax(net(Xd), 1).double().numpy()
        pred = (pd * AGES).sum(1) / pd.sum(1)
        m = metrics(ydev, pred)
        crit = {'mae': m['mae'], 'mae_21_60': m['mae_21_60'],
                'mix': 0.5 * (m['mae'] + m['mae_21_60'])}[cfg.get('select', 'mix')]
        hist.append(dict(epoch=ep + 1, loss=tot / len(X), dev_mae=m['mae'], dev_mae_21_60=m['mae_21_60'],
                         crit=crit))
        if best is None or (np.isfinite(crit) and not crit >= best[0]):
            best = (crit, ep + 1, {k: v.detach().clone() for k, v in net.state_dict().items()})
    sdict = best[2]
    # Fold the input standardisation into the first layer: (x - mu) / sd @ W.T + b.
    li = [k for k in sdict if k.endswith('weight')]
    w1 = sdict[li[0]].numpy().T.astype(np.float64) / sd[:, None]
    b1 = sdict[li[0].replace('weight', 'bias')].numpy().astype(np.float64) - (mu / sd) @ (sdict[li[0]].numpy().T)
    p = dict(w1=w1.astype(np.float32), b1=b1.astype(np.float32))
    if len(li) > 1:
        p['w2'] = sdict[li[1]].numpy().T.astype(np.float32).copy()
        p['b2'] = sdict[li[1].replace('weight', 'bias')].numpy().astype(np.float32).copy()
    return p, dict(best_epoch=best[1], best_crit=best[0], history=hist)


# ---------------------------------------------------------------------------------------------------------------
# ONNX: the head alone, and the head grafted onto HSE

HEAD_INPUT = 'global_pooling/Mean'
HEAD_OUTPUT = 'age_pred/Softmax:0'
PREFIX = 'age_head/'


def _dense_chain(p, prefix, x, inits, nodes):
    """MatMul/Add (ReLU between) layers of `p` from tensor x; returns the logits tensor name."""
    from onnx import helper, numpy_helper
    layers = [('w1', 'b1')] + ([('w2', 'b2')] if 'w2' in p else [])
    for li, (wk, bk) in enumerate(layers):
        k, b = prefix + f'dense{li}/kernel', prefix + f'dense{li}/bias'
        inits += [numpy_helper.from_array(np.ascontiguousarray(p[wk], np.float32), k),
                  numpy_helper.from_array(np.ascontiguousarray(p[bk], np.float32), b)]
        nodes += [helper.make_node('MatMul', [x, k], [prefix + f'dense{li}/matmul'], name=prefix + f'dense{li}/MatMul'),
                  helper.make_node('Add', [prefix + f'dense{li}/matmul', b], [prefix + f'dense{li}/out'],
                                   name=prefix + f'dense{li}/Add')]
        x = prefix + f'dense{li}/out'
        if li < len(layers) - 1:
            nodes.append(helper.make_node('Relu', [x], [prefix + f'dense{li}/relu'], name=prefix + f'dense{li}/Relu'))
            x = prefix + f'dense{li}/relu'
    return x


def head_onnx(p, path, doc=''):
    """Writes the head `p` as a small ONNX graph: HEAD_INPUT [N,1024] -> HEAD_OUTPUT [N,100] (opset 13). A
    blended head (p['alpha'], p['base']) has two branches, the new head and HSE's own age head (feats ->
    age_pred, copied), and outputs alpha * softmax_new + (1 - alpha) * softmax_hse."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    inits, nodes = [], []
    logits = _dense_chain(p, PREFIX, HEAD_INPUT, inits, nodes)
    if 'alpha' not in p:
        nodes.append(helper.make_node('Softmax', [logits], [HEAD_OUTPUT], name=PREFIX + 'Softmax', axis=1))
    else:
        base = _dense_chain(p['base'], PREFIX + 'hse/', HEAD_INPUT, inits, nodes)
        a = np.float32(p['alpha'])
        inits += [numpy_helper.from_array(np.array([a], np.float32), PREFIX + 'alpha'),
                  numpy_helper.from_array(np.array([np.float32(1) - a], np.float32), PREFIX + 'one_minus_alpha')]
        nodes += [helper.make_node('Softmax', [logits], [PREFIX + 'p_new'], name=PREFIX + 'Softmax', axis=1),
                  helper.make_node('Softmax', [base], [PREFIX + 'p_hse'], name=PREFIX + 'hse/Softmax', axis=1),
                  helper.make_node('Mul', [PREFIX + 'p_new', PREFIX + 'alpha'], [PREFIX + 'p_new_w'],
                                   name=PREFIX + 'blend/MulNew'),
                  helper.make_node('Mul', [PREFIX + 'p_hse', PREFIX + 'one_minus_alpha'], [PREFIX + 'p_hse_w'],
                                   name=PREFIX + 'blend/MulHse'),
                  helper.make_node('Add', [PREFIX + 'p_new_w', PREFIX + 'p_hse_w'], [HEAD_OUTPUT],
                                   name=PREFIX + 'blend/Add')]
    g = helper.make_graph(nodes, 'age_head',
                          [helper.make_tensor_value_info(HEAD_INPUT, TensorProto.FLOAT, ['N', 1024])],
                          [helper.make_tensor_value_info(HEAD_OUTPUT, TensorProto.FLOAT, ['N', N_BINS])], inits)
    m = helper.make_model(g, producer_name='faceanalyze models/train/age_head.py', producer_version='1',
                          opset_imports=[helper.make_opsetid('', 13)], doc_string=doc)
    m.ir_version = 7
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)
    return path


def head_params_from_onnx(path):
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    w = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}

    def chain(prefix):
        q = dict(w1=w[prefix + 'dense0/kernel'], b1=w[prefix + 'dense0/bias'])
        if prefix + 'dense1/kernel' in w:
            q['w2'], q['b2'] = w[prefix + 'dense1/kernel'], w[prefix + 'dense1/bias']
        return q
    p = chain(PREFIX)
    if PREFIX + 'alpha' in w:
        p['alpha'], p['base'] = float(w[PREFIX + 'alpha'][0]), chain(PREFIX + 'hse/')
    return p


def graft(hse_path, head_path, out_path):
    """HSE with its age head replaced by the head ONNX at `head_path`: the nodes that only serve
    'age_pred/Softmax:0' (and their weights) go, the head's nodes are appended reading 'global_pooling/Mean'
    and writing 'age_pred/Softmax:0'. Inputs, outputs (names, order, shapes), gender and embedding are
    unchanged. Deterministic: the same two files give the same bytes."""
    import onnx
    from onnx import helper
    m, h = onnx.load(hse_path), onnx.load(head_path)
    g = m.graph
    assert [o.name for o in h.graph.output] == [HEAD_OUTPUT] and [i.name for i in h.graph.input] == [HEAD_INPUT]
    assert HEAD_OUTPUT in [o.name for o in g.output]
    producer = {o: n for n in g.node for o in n.output}

    def needed(outputs):
        seen, stack = set(), list(outputs)
        while stack:
            t = stack.pop()
            n = producer.get(t)
            if n is not None and id(n) not in seen:
                seen.add(id(n))
                stack.extend(n.input)
        return seen

    keep_ids = needed([o.name for o in g.output if o.name != HEAD_OUTPUT])
    nodes = [n for n in g.node if id(n) in keep_ids]
    assert HEAD_INPUT in {o for n in nodes for o in n.output}, 'the embedding must stay computed'
    used = {i for n in nodes for i in n.input}
    inits = [t for t in g.initializer if t.name in used]
    names = {t.name for t in inits} | {o for n in nodes for o in n.output}
    for t in h.graph.initializer:
        assert t.name not in names, t.name
    for n in h.graph.node:
        assert n.name.startswith(PREFIX) and all(o not in names for o in n.output if o != HEAD_OUTPUT), n.name
    del g.node[:]
    g.node.extend(nodes + list(h.graph.node))
    del g.initializer[:]
    g.initializer.extend(inits + list(h.graph.initializer))
    kept_vi = [v for v in g.value_info if v.name in names]
    del g.value_info[:]
    g.value_info.extend(kept_vi)
    assert {o.domain for o in m.opset_import if o.domain in ('', 'ai.onnx')} and \
        [o.version for o in h.opset_import if o.domain in ('', 'ai.onnx')] == \
        [o.version for o in m.opset_import if o.domain in ('', 'ai.onnx')]
    del m.metadata_props[:]
    for k, v in (('faceanalyze.base_model', 'age_gender_hse_faceres.onnx sha256 ' + sha256_file(hse_path)),
                 ('faceanalyze.age_head', f'{head_path.rsplit("/", 1)[-1]} sha256 {sha256_file(head_path)}'),
                 ('faceanalyze.age_decoding', 'age = sum(p_i * (i + 1)) / sum(p_i), i = 0..99 (ages 1..100)')):
        m.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    m.producer_name = 'faceanalyze models/train/age_head.py (graft on ' + (m.producer_name or '?') + ')'
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, out_path)
    return out_path


# ---------------------------------------------------------------------------------------------------------------
# The dev-split choices (each trains on the train split, picks its epoch on dev) and the chosen one

BASE = dict(arch='hse-ft', hidden=256, sigma=2.0, l1=0.1, wd=1e-4, lr=3e-4, epochs=30, batch=256, dropout=0.0,
            w2160=0.0, select='mix', aug=True, blend=1.0)
W3049 = dict(wrange=[[30, 49, 3.0]])
W4049 = dict(wrange=[[30, 39, 2.0], [40, 49, 4.0]])
CANDIDATES = {
    # architecture, label distribution, loss (all ages, equal weights)
    'hse-ft': {},
    'hse-ft-sigma1': dict(sigma=1.0),
    'hse-ft-sigma3': dict(sigma=3.0),
    'hse-ft-l1-0': dict(l1=0.0),
    'hse-ft-l1-0.5': dict(l1=0.5),
    'hse-ft-drop0.3': dict(dropout=0.3, in_dropout=0.1),
    'hse-ft-noaug': dict(aug=False),
    'mlp256': dict(arch='mlp', lr=1e-3, dropout=0.3, in_dropout=0.1, wd=1e-3, epochs=40),
    'linear': dict(arch='linear', lr=3e-3, wd=1e-3, epochs=40),
    # which ages the loss weighs
    'hse-ft-w2160': dict(w2160=1.0),
    'hse-ft-balance0.5': dict(balance=0.5),
    'hse-ft-balance1': dict(balance=1.0),
    'hse-ft-w3049x3': W3049,
    'hse-ft-w4049': W4049,
    # blends with HSE's own age head: alpha * new + (1 - alpha) * hse (the same trained head, no retraining)
    'hse-ft-w2160-blend0.5': dict(w2160=1.0, blend=0.5),
    'hse-ft-w3049x3-blend0.5': dict(W3049, blend=0.5),
    'hse-ft-w3049x3-blend0.6': dict(W3049, blend=0.6),
    'hse-ft-w4049-blend0.5': dict(W4049, blend=0.5),
    'hse-ft-w4049-blend0.6': dict(W4049, blend=0.6),
    'hse-ft-w4049-blend0.7': dict(W4049, blend=0.7),
}
# The default set of the one-command run (the others were tried on dev in the first runs; README, "Age head").
DEFAULT_CANDIDATES = ['hse-ft', 'hse-ft-w2160', 'hse-ft-w3049x3', 'hse-ft-w4049', 'hse-ft-w2160-blend0.5',
                      'hse-ft-w3049x3-blend0.5', 'hse-ft-w3049x3-blend0.6', 'hse-ft-w4049-blend0.5',
                      'hse-ft-w4049-blend0.6', 'hse-ft-w4049-blend0.7']


def fmt_table(rows, header):
    w = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: '  '.join(str(v).rjust(w[i]) if i else str(v).ljust(w[i]) for i, v in enumerate(r))
    return '\n'.join([line(header), line(['-' * x for x in w])] + [line(r) for r in rows])


def decade_table(named):
    """Per-decade MAE and bias side by side for {name: metrics}."""
    labels = [lab for lab in next(iter(named.values()))['decades']]
    header = ['decade', 'n'] + [f'{k} {c}' for k in named for c in ('MAE', 'bias')]
    rows = []
    for lab in labels:
        r = [lab, next(iter(named.values()))['decades'][lab]['n']]
        for m in named.values():
            d = m['decades'][lab]
            r += [f"{d['mae']:.2f}", f"{d['bias']:+.2f}"]
        rows.append(r)
    for key, name in (('mae', 'all'), ('mae_21_60', '21-60')):
        rows.append([name, next(iter(named.values()))['n' if key == 'mae' else 'n_21_60']] +
                    sum([[f'{m[key]:.3f}', f"{m['bias']:+.2f}" if key == 'mae' else ''] for m in named.values()], []))
    return fmt_table(rows, header)


def read_predictions(path):
    import csv
    with open(path, newline='') as f:
        return {r['path']: r for r in csv.DictReader(f)}


def main(argv=None):
    import argparse
    import json
    import os
    import shutil
    import subprocess
    import time
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--data', required=True, help='folder holding utkface/manifest.csv (e.g. ../shared/data)')
    ap.add_argument('--out', required=True, help='output folder (ONNX files, log, report, split list)')
    ap.add_argument('--cache', help='embedding cache folder (default OUT/cache); research data: keep it out '
                    'of the repository')
    ap.add_argument('--hse', default=os.path.join(repo, 'models/onnx/age_gender_hse_faceres.onnx'))
    ap.add_argument('--detector', default=os.path.join(repo, 'models/onnx/yunet_n_dynamic.onnx'))
    ap.add_argument('--threads', type=int, default=2, help='ONNX Runtime / torch threads (default 2)')
    ap.add_argument('--candidates', default='default', help='dev candidates: default, all, or a comma-separated '
                    'list of: ' + ', '.join(CANDIDATES))
    ap.add_argument('--choose', help='skip the choice on dev and use this candidate')
    ap.add_argument('--parity-csv', default=os.path.join(repo, 'out/eval/age-hse-m0.1.csv'),
                    help="the Rust evaluation's predictions for hse (checked against this pipeline)")
    ap.add_argument('--install-head', help='also copy the head ONNX here (e.g. models/train/age_head_utk.onnx)')
    ap.add_argument('--eval-bin', help='faceanalyze-eval binary: run the Rust evaluation of the grafted model')
    ap.add_argument('--eval-args', default='--jobs 2', help='extra arguments for faceanalyze-eval')
    ap.add_argument('--eval-predictions', help='an existing predictions CSV of the grafted model (instead of '
                    '--eval-bin)')
    a = ap.parse_args(argv)
    t_start = time.time()
    os.makedirs(a.out, exist_ok=True)
    cache = a.cache or os.path.join(a.out, 'cache')
    logf = open(os.path.join(a.out, 'train_log.txt'), 'w')

    def log(*msg):
        s = ' '.join(str(m) for m in msg)
        print(s, flush=True)
        logf.write(s + '\n')
        logf.flush()

    import torch
    torch.set_num_threads(a.threads)
    data_dir = os.path.join(a.data, 'utkface')
    items = load_manifest(data_dir)
    ages = np.array([it['age'] for it in items])
    split = np.array([it['split'] for it in items])
    with open(os.path.join(a.out, 'split.csv'), 'w') as f:
        f.write('path,age,split\n' + ''.join(f"{it['path']},{it['age']:g},{it['split']}\n" for it in items))
    log(f'UTKFace {len(items)} images: ' + ', '.join(f'{k} {(split == k).sum()}' for k in ('train', 'dev', 'test')))
    log(f'hse {a.hse} sha256 {sha256_file(a.hse)}')

    # 1. Embeddings through the Rust pipeline's own steps (decode, detector, crop, HSE).
    log('1. embeddings (cache ' + cache + ')')
    d = extract(items, data_dir, a.hse, a.detector, cache, threads=a.threads, log=log)
    hse_pred = decode_age(d['probs'])
    report = dict(n=len(items), split={k: int((split == k).sum()) for k in ('train', 'dev', 'test')})

    # 2. Parity with the Rust evaluation of hse.
    hse_rust = None
    if a.parity_csv and os.path.exists(a.parity_csv):
        rust = read_predictions(a.parity_csv)
        rp = np.array([float(rust[it['path']]['predicted']) for it in items])
        rb = np.array([[float(rust[it['path']][c]) for c in 'xywh'] for it in items])
        rsrc = np.array([rust[it['path']]['face'] == 'detected' for it in items])
        hse_rust = rp
        da = np.abs(hse_pred - rp)
        db = np.abs(d['boxes'] - rb).max(1)
        report['parity_hse'] = dict(n=len(items), age_max=float(da.max()), age_mean=float(da.mean()),
                                    box_max=float(db.max()), source_mismatch=int((rsrc != d['detected']).sum()))
        log(f"2. parity with {a.parity_csv} over all {len(items)} images: |age| max {da.max():.4f} mean "
            f"{da.mean():.5f} (CSV rounds to 0.001); |box| max {db.max():.3f} (CSV rounds to 0.1); detected/fallback "
            f"mismatches {report['parity_hse']['source_mismatch']}")

    # 3. Choices on dev.
    tr, dv, te = split == 'train', split == 'dev', split == 'test'
    init = hse_head_weights(a.hse)
    x_base_tr, y_base_tr = d['emb'][tr], ages[tr]
    x_aug_tr = np.concatenate([x_base_tr, d['aug_emb']])
    y_aug_tr = np.concatenate([y_base_tr, ages[d['aug_idx']]])
    m_hse_dev = metrics(ages[dv], hse_pred[dv])
    log(f"3. dev choices (train {tr.sum()} images, {len(x_aug_tr)} with augmented views; dev {dv.sum()})")
    log(f"   hse on dev: MAE {m_hse_dev['mae']:.3f}, 21-60 {m_hse_dev['mae_21_60']:.3f}")
    names = [a.choose] if a.choose else {'all': list(CANDIDATES), 'default': DEFAULT_CANDIDATES}.get(
        a.candidates) or a.candidates.split(',')
    results, trained = {}, {}
    for name in names:
        cfg = dict(BASE, **CANDIDATES[name])
        key = repr(sorted((k, v) for k, v in cfg.items() if k != 'blend'))
        t0 = time.time()
        if key not in trained:  # blends reuse the head trained with the same settings
            xs, ys = (x_aug_tr, y_aug_tr) if cfg['aug'] else (x_base_tr, y_base_tr)
            trained[key] = train_head(cfg, xs, ys, d['emb'][dv], ages[dv], init=init)
        p, h = trained[key]
        if cfg['blend'] < 1.0:
            p = dict(p, alpha=float(cfg['blend']), base=init)
        m = metrics(ages[dv], decode_age(head_forward_np(p, d['emb'][dv])))
        worse = [lab for lab, v in m['decades'].items()
                 if v['n'] >= 20 and v['mae'] > m_hse_dev['decades'][lab]['mae']]
        results[name] = dict(cfg=cfg, params=p, hist=h, dev=m, worse=worse)
        log(f"   {name:24s} epoch {h['best_epoch']:2d}/{cfg['epochs']}  dev MAE {m['mae']:.3f}  21-60 "
            f"{m['mae_21_60']:.3f}  decades worse than hse: {','.join(worse) or '-'}  ({time.time() - t0:.0f} s)")
        log('      dev MAE by decade: ' + ' '.join(f"{k} {v['mae']:.2f}" for k, v in m['decades'].items()))
    ok = [n for n in results if not results[n]['worse']]
    chosen = min(ok or list(results), key=lambda n: (results[n]['dev']['mae_21_60'], results[n]['dev']['mae']))
    log(f"   chosen: {chosen}: the lowest dev MAE 21-60 among " +
        ('the candidates with no dev decade (n >= 20) worse than hse' if ok else
         'all candidates (every one has a dev decade worse than hse)'))
    report['dev'] = {'hse': m_hse_dev} | {n: dict(cfg=r['cfg'], best_epoch=r['hist']['best_epoch'], metrics=r['dev'],
                                                   decades_worse_than_hse=r['worse']) for n, r in results.items()}
    report['chosen'] = chosen
    with open(os.path.join(a.out, 'dev_history.json'), 'w') as f:
        json.dump({n: r['hist'] for n, r in results.items()}, f, indent=1)
    p = results[chosen]['params']

    # 4. ONNX: the head alone, the grafted model (twice, to check it is deterministic), parity.
    head_path = os.path.join(a.out, 'age_head_utk.onnx')
    doc = (f'Age head for HSE faceres ({chosen}): global_pooling/Mean [N,1024] -> age_pred/Softmax:0 [N,100], '
           'ages 1..100, age = sum(p_i (i+1)). Trained on the UTKFace train split (path-sorted position % 5 in '
           '{0,1,2}) by models/train/age_head.py.')
    head_onnx(p, head_path, doc)
    full = os.path.join(a.out, 'age_hse_utkhead.onnx')
    graft(a.hse, head_path, full)
    graft(a.hse, head_path, full + '.again')
    same = sha256_file(full) == sha256_file(full + '.again')
    os.remove(full + '.again')
    log(f'4. head {head_path} ({os.path.getsize(head_path)} bytes, sha256 {sha256_file(head_path)})')
    log(f'   grafted {full} ({os.path.getsize(full)} bytes, sha256 {sha256_file(full)}); rebuilt twice: '
        f'{"byte-identical" if same else "DIFFERENT"}')
    hs = hse_session(head_path, 1)
    ph = hs.run([HEAD_OUTPUT], {HEAD_INPUT: d['emb']})[0]
    dh = np.abs(decode_age(ph) - decode_age(head_forward_np(p, d['emb']))).max()
    rng = np.random.default_rng(SEED)
    pick = np.sort(rng.choice(np.nonzero(dv)[0], 64, replace=False))
    fs = hse_session(full, a.threads)
    x = np.stack([hse_input(load_rgb(os.path.join(data_dir, items[i]['path'])), d['boxes'][i], MARGIN) for i in pick])
    outs = dict(zip([o.name for o in fs.get_outputs()], fs.run(None, {'input_1:0': x})))
    dg = np.abs(decode_age(outs[HEAD_OUTPUT]) - decode_age(head_forward_np(p, d['emb'][pick]))).max()
    de = np.abs(outs[HEAD_INPUT] - d['emb'][pick]).max()
    hs0 = hse_session(a.hse, a.threads).run(['gender_pred/Sigmoid:0'], {'input_1:0': x})[0]
    dgen = np.abs(outs['gender_pred/Sigmoid:0'] - hs0).max()
    report['onnx'] = dict(head=head_path, head_bytes=os.path.getsize(head_path), head_sha256=sha256_file(head_path),
                          grafted=full, grafted_bytes=os.path.getsize(full), grafted_sha256=sha256_file(full),
                          deterministic=same, head_vs_numpy_years=float(dh), grafted_vs_numpy_years=float(dg),
                          grafted_embedding_diff=float(de), grafted_gender_diff=float(dgen))
    log(f'   parity: head ONNX vs numpy on all {len(items)} embeddings max {dh:.2e} years; grafted model on 64 dev '
        f'images vs numpy head on cached embeddings max {dg:.2e} years (embedding max diff {de:.2e}, gender '
        f'max diff {dgen:.2e})')
    if a.install_head:
        shutil.copyfile(head_path, a.install_head)
        log(f'   copied the head to {a.install_head}')

    # 5. The Rust evaluation (test split figures).
    pred_csv = a.eval_predictions
    if a.eval_bin and not pred_csv:
        pred_csv = os.path.join(a.out, 'eval-age-utkhead.csv')
        cmd = [a.eval_bin, 'age', data_dir, '--age-model', full, '--json', os.path.join(a.out, 'eval-age-utkhead.json'),
               '--predictions', pred_csv, '--quiet'] + a.eval_args.split()
        log('5. ' + ' '.join(cmd))
        t0 = time.time()
        subprocess.run(cmd, check=True)
        log(f'   Rust evaluation took {time.time() - t0:.0f} s')
    if pred_csv:
        ours = read_predictions(pred_csv)
        op = np.array([float(ours[it['path']]['predicted']) for it in items])
        mine = decode_age(head_forward_np(p, d['emb']))
        dr = np.abs(op - mine)
        log(f'   Rust predictions vs this script on all images: max {dr.max():.4f} years, mean {dr.mean():.5f}')
        hp = hse_rust if hse_rust is not None else hse_pred  # hse: the Rust CSV when given
        named = {'hse': metrics(ages[te], hp[te]), 'utkhead': metrics(ages[te], op[te])}
        report['test'] = named
        report['rust_vs_python_years'] = dict(max=float(dr.max()), mean=float(dr.mean()))
        report['all_images'] = {'hse': metrics(ages, hp), 'utkhead': metrics(ages, op)}
        report['dev_rust'] = {'hse': metrics(ages[dv], hp[dv]), 'utkhead': metrics(ages[dv], op[dv])}
        log('   TEST split (Rust evaluation):\n' + decade_table(named))
    report['wall_s'] = time.time() - t_start
    with open(os.path.join(a.out, 'report.json'), 'w') as f:
        json.dump(report, f, indent=1, default=float)
    log(f'wrote {a.out}/report.json; wall time {report["wall_s"]:.0f} s')


def graft_main(argv):
    """`age_head.py graft [--hse HSE] [--head HEAD] --out OUT`: rebuilds the grafted model from the two files."""
    import argparse
    import os
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(prog='age_head.py graft', description=graft_main.__doc__)
    ap.add_argument('--hse', default=os.path.join(repo, 'models/onnx/age_gender_hse_faceres.onnx'))
    ap.add_argument('--head', default=os.path.join(repo, 'models/train/age_head_utk.onnx'))
    ap.add_argument('--out', required=True)
    a = ap.parse_args(argv)
    graft(a.hse, a.head, a.out)
    print(f'{a.out}: {os.path.getsize(a.out)} bytes, sha256 {sha256_file(a.out)}')


if __name__ == '__main__':
    import sys
    if sys.argv[1:2] == ['graft']:
        graft_main(sys.argv[2:])
    else:
        main()
