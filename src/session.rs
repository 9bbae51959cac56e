//! [`Model`] (load once, immutable, `Send + Sync`) and [`Session`] (per thread, owns every
//! mutable buffer of the search and the backend).

use std::sync::Arc;

use crate::backend::Device;
use crate::bundle::Bundle;
#[allow(unused_imports)]
use crate::error::{err, Result};
use crate::search::{Recommendation, Scorer, SearchConfig, Searcher};

enum BackendModel {
    /// Uninhabited: keeps the enum non-empty when no backend is compiled in.
    #[allow(dead_code)]
    Never(std::convert::Infallible),
    #[cfg(feature = "cpu")]
    Cpu(crate::backend::cpu::CpuModel),
    #[cfg(feature = "gpu")]
    Gpu(crate::backend::gpu::GpuModel),
}

enum BackendSession {
    /// Uninhabited: keeps the enum non-empty when no backend is compiled in.
    #[allow(dead_code)]
    Never(std::convert::Infallible),
    #[cfg(feature = "cpu")]
    Cpu(crate::backend::cpu::CpuSession),
    #[cfg(feature = "gpu")]
    Gpu(crate::backend::gpu::GpuSession),
}

impl BackendSession {
    fn scorer(&mut self) -> &mut dyn Scorer {
        match self {
            BackendSession::Never(n) => match *n {},
            #[cfg(feature = "cpu")]
            BackendSession::Cpu(s) => s,
            #[cfg(feature = "gpu")]
            BackendSession::Gpu(s) => s,
        }
    }
}

struct ModelInner {
    bundle: Bundle,
    device: Device,
    backend: BackendModel,
}

/// A bundle loaded onto a device. Immutable and cheap to clone; share it across threads
/// and give each thread its own [`Session`].
#[derive(Clone)]
pub struct Model {
    inner: Arc<ModelInner>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("bundle", &self.inner.bundle)
            .field("device", &self.inner.device)
            .finish()
    }
}

#[cfg(feature = "cpu")]
fn load_cpu(bundle: &Bundle) -> Result<(Device, BackendModel)> {
    Ok((
        Device::Cpu,
        BackendModel::Cpu(crate::backend::cpu::CpuModel::load(bundle)?),
    ))
}
#[cfg(not(feature = "cpu"))]
fn load_cpu(_bundle: &Bundle) -> Result<(Device, BackendModel)> {
    Err(err!(
        BackendUnavailable,
        "the cpu backend is not compiled in (enable the \"cpu\" feature)"
    ))
}
#[cfg(feature = "gpu")]
fn load_gpu(bundle: &Bundle) -> Result<(Device, BackendModel)> {
    Ok((
        Device::Gpu,
        BackendModel::Gpu(crate::backend::gpu::GpuModel::load(bundle)?),
    ))
}
#[cfg(not(feature = "gpu"))]
fn load_gpu(_bundle: &Bundle) -> Result<(Device, BackendModel)> {
    Err(err!(
        BackendUnavailable,
        "the gpu backend is not compiled in (enable the \"gpu\" feature)"
    ))
}

impl Model {
    /// Load `bundle` onto `device`. `Device::Auto` takes the GPU when an adapter qualifies
    /// and falls back to the CPU otherwise.
    pub fn load(bundle: &Bundle, device: Device) -> Result<Model> {
        let (device, backend) = match device {
            Device::Cpu => load_cpu(bundle)?,
            Device::Gpu => load_gpu(bundle)?,
            Device::Auto => match load_gpu(bundle) {
                Ok(x) => x,
                Err(_) => load_cpu(bundle)?,
            },
        };
        Ok(Model {
            inner: Arc::new(ModelInner {
                bundle: bundle.clone(),
                device,
                backend,
            }),
        })
    }

    /// The device this model actually runs on (never `Auto`).
    pub fn device(&self) -> Device {
        self.inner.device
    }

    /// The bundle this model was loaded from.
    pub fn bundle(&self) -> &Bundle {
        &self.inner.bundle
    }

    /// Validate `config` and allocate a session with every buffer it needs.
    pub fn session(&self, config: SearchConfig) -> Result<Session> {
        config.validate()?;
        let bundle = &self.inner.bundle;
        let searcher = Searcher::new(config, bundle.catalog(), bundle.manifest().history)?;
        let backend = match &self.inner.backend {
            BackendModel::Never(n) => match *n {},
            #[cfg(feature = "cpu")]
            BackendModel::Cpu(m) => BackendSession::Cpu(m.session(&config)?),
            #[cfg(feature = "gpu")]
            BackendModel::Gpu(m) => BackendSession::Gpu(m.session(&config)?),
        };
        Ok(Session {
            model: self.clone(),
            searcher,
            backend,
        })
    }
}

/// Per-thread request state. `recommend` reuses every buffer; the returned slice is valid
/// until the next call.
pub struct Session {
    model: Model,
    searcher: Searcher,
    backend: BackendSession,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("config", self.searcher.config())
            .finish()
    }
}

impl Session {
    /// Recommend the top-N next items for `history` (item ids, oldest first). The model
    /// reads the last `manifest.history` items; every item of `history` is excluded from
    /// the results.
    pub fn recommend(&mut self, history: &[u32]) -> Result<&[Recommendation]> {
        let catalog = self.model.inner.bundle.catalog();
        self.searcher.run(catalog, self.backend.scorer(), history)
    }

    /// The session's validated search config.
    pub fn config(&self) -> &SearchConfig {
        self.searcher.config()
    }

    /// The model this session runs.
    pub fn model(&self) -> &Model {
        &self.model
    }
}
