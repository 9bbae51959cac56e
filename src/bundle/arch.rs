//! The weights the model's architecture reads, derived from the manifest's dimensions, each
//! scoped to the graph that holds it (models/README.md, "Weights"). [`check`] holds every
//! graph to this list at [`Bundle::open`](super::Bundle::open): every listed weight is
//! there, in its own graph, with its shape and stored type, and nothing else is. The
//! engines that read weights by name (fused, GPU) can then trust the names and shapes, a
//! weight cannot be taken from the wrong graph, an extra layer the manifest does not
//! declare cannot exist, and every engine accepts the same bundles.
//!
//! How the graphs split heads (`heads` x `head_dim`) is not visible in the weights' shapes
//! (only their product is): `src/bundle/nodes.rs` reads it from the graphs' attention nodes.

use super::onnx::{ElemType, OnnxIndex};
use super::{Manifest, Numeric};
use crate::error::{err, Result};

/// The three graphs of a bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphRole {
    Encoder,
    Decoder,
    Prm,
}

impl GraphRole {
    /// The role's name in messages and the manifest (`graphs.<name>`).
    pub fn name(self) -> &'static str {
        match self {
            GraphRole::Encoder => "encoder",
            GraphRole::Decoder => "decoder",
            GraphRole::Prm => "prm",
        }
    }
}

/// One weight: its graph, name and shape. Rank-1 weights (norm gains, biases) are stored
/// as f32; higher ranks in the manifest's numeric format, and int8 ones carry an f32
/// `<name>.scale`: one scale per row for gathered tables (`per_row`), else per column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightSpec {
    pub graph: GraphRole,
    pub name: String,
    pub shape: Vec<usize>,
    pub per_row: bool,
}

/// Every weight of the architecture for `m`'s dimensions, graph by graph, in the order the
/// layers read them.
pub fn weights(m: &Manifest) -> Vec<WeightSpec> {
    let dm = &m.dims;
    let (d, ff, pff) = (dm.d_model, dm.ff, dm.prm_ff);
    // saturating: a product past usize (32-bit targets) can only mismatch the graph's
    let hd = dm.heads.saturating_mul(dm.head_dim);
    let pd = dm.prm_heads.saturating_mul(dm.head_dim);
    let (h, l, c) = (m.history, m.levels, m.max_codebook());
    let lc = l.saturating_mul(c);
    let mut out = Vec::new();
    let mut add = |graph, name: String, shape: &[usize], per_row| {
        out.push(WeightSpec {
            graph,
            name,
            shape: shape.to_vec(),
            per_row,
        })
    };
    use GraphRole::*;
    add(Encoder, "gen.enc_code_emb".into(), &[lc, d], true);
    add(Encoder, "gen.enc_pos".into(), &[h, d], false);
    for i in 0..dm.encoder_layers {
        let p = |n: &str| format!("gen.enc.{i}.{n}");
        add(Encoder, p("n1.w"), &[d], false);
        for w in ["att.wq", "att.wk", "att.wv"] {
            add(Encoder, p(w), &[d, hd], false);
        }
        add(Encoder, p("att.wo"), &[hd, d], false);
        add(Encoder, p("n2.w"), &[d], false);
        add(Encoder, p("ffn.w1"), &[d, ff], false);
        add(Encoder, p("ffn.w2"), &[ff, d], false);
    }
    add(Encoder, "gen.enc_norm.w".into(), &[d], false);
    add(Decoder, "gen.dec_code_emb".into(), &[lc, d], true);
    add(Decoder, "gen.dec_bos".into(), &[1, d], false);
    add(Decoder, "gen.dec_pos".into(), &[l, d], false);
    add(Decoder, "gen.head".into(), &[l, d, c], false);
    for i in 0..dm.decoder_layers {
        let p = |n: &str| format!("gen.dec.{i}.{n}");
        add(Decoder, p("n1.w"), &[d], false);
        for w in ["self_att.wq", "self_att.wk", "self_att.wv"] {
            add(Decoder, p(w), &[d, hd], false);
        }
        add(Decoder, p("self_att.wo"), &[hd, d], false);
        add(Decoder, p("n2.w"), &[d], false);
        for w in ["cross_att.wq", "cross_att.wk", "cross_att.wv"] {
            add(Decoder, p(w), &[d, hd], false);
        }
        add(Decoder, p("cross_att.wo"), &[hd, d], false);
        add(Decoder, p("n3.w"), &[d], false);
        add(Decoder, p("ffn.w1"), &[d, ff], false);
        add(Decoder, p("ffn.w2"), &[ff, d], false);
    }
    add(Decoder, "gen.dec_norm.w".into(), &[d], false);
    add(Prm, "prm.node_emb".into(), &[m.num_nodes, d], true);
    add(Prm, "prm.n1.w".into(), &[d], false);
    for w in ["prm.att.wq", "prm.att.wk", "prm.att.wv"] {
        add(Prm, w.into(), &[d, pd], false);
    }
    add(Prm, "prm.att.wo".into(), &[pd, d], false);
    add(Prm, "prm.n2.w".into(), &[d], false);
    add(Prm, "prm.ffn.w1".into(), &[d, pff], false);
    add(Prm, "prm.ffn.w2".into(), &[pff, d], false);
    add(Prm, "prm.n3.w".into(), &[d], false);
    add(Prm, "prm.w_out1".into(), &[d, d], false);
    add(Prm, "prm.b_out1".into(), &[d], false);
    add(Prm, "prm.w_out2".into(), &[d, 1], false);
    add(Prm, "prm.b_out2".into(), &[1], false);
    out
}

