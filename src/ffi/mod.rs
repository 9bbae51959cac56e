//! The C ABI (feature `ffi`). The header `src/ffi/promise_rt.h` is generated from this file
//! by cbindgen (pinned; `tests/it/ffi.rs` fails when it is stale).
//!
//! Conventions (repeated in the header and the README):
//! - Every function returns a `PromiseStatus` (0 = `PROMISE_STATUS_OK`), except
//!   `promise_version`, `promise_status_text` and `promise_last_error`, which return static or
//!   thread-local strings.
//! - Outputs are written only on success. On failure, `promise_last_error()` gives a message
//!   (UTF-8, owned by the library, valid until the next call into the library on the same
//!   thread).
//! - Handles are opaque. `promise_*_free(NULL)` is a no-op returning OK; freeing a handle
//!   twice, or passing a handle that was never returned, returns
//!   `PROMISE_STATUS_INVALID_ARGUMENT` instead of corrupting memory (handles are checked
//!   against a registry of live ones; a freed handle's address may be reused by a later
//!   handle of the same kind, so do not keep freed handles).
//! - A `PromiseModel` may be shared by any number of threads. A `PromiseSession` is for
//!   one thread at a time: a concurrent second call on the same session returns
//!   `PROMISE_STATUS_INVALID_ARGUMENT` ("in use") instead of racing.
//! - Every entry point catches Rust panics and returns `PROMISE_STATUS_PANIC`; a session
//!   whose call panicked serves the next call normally.
#![allow(unsafe_code)]
#![allow(clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{err, Error, ErrorCode};
use crate::{Bundle, Device, Model, Recommendation, SearchConfig, Session};

/// Status codes returned by every C entry point (the Rust `ErrorCode` values).
pub type PromiseStatus = i32;

pub const PROMISE_STATUS_OK: PromiseStatus = 0;
pub const PROMISE_STATUS_IO: PromiseStatus = 1;
pub const PROMISE_STATUS_MANIFEST: PromiseStatus = 2;
pub const PROMISE_STATUS_CATALOG: PromiseStatus = 3;
pub const PROMISE_STATUS_GRAPH: PromiseStatus = 4;
pub const PROMISE_STATUS_CHECKSUM: PromiseStatus = 5;
pub const PROMISE_STATUS_CONFIG: PromiseStatus = 6;
pub const PROMISE_STATUS_EMPTY_HISTORY: PromiseStatus = 7;
pub const PROMISE_STATUS_UNKNOWN_ITEM: PromiseStatus = 8;
pub const PROMISE_STATUS_CAPACITY: PromiseStatus = 9;
pub const PROMISE_STATUS_BACKEND_UNAVAILABLE: PromiseStatus = 10;
pub const PROMISE_STATUS_BACKEND: PromiseStatus = 11;
pub const PROMISE_STATUS_INVALID_ARGUMENT: PromiseStatus = 12;
pub const PROMISE_STATUS_PANIC: PromiseStatus = 13;
pub const PROMISE_STATUS_DEVICE_LOST: PromiseStatus = 14;
pub const PROMISE_STATUS_LIMITS: PromiseStatus = 15;

/// Device choice for `promise_model_open`.
pub const PROMISE_DEVICE_CPU: i32 = 0;
pub const PROMISE_DEVICE_GPU: i32 = 1;
pub const PROMISE_DEVICE_AUTO: i32 = 2;

/// Flags for `promise_model_open_with` and `promise_model_open_fd_with` (0: as
/// `promise_model_open`). PROMISE_OPEN_TABLES_IN_PLACE: the fused CPU engine reads the
/// tables that grow with the catalog (item rows, prefix rows) in place from the memory
/// map instead of one heap copy each: only the pages requests touch stay resident, and the
/// OS may reclaim them. The bundle's bytes must then stay unchanged (not truncated or
/// rewritten in place) for as long as the model lives, or a request can fault (SIGBUS); an
/// app's own read-only files and APK assets qualify. Ignored by the GPU backend.
pub const PROMISE_OPEN_TABLES_IN_PLACE: u32 = 1;

