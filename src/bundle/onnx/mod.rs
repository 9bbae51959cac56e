//! A minimal, checked reader of the parts of an ONNX `ModelProto` the runtime needs
//! without an inference engine: the graph's inputs/outputs (names, element types, dims)
//! and an index of its initializers (name, type, dims, and where their raw bytes lie in
//! the mapped file). Used to validate a bundle at open (shapes against the manifest,
//! every float weight finite) and by the GPU backend to upload weights straight from the
//! mapping. Every length and offset is bounds-checked; malformed bytes give an error.

use smallvec::SmallVec;

use crate::error::{err, Result};

mod tensor;
use tensor::{constant, push_dims, tensor};

/// Tensor dims: inline up to rank 4 (every tensor of our graphs), so indexing a graph
/// does not allocate per dimension list.
pub type Dims<T> = SmallVec<[T; 4]>;

/// ONNX element types we meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElemType {
    F32,
    F16,
    I8,
    I64,
    /// Any other ONNX type code.
    Other(i32),
}

impl ElemType {
    fn from_code(c: i64) -> ElemType {
        match c {
            1 => ElemType::F32,
            10 => ElemType::F16,
            3 => ElemType::I8,
            7 => ElemType::I64,
            x => ElemType::Other(x as i32),
        }
    }
    /// Bytes per element (0 for unknown types).
    pub fn size(self) -> usize {
        match self {
            ElemType::F32 => 4,
            ElemType::F16 => 2,
            ElemType::I8 => 1,
            ElemType::I64 => 8,
            ElemType::Other(_) => 0,
        }
    }
}

/// One dimension of a graph input/output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    Symbol(String),
    Unknown,
}

/// A graph input or output.
#[derive(Clone, Debug)]
pub struct ValueInfo {
    pub name: String,
    pub elem: ElemType,
    pub dims: Dims<Dim>,
}

/// An initializer: its bytes are `file[offset..offset + len]` (raw_data) when `raw` is true.
#[derive(Clone, Debug)]
pub struct Initializer {
    pub name: String,
    pub elem: ElemType,
    pub dims: Dims<i64>,
    pub offset: usize,
    pub len: usize,
    pub raw: bool,
}

/// A small constant's values (a `Constant` node's tensor of at most
/// [`MAX_CONST_VALUES`] elements, as i64 or f32), kept for the graph checks.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstValues {
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    /// An f32 tensor of rank >= 2 every row of which (over the last axis) is zeros then
    /// [`MASK_NEG`]s: the masks an attention or a level's codebook adds. Holds each row's
    /// number of leading zeros (the positions it lets through).
    RowMask(Vec<u32>),
    /// Any other f32 tensor (a larger vector, or a rank >= 2 tensor that is not a mask).
    OtherFloats,
    /// A larger i64 tensor: only its element count is known.
    Opaque,
}

/// The value the graphs' masks add to a hidden position (the engines' own masks add the
/// same: `backend::cpu::kernels::NEG`).
pub const MASK_NEG: f32 = -1e9;
/// The epsilon every RMS norm of the graphs adds to its mean square (the engines add the
/// same: `backend::cpu::kernels::NORM_EPS`).
pub const NORM_EPS: f32 = 1e-6;
/// Most rows of a mask the index describes (a larger one is `OtherFloats`).
pub const MAX_MASK_ROWS: usize = 1 << 16;

/// Largest magnitude of a weight, f32 or f16 (trained weights stay far below it: the
/// shipped bundles' largest is 2.5). f16 tops out at 65504, and one product of two larger
/// values overflows an engine computing in f16; an f32 weight of 1e35 leaves every value
/// finite but makes engines that sum in another order pick other items.
pub const MAX_WEIGHT: f32 = 256.0;
/// Largest int8 dequantization scale: a weight of 127 x scale stays within [`MAX_WEIGHT`].
pub const MAX_INT8_SCALE: f32 = 2.0;

