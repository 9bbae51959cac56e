//! The Python binding: `promise_rt.Model.open(path | bytes)`, `model.session(...)`,
//! `session.recommend(history) -> [(item, score), ...]`. Errors are
//! `promise_rt.PromiseError` with the runtime's stable `code` (the C API's status) and its
//! `name`; the GIL is released while a request (or a load) runs, so Python threads with
//! their own sessions run requests in parallel.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;

use ::promise_rt as rt;

create_exception!(
    promise_rt,
    PromiseError,
    PyException,
    "A runtime error: `code` is the stable status (the C API's PROMISE_STATUS_*), `name` its short name."
);

fn to_py(py: Python<'_>, e: rt::Error) -> PyErr {
    let err = PromiseError::new_err(e.to_string());
    let v = err.value(py);
    let _ = v.setattr("code", e.code() as i32);
    let _ = v.setattr("name", e.code().name());
    err
}

/// A `PromiseError` the binding raises itself (before the runtime is called), with the
/// same `code` and `name` attributes as the runtime's.
fn binding_error(py: Python<'_>, code: rt::ErrorCode, msg: String) -> PyErr {
    let err = PromiseError::new_err(msg);
    let v = err.value(py);
    let _ = v.setattr("code", code as i32);
    let _ = v.setattr("name", code.name());
    err
}

/// The items of `history` (any iterable: a list, a range, a generator, an array, a NumPy
/// array), each extracted by `item(position, value)`, at most `MAX_HISTORY` of them: the
/// bound is checked as items arrive (`len()` is never trusted), so a range of 2^32 items
/// or a sequence that claims 2^40 stops at the limit with a `PromiseError`.
fn bounded_history<T>(
    py: Python<'_>,
    history: &Bound<'_, PyAny>,
    mut item: impl FnMut(usize, &Bound<'_, PyAny>) -> PyResult<T>,
) -> PyResult<Vec<T>> {
    let max = rt::search::MAX_HISTORY;
    let it = history.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "history must be an iterable of items, not {}",
            history.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        ))
    })?;
    let mut out = Vec::new();
    for (i, v) in it.enumerate() {
        if i >= max {
            return Err(binding_error(
                py,
                rt::ErrorCode::InvalidArgument,
                format!("the history holds more than {max} items, at most {max} allowed"),
            ));
        }
        out.push(item(i, &v?)?);
    }
    Ok(out)
}

fn device(name: &str) -> PyResult<rt::Device> {
    match name {
        "cpu" => Ok(rt::Device::Cpu),
        "gpu" => Ok(rt::Device::Gpu),
        "auto" => Ok(rt::Device::Auto),
        other => Err(PyValueError::new_err(format!(
            "device {other:?}, expected \"cpu\", \"gpu\" or \"auto\""
        ))),
    }
}

/// A loaded model: immutable, shared by any number of threads and sessions.
#[pyclass(module = "promise_rt", frozen)]
struct Model {
    inner: rt::Model,
}

#[pymethods]
impl Model {
    /// Open a bundle and load it: `source` is a bundle directory or a one-file `.promise`
    /// (a str or os.PathLike), or a `.promise` file's bytes. `device` is "cpu" (default),
    /// "gpu" or "auto". `tables_in_place`: the CPU engine reads the tables that grow with
    /// the catalog from the file's memory map instead of a heap copy (the file must then
    /// stay unchanged while the model lives; see the README's "Memory").
    #[staticmethod]
    #[pyo3(signature = (source, device = "cpu", *, tables_in_place = false))]
    fn open(
        py: Python<'_>,
        source: &Bound<'_, PyAny>,
        device: &str,
        tables_in_place: bool,
    ) -> PyResult<Model> {
        let dev = self::device(device)?;
        let bundle = if let Ok(bytes) = source.extract::<&[u8]>() {
            let owned = bytes.to_vec();
            py.detach(|| rt::Bundle::from_bytes(owned))
        } else if let Ok(path) = source.extract::<PathBuf>() {
            py.detach(|| rt::Bundle::open(&path))
        } else {
            return Err(PyTypeError::new_err(format!(
                "source is a {}, expected a path (str or os.PathLike) or bytes",
                source.get_type().name()?
            )));
        }
        .map_err(|e| to_py(py, e))?;
        let inner = py
            .detach(|| {
                let opts = rt::LoadOptions::default().with_tables_in_place(tables_in_place);
                rt::Model::load_with(&bundle, dev, &opts)
            })
            .map_err(|e| to_py(py, e))?;
        Ok(Model { inner })
    }

    /// Items in the catalog (ids 0..num_items).
    #[getter]
    fn num_items(&self) -> usize {
        self.inner.bundle().catalog().num_items()
    }

    /// The bundle's name (manifest `name`).
    #[getter]
    fn name(&self) -> String {
        self.inner.bundle().manifest().name.clone()
    }