/// A loaded model (opaque). Thread-safe.
#[derive(Debug)]
pub struct PromiseModel {
    _private: [u8; 0],
}

/// A search session (opaque). One thread at a time.
#[derive(Debug)]
pub struct PromiseSession {
    _private: [u8; 0],
}

/// Search knobs; fill with `promise_search_config_default` and adjust.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PromiseSearchConfig {
    /// K': beams kept per level (1..=256).
    pub beams: u32,
    /// K+: candidates scored by the PRM per level, and the final pool (beams..=4096).
    pub candidates: u32,
    /// N: recommendations returned (1..=candidates).
    pub results: u32,
    /// Non-zero: PRM-guided search; zero: plain beam search.
    pub prm: u32,
    /// Weight of the generator log-prob in the PRM key, 0..=1 (0 = PRM alone).
    pub mix: f32,
}

/// One recommendation.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PromiseRecommendation {
    /// Item id.
    pub item: u32,
    /// Ranking score (higher is better).
    pub score: f32,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(e: &Error) -> PromiseStatus {
    let msg = CString::new(e.message().replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = msg);
    e.code() as i32
}

fn clear_error() {
    LAST_ERROR.with(|l| {
        let mut l = l.borrow_mut();
        // only replace a non-empty message: a successful call should not allocate
        if !l.as_bytes().is_empty() {
            *l = CString::default();
        }
    });
}

/// A fault for the tests of the C boundary to inject into the next `promise_recommend`
/// on this thread, with the session locked (not part of the API).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Panic inside the call.
    Panic,
    /// Hold the session for this long.
    Hold(std::time::Duration),
}

thread_local! {
    static FAULT: std::cell::Cell<Fault> = const { std::cell::Cell::new(Fault::None) };
}

/// Arm `f` for the next `promise_recommend` on this thread (tests only).
#[doc(hidden)]
pub fn inject_fault(f: Fault) {
    FAULT.with(|c| c.set(f));
}

fn take_fault() {
    match FAULT.with(|c| c.replace(Fault::None)) {
        Fault::None => {}
        Fault::Panic => panic!("injected by a test"),
        Fault::Hold(d) => std::thread::sleep(d),
    }
}

/// Run `f` behind the panic boundary, turning errors and panics into statuses.
fn guard(f: impl FnOnce() -> Result<(), Error>) -> PromiseStatus {
    match crate::panic::catch(f) {
        Ok(Ok(())) => {
            clear_error();
            PROMISE_STATUS_OK
        }
        Ok(Err(e)) => set_error(&e),
        Err(what) => set_error(&Error::new(
            ErrorCode::Panic,
            format!("internal panic caught at the C boundary (a bug, please report it): {what}"),
        )),
    }
}

// BTreeMap, not HashMap: its nodes are pointed to from their start, so leak checkers see the
// (static, live) registry as reachable rather than "possibly lost".
type Registry<T> = Mutex<BTreeMap<usize, Arc<T>>>;

fn models() -> &'static Registry<Model> {
    static R: OnceLock<Registry<Model>> = OnceLock::new();
    R.get_or_init(Default::default)
}
fn sessions() -> &'static Registry<Mutex<Session>> {
    static R: OnceLock<Registry<Mutex<Session>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn register<T>(reg: &Registry<T>, v: T) -> usize {
    let arc = Arc::new(v);
    let key = Arc::as_ptr(&arc) as usize;
    reg.lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, arc);
    key
}

fn lookup<T>(reg: &Registry<T>, key: usize, what: &str) -> Result<Arc<T>, Error> {
    reg.lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned()
        .ok_or_else(|| err!(InvalidArgument, "{what} handle {key:#x} is not a live handle (already freed, or never returned by this library)"))
}

fn unregister<T>(reg: &Registry<T>, key: usize, what: &str) -> Result<(), Error> {
    let removed = reg.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    match removed {
        Some(_) => Ok(()), // dropped here, outside the registry lock
        None => Err(err!(InvalidArgument, "{what} handle {key:#x} is not a live handle (double free, or never returned by this library)")),
    }
}

