//! [`Model`] (load once, immutable, `Send + Sync`) and [`Session`] (per thread, owns every
//! mutable buffer of the search and the backend).

use std::sync::Arc;

use crate::backend::{CpuEngine, Device};
use crate::bundle::{Bundle, Catalog, ItemIds};
#[allow(unused_imports)]
use crate::error::{err, Result};
use crate::search::stages::Timed;
use crate::search::{Recommendation, Scorer, SearchConfig, Searcher, StageTimes};

enum BackendModel {
    /// Uninhabited: keeps the enum non-empty when no backend is compiled in.
    #[allow(dead_code)]
    Never(std::convert::Infallible),
    #[cfg(feature = "cpu")]
    Cpu(Box<crate::backend::cpu::CpuModel>),
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
fn load_cpu(bundle: &Bundle, opts: &LoadOptions) -> Result<(Device, BackendModel)> {
    Ok((
        Device::Cpu,
        BackendModel::Cpu(Box::new(crate::backend::cpu::CpuModel::load_with(
            bundle,
            opts.cpu_engine,
            opts.tables_in_place,
        )?)),
    ))
}
#[cfg(not(feature = "cpu"))]
fn load_cpu(_bundle: &Bundle, _opts: &LoadOptions) -> Result<(Device, BackendModel)> {
    Err(err!(
        BackendUnavailable,
        "the cpu backend is not compiled in (enable the \"cpu\" feature)"
    ))
}
#[cfg(feature = "gpu")]
fn load_gpu(
    bundle: &Bundle,
    opts: &LoadOptions,
    allow_software: bool,
) -> Result<(Device, BackendModel)> {
    let o = crate::backend::gpu::GpuOptions {
        shader_f16: opts.gpu_shader_f16,
        subgroups: opts.gpu_subgroups,
        allow_software,
        search: opts.gpu_search,
    };
    Ok((
        Device::Gpu,
        BackendModel::Gpu(crate::backend::gpu::GpuModel::load_with(bundle, &o)?),
    ))
}
#[cfg(not(feature = "gpu"))]
fn load_gpu(
    _bundle: &Bundle,
    _opts: &LoadOptions,
    _allow_software: bool,
) -> Result<(Device, BackendModel)> {
    Err(err!(
        BackendUnavailable,
        "the gpu backend is not compiled in (enable the \"gpu\" feature)"
    ))
}

/// Backend options for [`Model::load_with`]. The defaults are what [`Model::load`] uses;
/// start from `LoadOptions::default()` and set fields (more may come).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadOptions {
    /// CPU: our fused kernels (default) or the ONNX graphs through tract.
    pub cpu_engine: CpuEngine,
    /// GPU: read f16 weights natively when the adapter has SHADER_F16 (else unpack them).
    pub gpu_shader_f16: bool,
    /// GPU: use subgroup reductions when the adapter has SUBGROUP (else shared memory).
    pub gpu_subgroups: bool,
    /// GPU: run the whole search on the device, one submission per request (default);
    /// false runs it on the CPU with two submissions per level.
    pub gpu_search: bool,
    /// Fused CPU engine: read the tables that grow with the catalog (the encoder's item
    /// rows, the PRM's node rows and biases) in place from the bundle's memory map instead
    /// of one heap copy each. Only the pages requests touch are then resident, and the OS
    /// may reclaim them (they are the file's): at 1M items most of the model's memory. The
    /// contract changes with it: the bundle's files must stay unchanged (not truncated or
    /// rewritten in place; a rename over them is fine) for as long as the model lives, or a
    /// request can fault (SIGBUS). Off by default; ignored by tract and the GPU, which hold
    /// their own copies; a bundle opened in memory is read from that copy.
    pub tables_in_place: bool,
}

impl LoadOptions {
    /// These options with `engine` for the CPU backend.
    pub fn with_cpu_engine(mut self, engine: CpuEngine) -> Self {
        self.cpu_engine = engine;
        self
    }
    /// These options with the GPU's SHADER_F16 and SUBGROUP use switched on or off.
    pub fn with_gpu_features(mut self, shader_f16: bool, subgroups: bool) -> Self {
        self.gpu_shader_f16 = shader_f16;
        self.gpu_subgroups = subgroups;
        self
    }
    /// These options with the search on the GPU device (`true`) or on the host.
    pub fn with_gpu_search(mut self, on_device: bool) -> Self {
        self.gpu_search = on_device;
        self
    }
    /// These options with the catalog-sized tables read in place (see
    /// [`LoadOptions::tables_in_place`] for the contract that comes with it).
    pub fn with_tables_in_place(mut self, in_place: bool) -> Self {
        self.tables_in_place = in_place;
        self
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            cpu_engine: CpuEngine::Fused,
            gpu_shader_f16: true,
            gpu_subgroups: true,
            gpu_search: true,
            tables_in_place: false,
        }
    }
}

