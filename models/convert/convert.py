#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Converts an upstream model to ONNX the way the mirrored files were made (tf2onnx, opset 13).

Runs inside the model-tools venv that `fetch.py` creates (`.deps/model-tools`, packages pinned in
`requirements.txt` beside this file); it is not meant to be called by hand, but can be:

    convert.py keras --src emotion_model.hdf5 --out mini.onnx --input-name gray_pm1 --output-name predictions
    convert.py tfjs  --src faceres.json       --out hse.onnx

keras: a Keras 2 hdf5 model (oarriaga/face_classification's mini/big Xception), loaded with tf.keras
       (compile=False) and converted with tf2onnx.convert.from_keras; the input is renamed to `--input-name` and
       keeps a dynamic batch dimension; `--output-name` is checked (the Keras output layer's name).
tfjs:  a TF.js graph model (model.json + its .bin shards beside it), converted with `tf2onnx.convert --tfjs`.
The result is checked numerically by `reference.py check` afterwards; this script only converts.
"""

import argparse
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def convert_keras(args):
    import tensorflow as tf
    import tf2onnx

    model = tf.keras.models.load_model(args.src, compile=False)
    in_shape = tuple(model.inputs[0].shape)
    spec = (tf.TensorSpec((None,) + tuple(in_shape[1:]), tf.float32, name=args.input_name),)
    model_proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=args.opset, output_path=args.out)
    outs = [o.name for o in model_proto.graph.output]
    ins = [i.name for i in model_proto.graph.input]
    print(f"converted {args.src}: inputs {ins}, outputs {outs}, opset {args.opset}")
    if args.output_name and args.output_name not in outs:
        raise SystemExit(f"converted model has outputs {outs}, expected {args.output_name!r}")


def convert_tfjs(args):
    cmd = [
        sys.executable,
        "-m",
        "tf2onnx.convert",
        "--tfjs",
        args.src,
        "--output",
        args.out,
        "--opset",
        str(args.opset),
    ]
    print("running", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kind", choices=["keras", "tfjs"])
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--opset", type=int, default=13)
    ap.add_argument("--input-name", default="input")
    ap.add_argument("--output-name", default="")
    args = ap.parse_args(argv)
    if args.kind == "keras":
        convert_keras(args)
    else:
        convert_tfjs(args)
    if not os.path.isfile(args.out):
        raise SystemExit(f"conversion wrote no file at {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
