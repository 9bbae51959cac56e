//! PRM-guided beam search over the SID trie, with every buffer allocated once.
//!
//! One request (see the crate docs for the picture):
//! 1. encode the history once;
//! 2. for each level: the decoder scores the children of the live beams; only valid trie
//!    children survive (at the last level, items the user has seen are dropped too); the
//!    top K+ by cumulative log-probability form the candidate pool; the PRM scores the
//!    pool; the top K' by PRM score (or by the mix with the generator, or by log-prob when
//!    the PRM is off) become the next beams;
//! 3. at the last level the top N of the pool are the recommendations.
//!
//! Plain beam search is `prm: false` (selection by cumulative log-prob; K+ then only sets
//! the size of the final pool). Order everywhere: higher key first, ties to the smaller
//! node id ([`topk`]).
//!
//! [`Searcher`] owns the buffers and runs against any [`Scorer`] (a backend session, or a
//! fake one in tests and benches). After construction, `run` does not allocate.

pub mod topk;

use crate::bundle::catalog::{Catalog, MAX_LEVELS};
use crate::error::{err, Result};
use topk::{by_cum, by_key, top_k, Scored};

/// Largest K' a session accepts.
pub const MAX_BEAMS: usize = 256;
/// Largest K+ a session accepts.
pub const MAX_CANDIDATES: usize = 4096;
/// Longest history a request accepts (items beyond the model's window only feed the
/// seen-item filter, but are still checked and cost time).
pub const MAX_HISTORY: usize = 1 << 20;

/// Default `mix`: chosen on the validation split (models/README.md): with our PRM, PRM alone
/// (the paper's choice, mix 0) ranks below plain beam search; 0.5 is best of {0, 0.25, 0.5, 0.75}.
pub const DEFAULT_MIX: f32 = 0.5;

/// The search knobs, validated by [`SearchConfig::validate`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SearchConfig {
    /// K': beams kept per level (1..=256).
    pub beams: usize,
    /// K+: candidate prefixes the PRM scores per level, and the size of the final pool
    /// (beams..=4096).
    pub candidates: usize,
    /// N: recommendations returned (1..=candidates).
    pub results: usize,
    /// Use the PRM to select beams and rank results (false = plain beam search).
    pub prm: bool,
    /// Weight of the generator's cumulative log-prob in the selection key:
    /// key = (1 - mix) * prm + mix * log_prob. 0 = the paper (PRM alone); default
    /// [`DEFAULT_MIX`]. In [0, 1].
    pub mix: f32,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            beams: 16,
            candidates: 64,
            results: 10,
            prm: true,
            mix: DEFAULT_MIX,
        }
    }
}

impl SearchConfig {
    /// Plain beam search with K' beams returning N items (final pool max(K', N)).
    pub fn plain(beams: usize, results: usize) -> SearchConfig {
        SearchConfig {
            beams,
            candidates: beams.max(results),
            results,
            prm: false,
            mix: 0.0,
        }
    }

    /// Check every knob; the error names the value and the allowed range.
    pub fn validate(&self) -> Result<()> {
        if self.beams == 0 || self.beams > MAX_BEAMS {
            return Err(err!(
                Config,
                "beams (K') is {}, expected 1..={MAX_BEAMS}",
                self.beams
            ));
        }
        if self.candidates < self.beams {
            return Err(err!(
                Config,
                "candidates (K+) is {}, expected at least beams (K') = {}",
                self.candidates,
                self.beams
            ));
        }
        if self.candidates > MAX_CANDIDATES {
            return Err(err!(
                Config,
                "candidates (K+) is {}, expected at most {MAX_CANDIDATES}",
                self.candidates
            ));
        }
        if self.results == 0 || self.results > self.candidates {
            return Err(err!(
                Config,
                "results (N) is {}, expected 1..=candidates (K+) = {}",
                self.results,
                self.candidates
            ));
        }
        if !(0.0..=1.0).contains(&self.mix) {
            return Err(err!(
                Config,
                "mix is {}, expected a number in 0..=1",
                self.mix
            ));
        }
        Ok(())
    }
}

/// One recommended item.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct Recommendation {
    /// Item id (dense, 0..num_items).
    pub item: u32,
    /// Its ranking key: PRM score (mixed per `mix`) or cumulative log-prob without PRM.
    pub score: f32,
}

