// SPDX-License-Identifier: MIT OR Apache-2.0
//! A rewrite of ONNX model bytes before ONNX Runtime loads them: ReLU6 exported as three nodes becomes one `Clip`.
//!
//! tf2onnx writes TensorFlow's ReLU6 as `Relu -> Min(6) -> Max(0)`. ONNX Runtime fuses `Clip` into the
//! convolution before it, but not that chain, so each of HSE's 27 ReLU6 layers costs three extra passes over the
//! activations: the published HSE file runs 1.5-2.6x slower than the same graph with `Clip` (see
//! `models/quantize/README.md`). The rewrite gives identical values in fp32 (`Max(Min(Relu(x), 6), 0)` equals
//! `Clip(x, 0, 6)`), and is applied when a model is loaded, so the file on disk stays the verified upstream one.
//!
//! The model is edited at the protobuf wire level: only the graph's node list and initializers change, every other
//! byte (weights included) is copied through. Anything unexpected leaves the model as it is.

use std::collections::HashMap;

/// Wire types of the protobuf encoding.
const VARINT: u64 = 0;
const I64: u64 = 1;
const LEN: u64 = 2;
const I32: u64 = 5;

// Field numbers from onnx.proto.
const MODEL_GRAPH: u64 = 7;
const MODEL_OPSET: u64 = 8;
const OPSET_DOMAIN: u64 = 1;
const OPSET_VERSION: u64 = 2;
const GRAPH_NODE: u64 = 1;
const GRAPH_INITIALIZER: u64 = 5;
const GRAPH_INPUT: u64 = 11;
const GRAPH_OUTPUT: u64 = 12;
const GRAPH_SPARSE_INITIALIZER: u64 = 15;
const VALUE_INFO_NAME: u64 = 1;
const NODE_INPUT: u64 = 1;
const NODE_OUTPUT: u64 = 2;
const NODE_NAME: u64 = 3;
const NODE_OP_TYPE: u64 = 4;
const NODE_ATTRIBUTE: u64 = 5;
const NODE_DOMAIN: u64 = 7;
const ATTRIBUTE_GRAPH: u64 = 6;
const ATTRIBUTE_GRAPHS: u64 = 11;
const TENSOR_DIMS: u64 = 1;
const TENSOR_DATA_TYPE: u64 = 2;
const TENSOR_FLOAT_DATA: u64 = 4;
const TENSOR_NAME: u64 = 8;
const TENSOR_RAW_DATA: u64 = 9;
const TENSOR_DATA_LOCATION: u64 = 14;
const TENSOR_EXTERNAL: u64 = 1;
const TENSOR_FLOAT: u64 = 1;

/// One field of a message: number, wire type, the whole encoded field and its payload (LEN) or value (VARINT).
#[derive(Debug, Clone, Copy)]
struct Field<'a> {
    number: u64,
    wire: u64,
    whole: &'a [u8],
    payload: &'a [u8],
    value: u64,
}

fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The fields of one message, in order; `None` when the bytes are not a well-formed message.
fn fields(b: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let start = pos;
        let key = varint(b, &mut pos)?;
        let (number, wire) = (key >> 3, key & 7);
        let (payload, value) = match wire {
            VARINT => {
                let v = varint(b, &mut pos)?;
                (&b[pos..pos], v)
            }
            I64 | I32 => {
                let n = if wire == I64 { 8 } else { 4 };
                let p = b.get(pos..pos + n)?;
                pos += n;
                (p, 0)
            }
            LEN => {
                let n = usize::try_from(varint(b, &mut pos)?).ok()?;
                let p = b.get(pos..pos.checked_add(n)?)?;
                pos += n;
                (p, 0)
            }
            _ => return None,
        };
        out.push(Field { number, wire, whole: &b[start..pos], payload, value });
    }
    Some(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len(out: &mut Vec<u8>, number: u64, payload: &[u8]) {
    put_varint(out, number << 3 | LEN);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

fn text(p: &[u8]) -> Option<&str> {
    std::str::from_utf8(p).ok()
}

#[derive(Debug, Default)]
struct Node<'a> {
    inputs: Vec<&'a str>,
    outputs: Vec<&'a str>,
    name: &'a str,
    op_type: &'a str,
    domain: &'a str,
    has_attributes: bool,
    /// An attribute holds a graph (`If`, `Loop`, `Scan` bodies), which may read the outer graph's tensors.
    has_subgraph: bool,
}

fn node(b: &[u8]) -> Option<Node<'_>> {
    let mut n = Node::default();
    for f in fields(b)? {
        match (f.number, f.wire) {
            (NODE_INPUT, LEN) => n.inputs.push(text(f.payload)?),
            (NODE_OUTPUT, LEN) => n.outputs.push(text(f.payload)?),
            (NODE_NAME, LEN) => n.name = text(f.payload)?,
            (NODE_OP_TYPE, LEN) => n.op_type = text(f.payload)?,
            (NODE_DOMAIN, LEN) => n.domain = text(f.payload)?,
            (NODE_ATTRIBUTE, wire) => {
                n.has_attributes = true;
                let attr = if wire == LEN { fields(f.payload)? } else { Vec::new() };
                n.has_subgraph |= attr.iter().any(|a| matches!(a.number, ATTRIBUTE_GRAPH | ATTRIBUTE_GRAPHS));
            }
            _ => {}
        }
    }
    Some(n)
}

