//! What the stage kernels are specialised for: the model's dimensions and the table of
//! weight descriptors (`desc`), both written into the shader as constants at load.
//!
//! A matrix descriptor is three words (first element in `wts`, scale offset in `aux`, scale
//! stride), a vector descriptor one (its offset in `aux`). The table holds the globals
//! first (`G_*`), then each encoder layer (`E_*` fields, `E_STRIDE` words apart, from
//! `G_ENC`), then each decoder layer (`D_*`, `D_STRIDE`, from `G_DEC`). The constants
//! are recorded while the table is built, so the shader and the table cannot disagree.

use super::*;
use crate::bundle::Manifest;

/// Attention scores a workgroup holds per tile (all heads), at least.
const SCORE_TILE: usize = 1024;
/// Feed-forward hidden units a workgroup holds at a time, at most.
const FF_CHUNK: usize = 512;

/// The model's dimensions as the kernels see them.
#[derive(Clone, Debug)]
pub(super) struct Geometry {
    pub(super) d: usize,
    pub(super) heads: usize,
    pub(super) pheads: usize,
    pub(super) dh: usize,
    pub(super) ff: usize,
    pub(super) pff: usize,
    pub(super) h: usize,
    pub(super) l: usize,
    /// The encoder's input columns per item (`Manifest::encoder_columns`).
    pub(super) enc_cols: usize,
    pub(super) c: usize,
    pub(super) enc_layers: usize,
    pub(super) dec_layers: usize,
    pub(super) causal: bool,
    pub(super) path_query: bool,
    pub(super) dense_prm: bool,
}

impl Geometry {
    pub(super) fn new(m: &Manifest, a: &Architecture) -> Geometry {
        Geometry {
            d: m.dims.d_model,
            heads: m.dims.heads,
            pheads: m.dims.prm_heads,
            dh: m.dims.head_dim,
            ff: m.dims.ff,
            pff: m.dims.prm_ff,
            h: m.history,
            l: m.levels,
            enc_cols: m.encoder_columns(),
            c: m.max_codebook(),
            enc_layers: a.encoder.layers.len(),
            dec_layers: a.decoder.layers.len(),
            causal: a.encoder.causal,
            path_query: matches!(&a.prm, PrmGraph::Attention(p) if p.query_kind != PrmQuery::Node),
            dense_prm: matches!(a.prm, PrmGraph::Dense(_)),
        }
    }

    /// The widest query: heads x head_dim of the generator or of the PRM.
    fn qw(&self) -> usize {
        (self.heads * self.dh).max(self.pheads * self.dh)
    }
    fn fc(&self) -> usize {
        self.ff.max(self.pff).min(FF_CHUNK)
    }
    fn st(&self) -> usize {
        SCORE_TILE.max(self.heads.max(self.pheads) * 16)
    }
    /// f32 values of a stage kernel's workgroup state (x, its norm, a query, an attention
    /// output, FF hidden units, a score tile).
    fn sm(&self) -> usize {
        2 * self.d + 2 * self.qw() + self.fc() + self.st()
    }
    /// Workgroup memory a stage kernel needs: its state, the reduction scratch, two words.
    pub(super) fn workgroup_bytes(&self) -> u64 {
        (self.sm() as u64 + 64 + 2) * 4
    }

    /// A stage kernel holds one token's activations in workgroup memory: refuse a model
    /// whose width does not fit the adapter's (`have` bytes) as a `limits` error naming
    /// d_model, before any kernel is built.
    pub(super) fn check_fits(&self, gpu: &str, have: u64) -> Result<()> {
        let need = self.workgroup_bytes();
        if need > have {
            return Err(err!(
                Limits,
                "GPU {gpu}: d_model {} (heads x head_dim {}) needs {need} bytes of workgroup memory per stage kernel, the adapter allows {have}",
                self.d,
                self.qw()
            ));
        }
        Ok(())
    }

