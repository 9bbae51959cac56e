//! The GPU backend (feature `gpu`): our own WGSL kernels ([`kernels.wgsl`](kernels.wgsl))
//! run through wgpu, on any adapter wgpu finds (Vulkan, Metal, DX12).
//!
//! Load: the weights of the three graphs go from the mapped ONNX initializers straight into
//! two GPU buffers (`wts`: every rank >= 2 weight in the bundle's own format, f32 / f16 /
//! int8; `aux`: norm gains, biases and int8 scales as f32) through buffers mapped at
//! creation, so the host never holds a second copy; the catalog's trie goes to a third
//! (`trie`: first child, code and item per node, 53 KiB for ML-1M). One shader module is
//! specialised for the format and for the adapter's SHADER_F16 / SUBGROUP support, and its
//! 9 pipelines are built once.
//!
//! Session: one activation arena, one id buffer, the parameter blocks of every dispatch
//! (encoder, the decoder at each level, the PRM, the search kernels) and their bind groups
//! are built once for the config; a request only writes its inputs (`write_buffer`: the
//! history's codes and mask, its sorted seen leaves, the root beam) and submits.
//!
//! Per request (default, [`GpuOptions::search`]): one submission. The encoder, then per
//! level the decoder (+ log-softmax), `expand` (trie masking, unseen counts),
//! `select_candidates` (top-K+, a radix select linear in the level's width),
//! the PRM and `select_beams` (top-K', or top-N at the last level) run as one compute
//! pass, and one read-back returns `8 + 8 N` bytes (result count, error flag, N leaf nodes
//! and keys). The search kernels follow `src/search/mod.rs` exactly (same order and
//! tie-break); the CPU turns the leaves into items. With `search: false` the
//! [`Searcher`](crate::Searcher) drives instead: per level one submission for the decoder
//! and one for the PRM, reading back `k * C * 4` bytes of log-probs and `m * 4` bytes of
//! PRM scores. Either way the memory's cross-attention keys and values are computed once
//! per request, not once per level as in the ONNX graphs.

mod shader;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytemuck::{Pod, Zeroable};

use crate::bundle::arch::Weight;
use crate::bundle::onnx::{ElemType, Initializer};
use crate::bundle::{Architecture, Bundle, Catalog, Manifest, Numeric};
use crate::error::{err, Result};
use crate::search::{Scorer, SearchConfig};

pub use shader::Variant;

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

const NONE: u32 = u32::MAX;
/// Longest wait for one submission before the device is reported lost.
const GPU_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
const PARAMS_STRIDE: u64 = 256;
const WG: u32 = 64;
/// Workgroups a grid-stride search kernel dispatches at most (the WebGPU default limit
/// per dimension).
const MAX_GROUPS: u32 = 65_535;

/// Distinct history items a session's seen-leaf list holds on the device: as many as the
/// search's own list ([`crate::search::MAX_HISTORY`], or every item of a smaller catalog).
fn seen_capacity(num_items: usize) -> usize {
    num_items.min(crate::search::MAX_HISTORY)
}
/// Largest head_dim the attention kernel holds in registers.
pub const MAX_HEAD_DIM: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Params {
    rows: u32,
    live: u32,
    live_mul: u32,
    n: u32,
    k: u32,
    a: u32,
    lda: u32,
    o: u32,
    ldo: u32,
    b: u32,
    c: u32,
    ldk: u32,
    flags: u32,
    w0: u32,
    s0: u32,
    ss0: u32,
    w1: u32,
    s1: u32,
    ss1: u32,
    w2: u32,
    s2: u32,
    ss2: u32,
    x0: u32,
    g0: u32,
    i0: u32,
    heads: u32,
    dh: u32,
    tq: u32,
    skv: u32,
    kvrow: u32,
    mask: u32,
    causal: u32,
    cb: u32,
    scale: f32,
    eps: f32,
    // the search kernels (see kernels.wgsl)
    i1: u32,
    i2: u32,
    count: u32,
    keep: u32,
    err: u32,
    seen: u32,
    t_code: u32,
    level: u32,
    width: u32,
    prm: u32,
    mix: f32,
    u_in: u32,
    u_out: u32,
    descend: u32,
    need: u32,
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

const RELU: u32 = 1;
const ACCUMULATE: u32 = 2;
const BIAS: u32 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    EmbedEnc,
    EmbedDec,
    EmbedPrm,
    Matmul,
    Attention,
    LogSoftmax,
    Expand,
    SelectCandidates,
    SelectBeams,
}

