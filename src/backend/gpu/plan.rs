//! The dispatch plan: every kernel launch of a session (the encoder, the decoder step and
//! the search kernels at each level, the PRM) with its parameter block, and the layout of
//! the session's two buffers, built once per session.

use super::*;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(super) struct Params {
    pub(super) rows: u32,
    pub(super) live: u32,
    pub(super) n: u32,
    pub(super) keep: u32,
    pub(super) a: u32,
    pub(super) b: u32,
    pub(super) o: u32,
    pub(super) i0: u32,
    pub(super) i1: u32,
    pub(super) i2: u32,
    pub(super) count: u32,
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
    pub(super) x0: u32,
    pub(super) g0: u32,
    pub(super) parent: u32,
    // the stage kernels (see kernels.wgsl)
    pub(super) layer: u32,
    pub(super) search: u32,
    pub(super) cb: u32,
    pub(super) codes: u32,
    pub(super) mask: u32,
    pub(super) ex: u32,
    pub(super) qkv: u32,
    pub(super) cross: u32,
    pub(super) pkv: u32,
    pub(super) cache: u32,
    pub(super) cache_set: u32,
    pub(super) logp: u32,
    pub(super) cum: u32,
    pub(super) beam: u32,
    pub(super) nodes: u32,
    pub(super) scores: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kernel {
    EncEmbed,
    EncLayer,
    DecStep,
    PrmScore,
    SelectCandidates,
    SelectBeams,
}

impl Kernel {
    /// Every kernel, in the order of `Kernel as usize` (the index into the pipelines).
    pub(super) const ALL: [Kernel; 6] = [
        Kernel::EncEmbed,
        Kernel::EncLayer,
        Kernel::DecStep,
        Kernel::PrmScore,
        Kernel::SelectCandidates,
        Kernel::SelectBeams,
    ];
    /// Its entry point in kernels.wgsl.
    pub(super) fn entry(self) -> &'static str {
        match self {
            Kernel::EncEmbed => "enc_embed",
            Kernel::EncLayer => "enc_layer",
            Kernel::DecStep => "dec_step",
            Kernel::PrmScore => "prm_score",
            Kernel::SelectCandidates => "select_candidates",
            Kernel::SelectBeams => "select_beams",
        }
    }
}

/// One dispatch: kernel, parameter block, workgroup count.
#[derive(Clone, Copy, Debug)]
pub(super) struct Step {
    pub(super) kernel: Kernel,
    pub(super) params: u32,
    pub(super) groups: u32,
}

/// The dispatches of one session and the layout of its two buffers.
pub(super) struct Plan {
    pub(super) params: Vec<Params>,
    /// 1 + encoder layers dispatches, one workgroup per history row
    pub(super) encoder: Vec<Step>,
    /// per level, the decoder step of the device search (cache from the parent, then the
    /// trie expansion)
    pub(super) decoder: Vec<Step>,
    /// per level, the decoder over whole prefixes for the CPU-driven search
    pub(super) decoder_cpu: Vec<Step>,
    pub(super) prm: Step,
    /// per level: top-K+ (select_candidates), then after the PRM the top-K' / top-N
    /// (select_beams)
    pub(super) select: Vec<Step>,
    pub(super) finish: Vec<Step>,
    pub(super) act_len: usize,
    pub(super) ints_len: usize,
    // act offsets
    pub(super) mask: u32,
    pub(super) logp: u32,
    pub(super) scores: u32,
    pub(super) beam_cum: u32,
    pub(super) res_key: u32,
    // ints offsets
    pub(super) codes: u32,
    pub(super) prefix: [u32; 2], // level l's decoder reads prefix[l % 2]
    pub(super) nodes: u32,
    pub(super) beam_node: u32, // level 0's beam (the root) for the device search
    pub(super) seen: u32,
    pub(super) res_node: u32,
}

impl Plan {
    /// Dispatches per request with the search on the device.
    pub(super) fn dispatches(&self, prm: bool) -> usize {
        self.encoder.len() + self.decoder.len() * (3 + prm as usize)
    }
}

/// `ints` slots: the live counts, the result count, the request's error flag (1: a
/// non-finite log-probability, 2: a non-finite PRM score) and the request's first real
/// history row.
pub(super) const LIVE_BEAMS: u32 = 0;
pub(super) const LIVE_NODES: u32 = 1;
pub(super) const RESULTS: u32 = 2;
pub(super) const ERR: u32 = 3;
pub(super) const MEM_FROM: u32 = 4;

pub(super) struct Arena(pub(super) usize);
impl Arena {
    pub(super) fn take(&mut self, n: usize) -> u32 {
        let at = self.0;
        self.0 += n;
        at as u32
    }
}

pub(super) fn u(x: usize) -> u32 {
    x as u32
}

