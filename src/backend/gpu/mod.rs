//! The GPU backend (feature `gpu`): our own WGSL kernels ([`kernels.wgsl`](kernels.wgsl),
//! the search in [`search.wgsl`](search.wgsl)) run through wgpu, on any adapter wgpu finds
//! (Vulkan, Metal, DX12).
//!
//! Load: the weights of the three graphs go from the mapped ONNX initializers straight into
//! two GPU buffers (`wts`: every rank >= 2 weight in the bundle's own format, f32 / f16 /
//! int8; `aux`: norm gains, biases and int8 scales as f32) through buffers mapped at
//! creation, so the host never holds a second copy; the catalog's trie goes to a third
//! (`trie`: first child and code per node, 37 KiB for ML-1M), and a table naming where
//! every weight of every layer is to a fourth (`desc`, `layout.rs`). One shader module is
//! specialised for the model (its dimensions and that table's layout, as constants), the
//! weight format and the adapter's SHADER_F16 / SUBGROUP support, and its 6 pipelines are
//! built once. A model too wide for the adapter's workgroup memory is refused here
//! (`limits`, naming d_model).
//!
//! Stage kernels: one workgroup runs a whole stage for one token, its activations in
//! workgroup memory: `enc_embed` and `enc_layer` (one workgroup per history row; the
//! leading padding rows are skipped), `dec_step` (one workgroup per beam: the new token
//! through every decoder layer with the beam's key/value cache on the device, the head,
//! the log-softmax and the beam's trie expansion), `prm_score` (one workgroup per
//! candidate: the whole PRM). Attention tiles its keys (any history length), the FFN
//! chunks its hidden units and the head loops over the codes (any codebook width).
//!
//! Session: one activation arena, one id buffer, the parameter blocks of every dispatch
//! and their bind groups are built once for the config; a request only writes its inputs
//! (`write_buffer`: the history's codes, mask and first real row, its sorted seen leaves,
//! the root beam) and submits.
//!
//! Per request (default, `LoadOptions::gpu_search`): one submission of
//! `1 + encoder layers + 4 L` dispatches (15 for the default bundle, 12 without the PRM):
//! the encoder, then per level `dec_step`, `select_candidates` (top-K+, a radix select
//! linear in the level's width), `prm_score` and `select_beams` (top-K', or top-N at the
//! last level). One read-back returns `8 + 8 N` bytes (result count, error flag, N leaf
//! nodes and keys). The search kernels follow `src/search/mod.rs` exactly (same order and
//! tie-break); the CPU turns the leaves into items. With `search: false` the
//! [`Searcher`](crate::Searcher) drives instead: per level one submission for the decoder
//! (over the whole prefixes) and one for the PRM, reading back `k * C * 4` bytes of
//! log-probs and `m * 4` bytes of PRM scores. Either way the memory's cross-attention keys
//! and values are computed once per request, not once per level as in the ONNX graphs.
//!
//! Rooms: `device.rs` (adapter, limits, pipelines), `upload.rs` (weights and trie into
//! buffers), `layout.rs` (the model's constants and weight table), `plan.rs` (every
//! dispatch of a session), `session.rs` (buffers, the request path, read-back),
//! `shader.rs` + `kernels.wgsl` + `search.wgsl` (the kernels); this file holds the options
//! and the loaded model.

mod device;
mod layout;
mod plan;
mod session;
mod shader;
mod upload;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytemuck::{Pod, Zeroable};

use crate::bundle::arch::Weight;
use crate::bundle::onnx::{ElemType, Initializer};
use crate::bundle::{Architecture, Bundle, Catalog, Manifest, Numeric, PrmGraph, PrmQuery};
use crate::error::{err, Result};
use crate::search::{Scorer, SearchConfig};

use device::*;
use layout::*;
use plan::*;
pub use session::GpuSession;
pub use shader::Variant;
use upload::*;

/// Which optional adapter features the GPU backend may use (both default to on; switching
/// one off forces the portable fallback, e.g. to test it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuOptions {
    /// Read f16 weights as `f16` when the adapter has SHADER_F16 (else unpack from `u32`).
    pub shader_f16: bool,
    /// Reduce with subgroup operations when the adapter has SUBGROUP (else shared memory).
    pub subgroups: bool,
    /// Accept a software adapter (llvmpipe/lavapipe, WARP). `Device::Gpu` does;
    /// `Device::Auto` does not, since the CPU backend is faster than a software GPU.
    pub allow_software: bool,
    /// Run the whole search on the GPU (trie masking, top-K+, top-K', beam update): one
    /// submission and one read-back of the N results per request. Off: the search runs on
    /// the CPU and each level is two submissions with two read-backs (log-probs, scores).
    pub search: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            shader_f16: true,
            subgroups: true,
            allow_software: true,
            search: true,
        }
    }
}

