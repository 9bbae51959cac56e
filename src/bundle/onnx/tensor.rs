//! The tensors of an ONNX graph: initializers (where their bytes lie, checked against
//! their dims), `Constant` values (kept when small, classified when they are masks), and
//! the load-time check that every weight is finite and in range.

use super::{
    fields, string, ConstValues, Dims, ElemType, Field, Initializer, OnnxIndex, Reader, MASK_NEG,
    MAX_CONST_VALUES, MAX_INT8_SCALE, MAX_MASK_ROWS, MAX_WEIGHT, TENSOR,
};
use crate::error::{err, Result};

/// The dims of a tensor: field 1, unpacked varints or packed.
pub(super) fn push_dims(r: &Reader, f: Field, dims: &mut Dims<i64>) -> Result<()> {
    match f {
        Field::Varint(v) => dims.push(v as i64),
        Field::Bytes(s, e) => {
            let mut p = r.sub(s, e);
            while p.pos < p.end {
                dims.push(p.varint()? as i64);
            }
        }
        _ => {}
    }
    Ok(())
}

/// A tensor's storage: exactly one of raw_data and the typed fields, else engines
/// disagree on which one holds the values.
fn one_storage(count: usize, r: &Reader, whose: &str) -> Result<()> {
    if count > 1 {
        return Err(err!(
            Graph,
            "{}: {whose} stores its values twice (raw_data and a typed field); expected one",
            r.what
        ));
    }
    Ok(())
}

