//! A model bundle: a directory with `manifest.json`, three ONNX graphs and `catalog.bin`.
//! The format is documented once, in `models/README.md`.
//!
//! [`Bundle::open`] memory-maps the graphs, reads the manifest and the catalog into the
//! heap, and validates everything once: the manifest's fields and file sizes (sha256 on
//! request), the catalog and trie, and each graph's inputs/outputs and weights against the
//! manifest. After that nothing can fail on bad bytes. Only regular files are read, each
//! of exactly the size the manifest states (checked before a byte is read).
//!
//! **mmap contract:** by default the graph mappings are read only while [`Bundle::open`]
//! and `Model::load` run (validation, then each engine copies or uploads the weights it
//! needs); requests read the heap copy of the catalog and the engines' own buffers. So
//! once the model is loaded, the bundle's files may be replaced, truncated or deleted
//! without effect on the running model. A file truncated *during* open or load faults
//! (SIGBUS on Unix); callers who cannot rule that out use [`OpenOptions::in_memory`],
//! which reads the files into the heap instead. `LoadOptions::tables_in_place` is the one
//! exception, chosen by the caller: the fused CPU engine then reads the catalog-sized
//! tables from the mapping at request time, so the files must stay unchanged for as long
//! as the model lives (a rename over them is still fine: the mapping keeps the old file).

pub mod arch;
pub mod catalog;
pub mod container;
mod files;
pub mod ids;
mod manifest;
mod nodes;
pub(crate) mod onnx;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use arch::{Architecture, PrmGraph};
pub use catalog::Catalog;
pub use files::open_regular;
pub(crate) use files::Bytes;
use files::{map_or_read, Source};
pub use ids::ItemIds;
use manifest::{parse_manifest, safe_name};
pub use manifest::{
    Dims, Manifest, Numeric, PrmKind, PrmQuery, FORMAT_VERSION, MAX_FILES, MAX_MANIFEST_BYTES,
};

use crate::error::{err, Result};
use onnx::{Dim, ElemType, OnnxIndex};

/// One mapped graph with its index.
pub(crate) struct Graph {
    pub bytes: Arc<Bytes>,
    pub index: OnnxIndex,
}

/// Options for [`Bundle::open_with`]: start from `OpenOptions::default()` and set fields
/// (more may come).
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct OpenOptions {
    /// Verify every file's sha256 against the manifest (reads all bytes once).
    pub verify_checksums: bool,
    /// Read the files into memory instead of mapping them (for callers that cannot
    /// promise the files stay untouched while the bundle is open).
    pub in_memory: bool,
}

impl OpenOptions {
    /// These options with checksum verification on or off.
    pub fn with_checksums(mut self, verify: bool) -> Self {
        self.verify_checksums = verify;
        self
    }
    /// These options reading the files into memory (`true`) or mapping them.
    pub fn with_in_memory(mut self, in_memory: bool) -> Self {
        self.in_memory = in_memory;
        self
    }
}

/// An opened, validated bundle. Cheap to share (`Arc` inside); `Send + Sync`.
#[derive(Clone)]
pub struct Bundle {
    inner: Arc<BundleInner>,
}

struct BundleInner {
    dir: PathBuf,
    manifest: Manifest,
    arch: Architecture,
    catalog: Catalog,
    encoder: Graph,
    decoder: Graph,
    prm: Graph,
    ids: Option<ItemIds>,
    file_bytes: u64,
    file_names: Vec<String>,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("dir", &self.inner.dir)
            .field("name", &self.inner.manifest.name)
            .finish()
    }
}

impl Bundle {
    /// Open and validate the bundle at `path`: a bundle directory, or a one-file `.promise`
    /// container (memory-mapped, no checksum pass).
    pub fn open(path: impl AsRef<Path>) -> Result<Bundle> {
        Bundle::open_with(path, OpenOptions::default())
    }