unsafe fn c_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(err!(
            InvalidArgument,
            "{what} is NULL, expected a NUL-terminated UTF-8 string"
        ));
    }
    // SAFETY: the caller passes a NUL-terminated string (documented contract); non-null checked.
    unsafe { CStr::from_ptr(p) }.to_str().map_err(|e| {
        err!(
            InvalidArgument,
            "{what} is not valid UTF-8 (byte {})",
            e.valid_up_to()
        )
    })
}

/// The library version, e.g. "0.1.0" (static string).
#[no_mangle]
pub extern "C" fn promise_version() -> *const c_char {
    static V: OnceLock<CString> = OnceLock::new();
    V.get_or_init(|| CString::new(crate::VERSION).unwrap_or_default())
        .as_ptr()
}

/// A static, lower-case name for a status code ("ok", "config", ...); "unknown" otherwise.
#[no_mangle]
pub extern "C" fn promise_status_text(status: PromiseStatus) -> *const c_char {
    static NAMES: OnceLock<Vec<CString>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        ErrorCode::ALL
            .iter()
            .map(|c| CString::new(c.name()).unwrap_or_default())
            .chain([CString::new("unknown").unwrap_or_default()])
            .collect()
    });
    let i = if (0..ErrorCode::ALL.len() as i32).contains(&status) {
        status as usize
    } else {
        ErrorCode::ALL.len()
    };
    names[i].as_ptr()
}

/// The message of the last failed call on this thread ("" after a success). Owned by the
/// library; valid until the next call into the library on this thread.
#[no_mangle]
pub extern "C" fn promise_last_error() -> *const c_char {
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}

/// Fill `out` with the default search config (K'=16, K+=64, N=10, PRM on, mix 0.25).
#[no_mangle]
pub unsafe extern "C" fn promise_search_config_default(
    out: *mut PromiseSearchConfig,
) -> PromiseStatus {
    guard(|| {
        if out.is_null() {
            return Err(err!(
                InvalidArgument,
                "out is NULL, expected a PromiseSearchConfig to fill"
            ));
        }
        let d = SearchConfig::default();
        let c = PromiseSearchConfig {
            beams: d.beams as u32,
            candidates: d.candidates as u32,
            results: d.results as u32,
            prm: d.prm as u32,
            mix: d.mix,
        };
        // SAFETY: non-null, caller-provided storage for one PromiseSearchConfig.
        unsafe { out.write(c) };
        Ok(())
    })
}

fn c_device(device: i32) -> Result<Device, Error> {
    match device {
        PROMISE_DEVICE_CPU => Ok(Device::Cpu),
        PROMISE_DEVICE_GPU => Ok(Device::Gpu),
        PROMISE_DEVICE_AUTO => Ok(Device::Auto),
        d => Err(err!(
            InvalidArgument,
            "device is {d}, expected 0 (cpu), 1 (gpu) or 2 (auto)"
        )),
    }
}

/// Load `bundle` on `device` with `flags` (PROMISE_OPEN_*) and hand the new model's
/// handle to `*out`.
fn open_model(
    out: *mut *mut PromiseModel,
    device: i32,
    flags: u32,
    bundle: impl FnOnce() -> Result<Bundle, Error>,
) -> Result<(), Error> {
    if out.is_null() {
        return Err(err!(
            InvalidArgument,
            "out is NULL, expected a PromiseModel* to write the handle to"
        ));
    }
    let device = c_device(device)?;
    if flags & !PROMISE_OPEN_TABLES_IN_PLACE != 0 {
        return Err(err!(
            InvalidArgument,
            "flags is {flags:#x}, expected 0 or PROMISE_OPEN_TABLES_IN_PLACE (1)"
        ));
    }
    let opts = crate::LoadOptions::default()
        .with_tables_in_place(flags & PROMISE_OPEN_TABLES_IN_PLACE != 0);
    let model = Model::load_with(&bundle()?, device, &opts)?;
    let key = register(models(), model);
    // SAFETY: non-null, caller-provided storage for one pointer.
    unsafe { out.write(key as *mut PromiseModel) };
    Ok(())
}