impl Kernel {
    /// Every kernel, in the order of `Kernel as usize` (the index into the pipelines).
    const ALL: [Kernel; 9] = [
        Kernel::EmbedEnc,
        Kernel::EmbedDec,
        Kernel::EmbedPrm,
        Kernel::Matmul,
        Kernel::Attention,
        Kernel::LogSoftmax,
        Kernel::Expand,
        Kernel::SelectCandidates,
        Kernel::SelectBeams,
    ];
    /// Its entry point in kernels.wgsl.
    fn entry(self) -> &'static str {
        match self {
            Kernel::EmbedEnc => "embed_enc",
            Kernel::EmbedDec => "embed_dec",
            Kernel::EmbedPrm => "embed_prm",
            Kernel::Matmul => "matmul",
            Kernel::Attention => "attention",
            Kernel::LogSoftmax => "log_softmax",
            Kernel::Expand => "expand",
            Kernel::SelectCandidates => "select_candidates",
            Kernel::SelectBeams => "select_beams",
        }
    }
}

/// One compute pipeline per [`Kernel`], indexed by `Kernel as usize`.
type Pipelines = Vec<wgpu::ComputePipeline>;

/// A weight in the arenas: first element, and where its scales are (stride 0 and the
/// constant 1.0 at aux[0] for unscaled formats).
#[derive(Clone, Copy, Debug)]
struct W {
    off: u32,
    scale: u32,
    stride: u32,
}

/// A rank-1 f32 tensor in `aux`.
#[derive(Clone, Copy, Debug)]
struct V(u32);

/// The device, its queue and what went wrong on it.
struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    variant: Variant,
    limits: wgpu::Limits,
    /// Set by the device-lost callback.
    lost: Arc<Mutex<Option<String>>>,
    /// Set by the uncaptured-error handler (validation, out of memory).
    error: Arc<Mutex<Option<String>>>,
}

impl Gpu {
    fn check(&self) -> Result<()> {
        if let Some(why) = self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(err!(DeviceLost, "the GPU device was lost: {why}"));
        }
        if let Some(e) = self.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(err!(Backend, "the GPU reported an error: {e}"));
        }
        Ok(())
    }
}

/// Pick an adapter: discrete > integrated > virtual > software, as allowed by `opts`.
fn open(numeric: Numeric, opts: &GpuOptions) -> Result<Gpu> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
    let rank = |t: wgpu::DeviceType| match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let found: Vec<String> = adapters
        .iter()
        .map(|a| {
            let i = a.get_info();
            format!("{} ({:?}, {:?})", i.name, i.device_type, i.backend)
        })
        .collect();
    let adapter = adapters
        .into_iter()
        .filter(|a| opts.allow_software || a.get_info().device_type != wgpu::DeviceType::Cpu)
        .min_by_key(|a| rank(a.get_info().device_type))
        .ok_or_else(|| {
            if found.is_empty() {
                err!(
                    BackendUnavailable,
                    "no GPU adapter found (Vulkan, Metal or DX12); on Linux install a Vulkan driver, e.g. Debian's mesa-vulkan-drivers"
                )
            } else {
                err!(
                    BackendUnavailable,
                    "no hardware GPU adapter found, only software ones: {}",
                    found.join(", ")
                )
            }
        })?;
    let info = adapter.get_info();
    let have = adapter.features();
    let native_f16 =
        opts.shader_f16 && numeric == Numeric::F16 && have.contains(wgpu::Features::SHADER_F16);
    let subgroups = opts.subgroups && have.contains(wgpu::Features::SUBGROUP);
    let mut features = wgpu::Features::empty();
    if native_f16 {
        features |= wgpu::Features::SHADER_F16;
    }
    if subgroups {
        features |= wgpu::Features::SUBGROUP;
    }
    let limits = adapter.limits();
    check_limit(
        "max_bind_groups",
        2,
        limits.max_bind_groups as u64,
        &info.name,
    )?;
    check_limit(
        "max_storage_buffers_per_shader_stage",
        3,
        limits.max_storage_buffers_per_shader_stage as u64,
        &info.name,
    )?;
    check_limit(
        "max_compute_workgroup_size_x",
        WG as u64,
        limits.max_compute_workgroup_size_x as u64,
        &info.name,
    )?;
    check_limit(
        "max_compute_invocations_per_workgroup",
        WG as u64,
        limits.max_compute_invocations_per_workgroup as u64,
        &info.name,
    )?;
    check_limit(
        "max_dynamic_uniform_buffers_per_pipeline_layout",
        1,
        limits.max_dynamic_uniform_buffers_per_pipeline_layout as u64,
        &info.name,
    )?;
    if limits.min_uniform_buffer_offset_alignment as u64 > PARAMS_STRIDE {
        return Err(err!(
            Limits,
            "GPU {}: min_uniform_buffer_offset_alignment is {}, the kernels need at most {PARAMS_STRIDE}",
            info.name,
            limits.min_uniform_buffer_offset_alignment
        ));
    }
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("promise-rt"),
        required_features: features,
        required_limits: limits.clone(),
        ..Default::default()
    }))
    .map_err(|e| {
        err!(
            BackendUnavailable,
            "GPU {} refused a device: {e}",
            info.name
        )
    })?;
    let lost = Arc::new(Mutex::new(None));
    let l2 = lost.clone();
    device.set_device_lost_callback(move |reason, msg| {
        *l2.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{reason:?}: {msg}"));
    });
    let error = Arc::new(Mutex::new(None));
    let e2 = error.clone();
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
        *e2.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }));
    Ok(Gpu {
        device,
        queue,
        info,
        variant: Variant {
            numeric,
            native_f16,
            subgroups,
        },
        limits,
        lost,
        error,
    })
}