    /// Open with options (checksums, read into memory).
    pub fn open_with(path: impl AsRef<Path>, opts: OpenOptions) -> Result<Bundle> {
        let path = path.as_ref().to_path_buf();
        if path.is_dir() {
            return Bundle::assemble(Source::Dir(&path), path.clone(), opts);
        }
        if !path.exists() {
            return Err(err!(
                Io,
                "bundle {} does not exist (expected a bundle directory or a .promise file)",
                path.display()
            ));
        }
        let (f, len) = open_regular(&path)?;
        let bytes = Arc::new(map_or_read(f, len, &path, opts.in_memory)?);
        let index = container::parse(&bytes, &path.display().to_string())?;
        Bundle::assemble(Source::Container(&bytes, &index), path, opts)
    }

    /// Open a one-file bundle (a `.promise` container) held in memory: the bundle owns the
    /// buffer (no copy is made; the catalog, which requests read, is copied out of it).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Bundle> {
        let bytes = Arc::new(Bytes::Owned(bytes));
        let index = container::parse(&bytes, "the in-memory bundle")?;
        let opts = OpenOptions::default();
        Bundle::assemble(Source::Container(&bytes, &index), "<memory>".into(), opts)
    }

    /// A container in memory, opened with every checksum verified (pack and unpack).
    pub(crate) fn open_with_bytes_checked(bytes: Vec<u8>) -> Result<Bundle> {
        let bytes = Arc::new(Bytes::Owned(bytes));
        let index = container::parse(&bytes, "the container")?;
        let opts = OpenOptions::default().with_checksums(true);
        Bundle::assemble(Source::Container(&bytes, &index), "<memory>".into(), opts)
    }

    /// Open a one-file bundle stored at `offset..offset + len` of the open file `fd` (an
    /// uncompressed Android APK asset: `AAsset_openFileDescriptor64`). The range is
    /// memory-mapped (read into memory with `opts.in_memory`); `fd` is only used during
    /// this call and stays the caller's to close. The same contract as a file: the range
    /// must not be truncated or rewritten while the bundle is being opened and loaded.
    #[cfg(unix)]
    pub fn from_fd_range(
        fd: std::os::fd::BorrowedFd<'_>,
        offset: u64,
        len: u64,
        opts: OpenOptions,
    ) -> Result<Bundle> {
        use std::os::fd::AsRawFd;
        let what = format!("fd {} range {offset}+{len}", fd.as_raw_fd());
        let file = std::fs::File::from(
            fd.try_clone_to_owned()
                .map_err(|e| err!(Io, "cannot duplicate {what}: {e}"))?,
        );
        let md = file
            .metadata()
            .map_err(|e| err!(Io, "cannot stat {what}: {e}"))?;
        if !md.is_file() {
            return Err(err!(Io, "{what} is not a regular file"));
        }
        let end = offset.checked_add(len).filter(|&e| e <= md.len());
        if end.is_none() {
            return Err(err!(
                InvalidArgument,
                "{what} ends past the file's {} bytes",
                md.len()
            ));
        }
        let n = usize::try_from(len)
            .map_err(|_| err!(Limits, "{what} is too large for this machine"))?;
        let bytes = if opts.in_memory || len == 0 {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = file;
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| err!(Io, "cannot seek {what}: {e}"))?;
            let mut v = Vec::new();
            v.try_reserve_exact(n)
                .map_err(|_| err!(Limits, "cannot allocate {n} bytes to read {what}"))?;
            f.take(len)
                .read_to_end(&mut v)
                .map_err(|e| err!(Io, "cannot read {what}: {e}"))?;
            Bytes::Owned(v)
        } else {
            // SAFETY: a read-only map of a regular file's range; the contract above (the
            // same as for bundle files) keeps it from being truncated while it is read.
            #[allow(unsafe_code)]
            let map = unsafe { memmap2::MmapOptions::new().offset(offset).len(n).map(&file) }
                .map_err(|e| err!(Io, "cannot map {what}: {e}"))?;
            Bytes::Mapped(map)
        };
        let bytes = Arc::new(bytes);
        let index = container::parse(&bytes, &what)?;
        Bundle::assemble(Source::Container(&bytes, &index), what.into(), opts)
    }

    /// The names of the files the manifest lists (a container also holds manifest.json).
    pub fn file_names(&self) -> Vec<String> {
        self.inner.file_names.clone()
    }

    /// Read, check and assemble a bundle from `src` (`origin` names it in messages).
    fn assemble(src: Source<'_>, origin: PathBuf, opts: OpenOptions) -> Result<Bundle> {
        let what = origin.display().to_string();
        let text = src.manifest(&what)?;
        let text = std::str::from_utf8(&text)
            .map_err(|_| err!(Manifest, "the manifest of {what} is not valid UTF-8"))?;
        let (manifest, raw) = parse_manifest(text)?;
        let arch = Architecture::new(&manifest);
        if let Source::Container(_, index) = &src {
            // a container holds the manifest and the files it lists, nothing else
            if let Some((name, _)) = index
                .entries
                .iter()
                .find(|(n, _)| n != "manifest.json" && !raw.files.iter().any(|f| f.name == *n))
            {
                return Err(err!(
                    Manifest,
                    "{what} holds an entry {name:?} that its manifest does not list"
                ));
            }
        }
        // every size is checked against what the manifest's counts allow before a byte is
        // read or mapped (sha256 would read a padded file whole)
        for f in &raw.files {
            let limit = if f.name == raw.catalog {
                // the catalog's own header states its length: it must be the manifest's,
                // and the length the manifest's counts give (read: 64 bytes)
                let declared = src.catalog_declared_len(&f.name, f.bytes, &what)?;
                if declared != f.bytes {
                    return Err(err!(
                        Catalog,
                        "{} declares {declared} bytes in its header, the manifest says {}",
                        f.name,
                        f.bytes
                    ));
                }
                let want =
                    catalog::expected_len(manifest.levels, manifest.num_nodes, manifest.num_items);
                if want != Some(f.bytes) {
                    return Err(err!(
                        Manifest,
                        "{} is {} bytes, a catalog of the manifest's {} levels, {} nodes and {} \
                         items is {}",
                        f.name,
                        f.bytes,
                        manifest.levels,
                        manifest.num_nodes,
                        manifest.num_items,
                        want.map_or("too large".to_string(), |w| w.to_string())
                    ));
                }
                continue;
            } else if raw.ids.as_deref() == Some(f.name.as_str()) {
                ids::max_len(manifest.num_items)
            } else if let Some(role) = [
                (&raw.graphs.encoder, arch::GraphRole::Encoder),
                (&raw.graphs.decoder, arch::GraphRole::Decoder),
                (&raw.graphs.prm, arch::GraphRole::Prm),
            ]
            .iter()
            .find(|(n, _)| **n == f.name)
            .map(|(_, r)| *r)
            {
                graph_byte_limit(&arch, role, &manifest)
            } else {
                MAX_OTHER_FILE_BYTES
            };
            if f.bytes > limit {
                return Err(err!(
                    Limits,
                    "manifest says {} is {} bytes, over the {limit} bytes its weights can fill",
                    f.name,
                    f.bytes
                ));
            }
        }

        let mut files = std::collections::HashMap::new();
        let mut file_bytes = 0u64;
        for f in &raw.files {
            let name = safe_name(&f.name)?;
            // the catalog and the ids are what requests read: always in the heap
            let in_memory =
                opts.in_memory || f.name == raw.catalog || raw.ids.as_deref() == Some(&f.name);
            let bytes = src.file(name, f.bytes, in_memory, &what)?;
            if opts.verify_checksums {
                let got = Sha256::digest(&bytes[..])
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>();
                if got != f.sha256.to_ascii_lowercase() {
                    return Err(err!(
                        Checksum,
                        "{name} of {what} has sha256 {got}, the manifest says {}",
                        f.sha256
                    ));
                }
            }
            file_bytes += f.bytes;
            files.insert(name.to_owned(), Arc::new(bytes));
        }
        let file_names = raw.files.iter().map(|f| f.name.clone()).collect();
        let dir = origin;
        let take = |name: &str, role: &str| -> Result<Arc<Bytes>> {
            let name = safe_name(name)?;
            files.get(name).cloned().ok_or_else(|| {
                err!(
                    Manifest,
                    "manifest {role} file {name:?} is not listed in manifest files"
                )
            })
        };
        let cat_bytes = take(&raw.catalog, "catalog")?;
        let enc_bytes = take(&raw.graphs.encoder, "graphs.encoder")?;
        let dec_bytes = take(&raw.graphs.decoder, "graphs.decoder")?;
        let prm_bytes = take(&raw.graphs.prm, "graphs.prm")?;

        let catalog = Catalog::parse(cat_bytes)?;
        let mf = &manifest;
        if catalog.levels() != mf.levels {
            return Err(err!(
                Manifest,
                "catalog has {} SID levels, the manifest says {}",
                catalog.levels(),
                mf.levels
            ));
        }
        for l in 0..mf.levels {
            if catalog.codebook(l) != mf.codebook[l] {
                return Err(err!(
                    Manifest,
                    "catalog codebook of level {} is {}, the manifest says {}",
                    l + 1,
                    catalog.codebook(l),
                    mf.codebook[l]
                ));
            }
        }
        if catalog.num_items() != mf.num_items || catalog.num_nodes() != mf.num_nodes {
            return Err(err!(
                Manifest,
                "catalog has {} items and {} nodes, the manifest says {} and {}",
                catalog.num_items(),
                catalog.num_nodes(),
                mf.num_items,
                mf.num_nodes
            ));
        }
        let encoder = check_graph(enc_bytes, "encoder", &arch, mf)?;
        let decoder = check_graph(dec_bytes, "decoder", &arch, mf)?;
        let prm = check_graph(prm_bytes, "prm", &arch, mf)?;
        let ids = match &raw.ids {
            Some(name) => {
                let bytes = take(name, "ids")?;
                Some(ItemIds::parse(&bytes, mf.num_items, name)?)
            }
            None => None,
        };
        Ok(Bundle {
            inner: Arc::new(BundleInner {
                dir,
                arch,
                manifest,
                catalog,
                encoder,
                decoder,
                prm,
                ids,
                file_bytes,
                file_names,
            }),
        })
    }

    /// The validated manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }
    /// Drop the graph mappings' pages from RSS once the engines have read them
    /// ([`Model::load`](crate::Model::load) calls it). They are read from the files again
    /// when touched: by another load, or by requests of a model whose tables are read in
    /// place (`LoadOptions::tables_in_place`), which fault in only the rows they read.
    pub(crate) fn release_graph_pages(&self) {
        for g in [&self.inner.encoder, &self.inner.decoder, &self.inner.prm] {
            g.bytes.release_pages();
        }
    }

    /// Mark the graph mappings as read at random (tables read in place: a request touches
    /// a few rows of each, far apart).
    pub(crate) fn advise_random_graph_reads(&self) {
        for g in [&self.inner.encoder, &self.inner.decoder, &self.inner.prm] {
            g.bytes.advise_random();
        }
    }

    /// The model's architecture (built from the manifest, every graph checked against it).
    pub fn architecture(&self) -> &Architecture {
        &self.inner.arch
    }
    /// The catalog and trie.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }
    /// Where the bundle came from: its directory, its `.promise` file, `<memory>`, or
    /// the file descriptor range.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
    /// The app's item ids, when the bundle carries an id table (`ids.bin`).
    pub fn ids(&self) -> Option<&ItemIds> {
        self.inner.ids.as_ref()
    }
    /// Total bytes of the bundle's files.
    pub fn file_bytes(&self) -> u64 {
        self.inner.file_bytes
    }
    pub(crate) fn encoder(&self) -> &Graph {
        &self.inner.encoder
    }
    pub(crate) fn decoder(&self) -> &Graph {
        &self.inner.decoder
    }
    pub(crate) fn prm(&self) -> &Graph {
        &self.inner.prm
    }
}

