//! The fused CPU engine: the architecture of models/train/promise_train/model.py written out with our
//! own kernels (`kernels.rs`), the way the GPU backend runs it, instead of running the
//! ONNX graphs through tract. It computes only what the search needs:
//! - the encoder once per request, and from its memory the cross-attention keys/values of
//!   every decoder layer and of the PRM, once per request (the graphs recompute them on
//!   every decoder and PRM call);
//! - at level `l` the decoder over tokens `0..=l` of the live beams only (the graphs run
//!   all L tokens of all K' padded rows), the head and log-softmax on the last token only;
//! - the PRM over the live candidates only (no padding rows);
//! - the history's real rows only: a history shorter than H is right-aligned after padding
//!   rows that every attention masks (weight exactly 0), so the encoder runs rows
//!   `mem_from..H` and every attention over the memory reads those keys only. A user with
//!   40 items costs a fifth of the encoder a 200-item window costs.
//!
//! Every buffer is allocated when the session is created: a request allocates nothing.
//!
//! Weights are read from the graphs' initializers as the bundle's [`Architecture`] lists
//! them (names, shapes, graphs; documented in models/README.md) and widened to f32 once at
//! load (f16 converted, int8 times its per-column or per-row scale), so all three numeric
//! variants run at the same speed, like tract.
//!
//! Rooms: `weights.rs` (loading and packing), `stages.rs` (encoder, decoder level, PRM);
//! this file holds the model, the session and its buffers.
//!
//! [`Architecture`]: crate::bundle::Architecture

mod stages;
mod weights;

use std::sync::Arc;

use super::kernels::{self, Isa};
use crate::backend::checks;
use crate::bundle::{Bundle, Manifest, PrmGraph, PrmQuery};
use crate::error::Result;
use crate::search::{Scorer, SearchConfig};

use weights::{DecLayer, DensePrm, EncLayer, Prm, PrmWeights, RowTable, Table};