fn map_err(e: impl std::fmt::Display) -> crate::Error {
    err!(Backend, "a GPU buffer could not be mapped: {e}")
}

fn check_limit(name: &str, need: u64, have: u64, gpu: &str) -> Result<()> {
    if have < need {
        return Err(err!(
            Limits,
            "GPU {gpu}: {name} is {have}, the model needs {need}"
        ));
    }
    Ok(())
}

fn check_buffer(gpu: &Gpu, what: &str, bytes: u64) -> Result<()> {
    let l = &gpu.limits;
    let max = l.max_storage_buffer_binding_size.min(l.max_buffer_size);
    if bytes > max {
        return Err(err!(
            Limits,
            "GPU {}: the {what} needs a {bytes}-byte storage buffer, the adapter allows {max}",
            gpu.info.name
        ));
    }
    Ok(())
}

/// Where every weight went, by its name in the bundle's graphs.
struct Weights {
    w: HashMap<String, (W, Vec<usize>)>,
    v: HashMap<String, (V, usize)>,
}

impl Weights {
    /// Where the matrix `w` went, checked against the architecture's shape.
    fn w(&self, w: &Weight) -> Result<W> {
        match self.w.get(&w.name) {
            Some((x, d)) if *d == w.shape => Ok(*x),
            Some((_, d)) => Err(err!(
                Graph,
                "weight {:?} has shape {d:?}, the manifest implies {:?}",
                w.name,
                w.shape
            )),
            None => Err(err!(
                Graph,
                "weight {:?} (shape {:?}) is missing from the bundle's graphs",
                w.name,
                w.shape
            )),
        }
    }
    /// Where the vector `w` (a gain or bias, stored as f32) went.
    fn v(&self, w: &Weight) -> Result<V> {
        match self.v.get(&w.name) {
            Some((x, n)) if *n == w.len() => Ok(*x),
            Some((_, n)) => Err(err!(
                Graph,
                "weight {:?} has {n} values, the manifest implies {}",
                w.name,
                w.len()
            )),
            None => Err(err!(
                Graph,
                "weight {:?} ({} values) is missing from the bundle's graphs",
                w.name,
                w.len()
            )),
        }
    }
}