impl Model {
    /// Load `bundle` onto `device`. `Device::Auto` takes a hardware GPU when one qualifies
    /// (found, with the features and limits the model needs) and the CPU otherwise;
    /// `Device::Gpu` also accepts a software adapter (lavapipe), which is how the tests run.
    pub fn load(bundle: &Bundle, device: Device) -> Result<Model> {
        Model::load_with(bundle, device, &LoadOptions::default())
    }

    /// [`Model::load`] with explicit [`LoadOptions`].
    pub fn load_with(bundle: &Bundle, device: Device, opts: &LoadOptions) -> Result<Model> {
        // the smallest session must fit the budgets before any engine builds anything
        crate::limits::check_session(bundle.manifest(), &SearchConfig::plain(1, 1))?;
        let (device, backend) = match device {
            Device::Cpu => load_cpu(bundle, opts)?,
            Device::Gpu => load_gpu(bundle, opts, true)?,
            Device::Auto => match load_gpu(bundle, opts, false) {
                Ok(x) => x,
                Err(_) => load_cpu(bundle, opts)?,
            },
        };
        // every engine has read what it needs from the graphs: their pages can leave RSS
        bundle.release_graph_pages();
        if opts.tables_in_place {
            bundle.advise_random_graph_reads();
        }
        let model = Model {
            inner: Arc::new(ModelInner {
                bundle: bundle.clone(),
                device,
                backend,
            }),
        };
        model.probe()?;
        Ok(model)
    }

    /// The load-time probe: one request on a fixed history through this engine (the
    /// encoder, every decoder level and the PRM run), so that weights that make a graph's
    /// outputs non-finite on this engine fail the load with a clear error instead of every
    /// request after it. A bundle either fails to load or serves every request.
    fn probe(&self) -> Result<()> {
        let items = self.inner.bundle.catalog().num_items();
        let n = self.inner.bundle.manifest().history.min(items / 2).max(1);
        let history = crate::alloc::with_capacity::<u32>(n, "the probe history").map(|mut h| {
            h.extend((0..n as u32).map(|i| (i * 7) % items as u32));
            h
        })?;
        let mut session = self.session(SearchConfig::with_beams(4, 10, true))?;
        session.recommend(&history).map(|_| ()).map_err(|e| {
            err!(
                Graph,
                "the bundle's load-time probe request (a fixed history of {n} items) failed on \
                 {}: {}",
                self.backend(),
                e.message()
            )
        })
    }

    /// The device this model actually runs on (never `Auto`).
    pub fn device(&self) -> Device {
        self.inner.device
    }

    /// What computes this model's requests: the CPU engine (and its instruction set) or
    /// the GPU adapter and shader variant.
    pub fn backend(&self) -> crate::BackendInfo {
        match &self.inner.backend {
            BackendModel::Never(n) => match *n {},
            #[cfg(feature = "cpu")]
            BackendModel::Cpu(m) => m.info(),
            #[cfg(feature = "gpu")]
            BackendModel::Gpu(m) => m.info(),
        }
    }

    /// The bundle this model was loaded from.
    pub fn bundle(&self) -> &Bundle {
        &self.inner.bundle
    }

    /// Validate `config` and allocate a session with every buffer it needs.
    pub fn session(&self, config: SearchConfig) -> Result<Session> {
        config.validate()?;
        let bundle = &self.inner.bundle;
        crate::limits::check_session(bundle.manifest(), &config)?;
        let m = bundle.manifest();
        let searcher =
            Searcher::with_item_column(config, bundle.catalog(), m.history, m.dims.encoder_item)?;
        let backend = match &self.inner.backend {
            BackendModel::Never(n) => match *n {},
            #[cfg(feature = "cpu")]
            BackendModel::Cpu(m) => BackendSession::Cpu(m.session(&config)?),
            #[cfg(feature = "gpu")]
            BackendModel::Gpu(m) => BackendSession::Gpu(m.session(&config)?),
        };
        // the id lookup's buffer, sized once (a request of external ids allocates nothing)
        let id_history = match bundle.ids() {
            Some(_) => crate::alloc::with_capacity(crate::search::MAX_HISTORY, "the id history")?,
            None => Vec::new(),
        };
        Ok(Session {
            model: self.clone(),
            searcher,
            backend,
            id_history,
            stages: None,
        })
    }
}

/// Per-thread request state. `recommend` reuses every buffer; the returned slice is valid
/// until the next call.
pub struct Session {
    model: Model,
    searcher: Searcher,
    backend: BackendSession,
    id_history: Vec<u32>,
    // Some while stage timing is on (`set_stage_timing`): the last request's breakdown
    stages: Option<StageTimes>,
}

