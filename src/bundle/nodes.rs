//! Checks on a graph's nodes at [`Bundle::open`](super::Bundle::open), before any engine
//! sees them:
//! - **operators**: only those the export pipeline emits ([`OPS`]); no loops, no
//!   `Tile`/`Range`/`Resize`, nothing whose cost we cannot bound;
//! - **constant bombs**: a `Constant` holds at most [`MAX_CONST_ELEMS`] elements (all of a
//!   graph's together [`MAX_GRAPH_CONST_ELEMS`]); a node whose inputs are all constants may
//!   only be shape plumbing (it cannot grow what it folds); the shape a
//!   `ConstantOfShape` or `Expand` builds is evaluated, and its constant part may not ask
//!   for more than [`MAX_CONST_ELEMS`] elements. So tract's constant folding at load
//!   allocates at most what the file's constants hold, and nothing at run time is sized by
//!   an arbitrary constant;
//! - **heads**: every attention's q/k/v reshape splits its width as the manifest says
//!   (`heads` x `head_dim`, or `prm_heads` x `head_dim` in the PRM), and every softmax
//!   over attention scores scales them by `1/sqrt(head_dim)`: the fused and GPU engines,
//!   which compute attention from these two numbers, then compute what the graph does;
//! - **float constants**: the fused and GPU engines compute every float constant of the
//!   graphs for themselves, so each one must be what the architecture implies, by the
//!   node it feeds: `1 - mask` (1.0), the mask's bias (`MASK_NEG`), the norms' epsilon
//!   (`NORM_EPS`), the attention scale, a causal mask over the history or the levels, and
//!   the level mask that hides codes past each level's codebook. Any other float
//!   constant is refused (found by the `differential` fuzz target: an overwritten level
//!   mask made tract's log-probabilities -inf while the fused engine ran);
//! - **attributes**: every node attribute is one the exporter writes, with a value the
//!   fused and GPU engines assume ([`ATTRS`]): softmaxes and norms over the last axis, the
//!   transposes of attention, casts to f32; an attribute a node may not carry is refused;
//! - **axes and indices by role**: the one axis of every Unsqueeze, Squeeze and ReduceSum,
//!   and the index and axis of every constant Gather, is the one its role in the graphs
//!   implies (a scalar made a vector, the mask broadcast, a dot product over the width,
//!   per-level rows summed, a shape's batch or sequence, a batch of one's row, the last
//!   code), read from the rank of what the node reads (`Ranks`): in range is not enough,
//!   as the fused and GPU engines compute the role and read no axis.

use std::collections::HashMap;

use super::onnx::{AttrValue, ConstValues, Node, OnnxIndex, MASK_NEG, NORM_EPS};
use super::Manifest;
use crate::error::{err, Result};

/// The operators a bundle graph may use: exactly those our export pipeline emits.
pub const OPS: &[&str] = &[
    "Add",
    "Cast",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Div",
    "Equal",
    "Expand",
    "Gather",
    "LogSoftmax",
    "MatMul",
    "Mul",
    "ReduceMean",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Shape",
    "Softmax",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Transpose",
    "Unsqueeze",
    "Where",
];

/// The attributes a node may carry, per operator, and the values each may take (all ints
/// or int lists): what the export pipeline writes and what the fused and GPU engines,
/// which read no attribute, compute. An operator not listed carries none (`Constant`'s
/// `value` is read apart). `ConstantOfShape`'s `value` must be the i64 tensor `[1]`.
pub const ATTRS: &[(&str, &str, &[&[i64]])] = &[
    ("Cast", "to", &[&[1]]),
    ("Concat", "axis", &[&[0], &[1]]),
    ("Gather", "axis", &[&[0], &[1]]),
    ("LogSoftmax", "axis", &[&[-1]]),
    ("Softmax", "axis", &[&[-1]]),
    ("ReduceMean", "axes", &[&[-1]]),
    ("ReduceMean", "keepdims", &[&[1]]),
    ("ReduceSum", "keepdims", &[&[0]]),
    ("Reshape", "allowzero", &[&[0]]),
    (
        "Transpose",
        "perm",
        &[&[0, 2, 1, 3], &[0, 2, 3, 1], &[1, 0, 2]],
    ),
];

/// Attributes whose default means something else than the engines compute: a ReduceMean
/// without `axes` reduces every axis, a Transpose without `perm` reverses them all.
const REQUIRED_ATTRS: &[(&str, &str)] = &[("ReduceMean", "axes"), ("Transpose", "perm")];

