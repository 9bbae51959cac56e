//! PRM-guided beam search over the SID trie, with every buffer allocated once.
//!
//! This is the one place where the search's semantics are written down; the crate docs,
//! the README, `models/README.md`, the C header and the GPU kernels refer here.
//!
//! # Terms
//! - A **prefix** is a trie node at depth `b` (the codes of SID levels `1..=b`); a **leaf**
//!   (depth L) is an item. A beam, a candidate and a result are each a node.
//! - **cum** of a prefix: the sum of the generator's log-probabilities of its codes, each
//!   given the codes before it (the cumulative log-prob, not the last level's alone).
//! - **unseen(node)**: how many leaves under `node` are not in the request's history
//!   (duplicates in the history count once). A node with `unseen = 0` is *not a valid
//!   prefix* at any level: nothing under it could be recommended.
//! - **key** (the selection key): without the PRM (`prm: false`), `cum`; with the PRM and
//!   `mix = 0` (the paper's setting), the PRM score alone; otherwise
//!   `(1 - mix) * prm_score + mix * cum`. The PRM never sees `cum`; `mix` is the only
//!   place where the verifier and the generator combine.
//!
//! # One request
//! 1. The encoder reads the last H items of the history (H = the bundle's window, or the
//!    session's shorter `set_history_window`); every item of the history, however long,
//!    feeds `unseen`.
//! 2. For each level b = 1..=L, starting from one beam at the root (cum 0):
//!    - the decoder gives every live beam's level-b log-probabilities;
//!    - **pool**: every child of every beam with `unseen > 0`, ranked by `cum` (parent's
//!      cum + the child's log-prob); the top K+ are kept;
//!    - with the PRM, it scores every pool entry (cost: K+ rows, never more);
//!    - **beams** (b < L): the top K' of the pool by key; then, if those beams hold fewer
//!      than N unseen leaves together, further pool entries in key order until they do
//!      (the **full-feed rule**; a level therefore carries up to max(K', N) beams). A beam
//!      carries its node, its cum and its codes; not its PRM score;
//!    - **results** (b = L): the pool holds unseen leaves only; the top N by key are the
//!      recommendations, best first, each with `score` = its key (so: cum without the PRM,
//!      the PRM score with mix 0, the mixed key otherwise).
//! 3. Order everywhere: higher value first, ties to the smaller node id (node ids are
//!    breadth-first, so within a level that is lexicographic SID order); floats compare by
//!    `f32::total_cmp` (`search/topk.rs`).
//!
//! # The full-feed guarantee
//! A request returns `min(N, U)` distinct items, none of them in the history, where U is
//! the number of catalog items not in the history: N whenever N unseen items exist, and
//! all of them otherwise (zero only when the history covers the whole catalog). Why: the
//! root holds U unseen leaves; a pool holds `min(K+, #valid children)` nodes of at least
//! one unseen leaf each, and K+ >= N, so it holds at least `min(N, unseen under the
//! beams)`; the full-feed rule keeps beams holding at least that many; at the last level
//! the pool's entries are distinct unseen leaves. Property tests over random histories
//! check it on every engine (tests/it/search_props.rs, tests/it/gpu.rs).
//!
//! What this changes for ordinary histories, against a search that drops seen items only
//! at the last level: a prefix whose every item is in the history no longer takes a
//! candidate or a beam slot (it could never yield a result), and a level keeps more than
//! K' beams only when the top K' would come up short. Measured on the ML-1M test split:
//! models/README.md ("Search semantics").
//!
//! # Limits
//! `1 <= K' <= 256`, `K' <= K+ <= 4096`, `1 <= N <= K+`, `0 <= mix <= 1`
//! ([`SearchConfig::validate`]); a history holds 1..=[`MAX_HISTORY`] items, each a catalog
//! item. Plain beam search is `prm: false` with `K+ = max(K', N)` ([`SearchConfig::plain`]).
//!
//! # Where this differs from the paper
//! The paper selects beams by the PRM score alone (mix 0); our default [`DEFAULT_MIX`] is
//! what the validation split picked for the shipped models. The paper does not say how the
//! final N are ranked; we rank the last level's pool by the same key as the beams.
//!
//! [`Searcher`] owns the buffers and runs against any [`Scorer`] (a backend session, or a
//! fake one in tests and benches). After construction, `run` does not allocate.