/// One request on the session's parts (split so that the id call can borrow its buffer
/// beside them).
fn request<'s>(
    searcher: &'s mut Searcher,
    backend: &'s mut BackendSession,
    stages: Option<&mut StageTimes>,
    catalog: &Catalog,
    history: &[u32],
) -> Result<&'s [Recommendation]> {
    #[cfg(feature = "gpu")]
    if let BackendSession::Gpu(g) = backend {
        if g.searches_on_device() {
            // the whole search in one submission; the Searcher only prepares and checks
            searcher.prepare(catalog, history)?;
            let r = searcher.device_request();
            let n = g.search_on_device(r.codes, r.mask, r.seen_leaves, r.found)?;
            return searcher.take_found(catalog, n);
        }
    }
    match stages {
        None => searcher.run(catalog, backend.scorer(), history),
        Some(times) => {
            let start = std::time::Instant::now();
            let mut timed = Timed::new(backend.scorer(), times);
            let r = searcher.run(catalog, &mut timed, history);
            times.total = start.elapsed();
            r
        }
    }
}

/// A feed in the app's item ids ([`Session::recommend_ids`]): valid until the session's
/// next request.
#[derive(Clone, Copy, Debug)]
pub struct IdFeed<'a> {
    recs: &'a [Recommendation],
    ids: &'a ItemIds,
    unknown: usize,
}