/// Lay out every initializer of the three graphs in the two arenas and copy the bytes
/// from the mapped files into buffers mapped at creation.
fn upload(gpu: &Gpu, bundle: &Bundle) -> Result<(wgpu::Buffer, wgpu::Buffer, Weights)> {
    let numeric = bundle.manifest().numeric;
    let want = match numeric {
        Numeric::F32 => ElemType::F32,
        Numeric::F16 => ElemType::F16,
        Numeric::Int8 => ElemType::I8,
    };
    let eb = shader::elem_bytes(numeric);
    let graphs = [bundle.encoder(), bundle.decoder(), bundle.prm()];
    // pass 1: offsets
    let mut wts_bytes = 0usize; // arena of rank >= 2 weights
    let mut aux_len = 1usize; // f32 values; aux[0] = 1.0
    struct Place<'a> {
        init: &'a Initializer,
        graph: usize,
        to_aux: bool,
        at: usize, // byte offset (wts) or f32 index (aux)
    }
    let mut places: Vec<Place> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for (gi, g) in graphs.iter().enumerate() {
        for init in &g.index.initializers {
            if !seen.insert(&init.name) {
                continue; // the same weight in two graphs: one copy
            }
            if !init.raw {
                return Err(err!(
                    Graph,
                    "weight {:?} is not stored as raw_data; the GPU backend reads raw bytes",
                    init.name
                ));
            }
            let rank = init.dims.len();
            let to_aux = init.elem == ElemType::F32 && (rank <= 1 || init.name.ends_with(".scale"));
            if to_aux {
                places.push(Place {
                    init,
                    graph: gi,
                    to_aux,
                    at: aux_len,
                });
                aux_len += init.len / 4;
            } else {
                if init.elem != want {
                    return Err(err!(
                        Graph,
                        "weight {:?} is {:?}, the manifest's numeric {:?} means {want:?}",
                        init.name,
                        init.elem,
                        numeric.as_str()
                    ));
                }
                places.push(Place {
                    init,
                    graph: gi,
                    to_aux,
                    at: wts_bytes,
                });
                wts_bytes += init.len.div_ceil(4) * 4;
            }
        }
    }
    let wts_size = (wts_bytes.max(4)) as u64;
    let aux_size = (aux_len * 4) as u64;
    check_buffer(gpu, "weights", wts_size)?;
    check_buffer(gpu, "norm gains, biases and scales", aux_size)?;
    let make = |label, size| {
        gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: true,
        })
    };
    let wts = make("weights", wts_size);
    let aux = make("aux", aux_size);
    let mut weights = Weights {
        w: HashMap::new(),
        v: HashMap::new(),
    };
    {
        let mut wmap = wts.slice(..).get_mapped_range_mut().map_err(map_err)?;
        let mut amap = aux.slice(..).get_mapped_range_mut().map_err(map_err)?;
        amap.slice(..4).copy_from_slice(&1.0f32.to_le_bytes());
        for p in &places {
            let bytes = &graphs[p.graph].bytes[p.init.offset..p.init.offset + p.init.len];
            let dims: Vec<usize> = p.init.dims.iter().map(|&d| d as usize).collect();
            if p.to_aux {
                amap.slice(p.at * 4..p.at * 4 + bytes.len())
                    .copy_from_slice(bytes);
                weights
                    .v
                    .insert(p.init.name.clone(), (V(p.at as u32), p.init.len / 4));
            } else {
                wmap.slice(p.at..p.at + bytes.len()).copy_from_slice(bytes);
                weights.w.insert(
                    p.init.name.clone(),
                    (
                        W {
                            off: (p.at / eb) as u32,
                            scale: 0,
                            stride: 0,
                        },
                        dims,
                    ),
                );
            }
        }
    }
    wts.unmap();
    aux.unmap();
    // int8: attach each weight's scales (checked against the weight's shape)
    let names: Vec<String> = weights.w.keys().cloned().collect();
    for name in names {
        let sname = format!("{name}.scale");
        let Some(&(V(at), len)) = weights.v.get(&sname) else {
            if numeric == Numeric::Int8 {
                return Err(err!(Graph, "int8 weight {name:?} has no {sname:?}"));
            }
            continue;
        };
        let entry = weights.w.get_mut(&name).expect("listed above");
        let dims = &entry.1;
        let cols = *dims.last().unwrap_or(&1);
        let rows = if dims.len() >= 2 {
            dims[dims.len() - 2]
        } else {
            1
        };
        let per_col = len * rows == dims.iter().product::<usize>();
        let per_row = dims.len() == 2 && len == rows;
        if !(per_col || per_row) || cols == 0 {
            return Err(err!(
                Graph,
                "scale {sname:?} has {len} values, expected one per column or per row of {dims:?}"
            ));
        }
        entry.0.scale = at;
        entry.0.stride = 1;
    }
    Ok((wts, aux, weights))
}

/// Everything a session needs from the model, shared by all its sessions.
struct Shared {
    gpu: Gpu,
    manifest: Manifest,
    arch: Architecture,
    weights: Weights,
    model_bg: wgpu::BindGroup,
    session_layout: wgpu::BindGroupLayout,
    pipelines: Pipelines,
    trie: TrieLayout,
    search: bool,
    _wts: wgpu::Buffer,
    _aux: wgpu::Buffer,
    _trie: wgpu::Buffer,
}

/// Where the catalog's trie is in the `trie` buffer (u32 words): first_child
/// [nodes + 1] at 0, node_code [nodes] at `code`.
#[derive(Clone, Copy, Debug)]
struct TrieLayout {
    code: u32,
    num_items: usize,
}

/// The catalog's trie for the search kernels, built from the mapped catalog (53 KiB for
/// ML-1M), uploaded through a buffer mapped at creation.
fn upload_trie(gpu: &Gpu, catalog: &Catalog) -> Result<(wgpu::Buffer, TrieLayout)> {
    let nodes = catalog.num_nodes() as u32;
    let layout = TrieLayout {
        code: nodes + 1,
        num_items: catalog.num_items(),
    };
    let words = 2 * nodes as usize + 1;
    let size = (words * 4) as u64;
    check_buffer(gpu, "trie", size)?;
    let buf = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("trie"),
        size,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: true,
    });
    let mut out = vec![0u32; words]; // transient: the catalog is read in place elsewhere
    for n in 0..nodes {
        out[n as usize] = catalog.children(n).start;
        out[(layout.code + n) as usize] = catalog.node_code(n) as u32;
    }
    out[nodes as usize] = catalog.children(nodes - 1).end;
    {
        let mut map = buf.slice(..).get_mapped_range_mut().map_err(map_err)?;
        map.slice(..).copy_from_slice(bytemuck::cast_slice(&out));
    }
    buf.unmap();
    Ok((buf, layout))
}

/// A bundle loaded onto the GPU. `Send + Sync`; sessions share it.
pub struct GpuModel {
    shared: Arc<Shared>,
}

impl GpuModel {
    /// Load with the default [`GpuOptions`].
    pub fn load(bundle: &Bundle) -> Result<GpuModel> {
        GpuModel::load_with(bundle, &GpuOptions::default())
    }