    /// The shader's model constants.
    pub(super) fn wgsl(&self, table: &Table) -> String {
        let qw = self.qw();
        let scale = 1.0 / (self.dh as f32).sqrt();
        let mut s = String::new();
        let mut u = |name: &str, v: usize| s.push_str(&format!("const {name}: u32 = {v}u;\n"));
        u("D", self.d);
        u("HEADS", self.heads);
        u("PHEADS", self.pheads);
        u("DH", self.dh);
        u("HD", self.heads * self.dh);
        u("PD", self.pheads * self.dh);
        u("FF", self.ff);
        u("PFF", self.pff);
        u("H", self.h);
        u("L", self.l);
        u("ENC_COLS", self.enc_cols);
        u("C", self.c);
        u("ENC_LAYERS", self.enc_layers);
        u("DEC_LAYERS", self.dec_layers);
        u("QW", qw);
        u("OPT", qw.div_ceil(WG as usize));
        u("FC", self.fc());
        u("ST", self.st());
        u("SM", self.sm());
        for (name, at) in &table.consts {
            u(name, *at as usize);
        }
        s.push_str(&format!("const CAUSAL: bool = {};\n", self.causal));
        s.push_str(&format!("const PATH_QUERY: bool = {};\n", self.path_query));
        s.push_str(&format!("const DENSE_PRM: bool = {};\n", self.dense_prm));
        s.push_str(&format!("const SCALE: f32 = {scale:?};\n"));
        s
    }
}