/// The attribute check of the module docs.
fn check_attributes(index: &OnnxIndex, what: &str) -> Result<()> {
    for n in &index.nodes {
        let name = n.outputs.first().map(String::as_str).unwrap_or("");
        if let Some((_, attr)) = REQUIRED_ATTRS
            .iter()
            .find(|(op, attr)| *op == n.op && !n.attrs.iter().any(|a| a.name == *attr))
        {
            return Err(err!(
                Graph,
                "{what}: node {name:?} ({}) has no {attr:?}; the engines need it explicit",
                n.op
            ));
        }
        for a in &n.attrs {
            if n.op == "ConstantOfShape" && a.name == "value" {
                if a.value != AttrValue::Tensor(ConstValues::Ints(vec![1])) {
                    return Err(err!(
                        Graph,
                        "{what}: node {name:?} (ConstantOfShape) fills with {:?}; the graphs fill shapes with the i64 tensor [1]",
                        a.value
                    ));
                }
                continue;
            }
            let allowed = ATTRS
                .iter()
                .find(|(op, attr, _)| *op == n.op && *attr == a.name)
                .map(|x| x.2);
            let got: Option<&[i64]> = match &a.value {
                AttrValue::Int(i) => Some(std::slice::from_ref(i)),
                AttrValue::Ints(v) => Some(&v[..]),
                _ => None,
            };
            match (allowed, got) {
                (Some(vals), Some(g)) if vals.contains(&g) => {}
                (Some(vals), _) => {
                    return Err(err!(
                        Graph,
                        "{what}: node {name:?} ({}) has {} = {:?}; the engines compute it only with {vals:?}",
                        n.op,
                        a.name,
                        a.value
                    ))
                }
                (None, _) => {
                    return Err(err!(
                        Graph,
                        "{what}: node {name:?} ({}) carries the attribute {:?}, which the bundle graphs do not use",
                        n.op,
                        a.name
                    ))
                }
            }
        }
    }
    Ok(())
}

/// Operators that may run on constants alone: they move or relabel values, never multiply
/// them (folding them yields at most what went in).
const PLUMBING: &[&str] = &["Cast", "Concat", "Reshape", "Shape", "Squeeze", "Unsqueeze"];

/// Most elements one `Constant` (or the constant part of a built shape) may hold. The
/// largest legitimate one is the decoder's level mask, levels x widest codebook.
pub const MAX_CONST_ELEMS: u64 = 1 << 20;
/// Most constant elements one graph may hold in `Constant` nodes.
pub const MAX_GRAPH_CONST_ELEMS: u64 = 1 << 22;

/// One element of a small shape vector: known, dimension k of a runtime tensor's shape, or
/// otherwise from a runtime shape.
#[derive(Clone, Copy, Debug, PartialEq)]
enum V {
    Known(i64),
    Dim(i64),
    Dynamic,
}

struct Graph<'a> {
    what: &'a str,
    producer: HashMap<&'a str, &'a Node>,
    initializers: std::collections::HashSet<&'a str>,
}

impl<'a> Graph<'a> {
    /// The values of a small integer vector, as far as they can be known statically;
    /// `None` when the chain uses something this evaluator does not follow.
    fn eval(&self, name: &str, depth: usize) -> Option<Vec<V>> {
        if depth > 16 {
            return None;
        }
        let n = self.producer.get(name)?;
        let arg = |i: usize| n.inputs.get(i).and_then(|x| self.eval(x, depth + 1));
        match n.op.as_str() {
            "Constant" => match &n.constant {
                Some((_, _, ConstValues::Ints(v))) => {
                    Some(v.iter().map(|&x| V::Known(x)).collect())
                }
                _ => None,
            },
            "Unsqueeze" | "Squeeze" | "Reshape" | "Cast" => arg(0),
            "Concat" => {
                let mut out = Vec::new();
                for i in 0..n.inputs.len() {
                    out.extend(self.eval(&n.inputs[i], depth + 1)?);
                    if out.len() > 8 {
                        return None;
                    }
                }
                Some(out)
            }
            // an element of a runtime tensor's shape
            "Gather" => {
                let src = self.producer.get(n.inputs.first()?.as_str())?;
                let k = match n
                    .inputs
                    .get(1)
                    .and_then(|i| self.eval(i, depth + 1))
                    .as_deref()
                {
                    Some([V::Known(k)]) => V::Dim(*k),
                    _ => V::Dynamic,
                };
                (src.op == "Shape").then(|| vec![k])
            }
            // the shape of a vector we can evaluate: its length
            "Shape" => {
                let v = arg(0)?;
                Some(vec![V::Known(v.len() as i64)])
            }
            "ConstantOfShape" => {
                // the fill value is 0 unless given; its length is the shape's only entry
                match arg(0)?.as_slice() {
                    [V::Known(k)] if (0..=8).contains(k) => Some(vec![V::Known(0); *k as usize]),
                    _ => None,
                }
            }
            "Mul" | "Equal" | "Where" => {
                let args: Vec<Vec<V>> = (0..n.inputs.len()).map(arg).collect::<Option<_>>()?;
                let len = args.iter().map(Vec::len).max()?;
                if args.iter().any(|a| a.len() != len && a.len() != 1) {
                    return None;
                }
                let at = |a: &Vec<V>, i: usize| a[if a.len() == 1 { 0 } else { i }];
                Some(
                    (0..len)
                        .map(|i| {
                            let xs: Vec<V> = args.iter().map(|a| at(a, i)).collect();
                            match (n.op.as_str(), xs.as_slice()) {
                                ("Mul", [V::Known(a), V::Known(b)]) => {
                                    V::Known(a.saturating_mul(*b))
                                }
                                ("Equal", [V::Known(a), V::Known(b)]) => V::Known((a == b) as i64),
                                ("Where", [V::Known(c), x, y]) => {
                                    if *c != 0 {
                                        *x
                                    } else {
                                        *y
                                    }
                                }
                                _ => V::Dynamic,
                            }
                        })
                        .collect(),
                )
            }
            _ => None,
        }
    }