#[cfg(test)]
thread_local! {
    /// Unit tests of the non-finite paths (the probe, the device search's flag) open
    /// bundles with finite weights beyond [`MAX_WEIGHT`]; nothing else can set it.
    pub(crate) static SKIP_WEIGHT_RANGE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// For unit tests of the non-finite paths: the tiny bundle with every value of weight
/// `name` in `file` set to `v` (finite, beyond [`MAX_WEIGHT`]), opened past the range
/// check. The directory lives as long as the returned guard.
#[cfg(test)]
pub(crate) fn tiny_with_weight(
    file: &str,
    name: &str,
    v: f32,
) -> (tempfile::TempDir, super::Bundle) {
    let tiny = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny");
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&tiny).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    let path = dir.path().join(file);
    let mut bytes = std::fs::read(&path).unwrap();
    let idx = index(&bytes, file).unwrap();
    let w = idx.initializers.iter().find(|i| i.name == name).unwrap();
    for x in bytes[w.offset..w.offset + w.len].chunks_exact_mut(4) {
        x.copy_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&path, &bytes).unwrap();
    assert!(
        super::Bundle::open(dir.path()).is_err(),
        "out of range at open"
    );
    SKIP_WEIGHT_RANGE.with(|s| s.set(true));
    let bundle = super::Bundle::open(dir.path());
    SKIP_WEIGHT_RANGE.with(|s| s.set(false));
    (dir, bundle.expect("past the range for this test"))
}

/// Largest `Constant` whose values the index keeps.
pub const MAX_CONST_VALUES: usize = 64;
/// Most nodes a graph may have (the shipped graphs have a few hundred).
pub const MAX_NODES: usize = 100_000;

/// A node of the graph: its operator, input and output value names, and for a
/// `Constant` node its tensor's element count and (small) values.
#[derive(Clone, Debug)]
pub struct Node {
    /// The node's name (empty when unnamed).
    pub name: String,
    pub op: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// For `Constant`: (element count, dims, values); `None` for other operators.
    pub constant: Option<(u64, Dims<i64>, ConstValues)>,
    /// The node's attributes other than a `Constant`'s `value`, in file order.
    pub attrs: Vec<Attr>,
}

/// One node attribute, as far as the graph checks read it.
#[derive(Clone, Debug, PartialEq)]
pub struct Attr {
    pub name: String,
    pub value: AttrValue,
}

/// An attribute's value: an int, ints, a tensor (its values when small), or another kind
/// (a float, string, graph, ...), which no bundle graph uses.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Int(i64),
    Ints(Dims<i64>),
    Tensor(ConstValues),
    Other,
}

/// Most attributes one node may carry, and most ints one attribute may list.
pub const MAX_ATTRS: usize = 8;

/// Graph I/O, initializer index and nodes of one ONNX file.
#[derive(Clone, Debug, Default)]
pub struct OnnxIndex {
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    pub initializers: Vec<Initializer>,
    pub nodes: Vec<Node>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
    what: &'a str,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            if self.pos >= self.end {
                return Err(err!(
                    Graph,
                    "{}: truncated varint at byte {}",
                    self.what,
                    self.pos
                ));
            }
            let b = self.buf[self.pos];
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(err!(
            Graph,
            "{}: varint longer than 10 bytes at byte {}",
            self.what,
            self.pos
        ))
    }
    /// Next (field, wire type, payload range for length-delimited / value for varint).
    fn field(&mut self) -> Result<Option<(u64, Field)>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let at = self.pos;
        let key = self.varint()?;
        let (num, wt) = (key >> 3, key & 7);
        if num == 0 || num > 63 {
            // 0 is not a protobuf field (zero padding); the messages read here number theirs below 64
            return Err(err!(
                Graph,
                "{}: protobuf field number {num} at byte {at} (padding or a corrupt file)",
                self.what
            ));
        }
        let f = match wt {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.skip(8)?;
                Field::Fixed64
            }
            2 => {
                let len = self.varint()? as usize;
                let start = self.pos;
                self.skip(len)?;
                Field::Bytes(start, start + len)
            }
            5 => {
                self.skip(4)?;
                Field::Fixed32
            }
            w => {
                return Err(err!(
                    Graph,
                    "{}: unsupported protobuf wire type {w} at byte {}",
                    self.what,
                    self.pos
                ))
            }
        };
        Ok(Some((num, f)))
    }
    fn skip(&mut self, n: usize) -> Result<()> {
        match self.pos.checked_add(n) {
            Some(e) if e <= self.end => {
                self.pos = e;
                Ok(())
            }
            _ => Err(err!(
                Graph,
                "{}: field of {n} bytes runs past the end at byte {}",
                self.what,
                self.pos
            )),
        }
    }
    fn sub(&self, start: usize, end: usize) -> Reader<'a> {
        Reader {
            buf: self.buf,
            pos: start,
            end,
            what: self.what,
        }
    }
}

