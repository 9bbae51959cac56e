//! The dispatch plan: every kernel launch of a session (encoder, the decoder at each level,
//! the PRM, the search kernels) with its parameter block, laid out once per session.

use super::*;

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(super) struct Params {
    pub(super) rows: u32,
    pub(super) live: u32,
    pub(super) live_mul: u32,
    pub(super) n: u32,
    pub(super) k: u32,
    pub(super) a: u32,
    pub(super) lda: u32,
    pub(super) o: u32,
    pub(super) ldo: u32,
    pub(super) b: u32,
    pub(super) c: u32,
    pub(super) ldk: u32,
    pub(super) flags: u32,
    pub(super) w0: u32,
    pub(super) s0: u32,
    pub(super) ss0: u32,
    pub(super) w1: u32,
    pub(super) s1: u32,
    pub(super) ss1: u32,
    pub(super) w2: u32,
    pub(super) s2: u32,
    pub(super) ss2: u32,
    pub(super) x0: u32,
    pub(super) g0: u32,
    pub(super) i0: u32,
    pub(super) heads: u32,
    pub(super) dh: u32,
    pub(super) tq: u32,
    pub(super) skv: u32,
    pub(super) kvrow: u32,
    pub(super) mask: u32,
    pub(super) causal: u32,
    pub(super) cb: u32,
    pub(super) scale: f32,
    pub(super) eps: f32,
    // the search kernels (see kernels.wgsl)
    pub(super) i1: u32,
    pub(super) i2: u32,
    pub(super) count: u32,
    pub(super) keep: u32,
    pub(super) err: u32,
    pub(super) seen: u32,
    pub(super) t_code: u32,
    pub(super) level: u32,
    pub(super) width: u32,
    pub(super) prm: u32,
    pub(super) mix: f32,
    pub(super) u_in: u32,
    pub(super) u_out: u32,
    pub(super) descend: u32,
    pub(super) need: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            live: NONE,
            live_mul: 1,
            mask: NONE,
            g0: NONE,
            seen: NONE,
            eps: 1e-6,
            ..Zeroable::zeroed()
        }
    }
}

pub(super) const RELU: u32 = 1;
pub(super) const ACCUMULATE: u32 = 2;
pub(super) const BIAS: u32 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kernel {
    EmbedEnc,
    EmbedDec,
    EmbedPrm,
    EmbedPrmPath,
    Matmul,
    Attention,
    LogSoftmax,
    Expand,
    SelectCandidates,
    SelectBeams,
}

impl Kernel {
    /// Every kernel, in the order of `Kernel as usize` (the index into the pipelines).
    pub(super) const ALL: [Kernel; 10] = [
        Kernel::EmbedEnc,
        Kernel::EmbedDec,
        Kernel::EmbedPrm,
        Kernel::EmbedPrmPath,
        Kernel::Matmul,
        Kernel::Attention,
        Kernel::LogSoftmax,
        Kernel::Expand,
        Kernel::SelectCandidates,
        Kernel::SelectBeams,
    ];
    /// Its entry point in kernels.wgsl.
    pub(super) fn entry(self) -> &'static str {
        match self {
            Kernel::EmbedEnc => "embed_enc",
            Kernel::EmbedDec => "embed_dec",
            Kernel::EmbedPrm => "embed_prm",
            Kernel::EmbedPrmPath => "embed_prm_path",
            Kernel::Matmul => "matmul",
            Kernel::Attention => "attention",
            Kernel::LogSoftmax => "log_softmax",
            Kernel::Expand => "expand",
            Kernel::SelectCandidates => "select_candidates",
            Kernel::SelectBeams => "select_beams",
        }
    }
}

/// One dispatch: kernel, parameter block, workgroup counts.
#[derive(Clone, Copy, Debug)]
pub(super) struct Step {
    pub(super) kernel: Kernel,
    pub(super) params: u32,
    pub(super) groups: [u32; 3],
}