    /// Whether `name` holds rows looked up in an initializer table: `Gather(table, ids)`,
    /// cast (f16 tables) or dequantized (`Mul(Cast(Gather(table, ids)), Gather(scale, ids))`).
    fn looks_up(&self, name: &str, depth: usize) -> bool {
        let Some(n) = self.producer.get(name) else {
            return false;
        };
        if depth > 3 {
            return false;
        }
        let first = n.inputs.first().map(String::as_str).unwrap_or("");
        match n.op.as_str() {
            "Gather" => self.weight_of(first, 0).is_some(),
            "Cast" => self.looks_up(first, depth + 1),
            "Mul" => {
                self.looks_up(first, depth + 1)
                    && n.inputs.get(1).is_some_and(|s| self.looks_up(s, depth + 1))
            }
            _ => false,
        }
    }

    /// `Mul(Cast(W), W.scale)`: an int8 weight's dequantization, as large as `W` (the
    /// scale's shape is checked against W's by `arch`).
    fn dequantizes(&self, n: &Node) -> bool {
        let [a, b] = n.inputs.as_slice() else {
            return false;
        };
        n.op == "Mul"
            && self.producer.get(a.as_str()).is_some_and(|c| {
                c.op == "Cast"
                    && c.inputs.len() == 1
                    && self.initializers.contains(c.inputs[0].as_str())
                    && b.strip_suffix(".scale") == Some(c.inputs[0].as_str())
                    && self.initializers.contains(b.as_str())
            })
    }