/// What the search needs from a model. Implemented by each backend's session state.
pub trait Scorer {
    /// Encode one history: `codes` is [H * L] (row-major, item-major), `mask` `[H]` with 1.0
    /// for real items. Keeps the encoder output for the next calls.
    fn encode(&mut self, codes: &[i64], mask: &[f32]) -> Result<()>;
    /// Log-probabilities of the level-`level` (0-based) code for `k` prefixes given as
    /// `prefixes` [k * (L - 1)] (codes of the levels before `level`, zero-padded). Writes
    /// `out[i * C + c]` for i < k, c < C (C = largest codebook).
    fn decode(&mut self, level: usize, prefixes: &[i64], k: usize, out: &mut [f32]) -> Result<()>;
    /// PRM scores of trie nodes: writes `out[i]` for every `nodes[i]`.
    fn score(&mut self, nodes: &[i64], out: &mut [f32]) -> Result<()>;
    /// The whole search of one request inside the backend, for a backend that runs it
    /// there (the GPU: one submission per request instead of two per level). Gets the
    /// encoder input (as [`Scorer::encode`]) and the seen-item bitset (bit `i % 64` of
    /// word `i / 64`), writes up to N `(leaf node, key)` best first (the same order and
    /// keys as [`Searcher`]) and returns how many. `None` (the default): the [`Searcher`]
    /// drives the search through the three methods above.
    fn search(
        &mut self,
        _codes: &[i64],
        _mask: &[f32],
        _seen: &[u64],
        _out: &mut [(u32, f32)],
    ) -> Option<Result<usize>> {
        None
    }
}

#[derive(Clone, Copy)]
struct Beam {
    node: u32,
    cum: f32,
    codes: [u16; MAX_LEVELS],
}

/// The search state of one session: every buffer sized once from the config and the
/// catalog. `run` borrows the results from here.
pub struct Searcher {
    cfg: SearchConfig,
    levels: usize,
    history: usize,
    cmax: usize,
    num_items: usize,
    beams: Vec<Beam>,             // [K'] live beams
    next: Vec<Beam>,              // [K'] beams being built
    pool: Vec<Scored>,            // [K' * C] children, then the top-K+ pool
    prefixes: Vec<i64>,           // [K' * (L-1)] decoder input
    log_probs: Vec<f32>,          // [K' * C] decoder output for the current level
    nodes: Vec<i64>,              // [K+] PRM input
    prm_scores: Vec<f32>,         // [K+] PRM output
    hist_codes: Vec<i64>,         // [H * L] encoder input
    hist_mask: Vec<f32>,          // [H] encoder input
    seen: Vec<u64>,               // bitset over items
    results: Vec<Recommendation>, // [N]
    found: Vec<(u32, f32)>,       // [N] (leaf, key) from a backend that searches itself
}