/// A `Constant` node's tensor: element count, dims, and its values when small.
pub(super) fn constant(r: &Reader) -> Result<(u64, Dims<i64>, ConstValues)> {
    let mut r = r.sub(r.pos, r.end);
    let (mut dims, mut elem) = (Dims::new(), ElemType::Other(0));
    let (mut raw, mut ints, mut floats) = (None, None, None);
    let mut stores = 0;
    fields(&mut r, "a Constant's tensor", TENSOR, |r, num, f| {
        match (num, f) {
            (1, f) => push_dims(r, f, &mut dims)?,
            (2, Field::Varint(v)) => elem = ElemType::from_code(v as i64),
            (4, Field::Bytes(s, e)) => (floats, stores) = (Some((s, e)), stores + 1),
            (5, Field::Bytes(..)) => stores += 1,
            (7, Field::Bytes(s, e)) => (ints, stores) = (Some((s, e)), stores + 1),
            (9, Field::Bytes(s, e)) => (raw, stores) = (Some((s, e)), stores + 1),
            (14, Field::Varint(v)) if v != 0 => {
                return Err(err!(Graph, "{}: a Constant uses external data", r.what))
            }
            _ => {}
        }
        Ok(())
    })?;
    one_storage(stores, &r, "a Constant")?;
    if !matches!(elem, ElemType::F32 | ElemType::I64) {
        return Err(err!(
            Graph,
            "{}: a Constant of element type {elem:?}; the graphs' constants are f32 or i64",
            r.what
        ));
    }
    // a constant's values reach tract alone (the fused and GPU engines build their own
    // masks and shapes): a non-finite one would make the engines disagree
    if elem == ElemType::F32 {
        if let Some((s, e)) = raw.or(floats) {
            if let Some(i) = r.buf[s..e]
                .chunks_exact(4)
                .position(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite())
            {
                return Err(err!(
                    Graph,
                    "{}: a Constant holds a non-finite value at element {i}; constants are finite",
                    r.what
                ));
            }
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
    if elem == ElemType::F32 && dims.len() >= 2 {
        let data = raw.or(floats).map(|(s, e)| &r.buf[s..e]);
        let values = match data {
            Some(d) if d.len() as u64 == 4 * count => row_mask(d, dims[dims.len() - 1]),
            _ => ConstValues::OtherFloats,
        };
        return Ok((count, dims, values));
    }
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
        (ElemType::F32, ..) => ConstValues::OtherFloats,
        _ => ConstValues::Opaque,
    };
    Ok((count, dims, values))
}

pub(super) fn tensor(r: &Reader) -> Result<Initializer> {
    let mut r = r.sub(r.pos, r.end);
    let mut t = Initializer {
        name: String::new(),
        elem: ElemType::Other(0),
        dims: Dims::new(),
        offset: 0,
        len: 0,
        raw: false,
    };
    let mut stores = 0;
    fields(&mut r, "an initializer", TENSOR, |r, num, f| {
        match (num, f) {
            (1, f) => push_dims(r, f, &mut t.dims)?,
            (2, Field::Varint(v)) => t.elem = ElemType::from_code(v as i64),
            (8, Field::Bytes(s, e)) => t.name = string(r.buf, s, e, r.what)?,
            (9, Field::Bytes(s, e)) => {
                t.offset = s;
                t.len = e - s;
                t.raw = true;
                stores += 1;
            }
            (4 | 5 | 7, Field::Bytes(s, e)) => {
                // typed (non-raw) storage: refused for initializers by `index`
                t.offset = s;
                t.len = e - s;
                stores += 1;
            }
            (14, Field::Varint(v)) if v != 0 => {
                return Err(err!(
                    Graph,
                    "{}: initializer {:?} uses external data, which bundles do not allow",
                    r.what,
                    t.name
                ));
            }
            _ => {}
        }
        Ok(())
    })?;
    one_storage(stores, &r, "an initializer")?;
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
    /// Check every weight's values: each f32 and f16 value finite and within
    /// [`MAX_WEIGHT`], and each int8 scale (`<name>.scale`) finite, positive and at most
    /// [`MAX_INT8_SCALE`], so that no engine overflows and every engine ranks alike.
    pub fn check_finite(&self, buf: &[u8], what: &str) -> Result<()> {
        #[cfg(test)]
        let range = !super::SKIP_WEIGHT_RANGE.with(|s| s.get());
        #[cfg(not(test))]
        let range = true;
        let big = |v: f32| range && v.abs() > MAX_WEIGHT;
        for init in self.initializers.iter().filter(|i| i.raw) {
            let data = &buf[init.offset..init.offset + init.len];
            let is_scale = init.name.ends_with(".scale");
            let bad = match init.elem {
                ElemType::F32 => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .enumerate()
                    .find(|(_, v)| {
                        !v.is_finite()
                            || if is_scale {
                                !(*v > 0.0 && (!range || *v <= MAX_INT8_SCALE))
                            } else {
                                big(*v)
                            }
                    }),
                ElemType::F16 => data
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .enumerate()
                    .find(|(_, v)| !v.is_finite() || big(*v)),
                _ => None,
            };
            if let Some((i, v)) = bad {
                if !v.is_finite() {
                    return Err(err!(
                        Graph,
                        "{what}: weight {:?} holds a non-finite value ({v}) at element {i}",
                        init.name
                    ));
                }
                let expected = if is_scale {
                    format!("an int8 scale is finite and in (0, {MAX_INT8_SCALE}]")
                } else {
                    let kind = if init.elem == ElemType::F16 {
                        "f16"
                    } else {
                        "f32"
                    };
                    format!("an {kind} weight is finite and within +-{MAX_WEIGHT}")
                };
                return Err(err!(
                    Graph,
                    "{what}: weight {:?} holds {v} at element {i}; {expected}",
                    init.name
                ));
            }
        }
        Ok(())
    }
}

/// The leading zeros of each row of an f32 tensor whose last axis is `width`, when every
/// row is zeros then [`MASK_NEG`]s (else `OtherFloats`).
fn row_mask(data: &[u8], width: i64) -> ConstValues {
    let width = width.max(0) as usize;
    if width == 0 || data.len() / 4 / width > MAX_MASK_ROWS {
        return ConstValues::OtherFloats;
    }
    let mut rows = Vec::with_capacity(data.len() / 4 / width);
    for row in data.chunks_exact(4 * width) {
        let v = |j: usize| f32::from_le_bytes(row[4 * j..4 * j + 4].try_into().expect("4 bytes"));
        let zeros = (0..width).take_while(|&j| v(j) == 0.0).count();
        if (zeros..width).any(|j| v(j) != MASK_NEG) {
            return ConstValues::OtherFloats;
        }
        rows.push(zeros as u32);
    }
    ConstValues::RowMask(rows)
}