enum Field {
    Varint(u64),
    Bytes(usize, usize),
    Fixed32,
    Fixed64,
}

/// The wire form a field must have.
#[derive(Clone, Copy)]
enum Wire {
    /// A varint.
    V,
    /// Length-delimited (a message, bytes, or packed repeated scalars).
    B,
    /// Length-delimited UTF-8 text (protobuf `string`: readers that decode it refuse
    /// invalid UTF-8, so it is checked even where the runtime ignores the field).
    S,
    /// A fixed32 (an attribute's `f`).
    F32,
    /// A repeated varint, unpacked or packed (tensor dims, attribute ints).
    Ints,
    /// A repeated float, unpacked or packed (attribute floats).
    Floats,
}

/// One field a message may hold: its number, wire form, and whether it may repeat.
struct Rule(u64, Wire, bool);

/// The fields of one message, each checked against `rules` before `f` sees it: a field
/// number the runtime does not read, a wire form it does not expect, or a singular field
/// given twice is an error. This is what makes the bundle's bytes mean one model to every
/// engine: protobuf readers disagree on repeated singular fields (last wins, or merge) and
/// some read fields others skip, so a bundle may hold only the fields every engine reads
/// alike, each once (models/README.md, "One reading").
fn fields(
    r: &mut Reader,
    msg: &str,
    rules: &[Rule],
    mut f: impl FnMut(&Reader, u64, Field) -> Result<()>,
) -> Result<()> {
    let mut seen = 0u64;
    while let Some((num, fld)) = r.field()? {
        let Some(rule) = rules.iter().find(|x| x.0 == num) else {
            return Err(err!(
                Graph,
                "{}: {msg} holds field {num}, which the runtime does not read (a bundle holds \
                 only fields every engine reads alike)",
                r.what
            ));
        };
        let ok = matches!(
            (rule.1, &fld),
            (Wire::V, Field::Varint(_))
                | (Wire::B | Wire::S, Field::Bytes(..))
                | (Wire::F32, Field::Fixed32)
                | (Wire::Ints, Field::Varint(_) | Field::Bytes(..))
                | (Wire::Floats, Field::Fixed32 | Field::Bytes(..))
        );
        if !ok {
            return Err(err!(
                Graph,
                "{}: {msg} field {num} has the wrong protobuf wire type",
                r.what
            ));
        }
        if let (Wire::S, Field::Bytes(s, e)) = (rule.1, &fld) {
            if std::str::from_utf8(&r.buf[*s..*e]).is_err() {
                return Err(err!(
                    Graph,
                    "{}: {msg} field {num} is text that is not valid UTF-8",
                    r.what
                ));
            }
        }
        if !rule.2 {
            if seen & (1 << num) != 0 {
                return Err(err!(
                    Graph,
                    "{}: {msg} holds field {num} twice; it is a single field (engines would \
                     read different values)",
                    r.what
                ));
            }
            seen |= 1 << num;
        }
        f(r, num, fld)?;
    }
    Ok(())
}

fn string(buf: &[u8], s: usize, e: usize, what: &str) -> Result<String> {
    std::str::from_utf8(&buf[s..e])
        .map(str::to_owned)
        .map_err(|_| err!(Graph, "{what}: a name is not valid UTF-8"))
}

/// The default ONNX operator set versions a bundle may declare: every operator the
/// graphs use has the same meaning in each (Unsqueeze, Squeeze and ReduceSum take their
/// axes as an input from 13 on, ReduceMean as an attribute until 17, Softmax and
/// LogSoftmax reduce one axis from 13 on), which is the meaning the fused and GPU
/// engines implement.
pub const OPSETS: std::ops::RangeInclusive<u64> = 13..=17;