impl std::fmt::Debug for Searcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Searcher")
            .field("config", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Searcher {
    /// Validate `cfg` and allocate every buffer for it.
    pub fn new(cfg: SearchConfig, catalog: &Catalog, history: usize) -> Result<Searcher> {
        cfg.validate()?;
        let levels = catalog.levels();
        let cmax = (0..levels).map(|l| catalog.codebook(l)).max().unwrap_or(1);
        let k = cfg.beams;
        Ok(Searcher {
            cfg,
            levels,
            history,
            cmax,
            num_items: catalog.num_items(),
            beams: Vec::with_capacity(k),
            next: Vec::with_capacity(k),
            pool: Vec::with_capacity((k * cmax).max(cfg.candidates)),
            prefixes: vec![0; k * (levels - 1).max(1)],
            log_probs: vec![0.0; k * cmax],
            nodes: vec![0; cfg.candidates],
            prm_scores: vec![0.0; cfg.candidates],
            hist_codes: vec![0; history * levels],
            hist_mask: vec![0.0; history],
            seen: vec![0; catalog.num_items().div_ceil(64)],
            results: Vec::with_capacity(cfg.results),
            found: vec![(0, 0.0); cfg.results],
        })
    }

    /// The validated config.
    pub fn config(&self) -> &SearchConfig {
        &self.cfg
    }

    /// Check a history: non-empty, not over [`MAX_HISTORY`], every id a catalog item.
    pub fn check_history(history: &[u32], num_items: usize) -> Result<()> {
        if history.is_empty() {
            return Err(err!(
                EmptyHistory,
                "the history is empty, expected at least one item id"
            ));
        }
        if history.len() > MAX_HISTORY {
            return Err(err!(
                Capacity,
                "the history has {} items, expected at most {MAX_HISTORY}",
                history.len()
            ));
        }
        if let Some((i, &id)) = history
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= num_items)
        {
            return Err(err!(
                UnknownItem,
                "history[{i}] is item {id}, which is not in the catalog (expected 0..{num_items})"
            ));
        }
        Ok(())
    }

    /// Run one request. `history` is oldest-first; the model reads its last H items, the
    /// seen-item filter all of them. Returns at most N recommendations (fewer only if the
    /// trie runs out of unseen items under the surviving beams).
    pub fn run<S: Scorer + ?Sized>(
        &mut self,
        catalog: &Catalog,
        scorer: &mut S,
        history: &[u32],
    ) -> Result<&[Recommendation]> {
        Self::check_history(history, self.num_items)?;
        let (l, h) = (self.levels, self.history);
        // encoder input: the last H items right-aligned, padding codes 0 with mask 0
        let n = history.len().min(h);
        let recent = &history[history.len() - n..];
        self.hist_codes.fill(0);
        self.hist_mask.fill(0.0);
        for (j, &item) in recent.iter().enumerate() {
            let pos = h - n + j;
            self.hist_mask[pos] = 1.0;
            for lv in 0..l {
                self.hist_codes[pos * l + lv] = catalog.item_code(item, lv) as i64;
            }
        }
        for &item in history {
            self.seen[item as usize / 64] |= 1u64 << (item % 64);
        }
        let out = self.search(catalog, scorer);
        for &item in history {
            self.seen[item as usize / 64] = 0;
        }
        out?;
        Ok(&self.results)
    }

    fn search<S: Scorer + ?Sized>(&mut self, catalog: &Catalog, scorer: &mut S) -> Result<()> {
        let (l, c) = (self.levels, self.cmax);
        let cfg = self.cfg;
        self.results.clear();
        let (codes, mask) = (&self.hist_codes, &self.hist_mask);
        if let Some(n) = scorer.search(codes, mask, &self.seen, &mut self.found) {
            let n = n?;
            if n > self.found.len() {
                return Err(err!(
                    Backend,
                    "the backend's search returned {n} results, expected at most {}",
                    self.found.len()
                ));
            }
            for &(node, key) in &self.found[..n] {
                if node as usize >= catalog.num_nodes() || !catalog.is_leaf(node) {
                    return Err(err!(
                        Backend,
                        "the backend's search returned node {node}, which is not a leaf of the trie"
                    ));
                }
                self.results.push(Recommendation {
                    item: catalog.leaf_item(node),
                    score: key,
                });
            }
            return Ok(());
        }
        scorer.encode(&self.hist_codes, &self.hist_mask)?;
        self.beams.clear();
        self.beams.push(Beam {
            node: 0,
            cum: 0.0,
            codes: [0; MAX_LEVELS],
        });
        for level in 0..l {
            let last = level + 1 == l;
            let k = self.beams.len();
            // decoder input: each beam's codes so far, zero-padded to L-1
            let w = (l - 1).max(1);
            for (i, b) in self.beams.iter().enumerate() {
                for j in 0..w {
                    self.prefixes[i * w + j] = if j < level { b.codes[j] as i64 } else { 0 };
                }
            }
            scorer.decode(
                level,
                &self.prefixes[..k * w],
                k,
                &mut self.log_probs[..k * c],
            )?;
            // every valid child of every beam (unseen items only at the last level)
            self.pool.clear();
            for (i, b) in self.beams.iter().enumerate() {
                for child in catalog.children(b.node) {
                    if last {
                        let item = catalog.leaf_item(child);
                        if self.seen[item as usize / 64] >> (item % 64) & 1 == 1 {
                            continue;
                        }
                    }
                    let code = catalog.node_code(child) as usize;
                    let lp = self.log_probs[i * c + code];
                    if !lp.is_finite() {
                        return Err(err!(
                            Backend,
                            "the decoder gave a non-finite log-probability ({lp}) at level {level} for code {code}: the model's weights or the backend are broken"
                        ));
                    }
                    let cum = b.cum + lp;
                    self.pool.push(Scored {
                        node: child,
                        parent: i as u32,
                        cum,
                        key: cum,
                    });
                }
            }
            top_k(&mut self.pool, cfg.candidates, by_cum);
            if cfg.prm && !self.pool.is_empty() {
                let m = self.pool.len();
                for (dst, s) in self.nodes.iter_mut().zip(&self.pool) {
                    *dst = s.node as i64;
                }
                scorer.score(&self.nodes[..m], &mut self.prm_scores[..m])?;
                if let Some(p) = self.prm_scores[..m].iter().find(|p| !p.is_finite()) {
                    return Err(err!(
                        Backend,
                        "the PRM gave a non-finite score ({p}) at level {level}: the model's weights or the backend are broken"
                    ));
                }
                for (s, &p) in self.pool.iter_mut().zip(&self.prm_scores[..m]) {
                    s.key = if cfg.mix == 0.0 {
                        p
                    } else {
                        (1.0 - cfg.mix) * p + cfg.mix * s.cum
                    };
                }
            }
            let keep = if last { cfg.results } else { cfg.beams };
            top_k(&mut self.pool, keep, by_key);
            if last {
                for s in &self.pool {
                    self.results.push(Recommendation {
                        item: catalog.leaf_item(s.node),
                        score: s.key,
                    });
                }
            } else {
                self.next.clear();
                for s in &self.pool {
                    let parent = &self.beams[s.parent as usize];
                    let mut codes = parent.codes;
                    codes[level] = catalog.node_code(s.node);
                    self.next.push(Beam {
                        node: s.node,
                        cum: s.cum,
                        codes,
                    });
                }
                std::mem::swap(&mut self.beams, &mut self.next);
                if self.beams.is_empty() {
                    break;
                }
            }
        }
        Ok(())
    }
}