/// Name, value and rank of a one-element float initializer (every dimension 1); `None` for anything else.
fn scalar_initializer(b: &[u8]) -> Option<(&str, f32, usize)> {
    let (mut name, mut float, mut rank, mut values) = (None, false, 0, Vec::new());
    for f in fields(b)? {
        match (f.number, f.wire) {
            (TENSOR_NAME, LEN) => name = Some(text(f.payload)?),
            (TENSOR_DATA_TYPE, VARINT) => float = f.value == TENSOR_FLOAT,
            (TENSOR_DIMS, VARINT) if f.value == 1 => rank += 1,
            (TENSOR_DIMS, LEN) => {
                let mut pos = 0;
                while pos < f.payload.len() {
                    if varint(f.payload, &mut pos)? != 1 {
                        return None;
                    }
                    rank += 1;
                }
            }
            (TENSOR_RAW_DATA | TENSOR_FLOAT_DATA, LEN) => values.extend_from_slice(f.payload),
            (TENSOR_FLOAT_DATA, I32) => values.extend_from_slice(f.payload),
            (TENSOR_DATA_TYPE | TENSOR_NAME, _) => {}
            // Other dims, external data, other encodings: not a plain scalar.
            _ => return None,
        }
    }
    let bytes: [u8; 4] = values.as_slice().try_into().ok()?;
    Some((name?, f32::from_le_bytes(bytes), rank)).filter(|_| float)
}

/// Name and rank of a tensor (initializer), and whether its data lives in an external file.
fn tensor_info(b: &[u8]) -> Option<(&str, usize, bool)> {
    let fs = fields(b)?;
    let name = fs.iter().find(|f| f.number == TENSOR_NAME && f.wire == LEN).map_or(Some(""), |f| text(f.payload))?;
    let mut rank = 0;
    for f in fs.iter().filter(|f| f.number == TENSOR_DIMS) {
        rank += match f.wire {
            LEN => f.payload.iter().filter(|&&b| b & 0x80 == 0).count(),
            _ => 1,
        };
    }
    let external = fs.iter().any(|f| f.number == TENSOR_DATA_LOCATION && f.value == TENSOR_EXTERNAL);
    Some((name, rank, external))
}

/// Name of a `ValueInfoProto` (graph input or output).
fn value_info_name(b: &[u8]) -> Option<&str> {
    text(fields(b)?.iter().find(|g| g.number == VALUE_INFO_NAME && g.wire == LEN)?.payload)
}

/// The default-domain opset the model imports.
fn default_opset(model: &[Field]) -> Option<u64> {
    model.iter().filter(|f| f.number == MODEL_OPSET && f.wire == LEN).find_map(|f| {
        let fs = fields(f.payload)?;
        let domain = fs
            .iter()
            .find(|g| g.number == OPSET_DOMAIN && g.wire == LEN)
            .map_or("", |g| text(g.payload).unwrap_or("?"));
        if domain.is_empty() || domain == "ai.onnx" {
            fs.iter().find(|g| g.number == OPSET_VERSION && g.wire == VARINT).map(|g| g.value)
        } else {
            None
        }
    })
}

