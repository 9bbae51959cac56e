//! The CPU backend, with two engines over the same bundle ([`CpuEngine`]):
//! - `fused` (default, `fused/` + `kernels.rs`): the architecture of
//!   models/train/promise_train/model.py written out with our own kernels, weights read by name from
//!   the graphs' initializers. It computes only what the search needs (the memory's
//!   keys/values once per request, only the live beams' tokens up to the current level,
//!   only the live candidates) and allocates nothing per request.
//! - `tract` (`tract.rs`): the bundle's ONNX graphs as exported, through tract-onnx. It
//!   runs any graph with the bundle's inputs and outputs, and is the second opinion the
//!   tests hold the fused engine to.
//!
//! Why two: on our tiny layers a graph runtime spends most of a request in per-operator
//! overhead and in work the graphs cannot skip (tract and onnxruntime alike, README
//! "Results"); the fused engine is what makes the CPU path several times faster.

pub(crate) mod fused;
pub mod kernels;
#[cfg(feature = "tract")]
mod one_meaning;
#[cfg(feature = "tract")]
mod tract;

use std::sync::Arc;

use crate::backend::CpuEngine;
use crate::bundle::Bundle;
use crate::error::Result;
use crate::search::{Scorer, SearchConfig};

pub use kernels::Isa;

/// A model loaded for one engine.
#[derive(Debug)]
pub enum CpuModel {
    Fused(Arc<fused::FusedModel>),
    #[cfg(feature = "tract")]
    Tract(Box<tract::TractModel>),
}

/// A session of either engine.
#[derive(Debug)]
pub enum CpuSession {
    Fused(fused::FusedSession),
    #[cfg(feature = "tract")]
    Tract(tract::TractSession),
}

impl CpuModel {
    pub fn load(bundle: &Bundle, engine: CpuEngine) -> Result<CpuModel> {
        CpuModel::load_with(bundle, engine, false)
    }

    /// [`CpuModel::load`]; the fused engine reads its catalog-sized tables in place when
    /// `tables_in_place` (tract holds its own copy of every weight).
    pub fn load_with(
        bundle: &Bundle,
        engine: CpuEngine,
        tables_in_place: bool,
    ) -> Result<CpuModel> {
        Ok(match engine {
            CpuEngine::Fused => CpuModel::Fused(Arc::new(fused::FusedModel::load_with(
                bundle,
                Isa::detect(),
                tables_in_place,
            )?)),
            #[cfg(feature = "tract")]
            CpuEngine::Tract => {
                let t = tract::TractModel::load(bundle)?;
                let f = Arc::new(fused::FusedModel::load(bundle, Isa::detect())?);
                one_meaning::check(bundle, &t, &f)?;
                CpuModel::Tract(Box::new(t))
            }
            #[cfg(not(feature = "tract"))]
            CpuEngine::Tract => {
                return Err(crate::error::err!(
                    BackendUnavailable,
                    "the tract engine is not compiled in (enable the \"tract\" feature)"
                ))
            }
        })
    }

    pub fn session(&self, cfg: &SearchConfig) -> Result<CpuSession> {
        Ok(match self {
            CpuModel::Fused(m) => CpuSession::Fused(m.session(cfg)?),
            #[cfg(feature = "tract")]
            CpuModel::Tract(m) => CpuSession::Tract(m.session(cfg)?),
        })
    }

    /// The engine, and for the fused one the instruction set of its matmuls.
    pub fn info(&self) -> crate::BackendInfo {
        match self {
            CpuModel::Fused(m) => crate::BackendInfo::Cpu {
                engine: CpuEngine::Fused,
                isa: Some(m.isa().name()),
            },
            #[cfg(feature = "tract")]
            CpuModel::Tract(_) => crate::BackendInfo::Cpu {
                engine: CpuEngine::Tract,
                isa: None,
            },
        }
    }
}

impl Scorer for CpuSession {
    fn encode(&mut self, codes: &[i64], mask: &[f32]) -> Result<()> {
        match self {
            CpuSession::Fused(s) => s.encode(codes, mask),
            #[cfg(feature = "tract")]
            CpuSession::Tract(s) => s.encode(codes, mask),
        }
    }
    fn decode(&mut self, level: usize, prefixes: &[i64], k: usize, out: &mut [f32]) -> Result<()> {
        match self {
            CpuSession::Fused(s) => s.decode(level, prefixes, k, out),
            #[cfg(feature = "tract")]
            CpuSession::Tract(s) => s.decode(level, prefixes, k, out),
        }
    }
    fn score(&mut self, nodes: &[i64], out: &mut [f32]) -> Result<()> {
        match self {
            CpuSession::Fused(s) => s.score(nodes, out),
            #[cfg(feature = "tract")]
            CpuSession::Tract(s) => s.score(nodes, out),
        }
    }
}
