//! A minimal, checked reader of the parts of an ONNX `ModelProto` the runtime needs
//! without an inference engine: the graph's inputs/outputs (names, element types, dims)
//! and an index of its initializers (name, type, dims, and where their raw bytes lie in
//! the mapped file). Used to validate a bundle at open (shapes against the manifest,
//! every float weight finite) and by the GPU backend to upload weights straight from the
//! mapping. Every length and offset is bounds-checked; malformed bytes give an error.

use smallvec::SmallVec;

use crate::error::{err, Result};

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
    /// Larger, or of another type: only its element count is known.
    Opaque,
}

/// Largest `Constant` whose values the index keeps.
pub const MAX_CONST_VALUES: usize = 64;
/// Most nodes a graph may have (the shipped graphs have a few hundred).
pub const MAX_NODES: usize = 100_000;

/// A node of the graph: its operator, input and output value names, and for a
/// `Constant` node its tensor's element count and (small) values.
#[derive(Clone, Debug)]
pub struct Node {
    pub op: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// For `Constant`: (element count, dims, values); `None` for other operators.
    pub constant: Option<(u64, Dims<i64>, ConstValues)>,
}

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
        let key = self.varint()?;
        let (num, wt) = (key >> 3, key & 7);
        let f = match wt {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.skip(8)?;
                Field::Fixed
            }
            2 => {
                let len = self.varint()? as usize;
                let start = self.pos;
                self.skip(len)?;
                Field::Bytes(start, start + len)
            }
            5 => {
                self.skip(4)?;
                Field::Fixed
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
    Fixed,
}

fn string(buf: &[u8], s: usize, e: usize, what: &str) -> Result<String> {
    std::str::from_utf8(&buf[s..e])
        .map(str::to_owned)
        .map_err(|_| err!(Graph, "{what}: a name is not valid UTF-8"))
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
    while let Some((num, f)) = r.field()? {
        if let (7, Field::Bytes(s, e)) = (num, f) {
            graph = Some((s, e));
        }
    }
    let (gs, ge) = graph.ok_or_else(|| err!(Graph, "{what}: no graph in the ONNX model"))?;
    let mut g = r.sub(gs, ge);
    let mut out = OnnxIndex::default();
    while let Some((num, f)) = g.field()? {
        match (num, f) {
            (1, Field::Bytes(s, e)) => {
                if out.nodes.len() == MAX_NODES {
                    return Err(err!(Graph, "{what}: more than {MAX_NODES} nodes"));
                }
                out.nodes.push(node(&g.sub(s, e))?)
            }
            (5, Field::Bytes(s, e)) => out.initializers.push(tensor(&g.sub(s, e))?),
            (11, Field::Bytes(s, e)) => out.inputs.push(value_info(&g.sub(s, e))?),
            (12, Field::Bytes(s, e)) => out.outputs.push(value_info(&g.sub(s, e))?),
            _ => {}
        }
    }
    Ok(out)
}

fn node(r: &Reader) -> Result<Node> {
    let mut r = r.sub(r.pos, r.end);
    let mut n = Node {
        op: String::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        constant: None,
    };
    let mut value = None;
    let mut attrs = 0usize;
    while let Some((num, f)) = r.field()? {
        match (num, f) {
            (1, Field::Bytes(s, e)) => n.inputs.push(string(r.buf, s, e, r.what)?),
            (2, Field::Bytes(s, e)) => n.outputs.push(string(r.buf, s, e, r.what)?),
            (4, Field::Bytes(s, e)) => n.op = string(r.buf, s, e, r.what)?,
            (5, Field::Bytes(s, e)) => {
                attrs += 1;
                let mut a = r.sub(s, e);
                let (mut name, mut t) = (String::new(), None);
                while let Some((an, af)) = a.field()? {
                    match (an, af) {
                        (1, Field::Bytes(s2, e2)) => name = string(a.buf, s2, e2, a.what)?,
                        (5, Field::Bytes(s2, e2)) => t = Some((s2, e2)),
                        _ => {}
                    }
                }
                if name == "value" {
                    value = t;
                }
            }
            _ => {}
        }
    }
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
    }
    Ok(n)
}

/// A `Constant` node's tensor: element count, dims, and its values when small.
fn constant(r: &Reader) -> Result<(u64, Dims<i64>, ConstValues)> {
    let mut r = r.sub(r.pos, r.end);
    let (mut dims, mut elem) = (Dims::new(), ElemType::Other(0));
    let (mut raw, mut ints, mut floats) = (None, None, None);
    while let Some((num, f)) = r.field()? {
        match (num, f) {
            (1, Field::Varint(v)) => dims.push(v as i64),
            (1, Field::Bytes(s, e)) => {
                let mut p = r.sub(s, e);
                while p.pos < p.end {
                    dims.push(p.varint()? as i64);
                }
            }
            (2, Field::Varint(v)) => elem = ElemType::from_code(v as i64),
            (4, Field::Bytes(s, e)) => floats = Some((s, e)),
            (7, Field::Bytes(s, e)) => ints = Some((s, e)),
            (9, Field::Bytes(s, e)) => raw = Some((s, e)),
            (14, Field::Varint(1)) => {
                return Err(err!(Graph, "{}: a Constant uses external data", r.what))
            }
            _ => {}
        }
    }
    let count = dims
        .iter()
        .try_fold(
            1u64,
            |a, &d| if d < 0 { None } else { a.checked_mul(d as u64) },
        )
        .ok_or_else(|| {
            err!(
                Graph,
                "{}: a Constant has invalid dims {:?}",
                r.what,
                &dims[..]
            )
        })?;
    let small = count as usize <= MAX_CONST_VALUES;
    let values = match (elem, raw, ints, floats) {
        (ElemType::I64, Some((s, e)), _, _) if small && e - s == 8 * count as usize => {
            ConstValues::Ints(
                r.buf[s..e]
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            )
        }
        (ElemType::I64, None, Some((s, e)), _) if small => {
            let mut p = r.sub(s, e);
            let mut v = Vec::new();
            while p.pos < p.end && v.len() <= MAX_CONST_VALUES {
                v.push(p.varint()? as i64);
            }
            ConstValues::Ints(v)
        }
        // raw_data, or float_data (packed fixed32): both little-endian f32s
        (ElemType::F32, Some((s, e)), _, _) | (ElemType::F32, None, _, Some((s, e)))
            if small && e - s == 4 * count as usize =>
        {
            ConstValues::Floats(
                r.buf[s..e]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect(),
            )
        }
        _ => ConstValues::Opaque,
    };
    Ok((count, dims, values))
}