    /// The weight a MatMul's right operand reads, through a dequantization (Mul by a
    /// scale, Cast), if any.
    fn weight_of(&self, name: &'a str, depth: usize) -> Option<&'a str> {
        if self.initializers.contains(name) {
            return Some(name);
        }
        if depth > 3 {
            return None;
        }
        let n = self.producer.get(name)?;
        match n.op.as_str() {
            "Mul" | "Cast" => self.weight_of(n.inputs.first()?.as_str(), depth + 1),
            _ => None,
        }
    }
}

/// Check `index` (one graph of a bundle described by `m`): see the module docs.
/// The graph's dataflow is well formed: every node reads only graph inputs, initializers
/// and outputs of nodes before it (ONNX's topological order), each value is defined once,
/// no two nodes share a name, and the graph's outputs are defined. tract refuses a graph
/// that breaks this, while the fused and GPU engines, which read weights by name and not
/// the wiring, would run it: checked here so that both refuse it (found by the
/// `differential` fuzz target).
fn check_dataflow(index: &OnnxIndex, what: &str) -> Result<()> {
    let mut defined: std::collections::HashSet<&str> = index
        .inputs
        .iter()
        .map(|v| v.name.as_str())
        .chain(index.initializers.iter().map(|i| i.name.as_str()))
        .collect();
    let mut names = std::collections::HashSet::new();
    for n in &index.nodes {
        if !n.name.is_empty() && !names.insert(n.name.as_str()) {
            return Err(err!(
                Graph,
                "{what}: two nodes are named \"{}\"; node names are unique",
                crate::error::escape(&n.name)
            ));
        }
        if let Some(i) = n
            .inputs
            .iter()
            .find(|i| !i.is_empty() && !defined.contains(i.as_str()))
        {
            return Err(err!(
                Graph,
                "{what}: a {} node reads {i:?}, which no graph input, initializer or earlier node defines",
                n.op
            ));
        }
        for o in &n.outputs {
            if !o.is_empty() && !defined.insert(o.as_str()) {
                return Err(err!(
                    Graph,
                    "{what}: value {o:?} is defined twice (by a {} node)",
                    n.op
                ));
            }
        }
    }
    if let Some(o) = index
        .outputs
        .iter()
        .find(|o| !defined.contains(o.name.as_str()))
    {
        return Err(err!(
            Graph,
            "{what}: the graph's output {:?} is not computed by any node",
            o.name
        ));
    }
    Ok(())
}

pub fn check(index: &OnnxIndex, what: &str, m: &Manifest) -> Result<()> {
    check_dataflow(index, what)?;
    check_attributes(index, what)?;
    let mut g = Graph {
        what,
        producer: HashMap::new(),
        initializers: index.initializers.iter().map(|i| i.name.as_str()).collect(),
    };
    let mut total = 0u64;
    for n in &index.nodes {
        if !OPS.contains(&n.op.as_str()) {
            return Err(err!(
                Graph,
                "{what}: operator {:?} is not one a bundle may use (allowed: {})",
                n.op,
                OPS.join(", ")
            ));
        }
        for o in &n.outputs {
            if g.producer.insert(o.as_str(), n).is_some() || g.initializers.contains(o.as_str()) {
                return Err(err!(Graph, "{what}: value {o:?} is produced twice"));
            }
        }
        if let Some((count, dims, _)) = &n.constant {
            total = total.saturating_add(*count);
            if *count > MAX_CONST_ELEMS || total > MAX_GRAPH_CONST_ELEMS {
                return Err(err!(
                    Graph,
                    "{what}: a Constant of shape {:?} ({count} elements) is over the limit of {MAX_CONST_ELEMS} per constant and {MAX_GRAPH_CONST_ELEMS} per graph",
                    &dims[..]
                ));
            }
        }
    }
    // values known at load (initializers, constants, and what plumbing makes of them;
    // ONNX lists nodes in topological order)
    let mut consts: std::collections::HashSet<&str> = g.initializers.clone();
    for n in &index.nodes {
        let name = n.outputs.first().map(String::as_str).unwrap_or("");
        let folded = n.op == "Constant"
            || (!n.inputs.is_empty() && n.inputs.iter().all(|i| consts.contains(i.as_str())));
        if folded && n.op != "Constant" && !PLUMBING.contains(&n.op.as_str()) && !g.dequantizes(n) {
            return Err(err!(
                Graph,
                "{}: node {name:?} ({}) computes from constants only; a bundle graph may fold only shape plumbing ({})",
                g.what,
                n.op,
                PLUMBING.join(", ")
            ));
        }
        if folded {
            consts.extend(n.outputs.iter().map(String::as_str));
        }
        if n.op == "ConstantOfShape" || n.op == "Expand" {
            let shape_input = if n.op == "Expand" { 1 } else { 0 };
            let shape = n
                .inputs
                .get(shape_input)
                .and_then(|s| g.eval(s, 0))
                .ok_or_else(|| {
                    err!(
                        Graph,
                        "{what}: the shape node {name:?} ({}) builds cannot be verified (it must be made of constants and runtime shapes)",
                        n.op
                    )
                })?;
            let known = shape.iter().try_fold(1u64, |acc, v| match v {
                V::Known(x) if *x < -1 => None,
                V::Known(x) => acc.checked_mul((*x).max(1) as u64),
                V::Dim(_) | V::Dynamic => Some(acc),
            });
            match known {
                Some(k) if k <= MAX_CONST_ELEMS && shape.len() <= 6 => {}
                _ => {
                    return Err(err!(
                        Graph,
                        "{what}: node {name:?} ({}) builds a shape {shape:?} whose constant part is over {MAX_CONST_ELEMS} elements",
                        n.op
                    ))
                }
            }
        }
    }
    check_heads(&g, index, m)?;
    check_code_offsets(&g, index, m)?;
    check_float_constants(&g, index, m)?;
    check_reshapes(&g, index, m)?;
    check_axes(&g, index)?;
    check_constant_indices(&g, index)
}

/// The rank of every value a graph computes, as far as it follows from the graph inputs'
/// declared shapes, the initializers and constants: the static shape inference the role
/// checks below need (ONNX's own rules for the operators of [`OPS`]). A value whose rank
/// does not follow (a `Reshape` to a target the evaluator cannot read) has none. Kept per
/// node, in the nodes' order (no map of its own: the library's size budget).
struct Ranks<'a> {
    index: &'a OnnxIndex,
    by_node: Vec<Option<usize>>,
}