impl Plan {
    /// The dispatches of one session: `1 + encoder layers` for the encoder, then per level
    /// the decoder step, top-K+, the PRM and top-K' (15 for the default bundle).
    pub(super) fn build(s: &Shared, cfg: &SearchConfig) -> Plan {
        let g = &s.geometry;
        let (d, hd, pd) = (g.d, g.heads * g.dh, g.pheads * g.dh);
        let (h, l, c) = (g.h, g.l, g.c);
        // beams: the capacity max(K', N)
        let (kb, mc) = (cfg.beam_capacity(), cfg.candidates);
        let beam_cache = g.dec_layers * l * 2 * hd;

        // the activation arena (f32 offsets)
        let mut act = Arena(0);
        let mask = act.take(h);
        let ex = act.take(h * d);
        let qkv = act.take(2 * h * 3 * hd);
        let cross = act.take(g.dec_layers * 2 * h * hd);
        // the PRM's keys and values of the memory, or the dense PRM's user state [d]
        let pkv = act.take((2 * h * pd).max(d));
        let cache = act.take(2 * kb * beam_cache);
        let logp = act.take(kb * c);
        let slots = kb * c;
        let cand_key = act.take(slots);
        let pool_cum = act.take(mc);
        let scores = act.take(mc);
        let beam_cum = [act.take(kb), act.take(kb)];
        let res_key = act.take(cfg.results);

        // the id buffer: [the five slots above, codes, prefixes (two sets), PRM nodes,
        // slot nodes, pool parents, slot and pool unseen counts, beam nodes (two sets),
        // beam parents, result nodes, seen-leaf list]
        let mut ints = Arena(8);
        let codes = ints.take(h * g.enc_cols);
        let w = (l - 1).max(1);
        let prefix = [ints.take(kb * w), ints.take(kb * w)];
        let nodes = ints.take(mc);
        let cand_node = ints.take(slots);
        let pool_parent = ints.take(mc);
        let cand_unseen = ints.take(slots);
        let pool_unseen = ints.take(mc);
        let beam_node = [ints.take(kb), ints.take(kb)];
        let beam_parent = ints.take(kb);
        let res_node = ints.take(cfg.results);
        let seen = ints.take(1 + seen_capacity(s.trie.num_items));

        let base = Params {
            codes,
            mask,
            ex,
            qkv,
            cross,
            pkv,
            cache,
            cache_set: u(kb * beam_cache),
            logp,
            nodes,
            scores,
            seen,
            err: ERR,
            t_code: s.trie.code,
            n: u(c),
            ..Params::default()
        };
        let mut params = Vec::new();
        let mut step = |kernel, p: Params, groups: usize| {
            params.push(p);
            Step {
                kernel,
                params: u(params.len() - 1),
                groups: u(groups),
            }
        };
        let mut encoder = vec![step(Kernel::EncEmbed, base, h)];
        for layer in 0..g.enc_layers {
            let p = Params {
                layer: u(layer),
                ..base
            };
            encoder.push(step(Kernel::EncLayer, p, h));
        }
        let (mut decoder, mut decoder_cpu) = (Vec::new(), Vec::new());
        let (mut select, mut finish) = (Vec::new(), Vec::new());
        for level in 0..l {
            let (cur, next) = (level % 2, (level + 1) % 2);
            let last = level + 1 == l;
            let dec = Params {
                level: u(level),
                cb: u(s.manifest.codebook[level]),
                x0: prefix[cur],
                ..base
            };
            decoder_cpu.push(step(Kernel::DecStep, dec, kb));
            let p = Params {
                search: 1,
                parent: beam_parent,
                beam: beam_node[cur],
                cum: beam_cum[cur],
                a: cand_key,
                i0: cand_node,
                u_out: cand_unseen,
                descend: u(l - level - 1),
                ..dec
            };
            decoder.push(step(Kernel::DecStep, p, kb));
            // one workgroup: a radix select, O(slots)
            let p = Params {
                rows: u(slots),
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
                ..base
            };
            select.push(step(Kernel::SelectCandidates, p, 1));
            let p = Params {
                live: LIVE_NODES,
                i0: nodes,
                a: pool_cum,
                b: scores,
                i2: pool_parent,
                prm: cfg.prm as u32,
                mix: cfg.mix,
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
                parent: beam_parent,
                ..base
            };
            finish.push(step(Kernel::SelectBeams, p, mc.div_ceil(WG as usize)));
        }
        let prm = step(Kernel::PrmScore, base, mc);
        Plan {
            params,
            encoder,
            decoder,
            decoder_cpu,
            prm,
            select,
            finish,
            act_len: act.0,
            ints_len: ints.0,
            mask,
            logp,
            scores,
            beam_cum: beam_cum[0],
            res_key,
            codes,
            prefix,
            nodes,
            beam_node: beam_node[0],
            seen,
            res_node,
        }
    }
}