/// The model's weights in f32, shared by all sessions.
pub struct FusedModel {
    m: Manifest,
    isa: Isa,
    enc_emb: RowTable, // [L * C (+ items), d], as stored: its item rows grow with the catalog
    enc_pos: Vec<f32>, // [H, d]
    enc: Vec<EncLayer>,
    enc_norm: Vec<f32>, // [d]
    dec_emb: Vec<f32>,  // [L * C, d]
    dec_bos: Vec<f32>,  // [d]
    dec_pos: Vec<f32>,  // [L, d]
    dec: Vec<DecLayer>,
    dec_norm: Vec<f32>, // [d]
    head: Vec<f32>,     // [L, d, C]
    prm: PrmWeights,
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
        FusedModel::load_with(bundle, isa, false)
    }

    /// [`FusedModel::load`], the catalog-sized tables read in place from the bundle's
    /// bytes when `tables_in_place` (`LoadOptions::tables_in_place`), else copied.
    pub fn load_with(bundle: &Bundle, isa: Isa, tables_in_place: bool) -> Result<FusedModel> {
        let m = bundle.manifest().clone();
        let a = bundle.architecture();
        // the PRM's node table (and a dense PRM's biases) and the encoder's table (with an
        // item column, one row per item) stay as stored (copied, or read in place): they grow
        // with the catalog, and a request reads only the rows of its history and K+ candidates
        let mut keep = vec![&a.encoder.code_emb];
        match &a.prm {
            PrmGraph::Attention(p) => keep.push(&p.query),
            PrmGraph::Dense(p) => keep.extend([&p.node, &p.node_bias]),
        }
        let mut t = Table::load(bundle, &keep, tables_in_place)?;
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
        let prm = match &a.prm {
            PrmGraph::Dense(p) => PrmWeights::Dense(DensePrm {
                w: t.w(&p.w)?,
                b: t.w(&p.b)?,
                node: t.rows(&p.node)?,
                node_bias: t.rows(&p.node_bias)?,
            }),
            PrmGraph::Attention(p) => PrmWeights::Attention(Box::new(Prm {
                query: t.rows(&p.query)?,
                path: match p.query_kind {
                    PrmQuery::Node => None,
                    _ => Some((bundle.catalog().clone(), a.max_codebook)),
                },
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
            })),
        };
        let (e, d) = (&a.encoder, &a.decoder);
        Ok(FusedModel {
            isa,
            enc_emb: t.rows(&e.code_emb)?,
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
    /// Sizes come from the bundle: every buffer is allocated fallibly ([`crate::alloc`]).
    pub fn session(self: &Arc<Self>, cfg: &SearchConfig) -> Result<FusedSession> {
        let m = &self.m;
        let (d, hd) = (m.dims.d_model, m.dims.heads * m.dims.head_dim);
        let (ff, pd, pff) = (m.dims.ff, m.dims.prm_heads * m.dims.head_dim, m.dims.prm_ff);
        let (h, l, c) = (m.history, m.levels, m.max_codebook());
        let kb = cfg.beam_capacity();
        let mc = cfg.candidates;
        let z = |n: usize| {
            crate::alloc::zeros::<f32>(n, "a fused session buffer").map_err(crate::Error::from)
        };
        let b = Buffers {
            encoded: false,
            mem_from: 0,
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
            pu: z(d)?,
            scratch_d: z(d)?,
            dx: z(kb * d)?,
            dqkv: z(kb * 3 * hd)?,
            dq: z(kb * hd)?,
            self_kv: (0..m.dims.decoder_layers)
                .map(|_| z(2 * kb * l * 2 * hd))
                .collect::<Result<_>>()?,
            slot: 0,
            cached_level: None,
            cached_beams: 0,
            cached_prefix: crate::alloc::zeros(kb * (l - 1).max(1), "the cached prefixes")?,
            parent: crate::alloc::zeros(kb, "the beam parents")?,
            logits: z(kb * c)?,
            px: z(mc * d)?,
            pq: z(mc * pd)?,
            po: z(mc * d)?,
            scratch: z(h.max(l))?,
        };
        Ok(FusedSession {
            model: self.clone(),
            b,
            beams: kb,
            candidates: mc,
        })
    }
}

/// A session: its model and its buffers.
pub struct FusedSession {
    model: Arc<FusedModel>,
    b: Buffers,
    beams: usize,      // decoder rows: max(K', N)
    candidates: usize, // PRM rows: K+
}

/// One session's buffers (shapes in the comments; K' = the config's beam capacity
/// max(K', N), K+ candidates, H history, L
/// levels, d model width, hd = heads x head_dim, pd = PRM heads x head_dim).
struct Buffers {
    encoded: bool,
    /// The first memory row the request computed: the leading rows that are padding
    /// (mask 0; histories are right-aligned) are skipped by every stage (module docs)
    mem_from: usize,
    bias: Vec<f32>,              // [H] mask bias of the memory: 0 or NEG
    ex: Vec<f32>,                // [H, d] encoder residual stream
    xn: Vec<f32>,                // [max(H, K', K+), d] normed input of the next matmul
    eqkv: Vec<f32>,              // [H, 3 hd] encoder q | k | v
    att: Vec<f32>,               // [max rows, max(hd, pd)] attention output
    ff: Vec<f32>,                // [max rows, max(ff, pff)] FFN hidden
    cross_kv: Vec<Vec<f32>>,     // per decoder layer [H, 2 hd] the memory's k | v
    prm_kv: Vec<f32>,            // [H, 2 pd] the memory's k | v for the PRM
    pu: Vec<f32>,                // [d] the dense PRM's user state
    scratch_d: Vec<f32>,         // [d] its input row
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

impl Scorer for FusedSession {
    fn encode(&mut self, codes: &[i64], mask: &[f32]) -> Result<()> {
        checks::encode(&self.model.m, codes, mask)?;
        self.b.run_encoder(&self.model, codes, mask)
    }
    fn decode(&mut self, level: usize, prefixes: &[i64], k: usize, out: &mut [f32]) -> Result<()> {
        checks::decode(&self.model.m, self.beams, level, prefixes, k, out)?;
        self.b.decode_level(&self.model, level, prefixes, k, out)
    }
    fn score(&mut self, nodes: &[i64], out: &mut [f32]) -> Result<()> {
        checks::score(&self.model.m, self.candidates, nodes, out)?;
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
        let m = &s.model.m;
        let (h, l, c) = (m.history, m.levels, m.max_codebook());
        assert!(
            l == 3 && m.codebook.iter().all(|&w| w >= 32),
            "the test's codes fit"
        );
        // every column below 24: a code of any level, or an item (an item column)
        let cols = m.encoder_columns();
        let codes: Vec<i64> = (0..h * cols)
            .map(|i| ((i * 7 + i / 3) % 24) as i64)
            .collect();
        // 7 real items after padding (the encoder skips the padding rows)
        let mask: Vec<f32> = (0..h).map(|i| if i + 7 < h { 0.0 } else { 1.0 }).collect();
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