/// Largest listed file that is neither the catalog nor a graph.
const MAX_OTHER_FILE_BYTES: u64 = 64 << 20;

/// The most bytes a graph of `role` can need: every weight as f32 with a scale per row,
/// the encoder's causal mask as a constant, and 4 MiB for the nodes and small constants.
fn graph_byte_limit(arch: &Architecture, role: arch::GraphRole, m: &Manifest) -> u64 {
    let weights: u64 = arch
        .weights()
        .iter()
        .filter(|w| w.graph == role)
        .map(|w| (w.len() as u64 + w.shape.first().copied().unwrap_or(0) as u64) * 4)
        .sum();
    let h = m.history as u64;
    weights + h * h * 4 + (4 << 20)
}

fn expect_io(
    vi: Option<&onnx::ValueInfo>,
    role: &str,
    name: &str,
    elem: ElemType,
    dims: &[Option<i64>],
) -> Result<()> {
    let vi = vi.ok_or_else(|| err!(Graph, "{role} graph has no {name:?} input/output"))?;
    if vi.name != name {
        return Err(err!(
            Graph,
            "{role} graph has {:?} where {name:?} was expected",
            vi.name
        ));
    }
    if vi.elem != elem {
        return Err(err!(
            Graph,
            "{role} graph {name:?} has element type {:?}, expected {elem:?}",
            vi.elem
        ));
    }
    let ok = vi.dims.len() == dims.len()
        && vi.dims.iter().zip(dims).all(|(d, w)| match (d, w) {
            (Dim::Fixed(a), Some(b)) => a == b,
            (Dim::Symbol(_), None) => true,
            _ => false,
        });
    if !ok {
        return Err(err!(
            Graph,
            "{role} graph {name:?} has shape {:?}, expected {:?} (None = symbolic)",
            vi.dims,
            dims
        ));
    }
    Ok(())
}

