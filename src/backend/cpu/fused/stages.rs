//! The stages of a request on the fused engine: the encoder (and the memory's projections),
//! the decoder at one level with its key/value cache, the PRM.

use super::kernels::{attend, attend_rows, log_softmax, matmul, rmsnorm, Epilogue, Isa, NEG};
use super::weights::PrmWeights;
use super::{Buffers, FusedModel};
use crate::error::{err, Result};

impl Buffers {
    /// The encoder, then the memory's keys and values for every decoder layer and the PRM.
    pub(super) fn run_encoder(
        &mut self,
        model: &FusedModel,
        codes: &[i64],
        mask: &[f32],
    ) -> Result<()> {
        let m = &model.m;
        let isa = model.isa;
        let (d, heads, dh) = (m.dims.d_model, m.dims.heads, m.dims.head_dim);
        let (hd, ff, pd) = (heads * dh, m.dims.ff, m.dims.prm_heads * dh);
        let (h, cols, c) = (m.history, m.encoder_columns(), m.max_codebook());
        // inputs checked by the caller (backend::checks)
        for (b, &v) in self.bias.iter_mut().zip(mask) {
            *b = (1.0 - v) * NEG;
        }
        // the leading padding rows are skipped (module docs); a history of padding only
        // (no real row) keeps every row, as the graphs do
        let from = mask.iter().position(|&v| v != 0.0).unwrap_or(0);
        self.mem_from = from;
        let n = h - from;
        // token r = sum of its item's level-code embeddings + position r
        for r in from..h {
            let x = &mut self.ex[r * d..(r + 1) * d];
            x.copy_from_slice(&model.enc_pos[r * d..(r + 1) * d]);
            for lv in 0..cols {
                // column L (an item column) is the item: row L * C + item
                let code = codes[r * cols + lv];
                model.enc_emb.add_row(code as usize + lv * c, x);
            }
        }
        let bias = &self.bias[from..];
        for layer in &model.enc {
            rmsnorm((&self.ex[from * d..], d), n, &layer.n1, &mut self.xn);
            let xn = (&self.xn[..], d);
            matmul(
                isa,
                xn,
                n,
                &layer.wqkv,
                (d, 3 * hd),
                (&mut self.eqkv, 3 * hd),
                Epilogue::default(),
            );
            let kv = &self.eqkv[hd..];
            let keys = (kv, &kv[hd..], 3 * hd);
            let q = (&self.eqkv[..], 3 * hd);
            if m.dims.encoder_causal {
                // row r reads keys 0..=r (the graph adds NEG after r: weight exactly 0)
                for r in 0..n {
                    attend(
                        &q.0[r * q.1..],
                        keys,
                        r + 1,
                        (heads, dh),
                        Some(bias),
                        &mut self.scratch,
                        &mut self.att[r * hd..(r + 1) * hd],
                    );
                }
            } else {
                attend_rows(
                    q,
                    n,
                    keys,
                    n,
                    (heads, dh),
                    Some(bias),
                    &mut self.scratch,
                    &mut self.att,
                );
            }
            matmul(
                isa,
                (&self.att, hd),
                n,
                &layer.wo,
                (hd, d),
                (&mut self.ex[from * d..], d),
                Epilogue::ADD,
            );
            let scratch = (&mut self.xn[..], &mut self.ff[..]);
            ffn(
                isa,
                &mut self.ex[from * d..],
                scratch,
                n,
                &layer.n2,
                (&layer.w1, &layer.w2),
                ff,
                d,
            );
        }
        // the memory is enc_norm(ex); only its projections are kept (rows from.. at 0..)
        rmsnorm((&self.ex[from * d..], d), n, &model.enc_norm, &mut self.xn);
        for (layer, kv) in model.dec.iter().zip(self.cross_kv.iter_mut()) {
            let xn = (&self.xn[..], d);
            matmul(
                isa,
                xn,
                n,
                &layer.wkv_cross,
                (d, 2 * hd),
                (kv, 2 * hd),
                Epilogue::default(),
            );
        }
        match &model.prm {
            PrmWeights::Attention(p) => matmul(
                isa,
                (&self.xn[..], d),
                n,
                &p.wkv,
                (d, 2 * pd),
                (&mut self.prm_kv, 2 * pd),
                Epilogue::default(),
            ),
            PrmWeights::Dense(p) => {
                // u = memory[H - 1] * mask[H - 1] @ w + b (the memory's row H - 1 is
                // xn's row n - 1; a history of padding only has mask 0 there: u = b)
                let last = &mut self.scratch_d;
                for (o, &x) in last.iter_mut().zip(&self.xn[(n - 1) * d..n * d]) {
                    *o = x * mask[h - 1];
                }
                let ep = Epilogue {
                    bias: Some(&p.b),
                    ..Epilogue::default()
                };
                matmul(isa, (&last[..], d), 1, &p.w, (d, d), (&mut self.pu, d), ep);
            }
        }
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
/// keys | values `[n, 2 w]` (w = heads x dh, computed once per request) and its mask bias
/// `[n]`: the request's rows `mem_from..H`.
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
    pub(super) fn decode_level(
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
        // sizes and codes checked by the caller (backend::checks)
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
            let memory = (&kv[..], &self.bias[self.mem_from..]);
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

    pub(super) fn score_nodes(
        &mut self,
        model: &FusedModel,
        nodes: &[i64],
        out: &mut [f32],
    ) -> Result<()> {
        let m = &model.m;
        let isa = model.isa;
        let (d, dh) = (m.dims.d_model, m.dims.head_dim);
        let (ph, pff) = (m.dims.prm_heads, m.dims.prm_ff);
        if !self.encoded {
            return Err(err!(Backend, "score called before encode"));
        }
        let rows = nodes.len(); // checked by the caller (backend::checks)
        let p = match &model.prm {
            PrmWeights::Attention(p) => p,
            PrmWeights::Dense(p) => {
                for (&node, o) in nodes.iter().zip(out.iter_mut()) {
                    let n = node as usize;
                    // from the stored row, in 8 lanes: a serial sum over a widened copy
                    // (one dependent add per element) was most of a wide search's time
                    *o = p.node.dot_row(n, &self.pu) + p.node_bias.value(n);
                }
                return Ok(());
            }
        };
        for (r, &node) in nodes.iter().enumerate() {
            let q = &mut self.px[r * d..(r + 1) * d];
            match &p.path {
                None => p.query.row(node as usize, q),
                Some((catalog, width)) => {
                    let mut path = [0i64; crate::bundle::catalog::MAX_LEVELS];
                    let path = &mut path[..catalog.levels()];
                    catalog.path_rows(node as u32, *width, path)?;
                    q.fill(0.0);
                    for &row in path.iter() {
                        p.query.add_row(row as usize, q);
                    }
                }
            }
        }
        let scratch = Scratch {
            xn: &mut self.xn,
            q: &mut self.pq,
            att: &mut self.att,
            logits: &mut self.scratch,
        };
        let memory = (&self.prm_kv[..], &self.bias[self.mem_from..]);
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
