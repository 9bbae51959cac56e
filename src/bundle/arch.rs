//! The model's architecture, described once ([`Architecture`]): its layers per graph and
//! the weights each reads, derived from the manifest's dimensions, each scoped to the graph
//! that holds it (models/README.md, "Weights"). `check` holds every
//! graph to this list at [`Bundle::open`](super::Bundle::open): every listed weight is
//! there, in its own graph, with its shape and stored type, and nothing else is. The
//! engines that read weights by name (fused, GPU) can then trust the names and shapes, a
//! weight cannot be taken from the wrong graph, an extra layer the manifest does not
//! declare cannot exist, and every engine accepts the same bundles.
//!
//! How the graphs split heads (`heads` x `head_dim`) is not visible in the weights' shapes
//! (only their product is): `src/bundle/nodes.rs` reads it from the graphs' attention nodes.

use super::onnx::{ElemType, OnnxIndex};
use super::{Manifest, Numeric, PrmKind, PrmQuery};
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
pub struct Weight {
    pub graph: GraphRole,
    pub name: String,
    pub shape: Vec<usize>,
    pub per_row: bool,
}

impl Weight {
    /// Its number of values.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it holds no values (never, for a validated manifest).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The error of an engine that looked this weight up and found it missing (`None`) or
    /// with the shape `found`. `Bundle::open` has checked both, so it names an engine bug.
    #[cfg_attr(not(any(feature = "cpu", feature = "gpu")), allow(dead_code))]
    pub(crate) fn not_as_checked(&self, found: Option<&[usize]>) -> crate::Error {
        match found {
            Some(d) => err!(
                Graph,
                "weight {:?} has shape {d:?}, the manifest implies {:?}",
                self.name,
                self.shape
            ),
            None => err!(
                Graph,
                "weight {:?} (shape {:?}) is missing from the bundle's graphs",
                self.name,
                self.shape
            ),
        }
    }
}

/// Multi-head attention: `softmax(norm(x) wq (kv wk)^T / sqrt(head_dim) + bias) (kv wv) wo`.
#[derive(Clone, Debug)]
pub struct Attention {
    pub wq: Weight,
    pub wk: Weight,
    pub wv: Weight,
    pub wo: Weight,
    pub heads: usize,
}

/// `relu(x w1) w2`.
#[derive(Clone, Debug)]
pub struct Ffn {
    pub w1: Weight,
    pub w2: Weight,
}

/// A pre-norm encoder layer: `x += att(n1(x)); x += ffn(n2(x))`.
#[derive(Clone, Debug)]
pub struct EncoderLayer {
    pub n1: Weight,
    pub att: Attention,
    pub n2: Weight,
    pub ffn: Ffn,
}

/// A pre-norm decoder layer: causal self-attention over the prefix tokens, cross-attention
/// over the memory, FFN.
#[derive(Clone, Debug)]
pub struct DecoderLayer {
    pub n1: Weight,
    pub self_att: Attention,
    pub n2: Weight,
    pub cross_att: Attention,
    pub n3: Weight,
    pub ffn: Ffn,
}

/// The encoder graph: token = sum of the item's level-code embeddings (and, with an item
/// column, its item embedding) + position; layers; final norm (the memory).
#[derive(Clone, Debug)]
pub struct Encoder {
    /// `[L * C, d]`, row `level * C + code`; with an item column
    /// ([`Dims::encoder_item`](super::Dims::encoder_item)) `[L * C + items, d]`, row
    /// `L * C + item` the item's own embedding.
    pub code_emb: Weight,
    /// `[H, d]`.
    pub pos: Weight,
    pub layers: Vec<EncoderLayer>,
    pub norm: Weight,
    /// Item t attends to items `<= t` only (manifest `model.encoder_attention`).
    pub causal: bool,
}

/// The decoder graph: tokens BOS, s1..s_{L-1} (+ position), layers, final norm, one
/// output head per level, log-softmax.
#[derive(Clone, Debug)]
pub struct Decoder {
    /// `[L * C, d]`.
    pub code_emb: Weight,
    /// `[1, d]`.
    pub bos: Weight,
    /// `[L, d]`.
    pub pos: Weight,
    pub layers: Vec<DecoderLayer>,
    pub norm: Weight,
    /// `[L, d, C]`.
    pub head: Weight,
}