impl<'a> Ranks<'a> {
    fn infer(g: &Graph<'a>, index: &'a OnnxIndex) -> Ranks<'a> {
        let mut r = Ranks {
            index,
            by_node: Vec::with_capacity(index.nodes.len()),
        };
        for n in &index.nodes {
            let at = |i: usize| n.inputs.get(i).and_then(|x| r.get(g, x));
            let keepdims = n
                .attrs
                .iter()
                .find(|a| a.name == "keepdims")
                .map_or(1, |a| match a.value {
                    AttrValue::Int(k) => k,
                    _ => 1,
                });
            let rank = match n.op.as_str() {
                "Constant" => n.constant.as_ref().map(|(_, d, _)| d.len()),
                "Add" | "Sub" | "Mul" | "Div" | "Equal" | "Where" => {
                    (0..n.inputs.len()).try_fold(0, |m, i| at(i).map(|x| m.max(x)))
                }
                "Cast" | "Relu" | "Sqrt" | "Softmax" | "LogSoftmax" | "Transpose" | "Concat" => {
                    at(0)
                }
                // both operands are matrices or stacks of them in the graphs
                "MatMul" => match (at(0), at(1)) {
                    (Some(a), Some(b)) if a >= 2 && b >= 2 => Some(a.max(b)),
                    _ => None,
                },
                "Shape" => Some(1),
                "Gather" => at(0).zip(at(1)).and_then(|(d, i)| (d + i).checked_sub(1)),
                "Unsqueeze" => at(0).map(|x| x + 1),
                "Squeeze" => at(0).and_then(|x| x.checked_sub(1)),
                // one axis each (check_axes; ReduceMean's is its attribute)
                "ReduceSum" | "ReduceMean" => at(0).and_then(|x| {
                    if keepdims == 0 {
                        x.checked_sub(1)
                    } else {
                        Some(x)
                    }
                }),
                "Reshape" => n.inputs.get(1).and_then(|t| g.eval(t, 0)).map(|v| v.len()),
                "ConstantOfShape" => n.inputs.first().and_then(|t| g.eval(t, 0)).map(|v| v.len()),
                "Expand" => n
                    .inputs
                    .get(1)
                    .and_then(|t| g.eval(t, 0))
                    .zip(at(0))
                    .map(|(v, x)| v.len().max(x)),
                _ => None,
            };
            r.by_node.push(rank);
        }
        r
    }

    /// The rank of the value `name`: a node's output (the first; the graphs' nodes have
    /// one), a graph input or an initializer.
    fn get(&self, g: &Graph<'a>, name: &str) -> Option<usize> {
        if let Some(&n) = g.producer.get(name) {
            // the producer is one of index.nodes: its position from the address
            let at = (n as *const Node as usize).checked_sub(self.index.nodes.as_ptr() as usize)?
                / std::mem::size_of::<Node>().max(1);
            return self.by_node.get(at).copied().flatten();
        }
        if let Some(i) = self.index.inputs.iter().find(|i| i.name == name) {
            return Some(i.dims.len());
        }
        self.index
            .initializers
            .iter()
            .find(|i| i.name == name)
            .map(|i| i.dims.len())
    }
}

/// A `Gather` whose indices are one constant scalar has one of the graphs' three roles,
/// and its index and axis are that role's: dimension 0 or 1 (batch or sequence) of a
/// `Shape`, along axis 0; the one row of a batch of one (index 0, axis 0: the PRM's
/// memory); or the last column (index -1, axis 1) of a graph input (the PRM's nodes' last
/// code). Any other index, even in range, makes tract read another value (or past a
/// tensor) where the fused engine, which reads no index, computes the role (the
/// `differential` fuzz target: `corpus/differential/regression-gather-0d0df605`).
fn check_constant_indices(g: &Graph, index: &OnnxIndex) -> Result<()> {
    let inputs: std::collections::HashSet<&str> =
        index.inputs.iter().map(|i| i.name.as_str()).collect();
    for n in index.nodes.iter().filter(|n| n.op == "Gather") {
        let Some(src) = n.inputs.get(1).and_then(|x| g.producer.get(x.as_str())) else {
            continue;
        };
        let Some((_, dims, values)) = &src.constant else {
            continue;
        };
        let name = n.outputs.first().map(String::as_str).unwrap_or("");
        let axis = n
            .attrs
            .iter()
            .find(|a| a.name == "axis")
            .map_or(0, |a| match a.value {
                AttrValue::Int(k) => k,
                _ => i64::MIN,
            });
        let data = n.inputs.first().map(String::as_str).unwrap_or("");
        let (role, want): (&str, &[(i64, i64)]) = match g.producer.get(data).map(|p| p.op.as_str())
        {
            Some("Shape") => ("a dimension of a shape", &[(0, 0), (0, 1)]),
            _ if inputs.contains(data) => ("the last column of a graph input", &[(1, -1)]),
            _ => ("the row of a batch of one", &[(0, 0)]),
        };
        let ok = dims.is_empty()
            && matches!(values, ConstValues::Ints(v) if v.len() == 1 && want.contains(&(axis, v[0])));
        if !ok {
            let expected: Vec<String> = want
                .iter()
                .map(|(a, i)| format!("index {i} on axis {a}"))
                .collect();
            return Err(err!(
                Graph,
                "{}: node {name:?} (Gather) takes the constant indices {values:?} of shape {:?} on axis {axis}; as {role} the graphs gather one scalar: {}",
                g.what,
                &dims[..],
                expected.join(" or ")
            ));
        }
    }
    Ok(())
}