fn value_info(r: &Reader) -> Result<ValueInfo> {
    let mut r = r.sub(r.pos, r.end);
    let mut vi = ValueInfo {
        name: String::new(),
        elem: ElemType::Other(0),
        dims: Dims::new(),
    };
    while let Some((num, f)) = r.field()? {
        match (num, f) {
            (1, Field::Bytes(s, e)) => vi.name = string(r.buf, s, e, r.what)?,
            (2, Field::Bytes(s, e)) => {
                let mut t = r.sub(s, e);
                while let Some((n2, f2)) = t.field()? {
                    if let (1, Field::Bytes(s2, e2)) = (n2, f2) {
                        let mut tt = t.sub(s2, e2);
                        while let Some((n3, f3)) = tt.field()? {
                            match (n3, f3) {
                                (1, Field::Varint(v)) => vi.elem = ElemType::from_code(v as i64),
                                (2, Field::Bytes(s3, e3)) => {
                                    let mut sh = tt.sub(s3, e3);
                                    while let Some((n4, f4)) = sh.field()? {
                                        if let (1, Field::Bytes(s4, e4)) = (n4, f4) {
                                            let mut dm = sh.sub(s4, e4);
                                            let mut d = Dim::Unknown;
                                            while let Some((n5, f5)) = dm.field()? {
                                                match (n5, f5) {
                                                    (1, Field::Varint(v)) => {
                                                        d = Dim::Fixed(v as i64)
                                                    }
                                                    (2, Field::Bytes(a, b)) => {
                                                        d = Dim::Symbol(string(
                                                            dm.buf, a, b, dm.what,
                                                        )?)
                                                    }
                                                    _ => {}
                                                }
                                            }
                                            vi.dims.push(d);
                                        }
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(vi)
}

fn tensor(r: &Reader) -> Result<Initializer> {
    let mut r = r.sub(r.pos, r.end);
    let mut t = Initializer {
        name: String::new(),
        elem: ElemType::Other(0),
        dims: Dims::new(),
        offset: 0,
        len: 0,
        raw: false,
    };
    while let Some((num, f)) = r.field()? {
        match (num, f) {
            (1, Field::Varint(v)) => t.dims.push(v as i64),
            (1, Field::Bytes(s, e)) => {
                let mut p = r.sub(s, e);
                while p.pos < p.end {
                    t.dims.push(p.varint()? as i64);
                }
            }
            (2, Field::Varint(v)) => t.elem = ElemType::from_code(v as i64),
            (8, Field::Bytes(s, e)) => t.name = string(r.buf, s, e, r.what)?,
            (9, Field::Bytes(s, e)) => {
                t.offset = s;
                t.len = e - s;
                t.raw = true;
            }
            (4 | 5 | 7, Field::Bytes(s, e)) => {
                // typed (non-raw) storage: keep the payload range; only raw_data is used directly
                t.offset = s;
                t.len = e - s;
            }
            (14, Field::Varint(1)) => {
                return Err(err!(
                    Graph,
                    "{}: initializer {:?} uses external data, which bundles do not allow",
                    r.what,
                    t.name
                ));
            }
            _ => {}
        }
    }
    if t.raw {
        let n: i64 = t
            .dims
            .iter()
            .try_fold(1i64, |a, &d| if d < 0 { None } else { a.checked_mul(d) })
            .ok_or_else(|| {
                err!(
                    Graph,
                    "{}: initializer {:?} has invalid dims {:?}",
                    r.what,
                    t.name,
                    t.dims
                )
            })?;
        let want = (n as u128) * t.elem.size() as u128;
        if t.elem.size() != 0 && want != t.len as u128 {
            return Err(err!(
                Graph,
                "{}: initializer {:?} has {} bytes of data, expected {want} for dims {:?}",
                r.what,
                t.name,
                t.len,
                t.dims
            ));
        }
    }
    Ok(t)
}

impl OnnxIndex {
    /// Find an initializer by name.
    pub fn initializer(&self, name: &str) -> Option<&Initializer> {
        self.initializers.iter().find(|i| i.name == name)
    }
    /// Check that every f32/f16 raw initializer holds only finite values.
    pub fn check_finite(&self, buf: &[u8], what: &str) -> Result<()> {
        for init in self.initializers.iter().filter(|i| i.raw) {
            let data = &buf[init.offset..init.offset + init.len];
            let bad = match init.elem {
                ElemType::F32 => data
                    .chunks_exact(4)
                    .position(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite()),
                ElemType::F16 => data
                    .chunks_exact(2)
                    .position(|c| !half::f16::from_le_bytes([c[0], c[1]]).is_finite()),
                _ => None,
            };
            if let Some(i) = bad {
                return Err(err!(
                    Graph,
                    "{what}: weight {:?} holds a non-finite value at element {i}",
                    init.name
                ));
            }
        }
        Ok(())
    }
}