/// The PRM graph: query = the node's embedding (`query_kind`); one block of cross-attention
/// over the memory and an FFN; norm; `relu(x w_out1 + b_out1) w_out2 + b_out2`, one logit
/// per node.
#[derive(Clone, Debug)]
pub struct Prm {
    /// How a node's query is built from `query`.
    pub query_kind: PrmQuery,
    /// [`PrmQuery::Node`]: `prm.node_emb [num_nodes, d]`, a node's row is its query.
    /// [`PrmQuery::Path`]: `prm.path_emb [L * C + 1, d]`, a node's query is the sum of the
    /// rows of its path (`l * C + code` per level above it, `L * C` for each level below).
    pub query: Weight,
    pub n1: Weight,
    pub att: Attention,
    pub n2: Weight,
    pub ffn: Ffn,
    pub n3: Weight,
    pub w_out1: Weight,
    pub b_out1: Weight,
    pub w_out2: Weight,
    pub b_out2: Weight,
}

/// The dense PRM (`model.prm_kind: "dense"`): `u = memory[H - 1] * mask[H - 1] @ w + b`,
/// `score = <u, node[node]> + node_bias[node]`.
#[derive(Clone, Debug)]
pub struct DensePrm {
    /// `[d, d]`.
    pub w: Weight,
    /// `[d]`.
    pub b: Weight,
    /// `[num_nodes, d]`, one row per trie node.
    pub node: Weight,
    /// `[num_nodes]`.
    pub node_bias: Weight,
}

/// The PRM graph, of the kind the manifest names (`model.prm_kind`).
#[derive(Clone, Debug)]
pub enum PrmGraph {
    Attention(Box<Prm>),
    Dense(Box<DensePrm>),
}

/// The model, described once: its dimensions, the layers of each graph in the order they
/// run, and every weight each layer reads. Built from the manifest; [`Bundle::open`]
/// holds every graph to it (`check`). The fused CPU engine and the GPU plan iterate over
/// it: neither spells a weight name or a layer sequence of its own.
///
/// [`Bundle::open`]: super::Bundle::open
#[derive(Clone, Debug)]
pub struct Architecture {
    pub d_model: usize,
    pub head_dim: usize,
    /// H, the history items the encoder reads.
    pub history: usize,
    /// L, the SID levels (decoder tokens).
    pub levels: usize,
    /// Codes per level.
    pub codebook: Vec<usize>,
    /// C, the widest level: the decoder's output width.
    pub max_codebook: usize,
    pub num_nodes: usize,
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub prm: PrmGraph,
}

impl Architecture {
    /// The architecture `m` describes (dimensions already validated by the manifest parser;
    /// products saturate, so a size past `usize` can only mismatch the graphs).
    pub fn new(m: &Manifest) -> Architecture {
        let dm = &m.dims;
        let (d, ff, pff) = (dm.d_model, dm.ff, dm.prm_ff);
        let hd = dm.heads.saturating_mul(dm.head_dim);
        let pd = dm.prm_heads.saturating_mul(dm.head_dim);
        let (h, l, c) = (m.history, m.levels, m.max_codebook());
        let (enc, dec, prm) = (GraphRole::Encoder, GraphRole::Decoder, GraphRole::Prm);
        let w = |graph, name: String, shape: &[usize]| Weight {
            graph,
            name,
            shape: shape.to_vec(),
            per_row: false,
        };
        let table = |graph, name: &str, rows: usize| Weight {
            per_row: true,
            ..w(graph, name.into(), &[rows, d])
        };
        let att = |graph, p: &str, heads: usize, width: usize| Attention {
            wq: w(graph, format!("{p}.wq"), &[d, width]),
            wk: w(graph, format!("{p}.wk"), &[d, width]),
            wv: w(graph, format!("{p}.wv"), &[d, width]),
            wo: w(graph, format!("{p}.wo"), &[width, d]),
            heads,
        };
        let ffn = |graph, p: &str, width: usize| Ffn {
            w1: w(graph, format!("{p}.w1"), &[d, width]),
            w2: w(graph, format!("{p}.w2"), &[width, d]),
        };
        let norm = |graph, name: String| w(graph, name, &[d]);
        let encoder = Encoder {
            code_emb: table(
                enc,
                "gen.enc_code_emb",
                l.saturating_mul(c)
                    .saturating_add(if dm.encoder_item { m.num_items } else { 0 }),
            ),
            pos: w(enc, "gen.enc_pos".into(), &[h, d]),
            layers: (0..dm.encoder_layers)
                .map(|i| EncoderLayer {
                    n1: norm(enc, format!("gen.enc.{i}.n1.w")),
                    att: att(enc, &format!("gen.enc.{i}.att"), dm.heads, hd),
                    n2: norm(enc, format!("gen.enc.{i}.n2.w")),
                    ffn: ffn(enc, &format!("gen.enc.{i}.ffn"), ff),
                })
                .collect(),
            norm: norm(enc, "gen.enc_norm.w".into()),
            causal: dm.encoder_causal,
        };
        let decoder = Decoder {
            code_emb: table(dec, "gen.dec_code_emb", l.saturating_mul(c)),
            bos: w(dec, "gen.dec_bos".into(), &[1, d]),
            pos: w(dec, "gen.dec_pos".into(), &[l, d]),
            layers: (0..dm.decoder_layers)
                .map(|i| DecoderLayer {
                    n1: norm(dec, format!("gen.dec.{i}.n1.w")),
                    self_att: att(dec, &format!("gen.dec.{i}.self_att"), dm.heads, hd),
                    n2: norm(dec, format!("gen.dec.{i}.n2.w")),
                    cross_att: att(dec, &format!("gen.dec.{i}.cross_att"), dm.heads, hd),
                    n3: norm(dec, format!("gen.dec.{i}.n3.w")),
                    ffn: ffn(dec, &format!("gen.dec.{i}.ffn"), ff),
                })
                .collect(),
            norm: norm(dec, "gen.dec_norm.w".into()),
            head: w(dec, "gen.head".into(), &[l, d, c]),
        };
        let attention = || Prm {
            query_kind: dm.prm_query,
            query: match dm.prm_query {
                PrmQuery::Node => table(prm, "prm.node_emb", m.num_nodes),
                PrmQuery::Path => table(prm, "prm.path_emb", l.saturating_mul(c).saturating_add(1)),
            },
            n1: norm(prm, "prm.n1.w".into()),
            att: att(prm, "prm.att", dm.prm_heads, pd),
            n2: norm(prm, "prm.n2.w".into()),
            ffn: ffn(prm, "prm.ffn", pff),
            n3: norm(prm, "prm.n3.w".into()),
            w_out1: w(prm, "prm.w_out1".into(), &[d, d]),
            b_out1: w(prm, "prm.b_out1".into(), &[d]),
            w_out2: w(prm, "prm.w_out2".into(), &[d, 1]),
            b_out2: w(prm, "prm.b_out2".into(), &[1]),
        };
        let prm_graph = match dm.prm_kind {
            PrmKind::Attention => PrmGraph::Attention(Box::new(attention())),
            PrmKind::Dense => PrmGraph::Dense(Box::new(DensePrm {
                w: w(prm, "prm.w".into(), &[d, d]),
                b: w(prm, "prm.b".into(), &[d]),
                node: table(prm, "prm.node", m.num_nodes),
                node_bias: w(prm, "prm.node_bias".into(), &[m.num_nodes]),
            })),
        };
        Architecture {
            d_model: d,
            head_dim: dm.head_dim,
            history: h,
            levels: l,
            codebook: m.codebook.clone(),
            max_codebook: c,
            num_nodes: m.num_nodes,
            encoder,
            decoder,
            prm: prm_graph,
        }
    }