impl<'a> IdFeed<'a> {
    /// How many recommendations.
    pub fn len(&self) -> usize {
        self.recs.len()
    }
    /// Whether the feed is empty (no history id was in the catalog).
    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }
    /// How many history ids the catalog does not know (skipped, not an error).
    pub fn unknown(&self) -> usize {
        self.unknown
    }
    /// The `i`-th recommendation's external id and score, best first.
    pub fn get(&self, i: usize) -> Option<(&'a str, f32)> {
        self.recs.get(i).map(|r| (self.ids.get(r.item), r.score))
    }
    /// The recommendations as (external id, score), best first.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, f32)> + 'a {
        let ids = self.ids;
        self.recs.iter().map(move |r| (ids.get(r.item), r.score))
    }
    /// The same feed in catalog indices.
    pub fn recommendations(&self) -> &'a [Recommendation] {
        self.recs
    }
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
        request(
            &mut self.searcher,
            &mut self.backend,
            self.stages.as_mut(),
            catalog,
            history,
        )
    }

    /// Recommend in the app's item ids (the bundle's `ids.bin`): `history` oldest first, the
    /// feed's ids best first. A history id the catalog does not know is skipped and
    /// counted ([`IdFeed::unknown`]); when none is known the feed is empty. A malformed id
    /// (empty, over 256 bytes, a control character) is an `invalid-argument` error naming
    /// its position, an empty history `empty-history`, a bundle without ids a `config`
    /// error. The lookup is a binary search over a table built at load: no allocation.
    pub fn recommend_ids(&mut self, history: &[&str]) -> Result<IdFeed<'_>> {
        self.recommend_id_bytes(history.iter().map(|s| s.as_bytes()))
    }

    /// [`Session::recommend_ids`] over ids given as bytes (each must be UTF-8): what the C,
    /// JVM and Python bindings call.
    pub fn recommend_id_bytes<'h>(
        &mut self,
        history: impl ExactSizeIterator<Item = &'h [u8]>,
    ) -> Result<IdFeed<'_>> {
        let Session {
            model,
            searcher,
            backend,
            id_history,
            stages,
        } = self;
        let bundle = &model.inner.bundle;
        let ids = bundle.ids().ok_or_else(|| {
            err!(
                Config,
                "bundle {} carries no item ids (ids.bin): use the index-based calls",
                bundle.manifest().name
            )
        })?;
        let n = history.len();
        if n == 0 {
            return Err(err!(EmptyHistory, "the history holds no item id"));
        }
        if n > crate::search::MAX_HISTORY {
            return Err(err!(
                InvalidArgument,
                "the history holds {n} ids, at most {} allowed",
                crate::search::MAX_HISTORY
            ));
        }
        id_history.clear();
        let mut unknown = 0;
        for (i, b) in history.enumerate() {
            let id = std::str::from_utf8(b)
                .map_err(|_| err!(InvalidArgument, "history id {i} is not valid UTF-8"))?;
            if let Some(why) = crate::bundle::ids::id_problem(id) {
                return Err(err!(
                    InvalidArgument,
                    "history id {i} ({:?}) {why}",
                    crate::error::escape(id)
                ));
            }
            match ids.lookup(b) {
                Some(item) => id_history.push(item),
                None => unknown += 1,
            }
        }
        let recs = if id_history.is_empty() {
            &[][..]
        } else {
            request(
                searcher,
                backend,
                stages.as_mut(),
                bundle.catalog(),
                id_history,
            )?
        };
        Ok(IdFeed { recs, ids, unknown })
    }

    /// Run one request's worth of work on a fixed history (the catalog's first items, as
    /// many as the history window reads) and discard its feed, so that the first user
    /// request does not pay for first use: the mapped weights paged in, the caches and the
    /// device's pipelines touched. Call it once after creating the session, off the UI
    /// thread; it costs about one request (`promise bench --warmup` measures both ways).
    /// It allocates one history buffer; the requests after it allocate as before.
    pub fn warmup(&mut self) -> Result<()> {
        let n = self
            .history_window()
            .min(self.model.inner.bundle.catalog().num_items());
        let history =
            crate::alloc::with_capacity::<u32>(n, "the warm-up history").map(|mut h| {
                h.extend(0..n as u32);
                h
            })?;
        self.recommend(&history).map(|_| ())
    }

    /// Record, per level, the nodes each request keeps ([`Session::kept`]), e.g. to measure
    /// how often the true prefix survives each level. The search must run on the host: a
    /// GPU session searching on the device returns a `config` error (load it with
    /// `LoadOptions::with_gpu_search(false)`).
    pub fn set_trace(&mut self, on: bool) -> Result<()> {
        if on {
            self.host_search("a per-level trace")?;
        }
        self.searcher.set_trace(on)
    }

    /// A `config` error when `what` needs the search on the host and this session runs it
    /// on the GPU.
    fn host_search(&self, what: &str) -> Result<()> {
        #[cfg(feature = "gpu")]
        if let BackendSession::Gpu(g) = &self.backend {
            if g.searches_on_device() {
                return Err(err!(
                    Config,
                    "{what} needs the search on the host; this GPU session searches on the device (LoadOptions::with_gpu_search(false))"
                ));
            }
        }
        let _ = what;
        Ok(())
    }

    /// Time every request by stage ([`StageTimes`]: the encoder, the decoder and the PRM per
    /// level, the search's bookkeeping), read after each request with
    /// [`Session::stage_times`]. Costs a few clock reads per request. Like the trace it
    /// needs the search on the host: a GPU session searching on the device returns a
    /// `config` error.
    pub fn set_stage_timing(&mut self, on: bool) -> Result<()> {
        if on {
            self.host_search("a stage breakdown")?;
        }
        self.stages = on.then(StageTimes::default);
        Ok(())
    }

    /// The last request's time by stage, while stage timing is on (else `None`).
    pub fn stage_times(&self) -> Option<&StageTimes> {
        self.stages.as_ref()
    }

    /// The nodes the last request kept at `level` (0-based) when tracing is on: its beams,
    /// or at the last level the result leaves.
    pub fn kept(&self, level: usize) -> &[u32] {
        self.searcher.kept(level)
    }

    /// Let the model read only the last `items` of each history (1..=the bundle's window
    /// H; a `config` error otherwise). A phone with a latency budget can trade quality for
    /// time this way: the encoder's work grows with the items it reads (see the README's
    /// "history window" measurements). Every item of a history is still excluded from its
    /// feed.
    pub fn set_history_window(&mut self, items: usize) -> Result<()> {
        self.searcher.set_history_window(items)
    }

    /// The last items of a history the model reads (the bundle's H unless set).
    pub fn history_window(&self) -> usize {
        self.searcher.history_window()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Finite weights whose outputs are not (a norm gain of 3e38 on the decoder's last
    /// norm, opened past the weight range, which refuses it otherwise) fail the load-time
    /// probe with a `graph` error on every CPU engine, never a request.
    #[cfg(feature = "cpu")]
    #[test]
    fn the_probe_fails_the_load_of_a_model_whose_outputs_overflow() {
        let (_dir, bundle) =
            crate::bundle::onnx::tiny_with_weight("decoder.onnx", "gen.dec_norm.w", 3e38);
        #[allow(unused_mut)]
        let mut engines = vec![CpuEngine::Fused];
        #[cfg(feature = "tract")]
        engines.push(CpuEngine::Tract);
        for engine in engines {
            let opts = LoadOptions::default().with_cpu_engine(engine);
            let e = Model::load_with(&bundle, Device::Cpu, &opts).expect_err("an overflowing norm");
            assert_eq!(e.code(), crate::ErrorCode::Graph, "{engine:?}: {e}");
            assert!(e.to_string().contains("load-time probe"), "{engine:?}: {e}");
        }
    }
}
