use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny() -> PathBuf {
    repo().join("models/tiny")
}

/// A fresh copy of a bundle directory in a temp dir, to corrupt.
pub fn copy_bundle(src: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for e in std::fs::read_dir(src).expect("bundle dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), dir.path().join(e.file_name())).expect("copy");
    }
    dir
}

/// Edit a bundle's manifest.json in place.
pub fn edit_manifest(dir: &Path, f: impl Fn(&mut serde_json::Value)) {
    let p = dir.join("manifest.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Replace `file` by `bytes` and record its new size in the manifest, so that only the
/// file's own parser can notice what is wrong with it.
pub fn rewrite(dir: &Path, file: &str, bytes: &[u8]) {
    std::fs::write(dir.join(file), bytes).unwrap();
    let len = bytes.len();
    edit_manifest(dir, |v| {
        for f in v["files"].as_array_mut().unwrap() {
            if f["name"] == file {
                f["bytes"] = len.into();
            }
        }
    });
}

/// Overwrite the first value of the first rank-2 weight of graph `file` with `v`; returns
/// the weight's name.
pub fn poison_weight(dir: &Path, file: &str, v: f32) -> String {
    let p = dir.join(file);
    let mut b = std::fs::read(&p).unwrap();
    let idx = promise_rt::internals::onnx::index(&b, file).unwrap();
    let w = idx
        .initializers
        .iter()
        .find(|i| i.raw && i.dims.len() == 2)
        .unwrap()
        .clone();
    b[w.offset..w.offset + 4].copy_from_slice(&v.to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    w.name
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn field(num: u64, payload: &[u8], out: &mut Vec<u8>) {
    varint(num << 3 | 2, out);
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// A TensorProto: dims, type (1 f32, 7 i64), name, raw data.
fn tensor_proto(name: &str, dims: &[u64], elem: u64, raw: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    for &d in dims {
        varint(1 << 3, &mut t);
        varint(d, &mut t);
    }
    varint(2 << 3, &mut t);
    varint(elem, &mut t);
    field(8, name.as_bytes(), &mut t);
    field(9, raw, &mut t);
    t
}

/// The top-level fields of a protobuf message `b`, each kept or replaced: `f(number,
/// payload of a length-delimited field)` returns the bytes to write instead, or `None`.
fn map_fields(b: &[u8], mut f: impl FnMut(u64, Option<&[u8]>) -> Option<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 0;
    let read = |pos: &mut usize| -> u64 {
        let (mut v, mut s) = (0u64, 0);
        loop {
            let x = b[*pos];
            *pos += 1;
            v |= ((x & 0x7f) as u64) << s;
            if x & 0x80 == 0 {
                return v;
            }
            s += 7;
        }
    };
    while pos < b.len() {
        let start = pos;
        let key = read(&mut pos);
        let payload = match key & 7 {
            0 => {
                read(&mut pos);
                None
            }
            2 => {
                let len = read(&mut pos) as usize;
                pos += len;
                Some(&b[pos - len..pos])
            }
            1 => {
                pos += 8;
                None
            }
            5 => {
                pos += 4;
                None
            }
            w => panic!("wire type {w}"),
        };
        match f(key >> 3, payload) {
            Some(new) => out.extend_from_slice(&new),
            None => out.extend_from_slice(&b[start..pos]),
        }
    }
    out
}

/// Append `entry` (already a GraphProto field) to the graph of the ONNX model in `file`:
/// GraphProto is field 7 of ModelProto, re-encoded with the entry at its end. Records the
/// new size in the manifest.
fn splice_into_graph(dir: &Path, file: &str, entry: &[u8]) {
    let b = std::fs::read(dir.join(file)).unwrap();
    let out = map_fields(&b, |num, payload| match (num, payload) {
        (7, Some(g)) => {
            let mut g = g.to_vec();
            g.extend_from_slice(entry);
            let mut out = Vec::new();
            field(7, &g, &mut out);
            Some(out)
        }
        _ => None,
    });
    rewrite(dir, file, &out);
}

/// Append an f32 initializer `name` of shape `dims` (values `fill`) to graph `file`.
pub fn append_initializer(dir: &Path, file: &str, name: &str, dims: &[u64], fill: f32) {
    let n: u64 = dims.iter().product();
    let raw: Vec<u8> = (0..n).flat_map(|_| fill.to_le_bytes()).collect();
    let mut entry = Vec::new();
    field(5, &tensor_proto(name, dims, 1, &raw), &mut entry);
    splice_into_graph(dir, file, &entry);
}

/// Append a node `op(inputs) -> outputs` to graph `file`; with `value`, a `value` tensor
/// attribute (dims, i64 values as raw data) as a Constant carries.
pub fn append_node(
    dir: &Path,
    file: &str,
    op: &str,
    inputs: &[&str],
    outputs: &[&str],
    value: Option<(&[u64], &[i64])>,
) {
    let mut n = Vec::new();
    for i in inputs {
        field(1, i.as_bytes(), &mut n);
    }
    for o in outputs {
        field(2, o.as_bytes(), &mut n);
    }
    field(4, op.as_bytes(), &mut n);
    if let Some((dims, vals)) = value {
        let raw: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut a = Vec::new();
        field(1, b"value", &mut a);
        field(5, &tensor_proto("", dims, 7, &raw), &mut a);
        varint(20 << 3, &mut a);
        varint(4, &mut a); // AttributeProto.TENSOR
        field(5, &a, &mut n);
    }
    let mut entry = Vec::new();
    field(1, &n, &mut entry);
    splice_into_graph(dir, file, &entry);
}

/// Append `entry` (already encoded GraphProto fields) to the graph of `file`.
pub fn append_graph_entry(dir: &Path, file: &str, entry: &[u8]) {
    splice_into_graph(dir, file, entry);
}

/// Append raw bytes at the end of the model in `file` (ModelProto level).
pub fn append_model_bytes(dir: &Path, file: &str, bytes: &[u8]) {
    let mut b = std::fs::read(dir.join(file)).unwrap();
    b.extend_from_slice(bytes);
    rewrite(dir, file, &b);
}

/// A length-delimited protobuf field `num` holding `payload`.
pub fn pb_field(num: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    field(num, payload, &mut out);
    out
}

/// A varint protobuf field `num` holding `v`.
pub fn pb_varint(num: u64, v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(num << 3, &mut out);
    varint(v, &mut out);
    out
}

/// An f32 TensorProto `name` of shape `dims` with both raw_data and float_data (`both`),
/// or float_data only.
pub fn float_data_tensor(name: &str, dims: &[u64], both: bool) -> Vec<u8> {
    let n: u64 = dims.iter().product();
    let raw: Vec<u8> = (0..n).flat_map(|_| 1.0f32.to_le_bytes()).collect();
    let mut t = if both {
        tensor_proto(name, dims, 1, &raw)
    } else {
        let mut t = Vec::new();
        for &d in dims {
            varint(1 << 3, &mut t);
            varint(d, &mut t);
        }
        varint(2 << 3, &mut t);
        varint(1, &mut t);
        field(8, name.as_bytes(), &mut t);
        t
    };
    let two: Vec<u8> = (0..n).flat_map(|_| 2.0f32.to_le_bytes()).collect();
    field(4, &two, &mut t);
    t
}

/// The ONNX model in `file` with its default opset import replaced by version `v`.
pub fn set_opset(dir: &Path, file: &str, v: u64) {
    let b = std::fs::read(dir.join(file)).unwrap();
    let mut out = map_fields(&b, |num, _| (num == 8).then(Vec::new));
    out.extend_from_slice(&pb_field(8, &pb_varint(2, v)));
    rewrite(dir, file, &out);
}

/// Set every value of the f32 weight `name` of graph `file` to `v`.
pub fn fill_weight(dir: &Path, file: &str, name: &str, v: f32) {
    let p = dir.join(file);
    let mut b = std::fs::read(&p).unwrap();
    let idx = promise_rt::internals::onnx::index(&b, file).unwrap();
    let w = idx.initializer(name).unwrap().clone();
    for c in b[w.offset..w.offset + w.len].chunks_exact_mut(4) {
        c.copy_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&p, &b).unwrap();
}

/// Overwrite the first value of the initializer `name` of graph `file` (f32 or f16, by
/// its stored type) with `v`.
pub fn set_first_value(dir: &Path, file: &str, name: &str, v: f32) {
    use promise_rt::internals::onnx::ElemType;
    let p = dir.join(file);
    let mut b = std::fs::read(&p).unwrap();
    let idx = promise_rt::internals::onnx::index(&b, file).unwrap();
    let w = idx
        .initializer(name)
        .unwrap_or_else(|| panic!("{name} in {file}"))
        .clone();
    match w.elem {
        ElemType::F16 => {
            b[w.offset..w.offset + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes())
        }
        _ => b[w.offset..w.offset + 4].copy_from_slice(&v.to_le_bytes()),
    }
    std::fs::write(&p, &b).unwrap();
}