/// Longest wait for one submission before the device is reported lost.
const GPU_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
const PARAMS_STRIDE: u64 = 256;
const WG: u32 = 64;

/// Distinct history items a session's seen-leaf list holds on the device: as many as the
/// search's own list ([`crate::search::MAX_HISTORY`], or every item of a smaller catalog).
fn seen_capacity(num_items: usize) -> usize {
    num_items.min(crate::search::MAX_HISTORY)
}
/// Everything a session needs from the model, shared by all its sessions.
struct Shared {
    gpu: Gpu,
    manifest: Manifest,
    geometry: Geometry,
    model_bg: wgpu::BindGroup,
    session_layout: wgpu::BindGroupLayout,
    pipelines: Pipelines,
    trie: TrieLayout,
    search: bool,
    _wts: wgpu::Buffer,
    _aux: wgpu::Buffer,
    _trie: wgpu::Buffer,
    _desc: wgpu::Buffer,
}

/// A bundle loaded onto the GPU. `Send + Sync`; sessions share it.
pub struct GpuModel {
    shared: Arc<Shared>,
}

impl GpuModel {
    /// Load with the default [`GpuOptions`].
    #[cfg(test)]
    pub fn load(bundle: &Bundle) -> Result<GpuModel> {
        GpuModel::load_with(bundle, &GpuOptions::default())
    }

    pub fn load_with(bundle: &Bundle, opts: &GpuOptions) -> Result<GpuModel> {
        let m = bundle.manifest().clone();
        let arch = bundle.architecture();
        let geometry = Geometry::new(&m, arch);
        let gpu = open(m.numeric, opts)?;
        geometry.check_fits(
            &gpu.info.name,
            gpu.limits.max_compute_workgroup_storage_size as u64,
        )?;
        let (wts, aux, weights) = upload(&gpu, bundle)?;
        // every weight resolved now, so a bundle that lacks one fails at load
        let table = Table::build(&weights, arch)?;
        let (trie_buf, trie) = upload_trie(&gpu, bundle.catalog())?;
        let desc = upload_words(&gpu, "weight descriptors", &table.words)?;
        let device = &gpu.device;
        let (model_layout, session_layout) = layouts(device);
        let model_bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("model"),
            layout: &model_layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wts.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: aux.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: trie_buf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: desc.as_entire_binding(),
                },
            ],
        });
        let source = shader::source(gpu.variant, &geometry.wgsl(&table));
        let pipelines = build_pipelines(&gpu, &source, &model_layout, &session_layout)?;
        let shared = Shared {
            gpu,
            manifest: m,
            geometry,
            model_bg,
            session_layout,
            pipelines,
            trie,
            search: opts.search,
            _wts: wts,
            _aux: aux,
            _trie: trie_buf,
            _desc: desc,
        };
        Ok(GpuModel {
            shared: Arc::new(shared),
        })
    }

    /// The adapter this model runs on, e.g. "NVIDIA H200 (Vulkan)".
    pub fn adapter(&self) -> String {
        let i = &self.shared.gpu.info;
        format!("{} ({:?})", i.name, i.backend)
    }

    /// The shader specialisation in use (weight format, SHADER_F16, SUBGROUP).
    pub fn variant(&self) -> Variant {
        self.shared.gpu.variant
    }

    /// What computes this model's requests.
    pub fn info(&self) -> crate::BackendInfo {
        let v = self.variant();
        crate::BackendInfo::Gpu {
            adapter: self.adapter(),
            software: self.shared.gpu.info.device_type == wgpu::DeviceType::Cpu,
            native_f16: v.native_f16,
            subgroups: v.subgroups,
            device_search: self.shared.search,
        }
    }

    pub fn session(&self, cfg: &SearchConfig) -> Result<GpuSession> {
        GpuSession::new(self.shared.clone(), cfg)
    }
}

impl std::fmt::Debug for GpuModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuModel")
            .field("adapter", &self.adapter())
            .field("variant", &self.variant())
            .finish()
    }
}