fn check_graph(bytes: Arc<Bytes>, role: &str, a: &Architecture, m: &Manifest) -> Result<Graph> {
    let what = format!("{role} graph");
    let index = onnx::index(&bytes, &what)?;
    let (h, l, cols, d, c) = (
        m.history as i64,
        m.levels as i64,
        m.encoder_columns() as i64,
        m.dims.d_model as i64,
        m.max_codebook() as i64,
    );
    // every graph's inputs and output, in order: (name, element type, dims; None = symbolic)
    let mem = ("memory", ElemType::F32, vec![Some(1), Some(h), Some(d)]);
    let mask = ("history_mask", ElemType::F32, vec![Some(1), Some(h)]);
    let (inputs, output) = match role {
        "encoder" => (
            vec![
                (
                    "history_codes",
                    ElemType::I64,
                    vec![Some(1), Some(h), Some(cols)],
                ),
                mask,
            ],
            mem,
        ),
        "decoder" => (
            vec![
                mem,
                mask,
                ("prefix_codes", ElemType::I64, vec![None, Some(l - 1)]),
            ],
            ("log_probs", ElemType::F32, vec![None, Some(l), Some(c)]),
        ),
        _ if m.dims.prm_query == PrmQuery::Path => (
            vec![mem, mask, ("node_path", ElemType::I64, vec![None, Some(l)])],
            ("scores", ElemType::F32, vec![None]),
        ),
        _ => (
            vec![mem, mask, ("node_ids", ElemType::I64, vec![None])],
            ("scores", ElemType::F32, vec![None]),
        ),
    };
    for (i, (name, elem, dims)) in inputs.iter().enumerate() {
        expect_io(index.inputs.get(i), role, name, *elem, dims)?;
    }
    expect_io(index.outputs.first(), role, output.0, output.1, &output.2)?;
    let expected_io = inputs.len();
    if index.inputs.len() != expected_io || index.outputs.len() != 1 {
        return Err(err!(
            Graph,
            "{role} graph has {} inputs and {} outputs, expected {expected_io} and 1",
            index.inputs.len(),
            index.outputs.len()
        ));
    }
    let r = match role {
        "encoder" => arch::GraphRole::Encoder,
        "decoder" => arch::GraphRole::Decoder,
        _ => arch::GraphRole::Prm,
    };
    arch::check(&index, r, a, m)?;
    nodes::check(&index, &what, m)?;
    index.check_finite(&bytes, &what)?;
    Ok(Graph { bytes, index })
}