/// The axes that Unsqueeze, Squeeze and ReduceSum take as an input (from opset 13) are one
/// constant axis each, and that axis is the one the node's role implies, given the rank of
/// what it reads ([`Ranks`]; a negative axis counts from the end):
/// - Unsqueeze of a scalar (a constant, or one dimension of a shape): axis 0, how the
///   graphs build shape vectors;
/// - Unsqueeze of a vector: axis 0 for a graph input (the PRM's node ids as one row),
///   else axis 1 (a column);
/// - Unsqueeze of a matrix `[b, s]` (the mask's bias, the PRM's queries): axis 1, but
///   axis 0 for the path PRM's pooled rows `[n, d]` (the candidates as one sequence); of
///   `[b, 1, s]`: axis 2 (the mask broadcast over heads and queries);
/// - Squeeze of a rank-3 value: its last axis (the PRM's scores `[b, n, 1]`);
/// - ReduceSum of rows looked up in a table (`[.., L, d]`: a token's or a path's
///   per-level code rows): the level axis, one before the width; of any other rank-3
///   value (a product of queries and rows): the width, its last axis.
///
/// The fused engine reads no axis: an axis in range but off its role made tract compute
/// another model (or refuse the graph, or panic: `corpus/differential/regression-axes-0f9f292e`)
/// where the fused engine ran.
fn check_axes(g: &Graph, index: &OnnxIndex) -> Result<()> {
    let rank = Ranks::infer(g, index);
    let inputs: std::collections::HashSet<&str> =
        index.inputs.iter().map(|i| i.name.as_str()).collect();
    for n in index
        .nodes
        .iter()
        .filter(|n| matches!(n.op.as_str(), "Unsqueeze" | "Squeeze" | "ReduceSum"))
    {
        let name = n.outputs.first().map(String::as_str).unwrap_or("");
        let axes = n
            .inputs
            .get(1)
            .and_then(|x| match &g.producer.get(x.as_str())?.constant {
                Some((_, d, ConstValues::Ints(v))) if d.len() == 1 => Some(v.clone()),
                _ => None,
            });
        let data = n.inputs.first().map(String::as_str).unwrap_or("");
        let r = rank.get(g, data);
        let producer = g.producer.get(data).map(|p| p.op.as_str());
        // the axis the role implies, and the rank the axis counts in (Unsqueeze: its output's)
        let want = match (n.op.as_str(), r) {
            ("Unsqueeze", Some(0)) => Some(("a scalar", 0, 1)),
            ("Unsqueeze", Some(1)) if inputs.contains(data) => Some(("a graph input vector", 0, 2)),
            ("Unsqueeze", Some(1)) => Some(("a vector", 1, 2)),
            ("Unsqueeze", Some(2)) if producer == Some("ReduceSum") => {
                Some(("a path's pooled rows", 0, 3))
            }
            ("Unsqueeze", Some(2)) => Some(("a matrix", 1, 3)),
            ("Unsqueeze", Some(3)) => Some(("a rank-3 value", 2, 4)),
            ("Squeeze", Some(3)) => Some(("a rank-3 value", 2, 3)),
            ("ReduceSum", Some(r @ (3 | 4))) if g.looks_up(data, 0) => {
                Some(("per-level rows", r as i64 - 2, r))
            }
            ("ReduceSum", Some(3)) => Some(("a product of two values", 2, 3)),
            _ => None,
        };
        let Some((what, axis, of)) = want else {
            return Err(err!(
                Graph,
                "{}: node {name:?} ({}) reads a value of rank {} (-1: unknown); the graphs unsqueeze ranks 0 to 3, squeeze rank 3 and reduce ranks 3 and 4",
                g.what,
                n.op,
                r.map_or(-1, |r| r as i64)
            ));
        };
        match axes.as_deref() {
            Some([a]) if *a == axis || *a == axis - of as i64 => {}
            Some([a]) if (-4..=3).contains(a) => {
                return Err(err!(
                    Graph,
                    "{}: node {name:?} ({}) of {what} takes axis {a}; in that role the graphs take axis {axis}",
                    g.what,
                    n.op
                ))
            }
            _ => {
                return Err(err!(
                    Graph,
                    "{}: node {name:?} ({}) takes the axes {}; the graphs give one constant axis in -1..=3 (here {axis})",
                    g.what,
                    n.op,
                    crate::error::escape(&format!("{axes:?}"))
                ))
            }
        }
    }
    Ok(())
}

/// Every `Reshape` target is one the architecture implies: a token's width split into heads
/// (`[b, s, heads or prm_heads, head_dim]`), merged back (`[b, s, d_model]`, or
/// `heads x head_dim` or `prm_heads x head_dim` wide), or flattened
/// (`[-1]`), where `(b, s)` is the batch and sequence of a runtime tensor
/// (`shape(x)[0], shape(x)[1]`) or the fixed `(1, history)` of the memory. The fused and
/// GPU engines do exactly these reshapes without reading the graph, so a target built from
/// other constants or other dimensions would make tract compute something else.
fn check_reshapes(g: &Graph, index: &OnnxIndex, m: &Manifest) -> Result<()> {
    let (h, p, dh, d) = (
        m.dims.heads as i64,
        m.dims.prm_heads as i64,
        m.dims.head_dim as i64,
        m.dims.d_model as i64,
    );
    let hist = m.history as i64;
    for n in index.nodes.iter().filter(|n| n.op == "Reshape") {
        let name = n.outputs.first().map(String::as_str).unwrap_or("");
        let t = n.inputs.get(1).and_then(|x| g.eval(x, 0));
        let lead_ok = |b: V, s: V| {
            matches!((b, s), (V::Dim(0), V::Dim(1))) || (b, s) == (V::Known(1), V::Known(hist))
        };
        let ok = match t.as_deref() {
            Some([V::Known(-1)]) => true,
            Some([b, s, V::Known(x), V::Known(y)]) => {
                lead_ok(*b, *s) && (*x == h || *x == p) && *y == dh
            }
            Some([b, s, V::Known(x)]) => {
                lead_ok(*b, *s) && (*x == d || *x == h * dh || *x == p * dh)
            }
            _ => false,
        };
        if !ok {
            return Err(err!(
                Graph,
                "{}: node {name:?} reshapes to {t:?}; the graphs reshape only to [b, s, heads, head_dim], [b, s, width] (d_model or heads x head_dim) or [-1] (b, s: a tensor's batch and sequence, or 1 and the history {hist})",
                g.what
            ));
        }
    }
    Ok(())
}