    pub fn load_with(bundle: &Bundle, opts: &GpuOptions) -> Result<GpuModel> {
        let m = bundle.manifest().clone();
        if m.dims.head_dim > MAX_HEAD_DIM {
            return Err(err!(
                Limits,
                "head_dim is {}, the GPU attention kernel holds at most {MAX_HEAD_DIM}",
                m.dims.head_dim
            ));
        }
        let gpu = open(m.numeric, opts)?;
        let (wts, aux, weights) = upload(&gpu, bundle)?;
        let (trie_buf, trie) = upload_trie(&gpu, bundle.catalog())?;
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
            ],
        });
        let pipelines = build_pipelines(&gpu, &model_layout, &session_layout)?;
        let shared = Shared {
            gpu,
            manifest: m,
            arch: bundle.architecture().clone(),
            weights,
            model_bg,
            session_layout,
            pipelines,
            trie,
            search: opts.search,
            _wts: wts,
            _aux: aux,
            _trie: trie_buf,
        };
        // resolve every weight now, so a bundle that lacks one fails at load
        Plan::build(&shared, &SearchConfig::default(), true)?;
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

    pub fn session(&self, cfg: &SearchConfig) -> Result<GpuSession> {
        GpuSession::new(self.shared.clone(), cfg)
    }
}

/// The two bind group layouts every kernel shares: group 0 the model's weights (`wts`,
/// `aux`), group 1 the session's activations, ids and dynamic parameter block.
fn layouts(device: &wgpu::Device) -> (wgpu::BindGroupLayout, wgpu::BindGroupLayout) {
    let storage = |binding, read_only| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    let model_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("model"),
        entries: &[storage(0, true), storage(1, true), storage(2, true)],
    });
    let session_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("session"),
        entries: &[
            storage(0, false),
            storage(1, false),
            wgpu::BindGroupLayoutEntry {
                binding: 2,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: true,
                    min_binding_size: wgpu::BufferSize::new(std::mem::size_of::<Params>() as u64),
                },
                count: None,
            },
        ],
    });
    (model_layout, session_layout)
}

fn build_pipelines(
    gpu: &Gpu,
    model_layout: &wgpu::BindGroupLayout,
    session_layout: &wgpu::BindGroupLayout,
) -> Result<Pipelines> {
    let device = &gpu.device;
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("promise kernels"),
        source: wgpu::ShaderSource::Wgsl(shader::source(gpu.variant).into()),
    });
    let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some("promise"),
        bind_group_layouts: &[Some(model_layout), Some(session_layout)],
        immediate_size: 0,
    });
    let out: Pipelines = Kernel::ALL
        .iter()
        .map(|k| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(k.entry()),
                layout: Some(&layout),
                module: &module,
                entry_point: Some(k.entry()),
                compilation_options: Default::default(),
                cache: None,
            })
        })
        .collect();
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(err!(
            Backend,
            "the GPU kernels failed to build for {:?} on {}: {e}",
            gpu.variant,
            gpu.info.name
        ));
    }
    gpu.check()?;
    Ok(out)
}

/// One dispatch: kernel, parameter block, workgroup counts.
#[derive(Clone, Copy, Debug)]
struct Step {
    kernel: Kernel,
    params: u32,
    groups: [u32; 3],
}

/// The static forward passes of one session: the activation arena's layout, the id
/// buffer's layout and every dispatch.
struct Plan {
    params: Vec<Params>,
    encoder: Vec<Step>,
    decoder: Vec<Vec<Step>>, // per level
    prm: Vec<Step>,
    /// per level: trie masking + top-K+ (expand, select_candidates), then after the PRM
    /// the top-K' / top-N (select_beams)
    select: Vec<[Step; 2]>,
    finish: Vec<Step>,
    act_len: usize,
    ints_len: usize,
    // act offsets
    mask: u32,
    logp: u32,
    scores: u32,
    // ints offsets
    codes: u32,
    prefix: [u32; 2], // level l's decoder reads prefix[l % 2]
    nodes: u32,
    beam_node: u32, // level 0's beam (the root) for the GPU search
    seen: u32,
    res_node: u32,
    // act offsets
    beam_cum: u32,
    res_key: u32,
}

/// `ints` slots: the live counts, the result count and the request's error flag (1: a
/// non-finite log-probability, 2: a non-finite PRM score).
const LIVE_BEAMS: u32 = 0;
const LIVE_NODES: u32 = 1;
const RESULTS: u32 = 2;
const ERR: u32 = 3;

struct Arena(usize);
impl Arena {
    fn take(&mut self, n: usize) -> u32 {
        let at = self.0;
        self.0 += n;
        at as u32
    }
}

/// Rows a dispatch covers: allocated `rows`, live count `ints[live] * mul` (NONE: all).
#[derive(Clone, Copy)]
struct Rows {
    rows: usize,
    live: u32,
    mul: u32,
}

