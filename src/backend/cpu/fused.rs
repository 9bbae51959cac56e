//! The fused CPU engine: the architecture of models/train/model.py written out with our
//! own kernels (`kernels.rs`), the way the GPU backend runs it, instead of running the
//! ONNX graphs through tract. It computes only what the search needs:
//! - the encoder once per request, and from its memory the cross-attention keys/values of
//!   every decoder layer and of the PRM, once per request (the graphs recompute them on
//!   every decoder and PRM call);
//! - at level `l` the decoder over tokens `0..=l` of the live beams only (the graphs run
//!   all L tokens of all K' padded rows), the head and log-softmax on the last token only;
//! - the PRM over the live candidates only (no padding rows).
//!
//! Every buffer is allocated when the session is created: a request allocates nothing.
//!
//! Weights are read from the graphs' initializers as the bundle's [`Architecture`] lists
//! them (names, shapes, graphs; documented in models/README.md) and widened to f32 once at load (f16 converted, int8
//! times its per-column or per-row scale), so all three numeric variants run at the same
//! speed, like tract.
//!
//! [`Architecture`]: crate::bundle::Architecture

use std::collections::HashMap;
use std::sync::Arc;

use super::kernels::{attend, attend_rows, log_softmax, matmul, rmsnorm, Epilogue, Isa, NEG};
use crate::bundle::arch::Weight;
use crate::bundle::onnx::ElemType;
use crate::bundle::{Bundle, Manifest};
use crate::error::{err, Result};
use crate::search::{Scorer, SearchConfig};

/// Every initializer of the three graphs as f32, by name, with its shape.
struct Table(HashMap<String, (Vec<f32>, Vec<usize>)>);