/// The static forward passes of one session: the activation arena's layout, the id
/// buffer's layout and every dispatch.
pub(super) struct Plan {
    pub(super) params: Vec<Params>,
    pub(super) encoder: Vec<Step>,
    pub(super) decoder: Vec<Vec<Step>>, // per level
    pub(super) prm: Vec<Step>,
    /// per level: trie masking + top-K+ (expand, select_candidates), then after the PRM
    /// the top-K' / top-N (select_beams)
    pub(super) select: Vec<[Step; 2]>,
    pub(super) finish: Vec<Step>,
    pub(super) act_len: usize,
    pub(super) ints_len: usize,
    // act offsets
    pub(super) mask: u32,
    pub(super) logp: u32,
    pub(super) scores: u32,
    // ints offsets
    pub(super) codes: u32,
    pub(super) prefix: [u32; 2], // level l's decoder reads prefix[l % 2]
    pub(super) nodes: u32,
    pub(super) beam_node: u32, // level 0's beam (the root) for the GPU search
    pub(super) seen: u32,
    pub(super) res_node: u32,
    // act offsets
    pub(super) beam_cum: u32,
    pub(super) res_key: u32,
}

/// `ints` slots: the live counts, the result count and the request's error flag (1: a
/// non-finite log-probability, 2: a non-finite PRM score).
pub(super) const LIVE_BEAMS: u32 = 0;
pub(super) const LIVE_NODES: u32 = 1;
pub(super) const RESULTS: u32 = 2;
pub(super) const ERR: u32 = 3;

pub(super) struct Arena(pub(super) usize);
impl Arena {
    pub(super) fn take(&mut self, n: usize) -> u32 {
        let at = self.0;
        self.0 += n;
        at as u32
    }
}

/// Rows a dispatch covers: allocated `rows`, live count `ints[live] * mul` (NONE: all).
#[derive(Clone, Copy)]
pub(super) struct Rows {
    pub(super) rows: usize,
    pub(super) live: u32,
    pub(super) mul: u32,
}

/// Collects parameter blocks and steps.
pub(super) struct Builder {
    pub(super) params: Vec<Params>,
    pub(super) dh: usize,
    pub(super) mask: u32,
}

pub(super) fn u(x: usize) -> u32 {
    x as u32
}

impl Builder {
    pub(super) fn push(
        &mut self,
        steps: &mut Vec<Step>,
        kernel: Kernel,
        p: Params,
        groups: [u32; 3],
    ) {
        steps.push(Step {
            kernel,
            params: u(self.params.len()),
            groups,
        });
        self.params.push(p);
    }

    /// out (+)= act(rmsnorm?(A) @ W_z + bias) for each of the 1..=3 weights `ws` (block z
    /// written at o + z * rows * n).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn matmul(
        &mut self,
        steps: &mut Vec<Step>,
        r: Rows,
        (a, lda): (u32, usize),
        k: usize,
        ws: &[W],
        n: usize,
        o: u32,
        flags: u32,
        bias: Option<V>,
        gain: Option<V>,
    ) {
        let w = |i: usize| ws.get(i).copied().unwrap_or(ws[0]);
        let p = Params {
            rows: u(r.rows),
            live: r.live,
            live_mul: r.mul,
            n: u(n),
            k: u(k),
            a,
            lda: u(lda),
            o,
            ldo: u(n),
            w0: w(0).off,
            s0: w(0).scale,
            ss0: w(0).stride,
            w1: w(1).off,
            s1: w(1).scale,
            ss1: w(1).stride,
            w2: w(2).off,
            s2: w(2).scale,
            ss2: w(2).stride,
            flags: flags | if bias.is_some() { BIAS } else { 0 },
            x0: bias.map(|b| b.0).unwrap_or(0),
            g0: gain.map(|g| g.0).unwrap_or(NONE),
            ..Params::default()
        };
        // 8 output columns x 4 rows per workgroup (see the kernel)
        let groups = [u(n.div_ceil(8)), u(r.rows.div_ceil(4)), u(ws.len())];
        self.push(steps, Kernel::Matmul, p, groups);
    }

    /// out += A @ W: the residual add of an attention output or FFN projection.
    pub(super) fn residual(
        &mut self,
        steps: &mut Vec<Step>,
        r: Rows,
        (a, k): (u32, usize),
        w: &[W],
        n: usize,
        out: u32,
    ) {
        self.matmul(steps, r, (a, k), k, w, n, out, ACCUMULATE, None, None);
    }

    /// softmax(q k^T / sqrt(dh) + bias) v for `r.rows` rows of `tq` queries; keys of row b
    /// start at key row b * kvrow (0 = shared).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention(
        &mut self,
        steps: &mut Vec<Step>,
        r: Rows,
        tq: usize,
        heads: usize,
        (q, k, v): (u32, u32, u32),
        (skv, kvrow): (usize, usize),
        masked: bool,
        causal: bool,
        o: u32,
    ) {
        let (dh, w) = (self.dh, heads * self.dh);
        let p = Params {
            rows: u(r.rows),
            live: r.live,
            live_mul: r.mul,
            a: q,
            lda: u(w),
            b: k,
            c: v,
            ldk: u(w),
            o,
            ldo: u(w),
            heads: u(heads),
            dh: u(dh),
            tq: u(tq),
            skv: u(skv),
            kvrow: u(kvrow),
            mask: if masked { self.mask } else { NONE },
            causal: causal as u32,
            scale: 1.0 / (dh as f32).sqrt(),
            ..Params::default()
        };
        let groups = [u((r.rows * tq * heads).div_ceil(WG as usize)), 1, 1];
        self.push(steps, Kernel::Attention, p, groups);
    }
}