/// Collects parameter blocks and steps.
struct Builder {
    params: Vec<Params>,
    dh: usize,
    mask: u32,
}

fn u(x: usize) -> u32 {
    x as u32
}

impl Builder {
    fn push(&mut self, steps: &mut Vec<Step>, kernel: Kernel, p: Params, groups: [u32; 3]) {
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
    fn matmul(
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
    fn residual(
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
    fn attention(
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
    fn build(s: &Shared, cfg: &SearchConfig, dry: bool) -> Result<Plan> {
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
            let ne = wt.w(&a.prm.node_emb)?;
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
                ..Params::default()
            };
            b.push(&mut prm, Kernel::EmbedPrm, p, [groups_of(d), u(mc), 1]);
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

/// Per-session GPU buffers, bind group and the static dispatch lists.
pub struct GpuSession {
    s: Arc<Shared>,
    plan: Plan,
    act: wgpu::Buffer,
    ints: wgpu::Buffer,
    readback: wgpu::Buffer,
    _params: wgpu::Buffer,
    bg: wgpu::BindGroup,
    ints_host: Vec<i32>,
    encoder_pending: bool,
    encoded: bool,
    beams: usize,
    candidates: usize,
    results: usize,
    prm: bool,
    rb_host: Vec<u32>, // the last read-back, as words
    /// Result of the last read-back mapping: 0 pending, 1 mapped, 2 failed.
    mapped: Arc<std::sync::atomic::AtomicU8>,
}

impl GpuSession {
    fn new(s: Arc<Shared>, cfg: &SearchConfig) -> Result<GpuSession> {
        let plan = Plan::build(&s, cfg, false)?;
        let gpu = &s.gpu;
        let act_bytes = (plan.act_len * 4) as u64;
        check_buffer(gpu, "activation arena", act_bytes)?;
        let max_groups = [&plan.encoder, &plan.prm]
            .into_iter()
            .chain(plan.decoder.iter())
            .flatten()
            .flat_map(|st| st.groups)
            .max()
            .unwrap_or(1);
        check_limit(
            "max_compute_workgroups_per_dimension",
            max_groups as u64,
            gpu.limits.max_compute_workgroups_per_dimension as u64,
            &gpu.info.name,
        )?;
        let device = &gpu.device;
        let act = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("activations"),
            size: act_bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let ints = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ids"),
            size: (plan.ints_len * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let m = &s.manifest;
        // the step-by-step path reads back log-probs or scores, the search N results
        let rb_len = (cfg.beam_capacity() * m.max_codebook())
            .max(cfg.candidates)
            .max(2 + 2 * cfg.results);
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read-back"),
            size: (rb_len * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: plan.params.len().max(1) as u64 * PARAMS_STRIDE,
            usage: wgpu::BufferUsages::UNIFORM,
            mapped_at_creation: true,
        });
        {
            let mut map = params.slice(..).get_mapped_range_mut().map_err(map_err)?;
            for (i, p) in plan.params.iter().enumerate() {
                let at = i * PARAMS_STRIDE as usize;
                let b = bytemuck::bytes_of(p);
                map.slice(at..at + b.len()).copy_from_slice(b);
            }
        }
        params.unmap();
        let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("session"),
            layout: &s.session_layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: act.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: ints.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &params,
                        offset: 0,
                        size: wgpu::BufferSize::new(std::mem::size_of::<Params>() as u64),
                    }),
                },
            ],
        });
        gpu.check()?;
        let ints_host = vec![0i32; plan.ints_len];
        Ok(GpuSession {
            s: s.clone(),
            plan,
            act,
            ints,
            readback,
            _params: params,
            bg,
            ints_host,
            encoder_pending: false,
            encoded: false,
            beams: cfg.beam_capacity(),
            candidates: cfg.candidates,
            results: cfg.results,
            prm: cfg.prm,
            rb_host: vec![0u32; rb_len],
            mapped: Arc::new(std::sync::atomic::AtomicU8::new(0)),
        })
    }

    fn record(&self, pass: &mut wgpu::ComputePass<'_>, steps: &[Step]) {
        pass.set_bind_group(0, &self.s.model_bg, &[]);
        for st in steps {
            pass.set_pipeline(&self.s.pipelines[st.kernel as usize]);
            pass.set_bind_group(1, &self.bg, &[st.params * PARAMS_STRIDE as u32]);
            pass.dispatch_workgroups(st.groups[0], st.groups[1], st.groups[2]);
        }
    }

    /// A command encoder holding one compute pass that `f` records into.
    fn pass(&self, f: impl FnOnce(&mut wgpu::ComputePass<'_>)) -> wgpu::CommandEncoder {
        let mut enc = self
            .s
            .gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            });
            f(&mut pass);
        }
        enc
    }

    /// Write ints[range] to the GPU.
    fn upload_ints(&self, from: usize, to: usize) {
        self.s.gpu.queue.write_buffer(
            &self.ints,
            (from * 4) as u64,
            bytemuck::cast_slice(&self.ints_host[from..to]),
        );
    }

    /// Record `steps` (after the pending encoder, if any), copy `floats` values from act
    /// offset `src` to the read-back buffer, submit, wait, and copy them into `out`.
    fn run(
        &mut self,
        level: Option<usize>,
        src: u32,
        floats: usize,
        out: &mut [f32],
    ) -> Result<()> {
        self.s.gpu.check()?;
        let mut enc = self.pass(|pass| {
            if self.encoder_pending {
                self.record(pass, &self.plan.encoder);
            }
            let steps = match level {
                Some(l) => &self.plan.decoder[l],
                None => &self.plan.prm,
            };
            self.record(pass, steps);
        });
        let bytes = (floats * 4) as u64;
        enc.copy_buffer_to_buffer(&self.act, src as u64 * 4, &self.readback, 0, bytes);
        self.encoder_pending = false;
        self.submit_and_read(enc, floats)?;
        for (o, &w) in out[..floats].iter_mut().zip(&self.rb_host) {
            *o = f32::from_bits(w);
        }
        Ok(())
    }

    /// Submit `enc` (which ends with copies into the read-back buffer), wait for it, and
    /// copy the first `words` words of the read-back buffer into `rb_host`.
    fn submit_and_read(&mut self, enc: wgpu::CommandEncoder, words: usize) -> Result<()> {
        let gpu = &self.s.gpu;
        let submission = gpu.queue.submit(Some(enc.finish()));
        let bytes = (words * 4) as u64;
        let slice = self.readback.slice(..bytes);
        use std::sync::atomic::Ordering;
        self.mapped.store(0, Ordering::Release);
        let flag = self.mapped.clone();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            flag.store(if r.is_ok() { 1 } else { 2 }, Ordering::Release);
        });
        // Wait for this submission. With several sessions on one device, another thread's
        // poll can be the one that runs our map callback, a moment after our own poll
        // returns: so wait on the flag, polling again until it is set.
        let start = std::time::Instant::now();
        loop {
            gpu.device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(submission.clone()),
                    timeout: Some(GPU_TIMEOUT),
                })
                .map_err(|e| err!(DeviceLost, "waiting for the GPU failed: {e}"))?;
            match self.mapped.load(Ordering::Acquire) {
                1 => break,
                0 if start.elapsed() < GPU_TIMEOUT => std::thread::yield_now(),
                _ => {
                    gpu.check()?;
                    return Err(err!(DeviceLost, "the GPU results could not be read back"));
                }
            }
        }
        if let Err(e) = gpu.check() {
            self.readback.unmap();
            return Err(e);
        }
        {
            let view = slice.get_mapped_range().map_err(map_err)?;
            self.rb_host[..words].copy_from_slice(bytemuck::cast_slice(&view[..]));
        }
        self.readback.unmap();
        Ok(())
    }

    /// The whole request on the device: the encoder, then per level the decoder, the trie
    /// masking and top-K+ (`expand`, `select_candidates`), the PRM, and the top-K' (or
    /// top-N at the last level, `select_beams`), recorded into one compute pass and one
    /// submission; the read-back is the result count, the error flag and N (node, key)
    /// pairs: 8 + 8 N bytes.
    fn search_on_device(
        &mut self,
        codes: &[i64],
        mask: &[f32],
        seen_leaves: &[u32],
        out: &mut [(u32, f32)],
    ) -> Result<usize> {
        self.encode(codes, mask)?;
        let n = self.results;
        if out.len() < n {
            return Err(err!(
                Capacity,
                "the result buffer holds {}, the session returns up to {n}",
                out.len()
            ));
        }
        let plan = &self.plan;
        // counts (1 live beam: the root), the root beam, the seen items
        self.ints_host[..4].copy_from_slice(&[1, 0, 0, 0]);
        self.upload_ints(0, 4);
        let at = plan.beam_node as usize;
        self.ints_host[at] = 0;
        self.upload_ints(at, at + 1);
        let queue = &self.s.gpu.queue;
        queue.write_buffer(&self.act, plan.beam_cum as u64 * 4, &0f32.to_le_bytes());
        let cap = seen_capacity(self.s.trie.num_items);
        if seen_leaves.len() > cap {
            return Err(err!(
                Capacity,
                "{} distinct history items, the session holds {cap}",
                seen_leaves.len()
            ));
        }
        let at = plan.seen as usize;
        self.ints_host[at] = seen_leaves.len() as i32;
        for (dst, &leaf) in self.ints_host[at + 1..].iter_mut().zip(seen_leaves) {
            *dst = leaf as i32;
        }
        self.upload_ints(at, at + 1 + seen_leaves.len());
        self.s.gpu.check()?;
        let mut enc = self.pass(|pass| {
            self.record(pass, &plan.encoder);
            for level in 0..plan.decoder.len() {
                self.record(pass, &plan.decoder[level]);
                self.record(pass, &plan.select[level]);
                if self.prm {
                    self.record(pass, &plan.prm);
                }
                self.record(pass, std::slice::from_ref(&plan.finish[level]));
            }
        });
        // read-back: [result count, error flag, N nodes, N keys]
        enc.copy_buffer_to_buffer(&self.ints, RESULTS as u64 * 4, &self.readback, 0, 8);
        let nb = (n * 4) as u64;
        enc.copy_buffer_to_buffer(&self.ints, plan.res_node as u64 * 4, &self.readback, 8, nb);
        enc.copy_buffer_to_buffer(
            &self.act,
            plan.res_key as u64 * 4,
            &self.readback,
            8 + nb,
            nb,
        );
        self.encoder_pending = false;
        self.submit_and_read(enc, 2 + 2 * n)?;
        let (count, flag) = (self.rb_host[0] as usize, self.rb_host[1]);
        match flag {
            0 => {}
            1 => {
                return Err(err!(
                    Backend,
                    "the decoder gave a non-finite log-probability on the GPU: the model's weights or the backend are broken"
                ))
            }
            _ => {
                return Err(err!(
                    Backend,
                    "the PRM gave a non-finite score on the GPU: the model's weights or the backend are broken"
                ))
            }
        }
        if count > n {
            return Err(err!(
                Backend,
                "the GPU search returned {count} results, expected at most {n}"
            ));
        }
        for (i, o) in out[..count].iter_mut().enumerate() {
            *o = (self.rb_host[2 + i], f32::from_bits(self.rb_host[2 + n + i]));
        }
        Ok(count)
    }
}

