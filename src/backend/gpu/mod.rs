//! The GPU backend (feature `gpu`): work in progress. Until its kernels land, loading a
//! model on the GPU answers `BackendUnavailable` with that reason.

use crate::bundle::Bundle;
use crate::error::{err, Result};
use crate::search::{Scorer, SearchConfig};

/// Placeholder for the wgpu model.
pub struct GpuModel {
    _never: std::convert::Infallible,
}

/// Placeholder for the wgpu session.
pub struct GpuSession {
    _never: std::convert::Infallible,
}

impl GpuModel {
    pub fn load(_bundle: &Bundle) -> Result<GpuModel> {
        Err(err!(
            BackendUnavailable,
            "the gpu backend's kernels are not implemented yet in this build"
        ))
    }
    pub fn session(&self, _cfg: &SearchConfig) -> Result<GpuSession> {
        match self._never {}
    }
}

impl Scorer for GpuSession {
    fn encode(&mut self, _: &[i64], _: &[f32]) -> Result<()> {
        match self._never {}
    }
    fn decode(&mut self, _: usize, _: &[i64], _: usize, _: &mut [f32]) -> Result<()> {
        match self._never {}
    }
    fn score(&mut self, _: &[i64], _: &mut [f32]) -> Result<()> {
        match self._never {}
    }
}