pub mod stages;
pub(crate) mod topk;

use crate::bundle::catalog::{Catalog, MAX_LEVELS};
use crate::error::{err, Result};
pub use stages::StageTimes;
use topk::{by_cum, by_key, select_k, top_k, Scored};

/// Largest K' a session accepts.
/// The lowest log-probability the search uses: one below it counts as `LOGP_FLOOR` on
/// every engine (e^-80 = 1.8e-35). Engines that compute `log(softmax)` underflow to -inf
/// from about -87 where those that compute `(x - max) - ln z` stay finite, so without a
/// common floor one bundle would rank differently, or fail, by engine. A NaN or +inf
/// log-probability still fails the request.
pub const LOGP_FLOOR: f32 = -80.0;

pub const MAX_BEAMS: usize = 256;
/// Largest K+ a session accepts.
pub const MAX_CANDIDATES: usize = 4096;
/// Longest history a request accepts (items beyond the model's window only feed the
/// seen-item filter, but are still checked and cost time: O(n log n) in the history's
/// distinct items, bounded by this).
pub const MAX_HISTORY: usize = 1 << 16;

/// Default `mix`: chosen on the validation split for the default bundle (models/train/results.sh,
/// `models/results/valid.jsonl`, the `ml1m` bundle of commit 4ae8b37): among {0, 0.25, 0.5, 0.75, 0.9}, 0.25 is
/// the best Recall@10 at both K'=4, K+=16 and K'=16, K+=64. The PRM alone (the paper's
/// choice, mix 0) is within 0.004 of it and well above plain beam search. The large bundle's
/// verifier is weaker: validation picks 0.9 there (README, Quality).
pub const DEFAULT_MIX: f32 = 0.25;

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

    /// K' beams returning N items, PRM-guided or plain, with the default pool: K+ = 4 K'
    /// with the PRM (the default's ratio), K' without, never below N; `mix` is
    /// [`DEFAULT_MIX`]. The CLI and the Python binding start from this and override what
    /// their caller sets.
    pub fn with_beams(beams: usize, results: usize, prm: bool) -> SearchConfig {
        let pool = if prm { beams.saturating_mul(4) } else { beams };
        SearchConfig {
            beams,
            candidates: pool.max(results),
            results,
            prm,
            mix: DEFAULT_MIX,
        }
    }

    /// The most beams a level can carry: K', or N when the full-feed rule needs more
    /// (module docs). Backends size their per-beam buffers with it.
    pub fn beam_capacity(&self) -> usize {
        self.beams.max(self.results)
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
    /// Encode one history: `codes` is [H * cols] (row-major, item-major; cols =
    /// [`Manifest::encoder_columns`](crate::bundle::Manifest::encoder_columns): the item's
    /// L codes, then its index if the encoder reads item embeddings), `mask` `[H]` with 1.0
    /// for real items. Keeps the encoder output for the next calls.
    fn encode(&mut self, codes: &[i64], mask: &[f32]) -> Result<()>;
    /// Log-probabilities of the level-`level` (0-based) code for `k` prefixes given as
    /// `prefixes` [k * (L - 1)] (codes of the levels before `level`, zero-padded). Writes
    /// `out[i * C + c]` for i < k, c < C (C = largest codebook).
    fn decode(&mut self, level: usize, prefixes: &[i64], k: usize, out: &mut [f32]) -> Result<()>;
    /// PRM scores of trie nodes: writes `out[i]` for every `nodes[i]`.
    fn score(&mut self, nodes: &[i64], out: &mut [f32]) -> Result<()>;
}