const MODEL: &[Rule] = &[
    Rule(1, Wire::V, false), // ir_version
    Rule(2, Wire::S, false), // producer_name
    Rule(3, Wire::S, false), // producer_version
    Rule(4, Wire::S, false), // domain
    Rule(5, Wire::V, false), // model_version
    Rule(6, Wire::S, false), // doc_string
    Rule(7, Wire::B, false), // graph
    Rule(8, Wire::B, true),  // opset_import
    Rule(14, Wire::B, true), // metadata_props
];
const OPSET_ID: &[Rule] = &[Rule(1, Wire::S, false), Rule(2, Wire::V, false)];
const STRING_ENTRY: &[Rule] = &[Rule(1, Wire::S, false), Rule(2, Wire::S, false)];
const GRAPH: &[Rule] = &[
    Rule(1, Wire::B, true),   // node
    Rule(2, Wire::S, false),  // name
    Rule(5, Wire::B, true),   // initializer
    Rule(10, Wire::S, false), // doc_string
    Rule(11, Wire::B, true),  // input
    Rule(12, Wire::B, true),  // output
    Rule(13, Wire::B, true),  // value_info
];
const NODE: &[Rule] = &[
    Rule(1, Wire::S, true),  // input
    Rule(2, Wire::S, true),  // output
    Rule(3, Wire::S, false), // name
    Rule(4, Wire::S, false), // op_type
    Rule(5, Wire::B, true),  // attribute
    Rule(6, Wire::S, false), // doc_string
    Rule(7, Wire::S, false), // domain
];
const ATTRIBUTE: &[Rule] = &[
    Rule(1, Wire::S, false),     // name
    Rule(2, Wire::F32, false),   // f
    Rule(3, Wire::V, false),     // i
    Rule(4, Wire::B, false),     // s
    Rule(5, Wire::B, false),     // t
    Rule(7, Wire::Floats, true), // floats
    Rule(8, Wire::Ints, true),   // ints
    Rule(9, Wire::B, true),      // strings
    Rule(13, Wire::S, false),    // doc_string
    Rule(20, Wire::V, false),    // type
];
const TENSOR: &[Rule] = &[
    Rule(1, Wire::Ints, true), // dims
    Rule(2, Wire::V, false),   // data_type
    Rule(4, Wire::B, false),   // float_data (packed, once)
    Rule(5, Wire::B, false),   // int32_data
    Rule(7, Wire::B, false),   // int64_data
    Rule(8, Wire::S, false),   // name
    Rule(9, Wire::B, false),   // raw_data
    Rule(12, Wire::S, false),  // doc_string
    Rule(14, Wire::V, false),  // data_location
];
const VALUE_INFO: &[Rule] = &[
    Rule(1, Wire::S, false), // name
    Rule(2, Wire::B, false), // type
    Rule(3, Wire::S, false), // doc_string
];
const TYPE: &[Rule] = &[Rule(1, Wire::B, false), Rule(6, Wire::S, false)];
const TENSOR_TYPE: &[Rule] = &[Rule(1, Wire::V, false), Rule(2, Wire::B, false)];
const SHAPE: &[Rule] = &[Rule(1, Wire::B, true)];
const DIM: &[Rule] = &[
    Rule(1, Wire::V, false),
    Rule(2, Wire::S, false),
    Rule(3, Wire::S, false),
];

/// The operator-set domain a node or an opset import names: the default one only.
fn default_domain(buf: &[u8], s: usize, e: usize, what: &str, whose: &str) -> Result<()> {
    let d = string(buf, s, e, what)?;
    if d.is_empty() || d == "ai.onnx" {
        Ok(())
    } else {
        Err(err!(
            Graph,
            "{what}: {whose} names operator domain {d:?}, expected the default ONNX domain"
        ))
    }
}