/// The float-constant check of the module docs.
fn check_float_constants(g: &Graph, index: &OnnxIndex, m: &Manifest) -> Result<()> {
    let what = g.what;
    let scale = 1.0 / (m.dims.head_dim as f32).sqrt();
    let producer_op = |name: &str| g.producer.get(name).map(|p| p.op.as_str());
    // each float constant's kind and values
    for n in &index.nodes {
        let (Some((count, dims, values)), Some(out)) = (&n.constant, n.outputs.first()) else {
            continue;
        };
        match values {
            ConstValues::Ints(_) | ConstValues::Opaque => {}
            ConstValues::Floats(v) if *count == 1 && v.len() == 1 => {}
            ConstValues::RowMask(rows) => {
                let lead = &dims[..dims.len() - 2];
                let (a, b) = (dims[dims.len() - 2], dims[dims.len() - 1]);
                let causal = a == b
                    && (a == m.history as i64 || a == m.levels as i64)
                    && rows.iter().enumerate().all(|(i, &z)| z as usize == i + 1);
                let levels = a == m.levels as i64
                    && b == m.max_codebook() as i64
                    && rows.iter().zip(&m.codebook).all(|(&z, &c)| z as usize == c);
                if !(lead.iter().all(|&d| d == 1) && (causal || levels)) {
                    return Err(err!(
                        Graph,
                        "{what}: the mask constant {out:?} of shape {:?} is neither a causal mask over the history ({h}) or the levels ({l}) nor the level mask ({l} x {c}, row l open for codebook[l] codes), added to scores",
                        &dims[..],
                        h = m.history,
                        l = m.levels,
                        c = m.max_codebook()
                    ));
                }
            }
            _ => {
                return Err(err!(
                    Graph,
                    "{what}: the float constant {out:?} of shape {:?} is not one the architecture implies (a scalar of `1 - mask`, the mask bias, the norms' epsilon or the attention scale, or a mask of zeros then {MASK_NEG})",
                    &dims[..]
                ))
            }
        }
    }
    // each reader of a float constant: the role it gives it (one pass over the nodes)
    for u in &index.nodes {
        for out in &u.inputs {
            let Some(Some((_, _, values))) = g.producer.get(out.as_str()).map(|p| &p.constant)
            else {
                continue;
            };
            let v = match values {
                ConstValues::Floats(v) if v.len() == 1 => v[0],
                ConstValues::RowMask(_) if u.op == "Add" => continue,
                ConstValues::RowMask(_) => {
                    return Err(err!(
                    Graph,
                    "{what}: the mask constant {out:?} feeds a {} node; masks are added to scores",
                    u.op
                ))
                }
                _ => continue,
            };
            let other = u.inputs.iter().find(|i| *i != out).map(String::as_str);
            let (want, role) = match u.op.as_str() {
                "Sub" if u.inputs.first() == Some(out) => (1.0, "the 1 of `1 - mask`"),
                "Mul" if other.and_then(producer_op) == Some("MatMul") => {
                    (scale, "the attention scale 1/sqrt(head_dim)")
                }
                "Mul" => (MASK_NEG, "the bias of a masked position"),
                "Add" if other.and_then(producer_op) == Some("ReduceMean") => {
                    (NORM_EPS, "the norm's epsilon")
                }
                op => {
                    return Err(err!(
                        Graph,
                        "{what}: the float constant {out:?} ({v}) feeds a {op} node; the graphs' scalars feed only `1 - mask`, the mask bias, the norms' epsilon and the attention scale"
                    ))
                }
            };
            if (v - want).abs() > 1e-6 * want.abs() {
                return Err(err!(
                    Graph,
                    "{what}: the float constant {out:?} is {v}, but as {role} it must be {want}"
                ));
            }
        }
    }
    Ok(())
}