fn dims_eq(got: &[i64], want: &[usize]) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(&g, &w)| g >= 0 && g as u64 == w as u64)
}

/// Hold `index` (the graph of `role`) to the architecture's weight list (module docs).
pub fn check(index: &OnnxIndex, role: GraphRole, m: &Manifest) -> Result<()> {
    let g = role.name();
    let stored = match m.numeric {
        Numeric::F32 => ElemType::F32,
        Numeric::F16 => ElemType::F16,
        Numeric::Int8 => ElemType::I8,
    };
    let specs = weights(m);
    let mut expected = std::collections::HashMap::new();
    for s in &specs {
        expected.insert(s.name.as_str(), s);
    }
    let mut found = std::collections::HashSet::new();
    for w in &index.initializers {
        let (base, is_scale) = match w.name.strip_suffix(".scale") {
            Some(b) if m.numeric == Numeric::Int8 => (b, true),
            _ => (w.name.as_str(), false),
        };
        let Some(spec) = expected.get(base) else {
            return Err(err!(
                Graph,
                "{g} graph has an initializer {:?}, which is not a weight of the architecture the manifest describes",
                w.name
            ));
        };
        if spec.graph != role {
            return Err(err!(
                Graph,
                "{g} graph has an initializer {:?}, which belongs to the {} graph",
                w.name,
                spec.graph.name()
            ));
        }
        if !found.insert(w.name.as_str()) {
            return Err(err!(
                Graph,
                "{g} graph has two initializers named {:?}",
                w.name
            ));
        }
        let rank1 = spec.shape.len() == 1;
        let (want_shape, want_type) = if is_scale {
            if rank1 {
                return Err(err!(
                    Graph,
                    "{g} graph has a scale {:?} for a weight stored as f32",
                    w.name
                ));
            }
            let mut s = spec.shape.clone();
            if spec.per_row {
                *s.last_mut().expect("rank >= 2") = 1;
            } else {
                let k = s.len() - 2;
                s[k] = 1;
            }
            (s, ElemType::F32)
        } else if rank1 {
            (spec.shape.clone(), ElemType::F32)
        } else {
            (spec.shape.clone(), stored)
        };
        if !dims_eq(&w.dims, &want_shape) {
            return Err(err!(
                Graph,
                "{g} graph weight {:?} has shape {:?}, expected {want_shape:?} for the manifest's dimensions",
                w.name,
                &w.dims[..]
            ));
        }
        if w.elem != want_type {
            return Err(err!(
                Graph,
                "{g} graph weight {:?} is stored as {:?}, expected {want_type:?} (manifest numeric {})",
                w.name,
                w.elem,
                m.numeric.as_str()
            ));
        }
    }
    for s in specs.iter().filter(|s| s.graph == role) {
        let scale_missing = m.numeric == Numeric::Int8
            && s.shape.len() > 1
            && !found.contains(format!("{}.scale", s.name).as_str());
        if !found.contains(s.name.as_str()) || scale_missing {
            let name = if scale_missing {
                format!("{}.scale", s.name)
            } else {
                s.name.clone()
            };
            return Err(err!(
                Graph,
                "{g} graph has no weight {name:?}, which the manifest's architecture needs"
            ));
        }
    }
    Ok(())
}