/// Open the bundle at `bundle_path` (UTF-8 path): a bundle directory or a one-file
/// `.promise` bundle, and load it on `device` (PROMISE_DEVICE_CPU / _GPU / _AUTO). On
/// success writes a new handle to `*out`; free it with `promise_model_free`.
/// Files: only regular files are read (a FIFO or device file is refused at once), each
/// of the size its manifest states. The graphs are memory-mapped and read only during
/// this call; the model never reads the bundle's files after it returns, so they may then
/// be replaced, truncated or deleted (unless opened with PROMISE_OPEN_TABLES_IN_PLACE,
/// `promise_model_open_with`). A file truncated *during* this call can fault
/// (SIGBUS): update a bundle by writing a new file (or directory) and renaming it into
/// place, which is one atomic rename for a `.promise` file.
#[no_mangle]
pub unsafe extern "C" fn promise_model_open(
    bundle_path: *const c_char,
    device: i32,
    out: *mut *mut PromiseModel,
) -> PromiseStatus {
    // SAFETY: the same contract.
    unsafe { promise_model_open_with(bundle_path, device, 0, out) }
}

/// Open a one-file `.promise` bundle held in memory: `len` bytes at `data`. The library
/// copies the bytes during this call: the caller may free or reuse its buffer as soon as
/// the call returns, whatever the status. Otherwise as `promise_model_open`.
#[no_mangle]
pub unsafe extern "C" fn promise_model_open_memory(
    data: *const u8,
    len: usize,
    device: i32,
    out: *mut *mut PromiseModel,
) -> PromiseStatus {
    guard(|| {
        open_model(out, device, 0, || {
            if data.is_null() {
                return Err(err!(InvalidArgument, "data is NULL (len {len})"));
            }
            let mut v = Vec::new();
            v.try_reserve_exact(len)
                .map_err(|_| err!(Limits, "cannot allocate {len} bytes to copy the bundle"))?;
            // SAFETY: documented contract: `len` readable bytes at `data`.
            v.extend_from_slice(unsafe { std::slice::from_raw_parts(data, len) });
            Bundle::from_bytes(v)
        })
    })
}

/// Open a one-file `.promise` bundle stored at `offset..offset + len` of the open file
/// descriptor `fd`: how Android hands out an uncompressed APK asset
/// (`AAsset_openFileDescriptor64` gives fd, offset and length). The range is
/// memory-mapped during this call; `fd` stays the caller's (not closed, not kept: close it
/// whenever you like after the call). The range must stay unchanged during the call, as a
/// bundle file must. Unix only; elsewhere `PROMISE_STATUS_BACKEND_UNAVAILABLE`.
#[no_mangle]
pub unsafe extern "C" fn promise_model_open_fd(
    fd: i32,
    offset: u64,
    len: u64,
    device: i32,
    out: *mut *mut PromiseModel,
) -> PromiseStatus {
    // SAFETY: the same contract.
    unsafe { promise_model_open_fd_with(fd, offset, len, device, 0, out) }
}

/// `promise_model_open` with `flags` (PROMISE_OPEN_*; 0 is `promise_model_open`).
#[no_mangle]
pub unsafe extern "C" fn promise_model_open_with(
    bundle_path: *const c_char,
    device: i32,
    flags: u32,
    out: *mut *mut PromiseModel,
) -> PromiseStatus {
    guard(|| {
        open_model(out, device, flags, || {
            // SAFETY: documented contract: NUL-terminated string.
            let path = unsafe { c_str(bundle_path, "bundle_path") }?;
            Bundle::open(path)
        })
    })
}

