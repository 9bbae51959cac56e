//! The model's weights as the fused engine holds them: read from the graphs' initializers
//! as the [`Architecture`](crate::bundle::Architecture) lists them, widened to f32 (except
//! the PRM's query table, kept as stored: [`RowTable`]), the projections that read the same
//! input packed side by side.

use std::collections::HashMap;
use std::sync::Arc;

use crate::bundle::arch::Weight;
use crate::bundle::onnx::ElemType;
use crate::bundle::Bundle;
use crate::bundle::Bytes;
use crate::error::{err, Result};

/// Every initializer of the three graphs as f32, by name, with its shape; and the tables
/// named at load kept in their stored format ([`RowTable`]).
pub(super) struct Table(
    HashMap<String, (Vec<f32>, Vec<usize>)>,
    HashMap<String, RowTable>,
);

/// A gathered table (one row per id) in its stored format: f32, f16, or int8 with one
/// scale per row. The PRM's node table (`model.prm_query: "node"` or `prm_kind: "dense"`),
/// a dense PRM's biases and the encoder's table with an item column grow with the catalog
/// (about 2M and 1M rows at 1M items); a request reads only the rows of its history and of
/// its K+ candidates, so they are never widened to f32. By default the table is one heap
/// copy of its stored bytes; with `LoadOptions::tables_in_place` it is read in place from
/// the bundle's memory map, where only the pages a request touched are resident and the OS
/// may drop them again (they are the file's), under the contract that the bundle's files
/// stay unchanged while the model lives. Byte ranges are checked at load; rows are
/// checked by the caller (trie nodes, catalog items).
pub(super) struct RowTable {
    bytes: Arc<Bytes>,
    data: usize,  // the byte offset of row 0 in `bytes`
    scale: usize, // int8: the byte offset of the rows' f32 scales
    d: usize,
    stored: Stored,
}

#[derive(Clone, Copy)]
enum Stored {
    F32,
    F16,
    I8,
}

impl RowTable {
    /// Row `i` (checked by the caller: a trie node) widened into `out` (its width).
    #[inline]
    pub(super) fn row(&self, i: usize, out: &mut [f32]) {
        out.fill(0.0);
        self.add_row(i, out);
    }

    /// Row `i` widened and added to `out` (its width).
    #[inline]
    pub(super) fn add_row(&self, i: usize, out: &mut [f32]) {
        let b = self.stored_row(i);
        match self.stored {
            Stored::F32 => {
                for (o, x) in out.iter_mut().zip(b.chunks_exact(4)) {
                    *o += f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
                }
            }
            Stored::F16 => {
                for (o, x) in out.iter_mut().zip(b.chunks_exact(2)) {
                    *o += half::f16::from_le_bytes([x[0], x[1]]).to_f32();
                }
            }
            Stored::I8 => {
                let s = self.scale(i);
                for (o, &x) in out.iter_mut().zip(b) {
                    *o += x as i8 as f32 * s;
                }
            }
        }
    }

    /// The one value of row `i` of a one-column table (the PRM's node biases).
    #[inline]
    pub(super) fn value(&self, i: usize) -> f32 {
        let mut v = [0.0];
        self.add_row(i, &mut v);
        v[0]
    }

    /// `<row i, u>` (`u` of the table's width), read straight from the stored bytes in 8
    /// lanes, as `kernels::dot` sums: for f32 and f16 rows the same value as widening the row
    /// and calling `dot`; an int8 row's scale multiplies the sum, not each element.
    #[inline]
    pub(super) fn dot_row(&self, i: usize, u: &[f32]) -> f32 {
        let b = self.stored_row(i);
        match self.stored {
            Stored::F32 => dot8::<4>(b, u, |x| f32::from_le_bytes([x[0], x[1], x[2], x[3]])),
            Stored::F16 => dot8::<2>(b, u, |x| half::f16::from_le_bytes([x[0], x[1]]).to_f32()),
            Stored::I8 => dot8::<1>(b, u, |x| x[0] as i8 as f32) * self.scale(i),
        }
    }

    /// Row `i`'s stored bytes.
    #[inline]
    fn stored_row(&self, i: usize) -> &[u8] {
        let w = match self.stored {
            Stored::F32 => 4,
            Stored::F16 => 2,
            Stored::I8 => 1,
        } * self.d;
        &self.bytes[self.data + i * w..self.data + (i + 1) * w]
    }