/// `model` with every `Relu -> Min(c) -> Max(0)` chain replaced by `Clip(0, c)`, and how many were replaced;
/// `None` when there is nothing to replace or the bytes are not a model this understands.
pub fn relu6_to_clip(model: &[u8]) -> Option<(Vec<u8>, usize)> {
    let top = fields(model)?;
    // Clip takes its bounds as inputs from opset 11 on.
    if default_opset(&top)? < 11 {
        return None;
    }
    let graph = top.iter().filter(|f| f.number == MODEL_GRAPH && f.wire == LEN).collect::<Vec<_>>();
    let [graph] = graph.as_slice() else { return None };
    let gfields = fields(graph.payload)?;

    let mut nodes = Vec::new();
    let mut scalars = HashMap::new();
    let mut uses: HashMap<&str, usize> = HashMap::new();
    // Every tensor name in the graph: generated names must not collide with any of them.
    let mut names = std::collections::HashSet::new();
    let mut ranks = HashMap::new();
    let mut graph_inputs = Vec::new();
    for (i, f) in gfields.iter().enumerate() {
        match (f.number, f.wire) {
            (GRAPH_NODE, LEN) => {
                let n = node(f.payload)?;
                if n.has_subgraph || matches!(n.op_type, "If" | "Loop" | "Scan") {
                    // A body may read this graph's tensors without listing them as inputs.
                    return None;
                }
                for &inp in &n.inputs {
                    *uses.entry(inp).or_default() += 1;
                }
                names.extend(n.inputs.iter().chain(&n.outputs).copied());
                nodes.push((i, n));
            }
            (GRAPH_INITIALIZER, LEN) => {
                let (name, rank, external) = tensor_info(f.payload)?;
                if external {
                    // Loading from memory loses the folder external data is found relative to.
                    return None;
                }
                names.insert(name);
                ranks.insert(name, rank);
                if let Some((name, v, rank)) = scalar_initializer(f.payload) {
                    scalars.insert(name, (v, rank));
                }
            }
            (GRAPH_SPARSE_INITIALIZER, _) => return None,
            (GRAPH_INPUT, LEN) => {
                let name = value_info_name(f.payload)?;
                names.insert(name);
                graph_inputs.push(name);
            }
            (GRAPH_OUTPUT, LEN) => {
                let name = value_info_name(f.payload)?;
                names.insert(name);
                *uses.entry(name).or_default() += 1;
            }
            _ => {}
        }
    }
    // An initializer that is also a graph input can be fed at run time: not a constant.
    for name in graph_inputs {
        scalars.remove(name);
    }
    let producer: HashMap<&str, usize> =
        nodes.iter().enumerate().flat_map(|(k, (_, n))| n.outputs.iter().map(move |&o| (o, k))).collect();
    let consumer = |out: &str| -> Option<usize> {
        // The only user of `out` (one node input, not a graph output).
        (uses.get(out) == Some(&1)).then(|| nodes.iter().position(|(_, n)| n.inputs.contains(&out))).flatten()
    };
    let plain = |n: &Node, op: &str, inputs: usize| {
        n.op_type == op && n.domain.is_empty() && !n.has_attributes && n.inputs.len() == inputs && n.outputs.len() == 1
    };

    // Field index of the Relu -> the Clip node and initializers that replace it; the Min and Max are dropped.
    let mut replace: HashMap<usize, (Vec<u8>, [Vec<u8>; 2])> = HashMap::new();
    let mut dropped = std::collections::HashSet::new();
    let mut generated = std::collections::HashSet::new();
    for (relu_at, relu) in &nodes {
        if !plain(relu, "Relu", 1) {
            continue;
        }
        let Some(mk) = consumer(relu.outputs[0]) else { continue };
        let min = &nodes[mk].1;
        if !plain(min, "Min", 2) || min.inputs[0] != relu.outputs[0] {
            continue;
        }
        let Some(xk) = consumer(min.outputs[0]) else { continue };
        let max = &nodes[xk].1;
        if !plain(max, "Max", 2) || max.inputs[0] != min.outputs[0] {
            continue;
        }
        let (Some(&(hi, hi_rank)), Some(&(lo, lo_rank))) = (scalars.get(min.inputs[1]), scalars.get(max.inputs[1]))
        else {
            continue;
        };
        if lo != 0.0 || hi.is_nan() || hi < 0.0 || producer.get(max.outputs[0]) != Some(&xk) {
            continue;
        }
        // Broadcasting a bound must not raise the rank of x: fine for rank 0 or 1, and up to a lower bound of x's
        // rank read off its producer: a convolution's output has its weight's rank, an elementwise Add/Mul/Sub/Div
        // output at least the rank of a constant operand. (HSE's bounds are [1, 1, 1, 1] after Conv or after
        // the Add of a batch-norm.)
        let x_rank = producer
            .get(relu.inputs[0])
            .map(|&k| &nodes[k].1)
            .filter(|n| n.domain.is_empty())
            .and_then(|n| match n.op_type {
                "Conv" => n.inputs.get(1).and_then(|w| ranks.get(w)).copied(),
                "Add" | "Mul" | "Sub" | "Div" => n.inputs.iter().filter_map(|i| ranks.get(i)).copied().max(),
                _ => None,
            })
            .unwrap_or(1);
        if hi_rank.max(lo_rank) > x_rank.max(1) {
            continue;
        }
        // Tensor names are unique (node names need not be): derive the new names from the Relu's output.
        let base = relu.outputs[0];
        let (lo_name, hi_name) = (format!("{base}_relu6_min"), format!("{base}_relu6_max"));
        if [&lo_name, &hi_name].iter().any(|n| names.contains(n.as_str()) || generated.contains(*n)) {
            continue;
        }
        let mut clip = Vec::new();
        for inp in [relu.inputs[0], &lo_name, &hi_name] {
            put_len(&mut clip, NODE_INPUT, inp.as_bytes());
        }
        put_len(&mut clip, NODE_OUTPUT, max.outputs[0].as_bytes());
        let node_name = if relu.name.is_empty() { format!("{base}_relu6") } else { format!("{}_relu6", relu.name) };
        put_len(&mut clip, NODE_NAME, node_name.as_bytes());
        put_len(&mut clip, NODE_OP_TYPE, b"Clip");
        let scalar = |name: &str, v: f32| {
            let mut t = Vec::new();
            put_varint(&mut t, TENSOR_DATA_TYPE << 3 | VARINT);
            put_varint(&mut t, TENSOR_FLOAT);
            put_len(&mut t, TENSOR_NAME, name.as_bytes());
            put_len(&mut t, TENSOR_RAW_DATA, &v.to_le_bytes());
            t
        };
        replace.insert(*relu_at, (clip, [scalar(&lo_name, 0.0), scalar(&hi_name, hi)]));
        dropped.extend([nodes[mk].0, nodes[xk].0]);
        generated.extend([lo_name, hi_name]);
    }
    if replace.is_empty() {
        return None;
    }

    let mut new_graph = Vec::with_capacity(graph.payload.len() + 256 * replace.len());
    let mut new_inits = Vec::new();
    for (i, f) in gfields.iter().enumerate() {
        if let Some((clip, inits)) = replace.remove(&i) {
            put_len(&mut new_graph, GRAPH_NODE, &clip);
            for t in inits {
                put_len(&mut new_inits, GRAPH_INITIALIZER, &t);
            }
        } else if !dropped.contains(&i) {
            new_graph.extend_from_slice(f.whole);
        }
    }
    new_graph.extend_from_slice(&new_inits);
    let count = dropped.len() / 2;
    let mut out = Vec::with_capacity(model.len() + new_inits.len());
    for f in &top {
        if f.number == MODEL_GRAPH && f.wire == LEN {
            put_len(&mut out, MODEL_GRAPH, &new_graph);
        } else {
            out.extend_from_slice(f.whole);
        }
    }
    Some((out, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_bytes(op: &str, inputs: &[&str], output: &str) -> Vec<u8> {
        let mut n = Vec::new();
        for i in inputs {
            put_len(&mut n, NODE_INPUT, i.as_bytes());
        }
        put_len(&mut n, NODE_OUTPUT, output.as_bytes());
        put_len(&mut n, NODE_OP_TYPE, op.as_bytes());
        n
    }

    fn scalar_bytes(name: &str, v: f32, dims: bool) -> Vec<u8> {
        let mut t = Vec::new();
        if dims {
            put_varint(&mut t, TENSOR_DIMS << 3 | VARINT);
            put_varint(&mut t, 1);
        }
        put_varint(&mut t, TENSOR_DATA_TYPE << 3 | VARINT);
        put_varint(&mut t, TENSOR_FLOAT);
        put_len(&mut t, TENSOR_NAME, name.as_bytes());
        put_len(&mut t, TENSOR_RAW_DATA, &v.to_le_bytes());
        t
    }

    fn model(opset: u64, nodes: &[Vec<u8>], inits: &[Vec<u8>], output: &str) -> Vec<u8> {
        model_with_inputs(opset, nodes, inits, output, &[])
    }

    fn model_with_inputs(opset: u64, nodes: &[Vec<u8>], inits: &[Vec<u8>], output: &str, inputs: &[&str]) -> Vec<u8> {
        let mut g = Vec::new();
        for i in inputs {
            let mut vi = Vec::new();
            put_len(&mut vi, VALUE_INFO_NAME, i.as_bytes());
            put_len(&mut g, GRAPH_INPUT, &vi);
        }
        for n in nodes {
            put_len(&mut g, GRAPH_NODE, n);
        }
        for t in inits {
            put_len(&mut g, GRAPH_INITIALIZER, t);
        }
        let mut vi = Vec::new();
        put_len(&mut vi, VALUE_INFO_NAME, output.as_bytes());
        put_len(&mut g, GRAPH_OUTPUT, &vi);
        let mut m = Vec::new();
        put_varint(&mut m, 1 << 3 | VARINT); // ir_version
        put_varint(&mut m, 7);
        let mut os = Vec::new();
        put_varint(&mut os, OPSET_VERSION << 3 | VARINT);
        put_varint(&mut os, opset);
        put_len(&mut m, MODEL_OPSET, &os);
        put_len(&mut m, MODEL_GRAPH, &g);
        m
    }

    fn relu6_nodes() -> Vec<Vec<u8>> {
        vec![
            node_bytes("Relu", &["x"], "r"),
            node_bytes("Min", &["r", "six"], "m"),
            node_bytes("Max", &["m", "zero"], "y"),
        ]
    }

    fn relu6_model(opset: u64, extra_user: bool) -> Vec<u8> {
        let mut nodes = relu6_nodes();
        if extra_user {
            nodes.push(node_bytes("Neg", &["m"], "n"));
        }
        model(opset, &nodes, &[scalar_bytes("six", 6.0, true), scalar_bytes("zero", 0.0, false)], "y")
    }

    fn graph_nodes(m: &[u8]) -> Vec<Node<'_>> {
        let top = fields(m).unwrap();
        let g = top.iter().find(|f| f.number == MODEL_GRAPH).unwrap();
        fields(g.payload).unwrap().iter().filter(|f| f.number == GRAPH_NODE).map(|f| node(f.payload).unwrap()).collect()
    }

    #[test]
    fn relu_min_max_becomes_one_clip() {
        let m = relu6_model(13, false);
        let (out, n) = relu6_to_clip(&m).unwrap();
        assert_eq!(n, 1);
        let nodes = graph_nodes(&out);
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].op_type, "Clip");
        assert_eq!(nodes[0].inputs[0], "x");
        assert_eq!(nodes[0].outputs, ["y"]);
        let top = fields(&out).unwrap();
        let g = top.iter().find(|f| f.number == MODEL_GRAPH).unwrap();
        let bounds: HashMap<_, _> = fields(g.payload)
            .unwrap()
            .iter()
            .filter(|f| f.number == GRAPH_INITIALIZER)
            .filter_map(|f| scalar_initializer(f.payload).map(|(n, v, _)| (n, v)))
            .collect();
        assert_eq!(bounds[nodes[0].inputs[1]], 0.0);
        assert_eq!(bounds[nodes[0].inputs[2]], 6.0);
        // Everything else is copied through: the ir_version field leads the model as before.
        assert_eq!(out[..2], m[..2]);
    }

    #[test]
    fn chains_it_cannot_prove_equal_are_left_alone() {
        // The Min output is also used elsewhere.
        assert!(relu6_to_clip(&relu6_model(13, true)).is_none());
        // Opset 10 has no Clip with input bounds.
        assert!(relu6_to_clip(&relu6_model(10, false)).is_none());
        // A lower bound other than 0.
        let nodes = [
            node_bytes("Relu", &["x"], "r"),
            node_bytes("Min", &["r", "six"], "m"),
            node_bytes("Max", &["m", "one"], "y"),
        ];
        let m = model(13, &nodes, &[scalar_bytes("six", 6.0, false), scalar_bytes("one", 1.0, false)], "y");
        assert!(relu6_to_clip(&m).is_none());
        // A generated name would collide with an existing tensor.
        let clash = [relu6_nodes(), vec![node_bytes("Neg", &["r_relu6_max"], "n")]].concat();
        let inits = [scalar_bytes("six", 6.0, true), scalar_bytes("zero", 0.0, false)];
        assert!(relu6_to_clip(&model(13, &clash, &inits, "y")).is_none());
        // A bound of shape [1, 1] could raise the output's rank.
        let mut six = scalar_bytes("six", 6.0, true);
        put_varint(&mut six, TENSOR_DIMS << 3 | VARINT);
        put_varint(&mut six, 1);
        assert!(relu6_to_clip(&model(13, &relu6_nodes(), &[six, inits[1].clone()], "y")).is_none());
        // A subgraph may read the chain's tensors.
        let with_if = [relu6_nodes(), vec![node_bytes("If", &["c"], "z")]].concat();
        assert!(relu6_to_clip(&model(13, &with_if, &inits, "y")).is_none());
        // A bound that is also a graph input can be fed at run time.
        assert!(relu6_to_clip(&model_with_inputs(13, &relu6_nodes(), &inits, "y", &["six"])).is_none());
        // Not a model at all.
        assert!(relu6_to_clip(b"\xff\xff\xff").is_none());
        assert!(relu6_to_clip(&[]).is_none());
    }
}