    /// What computes requests, e.g. "cpu (fused, avx2)".
    #[getter]
    fn backend(&self) -> String {
        self.inner.backend().to_string()
    }

    /// A session with every buffer allocated: `beams` K', `candidates` K+ (default 4 x
    /// beams with the PRM, beams without, never below results; an explicit value is taken
    /// as given and validated), `results` N, `prm`, `mix` (default the runtime's validated
    /// default). One session per thread.
    #[pyo3(signature = (beams = 16, candidates = None, results = 10, prm = true, mix = None))]
    fn session(
        &self,
        py: Python<'_>,
        beams: usize,
        candidates: Option<usize>,
        results: usize,
        prm: bool,
        mix: Option<f32>,
    ) -> PyResult<Session> {
        let mut cfg = rt::SearchConfig::with_beams(beams, results, prm);
        if let Some(c) = candidates {
            cfg.candidates = c;
        }
        if let Some(m) = mix {
            cfg.mix = m;
        }
        let s = self.inner.session(cfg).map_err(|e| to_py(py, e))?;
        Ok(Session {
            inner: Mutex::new(s),
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "Model(name={:?}, items={}, backend={:?})",
            self.inner.bundle().manifest().name,
            self.num_items(),
            self.inner.backend().to_string()
        )
    }
}

/// Per-thread request state; `recommend` reuses its buffers.
#[pyclass(module = "promise_rt", frozen)]
struct Session {
    inner: Mutex<rt::Session>,
}

impl Session {
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut rt::Session) -> rt::Result<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let mut s = match self.inner.try_lock() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    return Err(Err(
                        "the session is in use on another thread (a session is for one thread at a time)",
                    ))
                }
            };
            f(&mut s).map_err(Ok)
        })
        .map_err(|e| match e {
            Ok(e) => to_py(py, e),
            Err(msg) => PyValueError::new_err(msg),
        })
    }
}

#[pymethods]
impl Session {
    /// The feed for `history` (item indices, oldest first; any iterable of ints): a list
    /// of (item, score), best first, none of them in the history. More than the runtime's
    /// `MAX_HISTORY` items is a `PromiseError` (invalid-argument), checked as they arrive.
    fn recommend(&self, py: Python<'_>, history: &Bound<'_, PyAny>) -> PyResult<Vec<(u32, f32)>> {
        let history = bounded_history(py, history, |_, v| v.extract::<u32>())?;
        self.with(py, |s| {
            s.recommend(&history)
                .map(|r| r.iter().map(|r| (r.item, r.score)).collect())
        })
    }

    /// The feed for `history` in the app's ids (any iterable of str, oldest first), as
    /// `(feed, unknown)`: `feed` a list of (id, score), best first, none of them in the
    /// history; `unknown` how many history ids the catalog does not know (skipped). A
    /// malformed id (empty, over 256 bytes of UTF-8, a control character, a lone surrogate)
    /// is a `PromiseError` (invalid-argument) naming its position; a bundle without ids a
    /// `PromiseError` (config).
    fn recommend_ids(
        &self,
        py: Python<'_>,
        history: &Bound<'_, PyAny>,
    ) -> PyResult<(Vec<(String, f32)>, usize)> {
        let ids = bounded_history(py, history, |i, v| {
            let s = v.cast::<pyo3::types::PyString>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "history id {i} is a {}, expected str",
                    v.get_type().name().map(|n| n.to_string()).unwrap_or_default()
                ))
            })?;
            match s.to_cow() {
                Ok(t) => Ok(t.into_owned()),
                Err(_) => Err(binding_error(
                    py,
                    rt::ErrorCode::InvalidArgument,
                    format!("history id {i} is not valid Unicode (a lone surrogate)"),
                )),
            }
        })?;
        self.with(py, |s| {
            let feed = s.recommend_id_bytes(ids.iter().map(|t| t.as_bytes()))?;
            Ok((
                feed.iter().map(|(id, sc)| (id.to_owned(), sc)).collect(),
                feed.unknown(),
            ))
        })
    }

    /// One request's worth of work on a fixed history, so the first real request is warm.
    fn warmup(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |s| s.warmup())
    }

    /// Let the model read only the last `items` of each history.
    fn set_history_window(&self, py: Python<'_>, items: usize) -> PyResult<()> {
        self.with(py, |s| s.set_history_window(items))
    }

    /// K', K+, N, prm, mix of this session.
    #[getter]
    fn config(&self, py: Python<'_>) -> PyResult<(usize, usize, usize, bool, f32)> {
        self.with(py, |s| {
            let c = s.config();
            Ok((c.beams, c.candidates, c.results, c.prm, c.mix))
        })
    }
}

/// The runtime's version.
#[pyfunction]
fn version() -> &'static str {
    rt::VERSION
}

#[pymodule]
fn promise_rt(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<Session>()?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add("PromiseError", m.py().get_type::<PromiseError>())?;
    Ok(())
}
