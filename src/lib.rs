//! # promise-rt
//!
//! An embedded runtime for PROMISE-style generative recommendation: a small
//! encoder-decoder over **Semantic IDs** (SIDs) proposes the next item level by level,
//! and a **process reward model** (PRM) steers the beam search at every level.
//!
//! ## Data flow of one request
//! ```text
//! history: [item ids] --catalog--> SID codes (+ item ids) --> encoder --> E (kept by the backend)
//! for level b in 1..=L:
//!     decoder(E, K' beam prefixes)        -> log-probs over level-b codes, per beam
//!     trie: only valid children survive   -> top K+ candidates by cumulative log-prob
//!     PRM(E, K+ candidate node ids)       -> one score per candidate
//!     keep top K' (top N at the last level); a prefix with no unseen item under it is
//!     never kept, and a level keeps more than K' when K' would hold fewer than N items
//! ```
//! The search's exact semantics (keys, ties, limits, the full-feed guarantee) are written
//! once, in [`search`].
//!
//! ## Using it
//! ```no_run
//! use promise_rt::{Bundle, Device, Model, SearchConfig};
//! let bundle = Bundle::open("models/ml1m")?;
//! let model = Model::load(&bundle, Device::Cpu)?;          // Send + Sync, load once
//! let mut session = model.session(SearchConfig::default())?; // one per thread
//! for rec in session.recommend(&[12, 7, 99])? {
//!     println!("{} {:.3}", rec.item, rec.score);
//! }
//! # Ok::<(), promise_rt::Error>(())
//! ```
//!
//! ## Where bundles come from
//! The crate holds the runtime, not models. A bundle (a directory or a one-file `.promise`;
//! the format is documented in the repository's `models/README.md`) comes from the
//! repository's `models/` (the MovieLens-1M bundles, `models/ml1m` the default), or from
//! your own interaction log through the training package in the repository's
//! `models/train/`: `python -m promise_train build --log LOG --out DIR` writes
//! `DIR/bundle-int8.promise` carrying your item ids.
//!
//! ## Glossary (the same words in Rust, C, CLI and docs)
//! - **item**: a catalogue entry, a dense id `0..num_items`.
//! - **SID**: an item's tuple of L codes; **level** b is its b-th code (1-based in prose,
//!   0-based in code).
//! - **prefix** / **node**: a SID prefix is a node of the trie; node ids are breadth-first.
//! - **beam** (K'): a prefix kept alive between levels. **candidate** (K+): a prefix the
//!   PRM scores. **result** (N): a returned item.
//! - **PRM kind** (manifest `model.prm_kind`, the bundle format in models/README.md):
//!   `attention`, the paper's (the node's query, cross-attention over E, an MLP), or
//!   `dense`, what the ML-1M bundles ship (E's row of the latest item, projected, dotted
//!   with one row per node); every engine runs both.
//! - **encoder input** (manifest `model.encoder_input`): an item's token is the sum of its
//!   L code embeddings (`codes`), plus its own item embedding (`codes_and_item`, the
//!   default bundle since commit 4ae8b37); every engine runs both.
//!
//! ## Features
//! - `cpu` (default): the CPU backend (`src/backend/cpu/`) with its `Fused` engine
//!   ([`CpuEngine`], default): our own kernels for the bundle's architecture with a
//!   key/value cache across levels; no dependencies. `tract` (default, implies `cpu`): the
//!   `Tract` engine, the bundle's ONNX graphs through tract-onnx. They return the same
//!   items (tests/it/cpu_engines.rs); the fused one is about 5x faster (README
//!   "Results"); an app that wants a small library builds `cpu` without `tract`.
//!   `gpu`: our WGSL kernels through wgpu
//!   (`src/backend/gpu/`; `Device::Gpu`, or `Device::Auto` for a hardware GPU when one
//!   qualifies). `ffi`: the C ABI. `cli`: the `promise` binary.
//!
//! ## Guarantees and their scope
//! - Bundles are validated once at [`Bundle::open`]; afterwards accessors cannot fail.
//! - After a session is created, the search and its bookkeeping allocate nothing
//!   (`tests/alloc.rs` proves it with a counting allocator and a fake scorer), and a whole
//!   request on the fused CPU engine allocates nothing either (same test binary); the tract
//!   engine's and the GPU backend's forward passes do allocate (measured by
//!   `promise bench`).
//!
//! ## Non-goals
//! Training (Python, `models/train/`), batching many users in one call, catalogs that
//! change while a model is loaded.

#![deny(unsafe_code)]
#![warn(missing_debug_implementations)]

mod alloc;
mod backend;
pub mod bundle;
mod error;
#[cfg(feature = "ffi")]
pub mod ffi;
pub mod limits;
#[cfg(any(feature = "tract", feature = "ffi"))]
mod panic;
pub mod search;
mod session;

pub use backend::{BackendInfo, CpuEngine, Device};
pub use bundle::{Bundle, Catalog, ItemIds, Manifest, Numeric, OpenOptions};
pub use error::{Error, ErrorCode, Result};
pub use search::{Recommendation, Scorer, SearchConfig, Searcher, StageTimes};
pub use session::{IdFeed, LoadOptions, Model, Session};

/// Not part of the API (no stability promise, hidden from the docs): the pieces the
/// benches, the fuzz targets and the CLI's FLOP counter measure directly.
#[doc(hidden)]
pub mod internals {
    #[cfg(feature = "cpu")]
    pub use crate::backend::cpu::{kernels, CpuModel};
    pub use crate::bundle::ids::{id_problem, MAX_ID_BYTES};
    pub use crate::bundle::open_regular;
    pub use crate::error::{escape, escape_long};
    #[cfg(feature = "ffi")]
    pub use crate::ffi::{inject_fault, Fault};
    pub use crate::search::MAX_HISTORY;
    /// The ONNX index the bundle checks are built on (the fuzz targets' entry point).
    pub mod onnx {
        pub use crate::bundle::onnx::*;
    }
}

/// The crate version, as the C API reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

// Compile-time guarantee: a Model (and its Bundle) can be shared across threads, a
// Session moved to one.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<Model>();
    send_sync::<Bundle>();
    send::<Session>();
};

#[cfg(test)]
mod send_sync {
    #[test]
    fn model_is_send_sync_and_session_is_send() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<crate::Model>();
        send_sync::<crate::Bundle>();
        send::<crate::Session>();
    }
}