impl Table {
    fn load(bundle: &Bundle) -> Result<Table> {
        let mut raw: HashMap<&str, (ElemType, &[u8], Vec<usize>)> = HashMap::new();
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
                raw.insert(&init.name, (init.elem, bytes, dims));
            }
        }
        let mut table = HashMap::new();
        for (&name, (elem, bytes, dims)) in &raw {
            let values: Vec<f32> = match elem {
                ElemType::F32 => bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                ElemType::F16 => bytes
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                ElemType::I8 => {
                    let sname = format!("{name}.scale");
                    let Some((ElemType::F32, sbytes, _)) = raw.get(sname.as_str()) else {
                        return Err(err!(Graph, "int8 weight {name:?} has no f32 {sname:?}"));
                    };
                    let scale: Vec<f32> = sbytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    dequantize(name, bytes, dims, &scale)?
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
        Ok(Table(table))
    }

    /// Take the weight `w` (row-major, the architecture's shape): each is used once, so
    /// the model owns the table's copy instead of a second one.
    fn w(&mut self, w: &Weight) -> Result<Vec<f32>> {
        match self.0.remove(&w.name) {
            // rank-1 weights (gains, biases) may be stored with any rank of that size
            Some((v, d)) if d == w.shape || (w.shape.len() == 1 && v.len() == w.len()) => Ok(v),
            Some((_, d)) => Err(err!(
                Graph,
                "weight {:?} has shape {d:?}, the manifest implies {:?}",
                w.name,
                w.shape
            )),
            None => Err(err!(
                Graph,
                "weight {:?} (shape {:?}) is missing from the bundle's graphs",
                w.name,
                w.shape
            )),
        }
    }

    /// The matrices `ws` (each `[k, n_i]`, the same k) side by side as one `[k, sum n_i]`
    /// matrix, so that one matmul computes all the projections that read the same input.
    fn concat(&mut self, ws: &[&Weight]) -> Result<Vec<f32>> {
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

/// int8 values times their scale: one per column (of each matrix of a stacked weight) or,
/// for a 2-d table with one scale per row (embeddings), one per row.
fn dequantize(name: &str, q: &[u8], dims: &[usize], scale: &[f32]) -> Result<Vec<f32>> {
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

struct EncLayer {
    n1: Vec<f32>,   // [d]
    wqkv: Vec<f32>, // [d, 3 hd]: q | k | v
    wo: Vec<f32>,   // [hd, d]
    n2: Vec<f32>,   // [d]
    w1: Vec<f32>,   // [d, ff]
    w2: Vec<f32>,   // [ff, d]
}

struct DecLayer {
    n1: Vec<f32>,        // [d]
    wqkv: Vec<f32>,      // [d, 3 hd] self-attention q | k | v
    wo_self: Vec<f32>,   // [hd, d]
    n2: Vec<f32>,        // [d]
    wq_cross: Vec<f32>,  // [d, hd]
    wkv_cross: Vec<f32>, // [d, 2 hd] applied to the memory once per request: k | v
    wo_cross: Vec<f32>,  // [hd, d]
    n3: Vec<f32>,        // [d]
    w1: Vec<f32>,        // [d, ff]
    w2: Vec<f32>,        // [ff, d]
}

struct Prm {
    node_emb: Vec<f32>, // [num_nodes, d]
    n1: Vec<f32>,       // [d]
    wq: Vec<f32>,       // [d, pd]
    wkv: Vec<f32>,      // [d, 2 pd] applied to the memory once per request: k | v
    wo: Vec<f32>,       // [pd, d]
    n2: Vec<f32>,       // [d]
    w1: Vec<f32>,       // [d, pff]
    w2: Vec<f32>,       // [pff, d]
    n3: Vec<f32>,       // [d]
    w_out1: Vec<f32>,   // [d, d]
    b_out1: Vec<f32>,   // [d]
    w_out2: Vec<f32>,   // [d, 1]
    b_out2: Vec<f32>,   // [1]
}

/// The model's weights in f32, shared by all sessions.
pub struct FusedModel {
    m: Manifest,
    isa: Isa,
    enc_emb: Vec<f32>, // [L * C, d]
    enc_pos: Vec<f32>, // [H, d]
    enc: Vec<EncLayer>,
    enc_norm: Vec<f32>, // [d]
    dec_emb: Vec<f32>,  // [L * C, d]
    dec_bos: Vec<f32>,  // [d]
    dec_pos: Vec<f32>,  // [L, d]
    dec: Vec<DecLayer>,
    dec_norm: Vec<f32>, // [d]
    head: Vec<f32>,     // [L, d, C]
    prm: Prm,
}

impl std::fmt::Debug for FusedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FusedModel")
            .field("bundle", &self.m.name)
            .field("isa", &self.isa)
            .finish()
    }
}

impl FusedModel {
    pub fn load(bundle: &Bundle, isa: Isa) -> Result<FusedModel> {
        let m = bundle.manifest().clone();
        let a = bundle.architecture();
        let mut t = Table::load(bundle)?;
        let enc = a
            .encoder
            .layers
            .iter()
            .map(|l| {
                Ok(EncLayer {
                    n1: t.w(&l.n1)?,
                    wqkv: t.concat(&[&l.att.wq, &l.att.wk, &l.att.wv])?,
                    wo: t.w(&l.att.wo)?,
                    n2: t.w(&l.n2)?,
                    w1: t.w(&l.ffn.w1)?,
                    w2: t.w(&l.ffn.w2)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let dec = a
            .decoder
            .layers
            .iter()
            .map(|l| {
                let (sa, ca) = (&l.self_att, &l.cross_att);
                Ok(DecLayer {
                    n1: t.w(&l.n1)?,
                    wqkv: t.concat(&[&sa.wq, &sa.wk, &sa.wv])?,
                    wo_self: t.w(&sa.wo)?,
                    n2: t.w(&l.n2)?,
                    wq_cross: t.w(&ca.wq)?,
                    wkv_cross: t.concat(&[&ca.wk, &ca.wv])?,
                    wo_cross: t.w(&ca.wo)?,
                    n3: t.w(&l.n3)?,
                    w1: t.w(&l.ffn.w1)?,
                    w2: t.w(&l.ffn.w2)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let p = &a.prm;
        let prm = Prm {
            node_emb: t.w(&p.node_emb)?,
            n1: t.w(&p.n1)?,
            wq: t.w(&p.att.wq)?,
            wkv: t.concat(&[&p.att.wk, &p.att.wv])?,
            wo: t.w(&p.att.wo)?,
            n2: t.w(&p.n2)?,
            w1: t.w(&p.ffn.w1)?,
            w2: t.w(&p.ffn.w2)?,
            n3: t.w(&p.n3)?,
            w_out1: t.w(&p.w_out1)?,
            b_out1: t.w(&p.b_out1)?,
            w_out2: t.w(&p.w_out2)?,
            b_out2: t.w(&p.b_out2)?,
        };
        let (e, d) = (&a.encoder, &a.decoder);
        Ok(FusedModel {
            isa,
            enc_emb: t.w(&e.code_emb)?,
            enc_pos: t.w(&e.pos)?,
            enc,
            enc_norm: t.w(&e.norm)?,
            dec_emb: t.w(&d.code_emb)?,
            dec_bos: t.w(&d.bos)?,
            dec_pos: t.w(&d.pos)?,
            dec,
            dec_norm: t.w(&d.norm)?,
            head: t.w(&d.head)?,
            prm,
            m,
        })
    }

    /// The instruction set the matmuls use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Allocate every buffer a session with `cfg` needs.
    /// Sizes come from the bundle: every buffer is allocated fallibly ([`crate::limits`]).
    pub fn session(self: &Arc<Self>, cfg: &SearchConfig) -> Result<FusedSession> {
        let m = &self.m;
        let (d, hd) = (m.dims.d_model, m.dims.heads * m.dims.head_dim);
        let (ff, pd, pff) = (m.dims.ff, m.dims.prm_heads * m.dims.head_dim, m.dims.prm_ff);
        let (h, l, c) = (m.history, m.levels, m.max_codebook());
        let kb = cfg.beam_capacity();
        let mc = cfg.candidates;
        let z = |n: usize| crate::limits::zeros::<f32>(n, "a fused session buffer");
        let b = Buffers {
            encoded: false,
            bias: z(h)?,
            ex: z(h * d)?,
            xn: z(h.max(kb).max(mc) * d)?,
            eqkv: z(h * 3 * hd)?,
            att: z(h.max(kb).max(mc) * hd.max(pd))?,
            ff: z(h.max(kb).max(mc) * ff.max(pff))?,
            cross_kv: (0..m.dims.decoder_layers)
                .map(|_| z(h * 2 * hd))
                .collect::<Result<_>>()?,
            prm_kv: z(h * 2 * pd)?,
            dx: z(kb * d)?,
            dqkv: z(kb * 3 * hd)?,
            dq: z(kb * hd)?,
            self_kv: (0..m.dims.decoder_layers)
                .map(|_| z(2 * kb * l * 2 * hd))
                .collect::<Result<_>>()?,
            slot: 0,
            cached_level: None,
            cached_beams: 0,
            cached_prefix: crate::limits::zeros(kb * (l - 1).max(1), "the cached prefixes")?,
            parent: crate::limits::zeros(kb, "the beam parents")?,
            logits: z(kb * c)?,
            px: z(mc * d)?,
            pq: z(mc * pd)?,
            po: z(mc * d)?,
            scratch: z(h.max(l))?,
        };
        Ok(FusedSession {
            model: self.clone(),
            b,
        })
    }
}

/// A session: its model and its buffers.
pub struct FusedSession {
    model: Arc<FusedModel>,
    b: Buffers,
}

/// One session's buffers (shapes in the comments; K' = the config's beam capacity
/// max(K', N), K+ candidates, H history, L
/// levels, d model width, hd = heads x head_dim, pd = PRM heads x head_dim).
struct Buffers {
    encoded: bool,
    bias: Vec<f32>,              // [H] mask bias of the memory: 0 or NEG
    ex: Vec<f32>,                // [H, d] encoder residual stream
    xn: Vec<f32>,                // [max(H, K', K+), d] normed input of the next matmul
    eqkv: Vec<f32>,              // [H, 3 hd] encoder q | k | v
    att: Vec<f32>,               // [max rows, max(hd, pd)] attention output
    ff: Vec<f32>,                // [max rows, max(ff, pff)] FFN hidden
    cross_kv: Vec<Vec<f32>>,     // per decoder layer [H, 2 hd] the memory's k | v
    prm_kv: Vec<f32>,            // [H, 2 pd] the memory's k | v for the PRM
    dx: Vec<f32>,                // [K', d] decoder residual stream of the new tokens
    dqkv: Vec<f32>,              // [K', 3 hd] their self-attention q | k | v
    dq: Vec<f32>,                // [K', hd] their cross-attention queries
    self_kv: Vec<Vec<f32>>, // per decoder layer, 2 slots of [K', L, 2 hd]: each beam's k | v per position
    slot: usize,            // the slot the last decode wrote
    cached_level: Option<usize>, // level of the last decode of this request
    cached_beams: usize,    // its beam count
    cached_prefix: Vec<i64>, // [K', L - 1] its beams' prefixes
    parent: Vec<usize>,     // [K'] each new beam's row in the previous slot
    logits: Vec<f32>,       // [K', C] head output
    px: Vec<f32>,           // [K+, d] PRM residual stream
    pq: Vec<f32>,           // [K+, pd] PRM queries
    po: Vec<f32>,           // [K+, d] PRM output MLP hidden
    scratch: Vec<f32>,      // [max(H, L)] attention logits
}

impl std::fmt::Debug for FusedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FusedSession")
            .field("model", &self.model)
            .finish()
    }
}

impl Buffers {
    /// The encoder, then the memory's keys and values for every decoder layer and the PRM.
    fn run_encoder(&mut self, model: &FusedModel, codes: &[i64], mask: &[f32]) -> Result<()> {
        let m = &model.m;
        let isa = model.isa;
        let (d, heads, dh) = (m.dims.d_model, m.dims.heads, m.dims.head_dim);
        let (hd, ff, pd) = (heads * dh, m.dims.ff, m.dims.prm_heads * dh);
        let (h, l, c) = (m.history, m.levels, m.max_codebook());
        crate::backend::check_encode_input(codes, mask, h, l)?;
        for (b, &v) in self.bias.iter_mut().zip(mask) {
            *b = (1.0 - v) * NEG;
        }
        // token r = sum of its item's level-code embeddings + position r
        for r in 0..h {
            let x = &mut self.ex[r * d..(r + 1) * d];
            x.copy_from_slice(&model.enc_pos[r * d..(r + 1) * d]);
            for lv in 0..l {
                let code = codes[r * l + lv];
                if code < 0 || code as usize >= m.codebook[lv] {
                    return Err(err!(
                        Backend,
                        "history code {code} at level {lv} is outside 0..{}",
                        m.codebook[lv]
                    ));
                }
                let row = (code as usize + lv * c) * d;
                for (o, &e) in x.iter_mut().zip(&model.enc_emb[row..row + d]) {
                    *o += e;
                }
            }
        }
        for layer in &model.enc {
            rmsnorm((&self.ex, d), h, &layer.n1, &mut self.xn);
            let xn = (&self.xn[..], d);
            matmul(
                isa,
                xn,
                h,
                &layer.wqkv,
                (d, 3 * hd),
                (&mut self.eqkv, 3 * hd),
                Epilogue::default(),
            );
            let kv = &self.eqkv[hd..];
            let keys = (kv, &kv[hd..], 3 * hd);
            let bias = Some(&self.bias[..]);
            let q = (&self.eqkv[..], 3 * hd);
            if m.dims.encoder_causal {
                // row r reads keys 0..=r (the graph adds NEG after r: weight exactly 0)
                for r in 0..h {
                    attend(
                        &q.0[r * q.1..],
                        keys,
                        r + 1,
                        (heads, dh),
                        bias,
                        &mut self.scratch,
                        &mut self.att[r * hd..(r + 1) * hd],
                    );
                }
            } else {
                attend_rows(
                    q,
                    h,
                    keys,
                    h,
                    (heads, dh),
                    bias,
                    &mut self.scratch,
                    &mut self.att,
                );
            }
            matmul(
                isa,
                (&self.att, hd),
                h,
                &layer.wo,
                (hd, d),
                (&mut self.ex, d),
                Epilogue::ADD,
            );
            let scratch = (&mut self.xn[..], &mut self.ff[..]);
            ffn(
                isa,
                &mut self.ex,
                scratch,
                h,
                &layer.n2,
                (&layer.w1, &layer.w2),
                ff,
                d,
            );
        }
        // the memory is enc_norm(ex); only its projections are kept
        rmsnorm((&self.ex, d), h, &model.enc_norm, &mut self.xn);
        for (layer, kv) in model.dec.iter().zip(self.cross_kv.iter_mut()) {
            let xn = (&self.xn[..], d);
            matmul(
                isa,
                xn,
                h,
                &layer.wkv_cross,
                (d, 2 * hd),
                (kv, 2 * hd),
                Epilogue::default(),
            );
        }
        let xn = (&self.xn[..], d);
        matmul(
            isa,
            xn,
            h,
            &model.prm.wkv,
            (d, 2 * pd),
            (&mut self.prm_kv, 2 * pd),
            Epilogue::default(),
        );
        self.encoded = true;
        self.cached_level = None;
        Ok(())
    }
}

/// Scratch buffers of [`memory_attention`]: normed rows, queries, attention output, logits.
struct Scratch<'a> {
    xn: &'a mut [f32],
    q: &'a mut [f32],
    att: &'a mut [f32],
    logits: &'a mut [f32],
}

/// Cross-attention over the memory (the decoder's and the PRM's), for `rows` rows of the
/// residual stream `x`: `x += attend(norm(x) @ wq, memory) @ wo`. The memory is its
/// keys | values `[H, 2 w]` (w = heads x dh, computed once per request) and its mask bias
/// `[H]`.
fn memory_attention(
    isa: Isa,
    x: &mut [f32],
    rows: usize,
    (gain, wq, wo): (&[f32], &[f32], &[f32]),
    (kv, bias): (&[f32], &[f32]),
    (heads, dh): (usize, usize),
    s: Scratch<'_>,
) {
    let (d, w) = (gain.len(), heads * dh);
    rmsnorm((x, d), rows, gain, s.xn);
    matmul(
        isa,
        (s.xn, d),
        rows,
        wq,
        (d, w),
        (s.q, w),
        Epilogue::default(),
    );
    let keys = (kv, &kv[w..], 2 * w);
    attend_rows(
        (s.q, w),
        rows,
        keys,
        bias.len(),
        (heads, dh),
        Some(bias),
        s.logits,
        s.att,
    );
    matmul(isa, (s.att, w), rows, wo, (w, d), (x, d), Epilogue::ADD);
}

/// `x += relu(norm(x) @ w1) @ w2` over `rows` rows of width `d`, hidden width `ff`
/// (`xn` and `hidden` are scratch).
#[allow(clippy::too_many_arguments)]
fn ffn(
    isa: Isa,
    x: &mut [f32],
    (xn, hidden): (&mut [f32], &mut [f32]),
    rows: usize,
    gain: &[f32],
    (w1, w2): (&[f32], &[f32]),
    ff: usize,
    d: usize,
) {
    rmsnorm((x, d), rows, gain, xn);
    matmul(
        isa,
        (xn, d),
        rows,
        w1,
        (d, ff),
        (hidden, ff),
        Epilogue::RELU,
    );
    matmul(isa, (hidden, ff), rows, w2, (ff, d), (x, d), Epilogue::ADD);
}

impl Buffers {
    /// Log-probabilities of the level-`level` code for `k` beams. Token `p` of a beam
    /// depends only on its prefix up to `p`, so its self-attention keys/values are cached:
    /// a beam at level `l` copies its parent's (the previous level's beam with the same
    /// first `l - 1` codes) and only its new token runs through the layers. A beam without
    /// a parent in the cache (level 0, or a caller that skips levels) runs all its tokens.
    fn decode_level(
        &mut self,
        model: &FusedModel,
        level: usize,
        prefixes: &[i64],
        k: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let m = &model.m;
        let (d, l, c) = (m.dims.d_model, m.levels, m.max_codebook());
        if !self.encoded {
            return Err(err!(Backend, "decode called before encode"));
        }
        let w = (l - 1).max(1);
        let beams = self.dx.len() / d;
        if level >= l || k > beams || prefixes.len() < k * w || out.len() < k * c {
            return Err(err!(
                Capacity,
                "decode of {k} prefixes at level {level} does not fit the session ({beams} beams, {l} levels)"
            ));
        }
        for b in 0..k {
            for (p, &code) in prefixes[b * w..b * w + level].iter().enumerate() {
                if code < 0 || code as usize >= m.codebook[p] {
                    return Err(err!(
                        Backend,
                        "prefix code {code} at level {p} is outside 0..{}",
                        m.codebook[p]
                    ));
                }
            }
        }
        let (prev, cur) = (self.slot, 1 - self.slot);
        // find every beam's parent among the previous call's beams
        let mut cached = level > 0 && self.cached_level == Some(level - 1);
        if cached {
            for b in 0..k {
                let want = &prefixes[b * w..b * w + level - 1];
                let found = (0..self.cached_beams)
                    .find(|&pb| &self.cached_prefix[pb * w..pb * w + level - 1] == want);
                match found {
                    Some(pb) => self.parent[b] = pb,
                    None => {
                        cached = false;
                        break;
                    }
                }
            }
        }
        let first = if cached {
            let kv_row = 2 * m.dims.heads * m.dims.head_dim; // one position's k | v
            let span = level * kv_row;
            for cache in self.self_kv.iter_mut() {
                let half = cache.len() / 2;
                let (a, bb) = cache.split_at_mut(half);
                let (from, to) = if prev == 0 { (&*a, bb) } else { (&*bb, a) };
                for b in 0..k {
                    let (src, dst) = (self.parent[b] * l * kv_row, b * l * kv_row);
                    to[dst..dst + span].copy_from_slice(&from[src..src + span]);
                }
            }
            level
        } else {
            0
        };
        for p in first..=level {
            self.step(model, k, p, prefixes, cur);
        }
        self.slot = cur;
        self.cached_level = Some(level);
        self.cached_beams = k;
        self.cached_prefix[..k * w].copy_from_slice(&prefixes[..k * w]);
        // the head on the new tokens
        rmsnorm((&self.dx, d), k, &model.dec_norm, &mut self.xn);
        let head = &model.head[level * d * c..(level + 1) * d * c];
        let isa = model.isa;
        matmul(
            isa,
            (&self.xn, d),
            k,
            head,
            (d, c),
            (&mut self.logits, c),
            Epilogue::default(),
        );
        for b in 0..k {
            let row = &self.logits[b * c..(b + 1) * c];
            log_softmax(row, m.codebook[level], &mut out[b * c..(b + 1) * c]);
        }
        Ok(())
    }

    /// Token `p` of each of `k` beams through every decoder layer, its self-attention
    /// keys/values written to cache slot `slot` and read from there for positions < p.
    /// Leaves the tokens' residual stream in `dx` [k, d]. Codes are checked by the caller.
    fn step(&mut self, model: &FusedModel, k: usize, p: usize, prefixes: &[i64], slot: usize) {
        let m = &model.m;
        let isa = model.isa;
        let (d, heads, dh) = (m.dims.d_model, m.dims.heads, m.dims.head_dim);
        let (hd, ff) = (heads * dh, m.dims.ff);
        let (l, c) = (m.levels, m.max_codebook());
        let w = (l - 1).max(1);
        let kv_row = 2 * hd; // one position's k | v in the cache
        for b in 0..k {
            let x = &mut self.dx[b * d..(b + 1) * d];
            let tok = if p == 0 {
                &model.dec_bos[..]
            } else {
                let row = (prefixes[b * w + p - 1] as usize + (p - 1) * c) * d;
                &model.dec_emb[row..row + d]
            };
            for ((o, &e), &pe) in x
                .iter_mut()
                .zip(tok)
                .zip(&model.dec_pos[p * d..(p + 1) * d])
            {
                *o = e + pe;
            }
        }
        for ((layer, kv), cache) in model
            .dec
            .iter()
            .zip(&self.cross_kv)
            .zip(self.self_kv.iter_mut())
        {
            let half = cache.len() / 2;
            let cache = &mut cache[slot * half..(slot + 1) * half];
            // causal self-attention: the new token's q against the beam's cached k | v
            rmsnorm((&self.dx, d), k, &layer.n1, &mut self.xn);
            matmul(
                isa,
                (&self.xn, d),
                k,
                &layer.wqkv,
                (d, 3 * hd),
                (&mut self.dqkv, 3 * hd),
                Epilogue::default(),
            );
            for b in 0..k {
                let at = (b * l + p) * kv_row;
                cache[at..at + 2 * hd]
                    .copy_from_slice(&self.dqkv[b * 3 * hd + hd..(b + 1) * 3 * hd]);
                let beam = &cache[b * l * kv_row..];
                let keys = (beam, &beam[hd..], kv_row);
                let out = &mut self.att[b * hd..(b + 1) * hd];
                attend(
                    &self.dqkv[b * 3 * hd..],
                    keys,
                    p + 1,
                    (heads, dh),
                    None,
                    &mut self.scratch,
                    out,
                );
            }
            matmul(
                isa,
                (&self.att, hd),
                k,
                &layer.wo_self,
                (hd, d),
                (&mut self.dx, d),
                Epilogue::ADD,
            );
            // cross-attention over the memory
            let scratch = Scratch {
                xn: &mut self.xn,
                q: &mut self.dq,
                att: &mut self.att,
                logits: &mut self.scratch,
            };
            let weights = (&layer.n2[..], &layer.wq_cross[..], &layer.wo_cross[..]);
            let memory = (&kv[..], &self.bias[..]);
            memory_attention(isa, &mut self.dx, k, weights, memory, (heads, dh), scratch);
            let scratch = (&mut self.xn[..], &mut self.ff[..]);
            ffn(
                isa,
                &mut self.dx,
                scratch,
                k,
                &layer.n3,
                (&layer.w1, &layer.w2),
                ff,
                d,
            );
        }
    }

    fn score_nodes(&mut self, model: &FusedModel, nodes: &[i64], out: &mut [f32]) -> Result<()> {
        let m = &model.m;
        let isa = model.isa;
        let (d, dh) = (m.dims.d_model, m.dims.head_dim);
        let (ph, pff) = (m.dims.prm_heads, m.dims.prm_ff);
        let p = &model.prm;
        if !self.encoded {
            return Err(err!(Backend, "score called before encode"));
        }
        let rows = nodes.len();
        if rows > self.px.len() / d || out.len() < rows {
            return Err(err!(
                Capacity,
                "{rows} nodes to score, the session was built for {}",
                self.px.len() / d
            ));
        }
        for (r, &node) in nodes.iter().enumerate() {
            if node < 0 || node as usize >= m.num_nodes {
                return Err(err!(Backend, "node {node} is outside 0..{}", m.num_nodes));
            }
            let row = node as usize * d;
            self.px[r * d..(r + 1) * d].copy_from_slice(&p.node_emb[row..row + d]);
        }
        let scratch = Scratch {
            xn: &mut self.xn,
            q: &mut self.pq,
            att: &mut self.att,
            logits: &mut self.scratch,
        };
        let memory = (&self.prm_kv[..], &self.bias[..]);
        let weights = (&p.n1[..], &p.wq[..], &p.wo[..]);
        memory_attention(isa, &mut self.px, rows, weights, memory, (ph, dh), scratch);
        let scratch = (&mut self.xn[..], &mut self.ff[..]);
        ffn(
            isa,
            &mut self.px,
            scratch,
            rows,
            &p.n2,
            (&p.w1, &p.w2),
            pff,
            d,
        );
        rmsnorm((&self.px, d), rows, &p.n3, &mut self.xn);
        let ep = Epilogue {
            bias: Some(&p.b_out1),
            relu: true,
            accumulate: false,
        };
        matmul(
            isa,
            (&self.xn, d),
            rows,
            &p.w_out1,
            (d, d),
            (&mut self.po, d),
            ep,
        );
        let ep = Epilogue {
            bias: Some(&p.b_out2),
            ..Epilogue::default()
        };
        matmul(isa, (&self.po, d), rows, &p.w_out2, (d, 1), (out, 1), ep);
        Ok(())
    }
}

impl Scorer for FusedSession {
    fn encode(&mut self, codes: &[i64], mask: &[f32]) -> Result<()> {
        self.b.run_encoder(&self.model, codes, mask)
    }
    fn decode(&mut self, level: usize, prefixes: &[i64], k: usize, out: &mut [f32]) -> Result<()> {
        self.b.decode_level(&self.model, level, prefixes, k, out)
    }
    fn score(&mut self, nodes: &[i64], out: &mut [f32]) -> Result<()> {
        self.b.score_nodes(&self.model, nodes, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(dir: &str, cfg: &SearchConfig) -> FusedSession {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let bundle = Bundle::open(root.join(dir)).expect("bundle");
        Arc::new(FusedModel::load(&bundle, Isa::detect()).expect("load"))
            .session(cfg)
            .expect("session")
    }

    /// The cached path (parents' keys/values copied, one new token per beam) gives the
    /// same bits as running every token of every beam, which is what a decode without the
    /// previous level in the cache does.
    #[test]
    fn cached_decoding_equals_full_decoding() {
        let cfg = SearchConfig::default();
        let mut s = session("models/ml1m", &cfg);
        let (h, l, c) = (20, 3, 32);
        let codes: Vec<i64> = (0..h * l).map(|i| ((i * 7 + i / 3) % 24) as i64).collect();
        let mask: Vec<f32> = (0..h).map(|i| if i < 13 { 0.0 } else { 1.0 }).collect();
        // level 1: 5 beams (codes at level 0); level 2: 7 beams, each extending one of them
        let lvl1: Vec<i64> = [3, 9, 0, 31, 17].iter().flat_map(|&a| [a, 0]).collect();
        let lvl2: Vec<i64> = [(9, 4), (3, 0), (31, 31), (9, 30), (17, 2), (0, 5), (3, 7)]
            .iter()
            .flat_map(|&(a, b)| [a, b])
            .collect();
        let mut cached = vec![0.0; 7 * c];
        let mut scratch = vec![0.0; 7 * c];
        s.encode(&codes, &mask).unwrap();
        s.decode(0, &[0, 0], 1, &mut scratch).unwrap();
        s.decode(1, &lvl1, 5, &mut scratch).unwrap();
        s.decode(2, &lvl2, 7, &mut cached).unwrap();
        assert_eq!(s.b.cached_level, Some(2));
        // the same level-2 call straight after encode: no parent in the cache
        let mut full = vec![0.0; 7 * c];
        s.encode(&codes, &mask).unwrap();
        s.decode(2, &lvl2, 7, &mut full).unwrap();
        assert_eq!(cached, full, "cached and full decoding differ");
        // a beam whose parent was not among the previous call's beams: the full path
        s.encode(&codes, &mask).unwrap();
        s.decode(0, &[0, 0], 1, &mut scratch).unwrap();
        s.decode(1, &lvl1[..4], 2, &mut scratch).unwrap(); // beams 3 and 9 only
        let mut mixed = vec![0.0; 7 * c];
        s.decode(2, &lvl2, 7, &mut mixed).unwrap(); // (31, 31), (17, 2), (0, 5) have none
        assert_eq!(
            mixed, full,
            "a missing parent must fall back to the full path"
        );
        assert!(full.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn bad_codes_and_nodes_are_errors_not_panics() {
        let cfg = SearchConfig::default();
        let mut s = session("models/tiny", &cfg);
        let mut out = vec![0.0; 16 * 32];
        assert!(
            s.decode(0, &[0, 0], 1, &mut out).is_err(),
            "decode before encode"
        );
        assert!(s.score(&[1], &mut out).is_err(), "score before encode");
        let mut codes = vec![0i64; 60];
        codes[4] = 32; // level 1's codebook is 32 wide
        assert!(s.encode(&codes, &[1.0; 20]).is_err());
        codes[4] = 0;
        s.encode(&codes, &[1.0; 20]).unwrap();
        assert!(s.decode(1, &[-1, 0], 1, &mut out).is_err());
        assert!(s.decode(3, &[0, 0], 1, &mut out).is_err(), "level beyond L");
        assert!(
            s.decode(0, &[0; 34], 17, &mut out).is_err(),
            "more beams than K'"
        );
        assert!(s.score(&[4763], &mut out).is_err(), "node beyond the trie");
        assert!(s.score(&[0; 65], &mut out).is_err(), "more nodes than K+");
    }
}