    #[inline]
    fn scale(&self, i: usize) -> f32 {
        let at = self.scale + i * 4;
        let b = &self.bytes[at..at + 4];
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// `sum widen(bytes[k]) * u[k]` over `W`-byte elements, in `kernels::dot`'s 8 lanes.
#[inline(always)]
fn dot8<const W: usize>(bytes: &[u8], u: &[f32], widen: impl Fn(&[u8]) -> f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (bc, uc) = (bytes.chunks_exact(8 * W), u.chunks_exact(8));
    let tail: f32 = bc
        .remainder()
        .chunks_exact(W)
        .zip(uc.remainder())
        .map(|(x, y)| widen(x) * y)
        .sum();
    for (x, y) in bc.zip(uc) {
        // a fixed-size copy: the widening below then has no bounds checks and vectorises
        let mut a = [0u8; 32];
        a[..8 * W].copy_from_slice(x);
        let mut w = [0.0f32; 8];
        for l in 0..8 {
            w[l] = widen(&a[l * W..(l + 1) * W]);
        }
        for l in 0..8 {
            lanes[l] += w[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

impl Table {
    /// Every weight widened to f32, except the tables named in `keep`, kept in their stored
    /// format ([`RowTable`]; a 1-d weight as a table of one column): read in place from the
    /// graph's bytes when `in_place` (`LoadOptions::tables_in_place`), else copied once.
    pub(super) fn load(bundle: &Bundle, keep: &[&Weight], in_place: bool) -> Result<Table> {
        // name -> (type, bytes, shape, the graph's bytes, the offset of `bytes` in them)
        type Raw<'a> = (ElemType, &'a [u8], Vec<usize>, &'a Arc<Bytes>, usize);
        let mut raw: HashMap<&str, Raw> = HashMap::new();
        for g in [bundle.encoder(), bundle.decoder(), bundle.prm()] {
            for init in &g.index.initializers {
                if !init.raw {
                    return Err(err!(
                        Graph,
                        "weight {:?} is not stored as raw_data; the fused CPU engine reads raw bytes",
                        init.name
                    ));
                }
                let bytes = &g.bytes[init.offset..init.offset + init.len];
                let dims = init.dims.iter().map(|&d| d as usize).collect();
                raw.insert(&init.name, (init.elem, bytes, dims, &g.bytes, init.offset));
            }
        }
        let mut table = HashMap::new();
        let mut rows = HashMap::new();
        for w in keep {
            let Some(&(elem, bytes, ref dims, graph, offset)) = raw.get(w.name.as_str()) else {
                return Err(w.not_as_checked(None));
            };
            if *dims != w.shape || !(1..=2).contains(&dims.len()) {
                return Err(w.not_as_checked(Some(dims)));
            }
            let (n, d) = (dims[0], dims.get(1).copied().unwrap_or(1));
            let (stored, width) = match elem {
                ElemType::F32 => (Stored::F32, 4),
                ElemType::F16 => (Stored::F16, 2),
                ElemType::I8 => (Stored::I8, 1),
                other => {
                    return Err(err!(
                        Graph,
                        "weight {:?} is stored as {other:?}, expected f32, f16 or int8",
                        w.name
                    ))
                }
            };
            if n.checked_mul(d).and_then(|v| v.checked_mul(width)) != Some(bytes.len()) {
                return Err(err!(
                    Graph,
                    "weight {:?} holds {} bytes, its shape {dims:?} says {n} x {d} values",
                    w.name,
                    bytes.len()
                ));
            }
            let mut scale = None;
            if elem == ElemType::I8 {
                let sname = format!("{}.scale", w.name);
                let Some(&(ElemType::F32, sbytes, _, sgraph, soffset)) = raw.get(sname.as_str())
                else {
                    return Err(err!(Graph, "int8 weight {:?} has no f32 {sname:?}", w.name));
                };
                if sbytes.len() != n * 4 || !Arc::ptr_eq(sgraph, graph) {
                    return Err(err!(
                        Graph,
                        "{sname:?} has {} values, expected one per row ({n}) in the same graph",
                        sbytes.len() / 4
                    ));
                }
                scale = Some((soffset, sbytes));
            }
            let t = if in_place {
                RowTable {
                    bytes: graph.clone(),
                    data: offset,
                    scale: scale.map_or(0, |(at, _)| at),
                    d,
                    stored,
                }
            } else {
                // one copy of the stored bytes, then the scales
                let sb = scale.map_or(&[][..], |(_, b)| b);
                let mut v = crate::alloc::with_capacity(bytes.len() + sb.len(), "a weight table")?;
                v.extend_from_slice(bytes);
                v.extend_from_slice(sb);
                RowTable {
                    bytes: Arc::new(Bytes::Owned(v)),
                    data: 0,
                    scale: bytes.len(),
                    d,
                    stored,
                }
            };
            rows.insert(w.name.clone(), t);
        }
        for (&name, (elem, bytes, dims, _, _)) in &raw {
            if keep.iter().any(|w| w.name == name) {
                continue;
            }
            let values: Vec<f32> = match elem {
                ElemType::F32 => f32s(bytes),
                ElemType::F16 => bytes
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                ElemType::I8 => {
                    let sname = format!("{name}.scale");
                    let Some((ElemType::F32, sbytes, ..)) = raw.get(sname.as_str()) else {
                        return Err(err!(Graph, "int8 weight {name:?} has no f32 {sname:?}"));
                    };
                    dequantize(name, bytes, dims, &f32s(sbytes))?
                }
                // integer constants of the graphs (shapes, offsets): not weights
                _ => continue,
            };
            if values.len() != dims.iter().product::<usize>() {
                return Err(err!(
                    Graph,
                    "weight {name:?} holds {} values, its shape {dims:?} says {}",
                    values.len(),
                    dims.iter().product::<usize>()
                ));
            }
            table.insert(name.to_string(), (values, dims.clone()));
        }
        Ok(Table(table, rows))
    }

    /// Take the table `w` kept in its stored format (named in `load`'s `keep`).
    pub(super) fn rows(&mut self, w: &Weight) -> Result<RowTable> {
        self.1.remove(&w.name).ok_or_else(|| w.not_as_checked(None))
    }

    /// Take the weight `w` (row-major, the architecture's shape): each is used once, so
    /// the model owns the table's copy instead of a second one.
    pub(super) fn w(&mut self, w: &Weight) -> Result<Vec<f32>> {
        match self.0.remove(&w.name) {
            // rank-1 weights (gains, biases) may be stored with any rank of that size
            Some((v, d)) if d == w.shape || (w.shape.len() == 1 && v.len() == w.len()) => Ok(v),
            Some((_, d)) => Err(w.not_as_checked(Some(&d))),
            None => Err(w.not_as_checked(None)),
        }
    }

    /// The matrices `ws` (each `[k, n_i]`, the same k) side by side as one `[k, sum n_i]`
    /// matrix, so that one matmul computes all the projections that read the same input.
    pub(super) fn concat(&mut self, ws: &[&Weight]) -> Result<Vec<f32>> {
        let k = ws[0].shape[0];
        let parts = ws.iter().map(|w| self.w(w)).collect::<Result<Vec<_>>>()?;
        let widths: Vec<usize> = ws.iter().map(|w| w.shape[1]).collect();
        let mut out = Vec::with_capacity(k * widths.iter().sum::<usize>());
        for i in 0..k {
            for (p, &n) in parts.iter().zip(&widths) {
                out.extend_from_slice(&p[i * n..(i + 1) * n]);
            }
        }
        Ok(out)
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// int8 values times their scale: one per column (of each matrix of a stacked weight) or,
/// for a 2-d table with one scale per row (embeddings), one per row.
pub(super) fn dequantize(name: &str, q: &[u8], dims: &[usize], scale: &[f32]) -> Result<Vec<f32>> {
    let total: usize = dims.iter().product();
    let cols = *dims.last().unwrap_or(&1);
    let rows = if dims.len() >= 2 {
        dims[dims.len() - 2]
    } else {
        1
    };
    let per_col = cols > 0 && rows > 0 && scale.len() * rows == total;
    let per_row = dims.len() == 2 && scale.len() == rows;
    if q.len() != total || !(per_col || per_row) {
        return Err(err!(
            Graph,
            "scale of {name:?} has {} values, expected one per column or per row of {dims:?}",
            scale.len()
        ));
    }
    Ok(q.iter()
        .enumerate()
        .map(|(f, &b)| {
            let s = if per_col {
                scale[(f / (rows * cols)) * cols + f % cols]
            } else {
                scale[f / cols]
            };
            b as i8 as f32 * s
        })
        .collect())
}

pub(super) struct EncLayer {
    pub(super) n1: Vec<f32>,   // [d]
    pub(super) wqkv: Vec<f32>, // [d, 3 hd]: q | k | v
    pub(super) wo: Vec<f32>,   // [hd, d]
    pub(super) n2: Vec<f32>,   // [d]
    pub(super) w1: Vec<f32>,   // [d, ff]
    pub(super) w2: Vec<f32>,   // [ff, d]
}

pub(super) struct DecLayer {
    pub(super) n1: Vec<f32>,        // [d]
    pub(super) wqkv: Vec<f32>,      // [d, 3 hd] self-attention q | k | v
    pub(super) wo_self: Vec<f32>,   // [hd, d]
    pub(super) n2: Vec<f32>,        // [d]
    pub(super) wq_cross: Vec<f32>,  // [d, hd]
    pub(super) wkv_cross: Vec<f32>, // [d, 2 hd] applied to the memory once per request: k | v
    pub(super) wo_cross: Vec<f32>,  // [hd, d]
    pub(super) n3: Vec<f32>,        // [d]
    pub(super) w1: Vec<f32>,        // [d, ff]
    pub(super) w2: Vec<f32>,        // [ff, d]
}

/// The PRM's weights, of the bundle's kind (`model.prm_kind`).
pub(super) enum PrmWeights {
    Attention(Box<Prm>),
    Dense(DensePrm),
}

/// `model.prm_kind: "dense"`: `u = memory[H - 1] * mask[H - 1] @ w + b`,
/// `score = <u, node[n]> + node_bias[n]`.
pub(super) struct DensePrm {
    pub(super) w: Vec<f32>,         // [d, d]
    pub(super) b: Vec<f32>,         // [d]
    pub(super) node: RowTable,      // [num_nodes, d], in place
    pub(super) node_bias: RowTable, // [num_nodes], in place
}

pub(super) struct Prm {
    pub(super) query: RowTable, // prm.node_emb or prm.path_emb, in place
    /// `model.prm_query: "path"`: the catalog (each node's path) and C (the path rows'
    /// stride per level)
    pub(super) path: Option<(crate::bundle::Catalog, usize)>,
    pub(super) n1: Vec<f32>,     // [d]
    pub(super) wq: Vec<f32>,     // [d, pd]
    pub(super) wkv: Vec<f32>,    // [d, 2 pd] applied to the memory once per request: k | v
    pub(super) wo: Vec<f32>,     // [pd, d]
    pub(super) n2: Vec<f32>,     // [d]
    pub(super) w1: Vec<f32>,     // [d, pff]
    pub(super) w2: Vec<f32>,     // [pff, d]
    pub(super) n3: Vec<f32>,     // [d]
    pub(super) w_out1: Vec<f32>, // [d, d]
    pub(super) b_out1: Vec<f32>, // [d]
    pub(super) w_out2: Vec<f32>, // [d, 1]
    pub(super) b_out2: Vec<f32>, // [1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(stored: Stored, row_bytes: Vec<u8>, scales: &[f32], d: usize) -> RowTable {
        let scale = row_bytes.len();
        let mut v = row_bytes;
        v.extend(scales.iter().flat_map(|s| s.to_le_bytes()));
        RowTable {
            bytes: Arc::new(Bytes::Owned(v)),
            data: 0,
            scale,
            d,
            stored,
        }
    }

    /// `dot_row` reads the stored row as `row` widens it: bit for bit the widened row's
    /// `kernels::dot` for f32 and f16, the same up to where an int8 row's scale multiplies;
    /// at widths with and without a tail of fewer than 8.
    #[test]
    fn dot_row_is_the_widened_rows_dot() {
        for d in [1usize, 7, 8, 19, 64] {
            let rows = 3;
            let vals: Vec<f32> = (0..rows * d)
                .map(|k| ((k * 37 % 23) as f32 - 11.0) * 0.173)
                .collect();
            let u: Vec<f32> = (0..d).map(|k| ((k * 13 % 7) as f32 - 3.0) * 0.61).collect();
            let f32s = table(
                Stored::F32,
                vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
                &[],
                d,
            );
            let f16s = table(
                Stored::F16,
                vals.iter()
                    .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                    .collect(),
                &[],
                d,
            );
            let scales = [0.02f32, 0.5, 1.5];
            let i8s = table(
                Stored::I8,
                (0..rows * d)
                    .map(|k| ((k * 29 % 255) as i32 - 127) as i8 as u8)
                    .collect(),
                &scales,
                d,
            );
            let mut w = vec![0.0f32; d];
            for i in 0..rows {
                for t in [&f32s, &f16s] {
                    t.row(i, &mut w);
                    let want = crate::backend::cpu::kernels::dot(&w, &u);
                    assert_eq!(t.dot_row(i, &u).to_bits(), want.to_bits(), "d {d} row {i}");
                }
                i8s.row(i, &mut w);
                let want = crate::backend::cpu::kernels::dot(&w, &u);
                let got = i8s.dot_row(i, &u);
                assert!(
                    (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "int8 d {d} row {i}: {got} vs {want}"
                );
            }
        }
    }
}