/// A prepared request for a backend that searches by itself
/// ([`Searcher::device_request`]).
#[cfg_attr(not(feature = "gpu"), allow(dead_code))]
pub(crate) struct DeviceRequest<'a> {
    /// The encoder input, as [`Scorer::encode`] takes it.
    pub codes: &'a [i64],
    pub mask: &'a [f32],
    /// The history's distinct leaves, sorted ascending.
    pub seen_leaves: &'a [u32],
    /// Room for N `(leaf node, key)`, best first.
    pub found: &'a mut [(u32, f32)],
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
    enc_cols: usize, // encoder input columns per item: L codes (+ the item, `item_column`)
    history: usize,
    window: usize, // the last items the encoder reads: H, or fewer (`set_history_window`)
    cmax: usize,
    num_items: usize,
    beams: Vec<Beam>,      // [cap] live beams (cap = max(K', N), the full-feed rule)
    next: Vec<Beam>,       // [cap] beams being built
    pool: Vec<Scored>,     // [cap * C] children, then the top-K+ pool
    prefixes: Vec<i64>,    // [cap * (L-1)] decoder input
    log_probs: Vec<f32>,   // [cap * C] decoder output for the current level
    nodes: Vec<i64>,       // [K+] PRM input
    prm_scores: Vec<f32>,  // [K+] PRM output
    hist_codes: Vec<i64>,  // [H * enc_cols] encoder input
    hist_mask: Vec<f32>,   // [H] encoder input
    seen: Vec<u64>,        // bitset over items (deduplicates the history)
    seen_leaves: Vec<u32>, // [min(items, MAX_HISTORY)] the history's leaves, sorted
    results: Vec<Recommendation>, // [N]
    found: Vec<(u32, f32)>, // [N] (leaf, key) from a backend that searches itself
    /// With tracing on: per level, the nodes the search kept (the beams; at the last
    /// level the result leaves). Allocated once by `set_trace`.
    kept: Vec<Vec<u32>>,
    trace: bool,
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
    /// The encoder reads the item's codes only (`model.encoder_input: "codes"`).
    pub fn new(cfg: SearchConfig, catalog: &Catalog, history: usize) -> Result<Searcher> {
        Self::with_item_column(cfg, catalog, history, false)
    }

    /// As [`Searcher::new`]; with `item_column` the encoder input also carries each
    /// history item's index after its codes
    /// ([`Dims::encoder_item`](crate::bundle::Dims::encoder_item)).
    pub fn with_item_column(
        cfg: SearchConfig,
        catalog: &Catalog,
        history: usize,
        item_column: bool,
    ) -> Result<Searcher> {
        cfg.validate()?;
        let levels = catalog.levels();
        let enc_cols = levels + usize::from(item_column);
        let cmax = (0..levels).map(|l| catalog.codebook(l)).max().unwrap_or(1);
        let k = cfg.beam_capacity();
        let items = catalog.num_items();
        // sizes come from the bundle: fallible allocation (crate::alloc)
        use crate::alloc::{filled, with_capacity, zeros};
        Ok(Searcher {
            cfg,
            levels,
            enc_cols,
            history,
            window: history,
            cmax,
            num_items: items,
            beams: with_capacity(k, "the beams")?,
            next: with_capacity(k, "the beams")?,
            pool: with_capacity((k * cmax).max(cfg.candidates), "the candidate pool")?,
            prefixes: zeros(k * (levels - 1).max(1), "the decoder prefixes")?,
            log_probs: zeros(k * cmax, "the log-probabilities")?,
            nodes: zeros(cfg.candidates, "the PRM input")?,
            prm_scores: zeros(cfg.candidates, "the PRM scores")?,
            hist_codes: zeros(history.saturating_mul(enc_cols), "the history codes")?,
            hist_mask: zeros(history, "the history mask")?,
            seen: zeros(items.div_ceil(64), "the seen-item set")?,
            seen_leaves: with_capacity(items.min(MAX_HISTORY), "the seen leaves")?,
            results: with_capacity(cfg.results, "the results")?,
            found: filled(cfg.results, (0, 0.0), "the results")?,
            kept: Vec::new(),
            trace: false,
        })
    }

    /// Let the encoder read only the last `items` of a history (1..=H, the bundle's
    /// window): a shorter window is less encoder work for a long history (the fused CPU
    /// engine skips the padding rows), at the quality the model has for users with that
    /// many items. Every item still feeds the seen-item filter.
    pub fn set_history_window(&mut self, items: usize) -> Result<()> {
        if items == 0 || items > self.history {
            return Err(crate::error::err!(
                Config,
                "history window {items}, expected 1..={} (the bundle's window)",
                self.history
            ));
        }
        self.window = items;
        Ok(())
    }

    /// The last items of a history the encoder reads (the bundle's H unless set).
    pub fn history_window(&self) -> usize {
        self.window
    }

    /// The validated config.
    pub fn config(&self) -> &SearchConfig {
        &self.cfg
    }

    /// Record, per level, which nodes each request keeps ([`Searcher::kept`]): what
    /// `promise eval --per-level` measures (does the true prefix survive level b?). The
    /// buffers are allocated here, once; a traced request allocates nothing either.
    pub fn set_trace(&mut self, on: bool) -> Result<()> {
        if on && self.kept.is_empty() {
            let cap = self.cfg.beam_capacity().max(self.cfg.results);
            for _ in 0..self.levels {
                self.kept
                    .push(crate::alloc::with_capacity(cap, "the per-level trace")?);
            }
        }
        self.trace = on;
        Ok(())
    }

    /// With tracing on ([`Searcher::set_trace`]), the nodes the last request kept at
    /// `level` (0-based): its beams, or at the last level the result leaves. Empty when
    /// tracing is off, for a level the search did not reach, or past the last level.
    pub fn kept(&self, level: usize) -> &[u32] {
        match self.kept.get(level) {
            Some(k) if self.trace => k,
            _ => &[],
        }
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
    /// seen-item filter all of them. Returns `min(N, U)` distinct items not in the history,
    /// U being how many catalog items are not in it (the module docs' full-feed guarantee).
    pub fn run<S: Scorer + ?Sized>(
        &mut self,
        catalog: &Catalog,
        scorer: &mut S,
        history: &[u32],
    ) -> Result<&[Recommendation]> {
        self.prepare(catalog, history)?;
        self.search(catalog, scorer)?;
        Ok(&self.results)
    }

    /// Check `history` and build the request's inputs: the encoder's codes and mask, the
    /// sorted distinct seen leaves.
    pub(crate) fn prepare(&mut self, catalog: &Catalog, history: &[u32]) -> Result<()> {
        Self::check_history(history, self.num_items)?;
        let (l, h, cols) = (self.levels, self.history, self.enc_cols);
        // encoder input: the last H items (or the window's) right-aligned, padding codes
        // (and item) 0 with mask 0
        let n = history.len().min(self.window);
        let recent = &history[history.len() - n..];
        self.hist_codes.fill(0);
        self.hist_mask.fill(0.0);
        for (j, &item) in recent.iter().enumerate() {
            let pos = h - n + j;
            self.hist_mask[pos] = 1.0;
            for lv in 0..l {
                self.hist_codes[pos * cols + lv] = catalog.item_code(item, lv) as i64;
            }
            if cols > l {
                self.hist_codes[pos * cols + l] = i64::from(item);
            }
        }
        // the history's distinct leaves, sorted: `unseen` of any node is two binary searches
        self.seen_leaves.clear();
        for &item in history {
            let (w, bit) = (item as usize / 64, 1u64 << (item % 64));
            if self.seen[w] & bit == 0 {
                self.seen[w] |= bit;
                // at most min(items, MAX_HISTORY) distinct items: within the capacity
                self.seen_leaves.push(catalog.item_leaf(item));
            }
        }
        for &item in history {
            self.seen[item as usize / 64] = 0;
        }
        self.seen_leaves.sort_unstable();
        self.results.clear();
        Ok(())
    }

    /// For a backend that runs the whole search itself (the GPU's device search, one
    /// submission per request): the prepared request's encoder input (as
    /// [`Scorer::encode`] takes it), its sorted distinct seen leaves, and room for N
    /// `(leaf node, key)` results, best first, in the order and with the keys this search
    /// gives. [`Searcher::take_found`] turns them into the results.
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    pub(crate) fn device_request(&mut self) -> DeviceRequest<'_> {
        DeviceRequest {
            codes: &self.hist_codes,
            mask: &self.hist_mask,
            seen_leaves: &self.seen_leaves,
            found: &mut self.found,
        }
    }

    /// The results of a backend's own search: the first `n` entries that
    /// [`Searcher::device_request`] handed out, checked to be leaves of the trie.
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    pub(crate) fn take_found(&mut self, catalog: &Catalog, n: usize) -> Result<&[Recommendation]> {
        if n > self.found.len() {
            return Err(err!(
                Backend,
                "the backend's search returned {n} results, expected at most {}",
                self.found.len()
            ));
        }
        self.results.clear();
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
        Ok(&self.results)
    }

    /// The search over a prepared request, driven through `scorer`.
    fn search<S: Scorer + ?Sized>(&mut self, catalog: &Catalog, scorer: &mut S) -> Result<()> {
        let (l, c) = (self.levels, self.cmax);
        let cfg = self.cfg;
        self.results.clear();
        scorer.encode(&self.hist_codes, &self.hist_mask)?;
        for k in self.kept.iter_mut() {
            k.clear();
        }
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
            // every valid child of every beam: one with an unseen leaf under it
            self.pool.clear();
            for (i, b) in self.beams.iter().enumerate() {
                for child in catalog.children(b.node) {
                    let unseen = unseen(catalog, &self.seen_leaves, child, level + 1);
                    if unseen == 0 {
                        continue;
                    }
                    let code = catalog.node_code(child) as usize;
                    let lp = self.log_probs[i * c + code];
                    if lp.is_nan() || lp == f32::INFINITY {
                        return Err(err!(
                            Backend,
                            "the decoder gave a non-finite log-probability ({lp}) at level {level} for code {code}: the model's weights or the backend are broken"
                        ));
                    }
                    // one range on every engine: tract underflows to -inf where the fused
                    // and GPU engines stay finite
                    let cum = b.cum + lp.max(LOGP_FLOOR);
                    self.pool.push(Scored {
                        node: child,
                        parent: i as u32,
                        cum,
                        key: cum,
                        unseen,
                    });
                }
            }
            if cfg.prm {
                // the K+ best by the generator as a set: the PRM's keys order them below
                select_k(&mut self.pool, cfg.candidates, by_cum);
            } else {
                top_k(&mut self.pool, cfg.candidates, by_cum);
            }
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
            if last {
                top_k(&mut self.pool, cfg.results, by_key);
                if self.trace {
                    self.kept[level].extend(self.pool.iter().map(|s| s.node));
                }
                for s in &self.pool {
                    self.results.push(Recommendation {
                        item: catalog.leaf_item(s.node),
                        score: s.key,
                    });
                }
            } else {
                // the top K', then (full-feed rule) more in key order until they hold N
                top_k(&mut self.pool, cfg.beam_capacity(), by_key);
                let mut keep = cfg.beams.min(self.pool.len());
                let mut held: u64 = self.pool[..keep].iter().map(|s| s.unseen as u64).sum();
                while held < cfg.results as u64 && keep < self.pool.len() {
                    held += self.pool[keep].unseen as u64;
                    keep += 1;
                }
                self.pool.truncate(keep);
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
                if self.trace {
                    self.kept[level].extend(self.beams.iter().map(|b| b.node));
                }
                if self.beams.is_empty() {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// How many leaves under `node` (at `depth`) are not among `seen_leaves` (sorted).
#[inline]
fn unseen(catalog: &Catalog, seen_leaves: &[u32], node: u32, depth: usize) -> u32 {
    let r = catalog.leaf_range(node, depth);
    let lo = seen_leaves.partition_point(|&x| x < r.start);
    let hi = seen_leaves.partition_point(|&x| x < r.end);
    (r.end - r.start) - (hi - lo) as u32
}