impl Scorer for GpuSession {
    fn encode(&mut self, codes: &[i64], mask: &[f32]) -> Result<()> {
        let m = &self.s.manifest;
        let (h, l, c) = (m.history, m.levels, m.max_codebook());
        crate::backend::check_encode_input(codes, mask, h, l)?;
        let at = self.plan.codes as usize;
        for (i, &code) in codes.iter().enumerate() {
            self.ints_host[at + i] = (code as usize + (i % l) * c) as i32;
        }
        self.upload_ints(at, at + h * l);
        self.s.gpu.queue.write_buffer(
            &self.act,
            self.plan.mask as u64 * 4,
            bytemuck::cast_slice(mask),
        );
        self.encoder_pending = true;
        self.encoded = true;
        Ok(())
    }

    fn decode(&mut self, level: usize, prefixes: &[i64], k: usize, out: &mut [f32]) -> Result<()> {
        if !self.encoded {
            return Err(err!(Backend, "decode called before encode"));
        }
        let m = &self.s.manifest;
        let (l, c) = (m.levels, m.max_codebook());
        let w = (l - 1).max(1);
        if k > self.beams || prefixes.len() < k * w || out.len() < k * c {
            return Err(err!(
                Capacity,
                "decode of {k} beams, the session holds {} (prefixes {}, output {})",
                self.beams,
                prefixes.len(),
                out.len()
            ));
        }
        let at = self.plan.prefix[level % 2] as usize;
        for i in 0..k {
            for j in 0..w {
                self.ints_host[at + i * w + j] = (prefixes[i * w + j] as usize + j * c) as i32;
            }
        }
        self.ints_host[LIVE_BEAMS as usize] = k as i32;
        self.upload_ints(0, 1);
        self.upload_ints(at, at + k * w);
        self.run(Some(level), self.plan.logp, k * c, out)
    }

    fn score(&mut self, nodes: &[i64], out: &mut [f32]) -> Result<()> {
        if !self.encoded {
            return Err(err!(Backend, "score called before encode"));
        }
        let n = nodes.len();
        if n > self.candidates || out.len() < n {
            return Err(err!(
                Capacity,
                "{n} PRM candidates, the session holds {}",
                self.candidates
            ));
        }
        let at = self.plan.nodes as usize;
        for (i, &node) in nodes.iter().enumerate() {
            self.ints_host[at + i] = node as i32;
        }
        self.ints_host[LIVE_NODES as usize] = n as i32;
        self.upload_ints(1, 2);
        self.upload_ints(at, at + n);
        self.run(None, self.plan.scores, n, out)
    }

    fn search(
        &mut self,
        codes: &[i64],
        mask: &[f32],
        seen_leaves: &[u32],
        out: &mut [(u32, f32)],
    ) -> Option<Result<usize>> {
        if !self.s.search {
            return None;
        }
        Some(self.search_on_device(codes, mask, seen_leaves, out))
    }
}

impl std::fmt::Debug for GpuSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuSession")
            .field("beams", &self.beams)
            .field("candidates", &self.candidates)
            .field("dispatches", &self.plan.params.len())
            .finish()
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
