//! One meaning per bundle, checked where it can differ: tract runs the bundle's ONNX
//! graphs as written, while the fused and GPU engines run the architecture the manifest
//! names with the graphs' weights and read no other node. The node checks at open
//! (`bundle::nodes`) pin every attribute, axis, index and constant the exporter writes, but
//! a graph can still be rewired into another valid model (an axis moved to another
//! dimension in range, a mask applied to queries instead of keys). So a tract load runs the
//! same requests through both readings of the bundle, every decoder and PRM output
//! compared (the encoder's memory reaches both through the decoders), and refuses the load
//! when they differ: what opens on tract is the model the other engines run (the
//! `differential` fuzz target found the rewirings).
//!
//! The requests: a short history (the mask pads most of the window) and a full one, each
//! searched with the PRM (when the bundle has one) by a [`Searcher`] whose scorer is the
//! pair, so every level and every candidate the search reaches is compared.

use std::sync::Arc;

use super::fused::FusedModel;
use super::tract::TractModel;
use crate::bundle::{Bundle, Manifest};
use crate::error::{err, Result};
use crate::search::{Scorer, SearchConfig, Searcher, LOGP_FLOOR};

/// How far apart the two readings may be, relative to `max(1, |fused|)`: float sums in
/// another order, and int8 weights dequantised by tract's graph or once at load by the
/// fused engine. Every shipped bundle and the test bundles load on tract within it
/// (`one_reading::every_shipped_bundle_means_one_thing_on_tract`); a rewired graph is off by
/// whole units (`one_reading::a_rewired_graph_that_tract_runs_is_refused_on_tract`).
const TOLERANCE: f32 = 2e-3;

/// Run the probe requests through `tract` and `fused` side by side.
pub(super) fn check(bundle: &Bundle, tract: &TractModel, fused: &Arc<FusedModel>) -> Result<()> {
    let m = bundle.manifest();
    let catalog = bundle.catalog();
    let items = catalog.num_items();
    let cfg = SearchConfig::with_beams(4, 8.min(items), true);
    let mut pair = Pair {
        m,
        tract: tract.session(&cfg)?,
        fused: fused.session(&cfg)?,
        scratch: Vec::new(),
        call: 0,
    };
    let mut searcher = Searcher::with_item_column(cfg, catalog, m.history, m.dims.encoder_item)?;
    let full = m.history.min(items.saturating_sub(1)).max(1);
    for n in [3.min(full), full] {
        let history = crate::alloc::with_capacity::<u32>(n, "the probe history").map(|mut h| {
            h.extend((0..n as u32).map(|i| (i * 7 + 3) % items as u32));
            h
        })?;
        searcher
            .run(catalog, &mut pair, &history)
            .map_err(|e| match e.code() {
                crate::ErrorCode::Graph => e,
                _ => err!(
                    Graph,
                    "the load-time probe of the graphs against the architecture failed: {}",
                    e.message()
                ),
            })?;
    }
    Ok(())
}

/// The two sessions behind one [`Scorer`]: tract's outputs go to the search, the fused
/// engine's are computed beside them and compared.
struct Pair<'m> {
    m: &'m Manifest,
    tract: super::tract::TractSession,
    fused: super::fused::FusedSession,
    scratch: Vec<f32>,
    call: usize,
}

impl Pair<'_> {
    /// Compare `got` (tract) against `want` (fused), over the first `width` of each row of
    /// `stride` values.
    fn compare(
        &self,
        what: &str,
        got: &[f32],
        want: &[f32],
        stride: usize,
        width: usize,
    ) -> Result<()> {
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            if i % stride >= width {
                continue;
            }
            let (g, w) = (g.max(LOGP_FLOOR), w.max(LOGP_FLOOR));
            let close = (g - w).abs() <= TOLERANCE * w.abs().max(1.0);
            if !close {
                return Err(err!(
                    Graph,
                    "the bundle's ONNX graphs compute another model than its architecture: \
                     probe call {}, {what} output {} (row {}) is {g} through the graphs (tract) \
                     and {w} through the architecture (the fused engine); the graphs must be \
                     the exporter's",
                    self.call,
                    i % stride,
                    i / stride
                ));
            }
        }
        Ok(())
    }

    fn scratch(&mut self, n: usize) -> Result<Vec<f32>> {
        let mut v = std::mem::take(&mut self.scratch);
        v.clear();
        v.try_reserve(n)
            .map_err(|_| err!(Capacity, "the probe's comparison buffer ({n} values)"))?;
        v.resize(n, 0.0);
        Ok(v)
    }
}

impl Scorer for Pair<'_> {
    fn encode(&mut self, codes: &[i64], mask: &[f32]) -> Result<()> {
        self.call += 1;
        self.tract.encode(codes, mask)?;
        self.fused.encode(codes, mask)
    }

    fn decode(&mut self, level: usize, prefixes: &[i64], k: usize, out: &mut [f32]) -> Result<()> {
        self.call += 1;
        self.tract.decode(level, prefixes, k, out)?;
        let c = self.m.max_codebook();
        let mut want = self.scratch(out.len())?;
        let r = self
            .fused
            .decode(level, prefixes, k, &mut want)
            .and_then(|()| {
                let what = format!("decoder level {level}");
                self.compare(
                    &what,
                    &out[..k * c],
                    &want[..k * c],
                    c,
                    self.m.codebook[level],
                )
            });
        self.scratch = want;
        r
    }

    fn score(&mut self, nodes: &[i64], out: &mut [f32]) -> Result<()> {
        self.call += 1;
        self.tract.score(nodes, out)?;
        let mut want = self.scratch(out.len())?;
        let n = nodes.len();
        let r = self
            .fused
            .score(nodes, &mut want)
            .and_then(|()| self.compare("PRM", &out[..n], &want[..n], n.max(1), n));
        self.scratch = want;
        r
    }
}