/// The codes' offsets: the graphs turn level-l codes into rows `l * C + code` of their
/// embedding tables (C = the largest codebook; under `codes_and_item` the item column is
/// offset by `L * C`) with one `Add` of a constant, which the fused and GPU engines do not
/// read but compute from the manifest. So each codes input may feed only that `Add`, whose
/// constant must be exactly those offsets, and `Shape` (found by the `differential` fuzz
/// target: an overwritten offset made tract index past its table).
fn check_code_offsets(g: &Graph, index: &OnnxIndex, m: &Manifest) -> Result<()> {
    let c = m.max_codebook() as i64;
    for (input, cols) in [
        ("history_codes", m.encoder_columns()),
        ("prefix_codes", m.levels.saturating_sub(1)),
    ] {
        let want: Vec<i64> = (0..cols as i64).map(|l| l * c).collect();
        for n in index
            .nodes
            .iter()
            .filter(|n| n.inputs.iter().any(|i| i == input))
        {
            match n.op.as_str() {
                "Shape" => {}
                "Add" => {
                    let other = n.inputs.iter().find(|i| *i != input);
                    let got = other.and_then(|o| g.eval(o, 0)).map(|v| {
                        v.iter()
                            .map(|x| match x {
                                V::Known(x) => Some(*x),
                                V::Dim(_) | V::Dynamic => None,
                            })
                            .collect::<Option<Vec<i64>>>()
                    });
                    if got != Some(Some(want.clone())) {
                        return Err(err!(
                            Graph,
                            "{}: the offsets added to {input} are not {want:?} (level l's codes \
                             index rows l * {c} of the embedding table)",
                            g.what
                        ));
                    }
                }
                op => {
                    return Err(err!(
                        Graph,
                        "{}: {input} feeds a {op} node; the graphs read codes only through their \
                         offsets (Add) and their Shape",
                        g.what
                    ))
                }
            }
        }
    }
    Ok(())
}

/// The attention checks of the module docs.
fn check_heads(g: &Graph, index: &OnnxIndex, m: &Manifest) -> Result<()> {
    let what = g.what;
    let dh = m.dims.head_dim;
    let mut projections = 0usize;
    for n in index.nodes.iter().filter(|n| n.op == "Reshape") {
        let Some(src) = n.inputs.first().and_then(|x| g.producer.get(x.as_str())) else {
            continue;
        };
        if src.op != "MatMul" {
            continue;
        }
        let Some(w) = src.inputs.get(1).and_then(|x| g.weight_of(x.as_str(), 0)) else {
            continue;
        };
        if !["att.wq", "att.wk", "att.wv"]
            .iter()
            .any(|s| w.ends_with(s))
        {
            continue;
        }
        let heads = if w.starts_with("prm.") {
            m.dims.prm_heads
        } else {
            m.dims.heads
        };
        let shape = n.inputs.get(1).and_then(|s| g.eval(s, 0));
        let split = match shape.as_deref() {
            Some([.., V::Known(a), V::Known(b)]) => Some((*a, *b)),
            _ => None,
        };
        if split != Some((heads as i64, dh as i64)) {
            return Err(err!(
                Graph,
                "{what}: the projection {w:?} is split into {} heads, but the manifest says {heads} x head_dim {dh}",
                match split {
                    Some((a, b)) => format!("{a} x {b}"),
                    None => "an unverifiable number of".into(),
                }
            ));
        }
        projections += 1;
    }
    let attention_weights = index
        .initializers
        .iter()
        .filter(|i| {
            ["att.wq", "att.wk", "att.wv"]
                .iter()
                .any(|s| i.name.ends_with(s))
        })
        .count();
    if projections != attention_weights {
        return Err(err!(
            Graph,
            "{what}: {attention_weights} attention projections, of which {projections} are split into heads as the manifest says"
        ));
    }
    // every softmax over attention scores: Add(Mul(scores, 1/sqrt(head_dim)), bias)
    let want = 1.0 / (dh as f64).sqrt();
    for n in index.nodes.iter().filter(|n| n.op == "Softmax") {
        let scale = n
            .inputs
            .first()
            .and_then(|x| g.producer.get(x.as_str()))
            .filter(|add| add.op == "Add")
            .and_then(|add| {
                add.inputs.iter().find_map(|x| {
                    let mul = g.producer.get(x.as_str()).filter(|m| m.op == "Mul")?;
                    mul.inputs
                        .iter()
                        .find_map(|y| match &g.producer.get(y.as_str())?.constant {
                            Some((1, _, ConstValues::Floats(v))) if v.len() == 1 => {
                                Some(v[0] as f64)
                            }
                            _ => None,
                        })
                })
            });
        match scale {
            Some(s) if (s - want).abs() <= 1e-6 * want => {}
            _ => {
                return Err(err!(
                    Graph,
                    "{what}: an attention softmax scales its scores by {}, expected 1/sqrt(head_dim {dh}) = {want:.6}",
                    scale.map(|s| format!("{s:.6}")).unwrap_or_else(|| "an unverifiable factor".into())
                ))
            }
        }
    }
    Ok(())
}