/// The descriptor table and the offsets of its fields.
pub(super) struct Table {
    pub(super) words: Vec<u32>,
    pub(super) consts: Vec<(&'static str, u32)>,
}

impl Table {
    fn at(&mut self, name: &'static str, base: usize, record: bool) {
        if record {
            self.consts.push((name, (self.words.len() - base) as u32));
        }
    }
    fn mat(&mut self, name: &'static str, base: usize, record: bool, w: W) {
        self.at(name, base, record);
        self.words.extend_from_slice(&[w.off, w.scale, w.stride]);
    }
    fn vec(&mut self, name: &'static str, base: usize, record: bool, v: V) {
        self.at(name, base, record);
        self.words.push(v.0);
    }
    /// Constants the other PRM kind's code names: word 0, never read (its branch is
    /// compiled out by `DENSE_PRM`).
    fn unused(&mut self, names: &[&'static str]) {
        self.consts.extend(names.iter().map(|&n| (n, 0)));
    }

    /// Every weight of the architecture, resolved in the arenas (so a bundle that lacks
    /// one, or has it in another shape, fails at load).
    pub(super) fn build(w: &Weights, a: &Architecture) -> Result<Table> {
        let mut t = Table {
            words: Vec::new(),
            consts: Vec::new(),
        };
        let (e, d, p) = (&a.encoder, &a.decoder, &a.prm);
        t.mat("G_ENC_EMB", 0, true, w.w(&e.code_emb)?);
        t.mat("G_ENC_POS", 0, true, w.w(&e.pos)?);
        t.vec("G_ENC_NORM", 0, true, w.v(&e.norm)?);
        t.mat("G_DEC_EMB", 0, true, w.w(&d.code_emb)?);
        t.mat("G_DEC_BOS", 0, true, w.w(&d.bos)?);
        t.mat("G_DEC_POS", 0, true, w.w(&d.pos)?);
        t.vec("G_DEC_NORM", 0, true, w.v(&d.norm)?);
        t.mat("G_HEAD", 0, true, w.w(&d.head)?);
        const ATTENTION: [&str; 13] = [
            "G_PRM_N1", "G_PRM_WQ", "G_PRM_WK", "G_PRM_WV", "G_PRM_WO", "G_PRM_N2", "G_PRM_W1",
            "G_PRM_W2", "G_PRM_N3", "G_PRM_O1", "G_PRM_B1", "G_PRM_O2", "G_PRM_B2",
        ];
        match p {
            PrmGraph::Attention(p) => {
                t.mat("G_PRM_Q", 0, true, w.w(&p.query)?);
                t.vec("G_PRM_N1", 0, true, w.v(&p.n1)?);
                // wq, wk, wv adjacent: the kernels step from one to the next by 3 words
                t.mat("G_PRM_WQ", 0, true, w.w(&p.att.wq)?);
                t.mat("G_PRM_WK", 0, true, w.w(&p.att.wk)?);
                t.mat("G_PRM_WV", 0, true, w.w(&p.att.wv)?);
                t.mat("G_PRM_WO", 0, true, w.w(&p.att.wo)?);
                t.vec("G_PRM_N2", 0, true, w.v(&p.n2)?);
                t.mat("G_PRM_W1", 0, true, w.w(&p.ffn.w1)?);
                t.mat("G_PRM_W2", 0, true, w.w(&p.ffn.w2)?);
                t.vec("G_PRM_N3", 0, true, w.v(&p.n3)?);
                t.mat("G_PRM_O1", 0, true, w.w(&p.w_out1)?);
                t.vec("G_PRM_B1", 0, true, w.v(&p.b_out1)?);
                t.mat("G_PRM_O2", 0, true, w.w(&p.w_out2)?);
                t.vec("G_PRM_B2", 0, true, w.v(&p.b_out2)?);
                t.unused(&["G_PRM_DW", "G_PRM_DB", "G_PRM_NB"]);
            }
            PrmGraph::Dense(p) => {
                t.mat("G_PRM_Q", 0, true, w.w(&p.node)?);
                t.mat("G_PRM_DW", 0, true, w.w(&p.w)?);
                t.vec("G_PRM_DB", 0, true, w.v(&p.b)?);
                t.vec("G_PRM_NB", 0, true, w.v(&p.node_bias)?);
                t.unused(&ATTENTION);
            }
        }
        t.at("G_ENC", 0, true);
        for (i, layer) in e.layers.iter().enumerate() {
            let (base, r) = (t.words.len(), i == 0);
            t.vec("E_N1", base, r, w.v(&layer.n1)?);
            t.mat("E_WQ", base, r, w.w(&layer.att.wq)?);
            t.mat("E_WK", base, r, w.w(&layer.att.wk)?);
            t.mat("E_WV", base, r, w.w(&layer.att.wv)?);
            t.mat("E_WO", base, r, w.w(&layer.att.wo)?);
            t.vec("E_N2", base, r, w.v(&layer.n2)?);
            t.mat("E_W1", base, r, w.w(&layer.ffn.w1)?);
            t.mat("E_W2", base, r, w.w(&layer.ffn.w2)?);
            t.at("E_STRIDE", base, r);
        }
        t.at("G_DEC", 0, true);
        for (i, layer) in d.layers.iter().enumerate() {
            let (base, r) = (t.words.len(), i == 0);
            let (sa, ca) = (&layer.self_att, &layer.cross_att);
            t.vec("D_N1", base, r, w.v(&layer.n1)?);
            t.mat("D_SQ", base, r, w.w(&sa.wq)?);
            t.mat("D_SK", base, r, w.w(&sa.wk)?);
            t.mat("D_SV", base, r, w.w(&sa.wv)?);
            t.mat("D_SO", base, r, w.w(&sa.wo)?);
            t.vec("D_N2", base, r, w.v(&layer.n2)?);
            t.mat("D_CQ", base, r, w.w(&ca.wq)?);
            t.mat("D_CK", base, r, w.w(&ca.wk)?);
            t.mat("D_CV", base, r, w.w(&ca.wv)?);
            t.mat("D_CO", base, r, w.w(&ca.wo)?);
            t.vec("D_N3", base, r, w.v(&layer.n3)?);
            t.mat("D_W1", base, r, w.w(&layer.ffn.w1)?);
            t.mat("D_W2", base, r, w.w(&layer.ffn.w2)?);
            t.at("D_STRIDE", base, r);
        }
        // a model without encoder (decoder) layers still names the constants the shader uses
        if e.layers.is_empty() {
            for name in ["E_N1", "E_WQ", "E_WO", "E_N2", "E_W1", "E_W2", "E_STRIDE"] {
                t.consts.push((name, 0));
            }
        }
        if d.layers.is_empty() {
            for name in [
                "D_N1", "D_SQ", "D_SO", "D_N2", "D_CQ", "D_CK", "D_CO", "D_N3", "D_W1", "D_W2",
                "D_STRIDE",
            ] {
                t.consts.push((name, 0));
            }
        }
        Ok(t)
    }
}