/// Parse the graph I/O and the initializer index of an ONNX model held in `buf`.
pub fn index(buf: &[u8], what: &str) -> Result<OnnxIndex> {
    let mut r = Reader {
        buf,
        pos: 0,
        end: buf.len(),
        what,
    };
    let mut graph = None;
    let mut opset = None;
    fields(&mut r, "the model", MODEL, |r, num, f| {
        match (num, f) {
            (7, Field::Bytes(s, e)) => graph = Some((s, e)),
            (14, Field::Bytes(s, e)) => fields(
                &mut r.sub(s, e),
                "a metadata entry",
                STRING_ENTRY,
                |_, _, _| Ok(()),
            )?,
            (8, Field::Bytes(s, e)) => {
                let mut o = r.sub(s, e);
                let mut version = None;
                fields(&mut o, "an opset import", OPSET_ID, |o, n, f| {
                    match (n, f) {
                        (1, Field::Bytes(s, e)) => {
                            default_domain(o.buf, s, e, o.what, "an opset import")?
                        }
                        (2, Field::Varint(v)) => version = Some(v),
                        _ => {}
                    }
                    Ok(())
                })?;
                let v =
                    version.ok_or_else(|| err!(Graph, "{what}: an opset import has no version"))?;
                if opset.replace(v).is_some() {
                    return Err(err!(
                        Graph,
                        "{what}: the default operator set is imported twice"
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    match opset {
        Some(v) if OPSETS.contains(&v) => {}
        Some(v) => {
            return Err(err!(
                Graph,
                "{what}: operator set version {v}, expected {}..={} (the versions whose \
                 operators mean what every engine runs)",
                OPSETS.start(),
                OPSETS.end()
            ))
        }
        None => {
            return Err(err!(
                Graph,
                "{what}: no operator set version (opset_import)"
            ))
        }
    }
    let (gs, ge) = graph.ok_or_else(|| err!(Graph, "{what}: no graph in the ONNX model"))?;
    let mut g = r.sub(gs, ge);
    let mut out = OnnxIndex::default();
    fields(&mut g, "the graph", GRAPH, |g, num, f| {
        match (num, f) {
            (1, Field::Bytes(s, e)) => {
                if out.nodes.len() == MAX_NODES {
                    return Err(err!(Graph, "{what}: more than {MAX_NODES} nodes"));
                }
                out.nodes.push(node(&g.sub(s, e))?)
            }
            (5, Field::Bytes(s, e)) => {
                let t = tensor(&g.sub(s, e))?;
                if !t.raw {
                    return Err(err!(
                        Graph,
                        "{what}: initializer {:?} is not stored as raw_data, the one form \
                         every engine reads",
                        t.name
                    ));
                }
                out.initializers.push(t)
            }
            (11, Field::Bytes(s, e)) => out.inputs.push(value_info(&g.sub(s, e))?),
            (12, Field::Bytes(s, e)) => out.outputs.push(value_info(&g.sub(s, e))?),
            (13, Field::Bytes(s, e)) => {
                value_info(&g.sub(s, e))?;
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(out)
}

fn node(r: &Reader) -> Result<Node> {
    let mut r = r.sub(r.pos, r.end);
    let mut n = Node {
        name: String::new(),
        op: String::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        constant: None,
        attrs: Vec::new(),
    };
    let mut value = None;
    let mut attrs = 0usize;
    // tensor-valued attributes, parsed once the operator is known (fields may come in any order)
    let mut tensors = Vec::new();
    fields(&mut r, "a node", NODE, |r, num, f| {
        match (num, f) {
            (1, Field::Bytes(s, e)) => n.inputs.push(string(r.buf, s, e, r.what)?),
            (2, Field::Bytes(s, e)) => n.outputs.push(string(r.buf, s, e, r.what)?),
            (3, Field::Bytes(s, e)) => n.name = string(r.buf, s, e, r.what)?,
            (4, Field::Bytes(s, e)) => n.op = string(r.buf, s, e, r.what)?,
            (7, Field::Bytes(s, e)) => default_domain(r.buf, s, e, r.what, "a node")?,
            (5, Field::Bytes(s, e)) => {
                attrs += 1;
                let mut a = r.sub(s, e);
                if attrs > MAX_ATTRS {
                    return Err(err!(
                        Graph,
                        "{}: a node carries more than {MAX_ATTRS} attributes",
                        r.what
                    ));
                }
                let (mut name, mut t, mut v) = (String::new(), None, AttrValue::Other);
                let mut ints = Dims::new();
                // the AttributeType each value field implies (f, i, s, t, floats, ints, strings)
                let (mut kinds, mut implied, mut declared) = (0, None, None);
                fields(&mut a, "an attribute", ATTRIBUTE, |a, an, af| {
                    match (an, af) {
                        (1, Field::Bytes(s2, e2)) => name = string(a.buf, s2, e2, a.what)?,
                        (3, Field::Varint(x)) => (v, kinds) = (AttrValue::Int(x as i64), kinds + 1),
                        (5, Field::Bytes(s2, e2)) => (t, kinds) = (Some((s2, e2)), kinds + 1),
                        (8, f) => {
                            push_dims(a, f, &mut ints)?;
                            if ints.len() > 16 {
                                return Err(err!(
                                    Graph,
                                    "{}: an attribute lists more than 16 ints",
                                    a.what
                                ));
                            }
                        }
                        (2 | 4 | 7 | 9, _) => kinds += 1,
                        (20, Field::Varint(x)) => declared = Some(x),
                        _ => {}
                    }
                    if let Some(k) = attribute_type(an) {
                        implied = Some(k);
                    }
                    Ok(())
                })?;
                if !ints.is_empty() {
                    (v, kinds) = (AttrValue::Ints(ints), kinds + 1);
                }
                if kinds > 1 {
                    return Err(err!(
                        Graph,
                        "{}: attribute {name:?} holds values of more than one kind",
                        r.what
                    ));
                }
                // tract reads an attribute by its declared type (and refuses one it does not
                // know); the runtime reads the value field. Both must name one value (an
                // empty list: a list type).
                let (d, i) = (declared.unwrap_or(0), implied.unwrap_or(0));
                if d == 0 || (d != i && !(i == 0 && matches!(d, 6..=8))) {
                    return Err(err!(
                        Graph,
                        "{}: attribute {name:?} declares AttributeType {d}, but its value is of \
                         type {i} (0: none)",
                        r.what
                    ));
                }
                if name == "value" {
                    value = t;
                }
                if let Some(span) = t {
                    tensors.push((n.attrs.len(), span));
                }
                n.attrs.push(Attr { name, value: v });
            }
            _ => {}
        }
        Ok(())
    })?;
    if n.op == "Constant" {
        // only `value` (a tensor) is accepted: sparse_value / value_ints / ... are refused
        let (s, e) = match (value, attrs) {
            (Some(v), 1) => v,
            _ => {
                return Err(err!(
                    Graph,
                    "{}: a Constant node ({:?}) must carry exactly one attribute, a `value` tensor",
                    r.what,
                    n.outputs.first().map(String::as_str).unwrap_or("")
                ))
            }
        };
        n.constant = Some(constant(&r.sub(s, e))?);
        n.attrs.clear();
    } else {
        for (i, (s, e)) in tensors {
            n.attrs[i].value = AttrValue::Tensor(constant(&r.sub(s, e))?.2);
        }
    }
    Ok(n)
}

/// The ONNX AttributeType an attribute's value field implies: f FLOAT, i INT, s STRING,
/// t TENSOR, floats FLOATS, ints INTS, strings STRINGS (the only ones `ATTRIBUTE` admits).
fn attribute_type(field: u64) -> Option<u64> {
    match field {
        2 => Some(1),
        3 => Some(2),
        4 => Some(3),
        5 => Some(4),
        7 => Some(6),
        8 => Some(7),
        9 => Some(8),
        _ => None,
    }
}

fn value_info(r: &Reader) -> Result<ValueInfo> {
    let mut r = r.sub(r.pos, r.end);
    let mut vi = ValueInfo {
        name: String::new(),
        elem: ElemType::Other(0),
        dims: Dims::new(),
    };
    fields(&mut r, "a graph value", VALUE_INFO, |r, num, f| {
        match (num, f) {
            (1, Field::Bytes(s, e)) => vi.name = string(r.buf, s, e, r.what)?,
            (2, Field::Bytes(s, e)) => {
                let mut t = r.sub(s, e);
                fields(&mut t, "a value type", TYPE, |t, n2, f2| {
                    let (1, Field::Bytes(s2, e2)) = (n2, f2) else {
                        return Ok(());
                    };
                    let mut tt = t.sub(s2, e2);
                    fields(&mut tt, "a tensor type", TENSOR_TYPE, |tt, n3, f3| {
                        match (n3, f3) {
                            (1, Field::Varint(v)) => vi.elem = ElemType::from_code(v as i64),
                            (2, Field::Bytes(s3, e3)) => {
                                let mut sh = tt.sub(s3, e3);
                                fields(&mut sh, "a shape", SHAPE, |sh, _, f4| {
                                    let Field::Bytes(s4, e4) = f4 else {
                                        return Ok(());
                                    };
                                    vi.dims.push(dim(&sh.sub(s4, e4))?);
                                    Ok(())
                                })?;
                            }
                            _ => {}
                        }
                        Ok(())
                    })
                })?;
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(vi)
}

/// One dimension of a value's shape: a number or a symbol (one of them).
fn dim(r: &Reader) -> Result<Dim> {
    let mut dm = r.sub(r.pos, r.end);
    let mut d = Dim::Unknown;
    fields(&mut dm, "a dimension", DIM, |dm, n5, f5| {
        let prev = std::mem::replace(
            &mut d,
            match (n5, f5) {
                (1, Field::Varint(v)) => Dim::Fixed(v as i64),
                (2, Field::Bytes(a, b)) => Dim::Symbol(string(dm.buf, a, b, dm.what)?),
                _ => return Ok(()),
            },
        );
        if prev != Dim::Unknown {
            return Err(err!(
                Graph,
                "{}: a dimension holds both a value and a symbol",
                dm.what
            ));
        }
        Ok(())
    })?;
    Ok(d)
}