impl Plan {
    /// The dispatches of one session. Every pre-norm RMSNorm is fused into the matmul that
    /// reads it, and q/k/v (and the memory's k/v) are one dispatch each: 14 dispatches for
    /// the small model's encoder, 19 per decoder level, 8 for the PRM.
    /// `dry`: resolve every weight (used at load to fail early).
    ///
    /// Long (about 370 lines) on purpose, for now: it is one list of every dispatch in
    /// execution order, over one arena layout that all stages share, and reads top to
    /// bottom like the forward pass. The per-op plan it builds is what issue 15's stage
    /// kernels replace; splitting it first would be work thrown away.
    pub(super) fn build(s: &Shared, cfg: &SearchConfig, dry: bool) -> Result<Plan> {
        let m = &s.manifest;
        let a = &s.arch;
        let wt = &s.weights;
        let (d, heads, dh, ff) = (m.dims.d_model, m.dims.heads, m.dims.head_dim, m.dims.ff);
        let hd = heads * dh;
        let (ph, pff) = (m.dims.prm_heads, m.dims.prm_ff);
        let pd = ph * dh;
        let (h, l, c) = (m.history, m.levels, m.max_codebook());
        // K' rows for the decoder and the beams are the beam capacity max(K', N)
        let (kb, mc) = (cfg.beam_capacity(), cfg.candidates);
        let with_prm = cfg.prm || dry;

        // the activation arena (f32 offsets)
        let mut act = Arena(0);
        let mask = act.take(h);
        let ex = act.take(h * d); // encoder residual stream
        let eqkv = act.take(3 * h * hd); // q, k, v blocks
        let ea = act.take(h * hd);
        let ef = act.take(h * ff);
        // the memory's keys and values for each decoder layer's cross-attention, and the
        // PRM's: [k block, v block] each, computed once per request
        let cross: Vec<u32> = (0..m.dims.decoder_layers)
            .map(|_| act.take(2 * h * hd))
            .collect();
        let pkv = act.take(2 * h * pd);
        let tok = kb * l; // decoder: K' beams x up to L tokens
        let dx = act.take(tok * d);
        let dqkv = act.take(3 * tok * hd);
        let dq = act.take(tok * hd);
        let da = act.take(tok * hd);
        let df = act.take(tok * ff);
        let logits = act.take(kb * c);
        let logp = act.take(kb * c);
        let px = act.take(mc * d); // prm: K+ candidates
        let pq = act.take(mc * pd);
        let pa = act.take(mc * pd);
        let pf = act.take(mc * pff);
        let po = act.take(mc * d);
        let scores = act.take(mc);

        // the search's own buffers: candidates (K' x C slots), the pool's cums and parents,
        // the beams (two sets: level l reads set l % 2, writes the other), the results
        let slots = kb * c;
        let cand_key = act.take(slots);
        let pool_cum = act.take(mc);
        let beam_cum = [act.take(kb), act.take(kb)];
        let res_key = act.take(cfg.results);

        // the id buffer: [live beams, live candidates, results, error, codes, prefixes
        // (two sets), nodes, candidate nodes, pool parents, beam nodes (two sets), result
        // nodes, candidate and pool unseen counts, seen-leaf list]
        let mut ints = Arena(4);
        let codes = ints.take(h * l);
        let w = (l - 1).max(1);
        let prefix = [ints.take(kb * w), ints.take(kb * w)];
        let nodes = ints.take(mc);
        let cand_node = ints.take(slots);
        let pool_parent = ints.take(mc);
        let cand_unseen = ints.take(slots);
        let pool_unseen = ints.take(mc);
        let beam_node = [ints.take(kb), ints.take(kb)];
        let res_node = ints.take(cfg.results);
        let seen = ints.take(1 + seen_capacity(s.trie.num_items));

        let mut b = Builder {
            params: Vec::new(),
            dh,
            mask,
        };
        let groups_of = |n: usize| u(n.div_ceil(WG as usize));

        // encoder ---------------------------------------------------------------------
        let mut enc = Vec::new();
        let er = Rows {
            rows: h,
            live: NONE,
            mul: 1,
        };
        let one_row = Rows { rows: 1, ..er };
        let emb = wt.w(&a.encoder.code_emb)?;
        let pos = wt.w(&a.encoder.pos)?;
        let p = Params {
            rows: u(h),
            n: u(d),
            k: u(l),
            o: ex,
            ldo: u(d),
            w0: emb.off,
            s0: emb.scale,
            ss0: emb.stride,
            w1: pos.off,
            s1: pos.scale,
            ss1: pos.stride,
            i0: codes,
            ..Params::default()
        };
        b.push(&mut enc, Kernel::EmbedEnc, p, [groups_of(d), u(h), 1]);
        let (ek, ev) = (eqkv + u(h * hd), eqkv + u(2 * h * hd));
        for layer in &a.encoder.layers {
            let at = &layer.att;
            let qkv = [wt.w(&at.wq)?, wt.w(&at.wk)?, wt.w(&at.wv)?];
            let n1 = Some(wt.v(&layer.n1)?);
            b.matmul(&mut enc, er, (ex, d), d, &qkv, hd, eqkv, 0, None, n1);
            b.attention(
                &mut enc,
                one_row,
                h,
                heads,
                (eqkv, ek, ev),
                (h, 0),
                true,
                a.encoder.causal,
                ea,
            );
            let wo = [wt.w(&at.wo)?];
            b.residual(&mut enc, er, (ea, hd), &wo, d, ex);
            let w1 = [wt.w(&layer.ffn.w1)?];
            let n2 = Some(wt.v(&layer.n2)?);
            b.matmul(&mut enc, er, (ex, d), d, &w1, ff, ef, RELU, None, n2);
            let w2 = [wt.w(&layer.ffn.w2)?];
            b.residual(&mut enc, er, (ef, ff), &w2, d, ex);
        }
        // the memory is enc_norm(ex): fused into the projections that read it
        let enc_norm = Some(wt.v(&a.encoder.norm)?);
        for (layer, &kv) in a.decoder.layers.iter().zip(&cross) {
            let ca = &layer.cross_att;
            let w = [wt.w(&ca.wk)?, wt.w(&ca.wv)?];
            b.matmul(&mut enc, er, (ex, d), d, &w, hd, kv, 0, None, enc_norm);
        }
        if with_prm {
            let w = [wt.w(&a.prm.att.wk)?, wt.w(&a.prm.att.wv)?];
            b.matmul(&mut enc, er, (ex, d), d, &w, pd, pkv, 0, None, enc_norm);
        }

        // decoder, one step list per level: tokens 0..=level of each live beam ----------
        let demb = wt.w(&a.decoder.code_emb)?;
        let bos = wt.w(&a.decoder.bos)?;
        let dpos = wt.w(&a.decoder.pos)?;
        let head = wt.w(&a.decoder.head)?;
        let dec_norm = Some(wt.v(&a.decoder.norm)?);
        let mut decoder = Vec::new();
        for level in 0..l {
            let t = level + 1;
            let mut st = Vec::new();
            let tr = Rows {
                rows: kb * t,
                live: LIVE_BEAMS,
                mul: u(t),
            };
            let br = Rows {
                rows: kb,
                live: LIVE_BEAMS,
                mul: 1,
            };
            let p = Params {
                rows: u(kb * t),
                live: LIVE_BEAMS,
                live_mul: u(t),
                n: u(d),
                k: u((l - 1).max(1)),
                o: dx,
                ldo: u(d),
                w0: demb.off,
                s0: demb.scale,
                ss0: demb.stride,
                w1: bos.off,
                s1: bos.scale,
                ss1: bos.stride,
                w2: dpos.off,
                s2: dpos.scale,
                ss2: dpos.stride,
                tq: u(t),
                i0: prefix[level % 2],
                ..Params::default()
            };
            b.push(&mut st, Kernel::EmbedDec, p, [groups_of(d), u(kb * t), 1]);
            let (dk, dv) = (dqkv + u(kb * t * hd), dqkv + u(2 * kb * t * hd));
            for (layer, &kv) in a.decoder.layers.iter().zip(&cross) {
                let (sa, ca) = (&layer.self_att, &layer.cross_att);
                let qkv = [wt.w(&sa.wq)?, wt.w(&sa.wk)?, wt.w(&sa.wv)?];
                let n1 = Some(wt.v(&layer.n1)?);
                b.matmul(&mut st, tr, (dx, d), d, &qkv, hd, dqkv, 0, None, n1);
                b.attention(
                    &mut st,
                    br,
                    t,
                    heads,
                    (dqkv, dk, dv),
                    (t, t),
                    false,
                    true,
                    da,
                );
                let wo = [wt.w(&sa.wo)?];
                b.residual(&mut st, tr, (da, hd), &wo, d, dx);
                let wq = [wt.w(&ca.wq)?];
                let n2 = Some(wt.v(&layer.n2)?);
                b.matmul(&mut st, tr, (dx, d), d, &wq, hd, dq, 0, None, n2);
                let kv = (dq, kv, kv + u(h * hd));
                b.attention(&mut st, br, t, heads, kv, (h, 0), true, false, da);
                let wo = [wt.w(&ca.wo)?];
                b.residual(&mut st, tr, (da, hd), &wo, d, dx);
                let w1 = [wt.w(&layer.ffn.w1)?];
                let n3 = Some(wt.v(&layer.n3)?);
                b.matmul(&mut st, tr, (dx, d), d, &w1, ff, df, RELU, None, n3);
                let w2 = [wt.w(&layer.ffn.w2)?];
                b.residual(&mut st, tr, (df, ff), &w2, d, dx);
            }
            // the head reads each beam's last token (row stride t*d, offset (t-1)*d)
            let hw = [W {
                off: head.off + u(level * d * c),
                scale: head.scale + head.stride * u(level * c),
                stride: head.stride,
            }];
            let last = (dx + u((t - 1) * d), t * d);
            b.matmul(&mut st, br, last, d, &hw, c, logits, 0, None, dec_norm);
            let p = Params {
                rows: u(kb),
                live: LIVE_BEAMS,
                n: u(c),
                a: logits,
                lda: u(c),
                o: logp,
                ldo: u(c),
                cb: u(m.codebook[level]),
                ..Params::default()
            };
            b.push(&mut st, Kernel::LogSoftmax, p, [u(kb), 1, 1]);
            decoder.push(st);
        }

        // prm -------------------------------------------------------------------------
        let mut prm = Vec::new();
        if with_prm {
            let pr = Rows {
                rows: mc,
                live: LIVE_NODES,
                mul: 1,
            };
            let ne = wt.w(&a.prm.query)?;
            let p = Params {
                rows: u(mc),
                live: LIVE_NODES,
                n: u(d),
                o: px,
                ldo: u(d),
                w0: ne.off,
                s0: ne.scale,
                ss0: ne.stride,
                i0: nodes,
                // the path query: L rows per node, C codes per level
                k: u(l),
                cb: u(a.max_codebook),
                t_code: s.trie.code,
                ..Params::default()
            };
            let kernel = match a.prm.query_kind {
                PrmQuery::Node => Kernel::EmbedPrm,
                _ => Kernel::EmbedPrmPath,
            };
            b.push(&mut prm, kernel, p, [groups_of(d), u(mc), 1]);
            let wq = [wt.w(&a.prm.att.wq)?];
            let n1 = Some(wt.v(&a.prm.n1)?);
            b.matmul(&mut prm, pr, (px, d), d, &wq, pd, pq, 0, None, n1);
            let kv = (pq, pkv, pkv + u(h * pd));
            b.attention(&mut prm, pr, 1, ph, kv, (h, 0), true, false, pa);
            let wo = [wt.w(&a.prm.att.wo)?];
            b.residual(&mut prm, pr, (pa, pd), &wo, d, px);
            let w1 = [wt.w(&a.prm.ffn.w1)?];
            let n2 = Some(wt.v(&a.prm.n2)?);
            b.matmul(&mut prm, pr, (px, d), d, &w1, pff, pf, RELU, None, n2);
            let w2 = [wt.w(&a.prm.ffn.w2)?];
            b.residual(&mut prm, pr, (pf, pff), &w2, d, px);
            let w = [wt.w(&a.prm.w_out1)?];
            let bias = Some(wt.v(&a.prm.b_out1)?);
            let n3 = Some(wt.v(&a.prm.n3)?);
            b.matmul(&mut prm, pr, (px, d), d, &w, d, po, RELU, bias, n3);
            let w = [wt.w(&a.prm.w_out2)?];
            let bias = Some(wt.v(&a.prm.b_out2)?);
            b.matmul(&mut prm, pr, (po, d), d, &w, 1, scores, 0, bias, None);
        }
        // the search on the device, per level ----------------------------------------------
        let tr = s.trie;
        let (mut select, mut finish) = (Vec::new(), Vec::new());
        for level in 0..l {
            let (cur, next) = (level % 2, (level + 1) % 2);
            let last = level + 1 == l;
            let mut st = Vec::new();
            let p = Params {
                rows: u(kb),
                n: u(c),
                live: LIVE_BEAMS,
                i0: beam_node[cur],
                a: beam_cum[cur],
                b: logp,
                o: cand_key,
                i1: cand_node,
                count: LIVE_NODES,
                err: ERR,
                seen,
                t_code: tr.code,
                u_out: cand_unseen,
                descend: u(l - level - 1),
                ..Params::default()
            };
            // grid-stride: any width fits the dispatch limit
            let groups = groups_of(slots).min(MAX_GROUPS);
            b.push(&mut st, Kernel::Expand, p, [groups, 1, 1]);
            let p = Params {
                rows: u(slots),
                n: u(c),
                live: LIVE_BEAMS,
                i0: cand_node,
                a: cand_key,
                keep: u(mc),
                i1: nodes,
                o: pool_cum,
                i2: pool_parent,
                u_in: cand_unseen,
                u_out: pool_unseen,
                count: LIVE_NODES,
                ..Params::default()
            };
            // one workgroup: a radix select, O(slots)
            b.push(&mut st, Kernel::SelectCandidates, p, [1, 1, 1]);
            select.push([st[0], st[1]]);
            st.clear();
            let p = Params {
                n: u(c),
                live: LIVE_NODES,
                i0: nodes,
                a: pool_cum,
                b: scores,
                i2: pool_parent,
                prm: cfg.prm as u32,
                mix: cfg.mix,
                err: ERR,
                t_code: tr.code,
                level: u(level),
                keep: u(if last { cfg.results } else { cfg.beams }),
                need: if last { 0 } else { u(cfg.results) },
                u_in: pool_unseen,
                i1: if last { res_node } else { beam_node[next] },
                o: if last { res_key } else { beam_cum[next] },
                count: if last { RESULTS } else { LIVE_BEAMS },
                width: if last { 0 } else { u(w) },
                x0: prefix[cur],
                g0: prefix[next],
                ..Params::default()
            };
            b.push(&mut st, Kernel::SelectBeams, p, [groups_of(mc), 1, 1]);
            finish.push(st[0]);
        }
        Ok(Plan {
            params: b.params,
            encoder: enc,
            decoder,
            prm,
            select,
            finish,
            beam_node: beam_node[0],
            beam_cum: beam_cum[0],
            seen,
            res_node,
            res_key,
            act_len: act.0,
            ints_len: ints.0,
            mask,
            logp,
            scores,
            codes,
            prefix,
            nodes,
        })
    }
}