/// `promise_model_open_fd` with `flags` (PROMISE_OPEN_*; 0 is `promise_model_open_fd`).
/// With PROMISE_OPEN_TABLES_IN_PLACE the mapped range is read for as long as the model
/// lives (`fd` itself is still not kept), so it must stay unchanged that long.
#[no_mangle]
pub unsafe extern "C" fn promise_model_open_fd_with(
    fd: i32,
    offset: u64,
    len: u64,
    device: i32,
    flags: u32,
    out: *mut *mut PromiseModel,
) -> PromiseStatus {
    guard(|| {
        open_model(out, device, flags, || {
            #[cfg(unix)]
            {
                if fd < 0 {
                    return Err(err!(InvalidArgument, "fd is {fd}, expected an open file"));
                }
                // SAFETY: documented contract: `fd` is an open file descriptor for the
                // duration of this call (it is only duplicated and read, never closed).
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                Bundle::from_fd_range(fd, offset, len, crate::OpenOptions::default())
            }
            #[cfg(not(unix))]
            {
                let _ = (fd, offset, len);
                Err(err!(
                    BackendUnavailable,
                    "opening from a file descriptor needs a Unix platform"
                ))
            }
        })
    })
}

/// Free a model. NULL is a no-op. Sessions created from it stay valid (they share it).
#[no_mangle]
pub extern "C" fn promise_model_free(model: *mut PromiseModel) -> PromiseStatus {
    guard(|| {
        if model.is_null() {
            Ok(())
        } else {
            unregister(models(), model as usize, "model")
        }
    })
}

/// Number of items in the model's catalog (valid ids are 0..count-1).
#[no_mangle]
pub unsafe extern "C" fn promise_model_num_items(
    model: *const PromiseModel,
    out: *mut u32,
) -> PromiseStatus {
    guard(|| {
        if model.is_null() || out.is_null() {
            return Err(err!(InvalidArgument, "model and out must not be NULL"));
        }
        let m = lookup(models(), model as usize, "model")?;
        // SAFETY: non-null, caller-provided storage for one u32.
        unsafe { out.write(m.bundle().catalog().num_items() as u32) };
        Ok(())
    })
}

/// Create a session for `config` (NULL = defaults). Allocates every buffer the search
/// needs; free it with `promise_session_free`.
#[no_mangle]
pub unsafe extern "C" fn promise_session_new(
    model: *const PromiseModel,
    config: *const PromiseSearchConfig,
    out: *mut *mut PromiseSession,
) -> PromiseStatus {
    guard(|| {
        if model.is_null() || out.is_null() {
            return Err(err!(InvalidArgument, "model and out must not be NULL"));
        }
        let m = lookup(models(), model as usize, "model")?;
        let cfg = if config.is_null() {
            SearchConfig::default()
        } else {
            // SAFETY: non-null pointer to a caller-owned PromiseSearchConfig.
            let c = unsafe { config.read() };
            SearchConfig {
                beams: c.beams as usize,
                candidates: c.candidates as usize,
                results: c.results as usize,
                prm: c.prm != 0,
                mix: c.mix,
            }
        };
        let s = m.session(cfg)?;
        let key = register(sessions(), Mutex::new(s));
        // SAFETY: non-null, caller-provided storage for one pointer.
        unsafe { out.write(key as *mut PromiseSession) };
        Ok(())
    })
}

/// The session for this call: "in use" when another thread's call holds it. After a call
/// on it panicked (and returned PROMISE_STATUS_PANIC) it serves again: every request
/// rebuilds the session's state from its inputs.
fn locked(s: &Mutex<Session>) -> Result<std::sync::MutexGuard<'_, Session>, Error> {
    match s.try_lock() {
        Ok(g) => Ok(g),
        Err(std::sync::TryLockError::WouldBlock) => Err(err!(
            InvalidArgument,
            "the session is in use on another thread (a session is for one thread at a time)"
        )),
        Err(std::sync::TryLockError::Poisoned(p)) => {
            s.clear_poison();
            Ok(p.into_inner())
        }
    }
}

/// Let the session's model read only the last `items` of each history (1..=the bundle's
/// window; `PROMISE_STATUS_CONFIG` otherwise): less encoder work per request, at the
/// quality the model has for users with that many items (the README's "history window"
/// table). Every item of a history is still excluded from its feed.
#[no_mangle]
pub extern "C" fn promise_session_set_history_window(
    session: *mut PromiseSession,
    items: usize,
) -> PromiseStatus {
    guard(|| {
        if session.is_null() {
            return Err(err!(InvalidArgument, "session must not be NULL"));
        }
        let s = lookup(sessions(), session as usize, "session")?;
        let mut s = locked(&s)?;
        s.set_history_window(items)
    })
}