    /// Every weight, graph by graph, in the order the layers read them.
    pub fn weights(&self) -> Vec<&Weight> {
        fn att(a: &Attention) -> [&Weight; 4] {
            [&a.wq, &a.wk, &a.wv, &a.wo]
        }
        let mut out = Vec::new();
        let e = &self.encoder;
        out.extend([&e.code_emb, &e.pos]);
        for l in &e.layers {
            out.push(&l.n1);
            out.extend(att(&l.att));
            out.extend([&l.n2, &l.ffn.w1, &l.ffn.w2]);
        }
        out.push(&e.norm);
        let dec = &self.decoder;
        out.extend([&dec.code_emb, &dec.bos, &dec.pos, &dec.head]);
        for l in &dec.layers {
            out.push(&l.n1);
            out.extend(att(&l.self_att));
            out.push(&l.n2);
            out.extend(att(&l.cross_att));
            out.extend([&l.n3, &l.ffn.w1, &l.ffn.w2]);
        }
        out.push(&dec.norm);
        match &self.prm {
            PrmGraph::Attention(p) => {
                out.extend([&p.query, &p.n1]);
                out.extend(att(&p.att));
                out.extend([&p.n2, &p.ffn.w1, &p.ffn.w2, &p.n3]);
                out.extend([&p.w_out1, &p.b_out1, &p.w_out2, &p.b_out2]);
            }
            PrmGraph::Dense(p) => out.extend([&p.w, &p.b, &p.node, &p.node_bias]),
        }
        out
    }
}

fn dims_eq(got: &[i64], want: &[usize]) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(&g, &w)| g >= 0 && g as u64 == w as u64)
}

/// Hold `index` (the graph of `role`) to the architecture's weight list (module docs).
pub(crate) fn check(
    index: &OnnxIndex,
    role: GraphRole,
    arch: &Architecture,
    m: &Manifest,
) -> Result<()> {
    let g = role.name();
    let stored = match m.numeric {
        Numeric::F32 => ElemType::F32,
        Numeric::F16 => ElemType::F16,
        Numeric::Int8 => ElemType::I8,
    };
    let specs = arch.weights();
    let mut expected = std::collections::HashMap::new();
    for &s in &specs {
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