/// Run one request's worth of work on a fixed history and discard its feed, so that the
/// first user request is warm (the mapped weights paged in, caches and GPU pipelines
/// touched). Call it once after `promise_session_new`, off the UI thread; it costs about
/// one request. The library spawns no threads: the work runs on the calling thread.
#[no_mangle]
pub extern "C" fn promise_session_warmup(session: *mut PromiseSession) -> PromiseStatus {
    guard(|| {
        if session.is_null() {
            return Err(err!(InvalidArgument, "session must not be NULL"));
        }
        let s = lookup(sessions(), session as usize, "session")?;
        let mut s = locked(&s)?;
        s.warmup()
    })
}

/// Free a session. NULL is a no-op.
#[no_mangle]
pub extern "C" fn promise_session_free(session: *mut PromiseSession) -> PromiseStatus {
    guard(|| {
        if session.is_null() {
            Ok(())
        } else {
            unregister(sessions(), session as usize, "session")
        }
    })
}

/// `PROMISE_STATUS_CAPACITY` unless an output buffer of `capacity` holds the session's N.
fn check_capacity(s: &Session, capacity: usize) -> Result<(), Error> {
    let n = s.config().results;
    if capacity < n {
        return Err(err!(
            Capacity,
            "the output buffer holds {capacity} recommendations, this session returns up to {n}"
        ));
    }
    Ok(())
}

/// Writes a feed to the caller's buffer and its length to `*written`.
///
/// # Safety
/// `out` is writable for `recs.len()` elements and `written` for one usize.
unsafe fn write_feed(
    recs: &[Recommendation],
    out: *mut PromiseRecommendation,
    written: *mut usize,
) {
    for (i, r) in recs.iter().enumerate() {
        // SAFETY: i < recs.len() elements of caller storage (the contract).
        unsafe {
            out.add(i).write(PromiseRecommendation {
                item: r.item,
                score: r.score,
            })
        };
    }
    // SAFETY: as the contract says.
    unsafe { written.write(recs.len()) };
}

/// Recommend for `history` (`history_len` item ids, oldest first). Writes up to
/// `capacity` recommendations to `out` and their count to `*written`, only on success.
/// `capacity` must be at least the session's `results` (N).
/// Full feed: `*written` is min(N, U), U = the catalog items not in `history`: N whenever
/// N unseen items exist, all of them otherwise; never an item of `history`, never twice.
/// (The search's semantics: the Rust docs of `promise_rt::search`.)
/// A session in use by another thread's call: `PROMISE_STATUS_INVALID_ARGUMENT` ("in use").
/// After a call returned `PROMISE_STATUS_PANIC` (a bug in the library), the session serves
/// again: every request rebuilds its state from its inputs.
#[no_mangle]
pub unsafe extern "C" fn promise_recommend(
    session: *mut PromiseSession,
    history: *const u32,
    history_len: usize,
    out: *mut PromiseRecommendation,
    capacity: usize,
    written: *mut usize,
) -> PromiseStatus {
    guard(|| {
        if session.is_null() || out.is_null() || written.is_null() {
            return Err(err!(
                InvalidArgument,
                "session, out and written must not be NULL"
            ));
        }
        if history.is_null() && history_len != 0 {
            return Err(err!(
                InvalidArgument,
                "history is NULL but history_len is {history_len}"
            ));
        }
        let s = lookup(sessions(), session as usize, "session")?;
        let mut s = locked(&s)?;
        take_fault();
        check_capacity(&s, capacity)?;
        let hist: &[u32] = if history_len == 0 {
            &[]
        } else {
            // SAFETY: non-null pointer to `history_len` readable u32 (documented contract).
            unsafe { std::slice::from_raw_parts(history, history_len) }
        };
        let recs: &[Recommendation] = s.recommend(hist)?;
        // SAFETY: `out` holds `capacity` >= N >= recs.len() elements, `written` is non-null.
        unsafe { write_feed(recs, out, written) };
        Ok(())
    })
}

/// The app's id of catalog item `item`, when the bundle carries ids (`ids.bin`): `*id`
/// points to `*id_len` bytes of UTF-8, not NUL-terminated, owned by the model and valid
/// until `promise_model_free`. `PROMISE_STATUS_CONFIG` for a bundle without ids,
/// `PROMISE_STATUS_UNKNOWN_ITEM` for an index outside the catalog.
#[no_mangle]
pub unsafe extern "C" fn promise_model_item_id(
    model: *const PromiseModel,
    item: u32,
    id: *mut *const u8,
    id_len: *mut usize,
) -> PromiseStatus {
    guard(|| {
        if model.is_null() || id.is_null() || id_len.is_null() {
            return Err(err!(
                InvalidArgument,
                "model, id and id_len must not be NULL"
            ));
        }
        let m = lookup(models(), model as usize, "model")?;
        let b = m.bundle();
        let ids = b.ids().ok_or_else(|| {
            err!(
                Config,
                "bundle {} carries no item ids (ids.bin)",
                b.manifest().name
            )
        })?;
        if item as usize >= ids.len() {
            return Err(err!(
                UnknownItem,
                "item {item} is outside the catalog of {} items",
                ids.len()
            ));
        }
        let s = ids.get(item);
        // SAFETY: non-null, caller-provided storage for one pointer and one usize; the bytes
        // live in the model's bundle, which the registry keeps alive until the model is freed.
        unsafe {
            id.write(s.as_ptr());
            id_len.write(s.len());
        }
        Ok(())
    })
}

/// Recommend for a history in the app's ids: `history` holds `history_len` NUL-terminated
/// UTF-8 ids, oldest first. Ids the catalog does not know are skipped and their count is
/// written to `*unknown` (a history of unknown ids only gives an empty feed, not an
/// error); a malformed id (not UTF-8, empty, over 256 bytes, control characters) is
/// `PROMISE_STATUS_INVALID_ARGUMENT` naming its position. The feed is written as by
/// `promise_recommend`, in item indices: `promise_model_item_id` gives each one's id.
/// A bundle without ids: `PROMISE_STATUS_CONFIG`. Allocates nothing per request.
#[no_mangle]
pub unsafe extern "C" fn promise_recommend_ids(
    session: *mut PromiseSession,
    history: *const *const c_char,
    history_len: usize,
    out: *mut PromiseRecommendation,
    capacity: usize,
    written: *mut usize,
    unknown: *mut usize,
) -> PromiseStatus {
    guard(|| {
        if session.is_null() || out.is_null() || written.is_null() || unknown.is_null() {
            return Err(err!(
                InvalidArgument,
                "session, out, written and unknown must not be NULL"
            ));
        }
        if history.is_null() && history_len != 0 {
            return Err(err!(
                InvalidArgument,
                "history is NULL but history_len is {history_len}"
            ));
        }
        if history_len > crate::search::MAX_HISTORY {
            return Err(err!(
                InvalidArgument,
                "the history holds {history_len} ids, at most {} allowed",
                crate::search::MAX_HISTORY
            ));
        }
        let s = lookup(sessions(), session as usize, "session")?;
        let mut s = locked(&s)?;
        check_capacity(&s, capacity)?;
        let ptrs: &[*const c_char] = if history_len == 0 {
            &[]
        } else {
            // SAFETY: non-null pointer to `history_len` readable pointers (documented contract).
            unsafe { std::slice::from_raw_parts(history, history_len) }
        };
        if let Some(i) = ptrs.iter().position(|p| p.is_null()) {
            return Err(err!(InvalidArgument, "history id {i} is NULL"));
        }
        // SAFETY: each pointer is non-null (checked above) and NUL-terminated (contract).
        let ids = ptrs
            .iter()
            .map(|&p| unsafe { CStr::from_ptr(p) }.to_bytes());
        let feed = s.recommend_id_bytes(ids)?;
        // SAFETY: `out` holds `capacity` >= N >= the feed's length elements, `written` and
        // `unknown` are non-null.
        unsafe {
            write_feed(feed.recommendations(), out, written);
            unknown.write(feed.unknown());
        }
        Ok(())
    })
}
