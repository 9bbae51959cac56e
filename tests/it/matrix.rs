//! The bad-input matrix: every case goes through all three surfaces, the Rust API, the
//! `promise` CLI and the C API (the exported `promise_*` functions, called exactly as a C
//! caller would; `examples/c/feed.c` covers the C-only cases under valgrind), and must give
//! the same stable error code everywhere: `Error::code()`, the CLI's `error[<name>]` with
//! exit code 1, and the C status. Nothing may panic.
#![cfg(feature = "ffi")]

use std::ffi::{CStr, CString};
use std::fs;
use std::path::Path;
use std::process::Command;

use promise_rt::ffi::*;
use promise_rt::{Bundle, Device, ErrorCode, Model, SearchConfig};

use crate::util::{
    append_initializer, append_node, copy_bundle, edit_manifest, poison_weight, rewrite, tiny,
};

fn patch(dir: &Path, file: &str, f: impl Fn(&mut Vec<u8>)) {
    let mut b = fs::read(dir.join(file)).unwrap();
    f(&mut b);
    rewrite(dir, file, &b);
}

type Corrupt = Box<dyn Fn(&Path)>;

/// Bundle cases: a corruption of a copy of the tiny bundle and its code. One long table on
/// purpose (188 lines): each entry is three lines a reader scans, not logic to split.
fn bundle_cases() -> Vec<(&'static str, Corrupt, ErrorCode)> {
    use ErrorCode::*;
    vec![
        (
            "manifest missing",
            Box::new(|d: &Path| fs::remove_file(d.join("manifest.json")).unwrap()),
            Io,
        ),
        (
            "catalog missing",
            Box::new(|d: &Path| fs::remove_file(d.join("catalog.bin")).unwrap()),
            Io,
        ),
        (
            "prm graph missing",
            Box::new(|d: &Path| fs::remove_file(d.join("prm.onnx")).unwrap()),
            Io,
        ),
        (
            "manifest not JSON",
            Box::new(|d: &Path| fs::write(d.join("manifest.json"), b"{ not json").unwrap()),
            Manifest,
        ),
        (
            "manifest truncated",
            Box::new(|d: &Path| {
                let b = fs::read(d.join("manifest.json")).unwrap();
                fs::write(d.join("manifest.json"), &b[..b.len() / 2]).unwrap();
            }),
            Manifest,
        ),
        (
            "manifest unknown field",
            Box::new(|d: &Path| edit_manifest(d, |v| v["surprise"] = 1.into())),
            Manifest,
        ),
        (
            "manifest format version",
            Box::new(|d: &Path| edit_manifest(d, |v| v["format_version"] = 2.into())),
            Manifest,
        ),
        (
            "manifest levels vs codebooks",
            Box::new(|d: &Path| edit_manifest(d, |v| v["sid"]["levels"] = 2.into())),
            Manifest,
        ),
        (
            "file shorter than the manifest says",
            Box::new(|d: &Path| {
                let b = fs::read(d.join("catalog.bin")).unwrap();
                fs::write(d.join("catalog.bin"), &b[..b.len() - 8]).unwrap();
            }),
            Checksum,
        ),
        (
            "catalog truncated",
            Box::new(|d: &Path| patch(d, "catalog.bin", |b| b.truncate(b.len() - 8))),
            Catalog,
        ),
        (
            "catalog magic",
            Box::new(|d: &Path| patch(d, "catalog.bin", |b| b[0] = b'X')),
            Catalog,
        ),
        (
            "catalog item count vs manifest",
            Box::new(|d: &Path| {
                edit_manifest(d, |v| {
                    let n = v["sid"]["num_items"].as_u64().unwrap();
                    v["sid"]["num_items"] = (n + 1).into();
                })
            }),
            Manifest,
        ),
        (
            "catalog codebook vs manifest",
            Box::new(|d: &Path| {
                edit_manifest(d, |v| {
                    let c = v["sid"]["codebook"][0].as_u64().unwrap();
                    v["sid"]["codebook"][0] = (c + 1).into();
                })
            }),
            Manifest,
        ),
        (
            "catalog node codes corrupted",
            Box::new(|d: &Path| {
                patch(d, "catalog.bin", |b| {
                    // level_start is the first section after the 64-byte header; break level_start[2]
                    b[64 + 8..64 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
                })
            }),
            Catalog,
        ),
        (
            "encoder truncated",
            Box::new(|d: &Path| patch(d, "encoder.onnx", |b| b.truncate(b.len() / 2))),
            Graph,
        ),
        (
            "decoder is the prm",
            Box::new(|d: &Path| {
                let b = fs::read(d.join("prm.onnx")).unwrap();
                rewrite(d, "decoder.onnx", &b);
            }),
            Graph,
        ),
        (
            "model dims vs graphs",
            Box::new(|d: &Path| {
                edit_manifest(d, |v| {
                    let x = v["model"]["d_model"].as_u64().unwrap();
                    v["model"]["d_model"] = (x * 2).into();
                })
            }),
            Graph,
        ),
        (
            "history length vs graphs",
            Box::new(|d: &Path| {
                edit_manifest(d, |v| {
                    let x = v["history"].as_u64().unwrap();
                    v["history"] = (x + 1).into();
                })
            }),
            Graph,
        ),
        (
            "NaN weight",
            Box::new(|d: &Path| {
                poison_weight(d, "decoder.onnx", f32::NAN);
            }),
            Graph,
        ),
        (
            "Inf weight",
            Box::new(|d: &Path| {
                poison_weight(d, "prm.onnx", f32::INFINITY);
            }),
            Graph,
        ),
        // the hostile classes (tests/it/hostile.rs has one test each)
        (
            "catalog is a device file",
            Box::new(|d: &Path| {
                fs::remove_file(d.join("catalog.bin")).unwrap();
                std::os::unix::fs::symlink("/dev/zero", d.join("catalog.bin")).unwrap();
            }),
            Io,
        ),
        (
            "heads re-split",
            Box::new(|d: &Path| {
                edit_manifest(d, |v| {
                    v["model"]["heads"] = 2.into();
                    v["model"]["head_dim"] = 8.into();
                })
            }),
            Graph,
        ),
        (
            "weight in the wrong graph",
            Box::new(|d: &Path| append_initializer(d, "prm.onnx", "gen.enc_norm.w", &[16], 5.0)),
            Graph,
        ),
        (
            "operator the exporter never emits",
            Box::new(|d: &Path| append_node(d, "encoder.onnx", "Tile", &["memory"], &["t"], None)),
            Graph,
        ),
        (
            "manifest is a JSON array",
            Box::new(|d: &Path| fs::write(d.join("manifest.json"), b"[1, 2]").unwrap()),
            Manifest,
        ),
        (
            "file name with a newline and an escape",
            Box::new(|d: &Path| {
                edit_manifest(d, |v| {
                    let evil = "p\nerror[ok]: fine \u{1b}[2J.onnx";
                    v["graphs"]["prm"] = evil.into();
                    v["files"][2]["name"] = evil.into();
                })
            }),
            // refused as a name (no control characters), quoted escaped on every surface
            Manifest,
        ),
    ]
}

/// Request cases on the healthy tiny bundle: (name, history, config, code).
fn request_cases() -> Vec<(&'static str, Vec<u32>, SearchConfig, ErrorCode)> {
    use ErrorCode::*;
    let ok = SearchConfig {
        beams: 4,
        candidates: 16,
        results: 10,
        prm: true,
        mix: 0.5,
    };
    let with = |f: fn(&mut SearchConfig)| {
        let mut c = ok;
        f(&mut c);
        c
    };
    vec![
        ("empty history", vec![], ok, EmptyHistory),
        ("unknown item", vec![1, 2, 4_000_000], ok, UnknownItem),
        ("item = num_items", vec![3706], ok, UnknownItem),
        (
            "over-long history",
            vec![1; promise_rt::search::MAX_HISTORY + 1],
            ok,
            Capacity,
        ),
        ("K' = 0", vec![1, 2], with(|c| c.beams = 0), Config),
        (
            "K' over capacity",
            vec![1, 2],
            with(|c| {
                c.beams = 257;
                c.candidates = 1024
            }),
            Config,
        ),
        ("K+ < K'", vec![1, 2], with(|c| c.candidates = 2), Config),
        (
            "K+ over capacity",
            vec![1, 2],
            with(|c| c.candidates = 5000),
            Config,
        ),
        ("N > K+", vec![1, 2], with(|c| c.results = 17), Config),
        ("N = 0", vec![1, 2], with(|c| c.results = 0), Config),
        ("mix > 1", vec![1, 2], with(|c| c.mix = 1.5), Config),
        ("mix NaN", vec![1, 2], with(|c| c.mix = f32::NAN), Config),
    ]
}

fn rust_bundle(dir: &Path) -> Result<Model, promise_rt::Error> {
    Model::load(&Bundle::open(dir)?, Device::Cpu)
}

fn rust_request(model: &Model, h: &[u32], cfg: SearchConfig) -> Result<usize, promise_rt::Error> {
    let mut s = model.session(cfg)?;
    Ok(s.recommend(h)?.len())
}

/// Runs `promise recommend`; returns (exit code, stderr).
fn cli(dir: &Path, h: &[u32], cfg: SearchConfig) -> (i32, String) {
    let hist: Vec<String> = h.iter().map(|x| x.to_string()).collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_promise"));
    cmd.arg("recommend")
        .arg("--bundle")
        .arg(dir)
        .arg(format!("--history={}", hist.join(",")))
        .args(["--beams", &cfg.beams.to_string()])
        .args(["--candidates", &cfg.candidates.to_string()])
        .args(["--results", &cfg.results.to_string()])
        .args(["--mix", &cfg.mix.to_string()]);
    if !cfg.prm {
        cmd.arg("--no-prm");
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn last_error() -> String {
    // SAFETY: the library returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(promise_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn c_config(c: SearchConfig) -> PromiseSearchConfig {
    PromiseSearchConfig {
        beams: c.beams as u32,
        candidates: c.candidates as u32,
        results: c.results as u32,
        prm: c.prm as u32,
        mix: c.mix,
    }
}

fn check_cli(name: &str, (code, err): (i32, String), want: ErrorCode) {
    assert_eq!(code, 1, "{name}: CLI exit code (stderr {err})");
    assert!(
        err.starts_with(&format!("error[{}]: ", want.name())),
        "{name}: CLI says {err:?}, expected error[{}]",
        want.name()
    );
    assert!(!err.contains("panicked"), "{name}: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{name}: one line, {err:?}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "{name}: an escape sequence reached stderr"
    );
}

#[test]
fn every_bad_bundle_gives_its_code_on_every_surface() {
    let cases = bundle_cases();
    for (name, corrupt, want) in &cases {
        let d = copy_bundle(&tiny());
        corrupt(d.path());
        // Rust
        let e = rust_bundle(d.path()).expect_err(name);
        assert_eq!(e.code(), *want, "{name}: Rust says {e}");
        assert!(!e.message().is_empty(), "{name}");
        // CLI
        check_cli(name, cli(d.path(), &[1, 2], SearchConfig::default()), *want);
        // C
        let path = CString::new(d.path().to_str().unwrap()).unwrap();
        let mut model: *mut PromiseModel = std::ptr::null_mut();
        // SAFETY: valid NUL-terminated path and out pointer, as a C caller passes them.
        let st = unsafe { promise_model_open(path.as_ptr(), PROMISE_DEVICE_CPU, &mut model) };
        assert_eq!(st, *want as i32, "{name}: C status ({})", last_error());
        assert!(model.is_null(), "{name}: no handle on failure");
        assert!(!last_error().is_empty(), "{name}: C last error");
    }
    eprintln!("{} bundle cases agree on Rust, CLI and C", cases.len());
}

/// Through the C ABI, as a host app: a model keeps answering after its bundle's files are
/// truncated in place (nothing reads the files after `promise_model_open`: no SIGBUS).
#[test]
fn a_c_host_survives_its_bundle_being_truncated() {
    let d = copy_bundle(&tiny());
    let path = CString::new(d.path().to_str().unwrap()).unwrap();
    let mut m: *mut PromiseModel = std::ptr::null_mut();
    // SAFETY: as a C caller.
    let st = unsafe { promise_model_open(path.as_ptr(), PROMISE_DEVICE_CPU, &mut m) };
    assert_eq!(st, PROMISE_STATUS_OK);
    let mut s: *mut PromiseSession = std::ptr::null_mut();
    // SAFETY: valid model, NULL config (defaults), out pointer.
    assert_eq!(
        unsafe { promise_session_new(m, std::ptr::null(), &mut s) },
        PROMISE_STATUS_OK
    );
    let h = [1u32, 2, 3];
    let run = |s: *mut PromiseSession| {
        let mut out = vec![
            PromiseRecommendation {
                item: 0,
                score: 0.0
            };
            10
        ];
        let mut n = 0usize;
        // SAFETY: buffers of the stated lengths.
        let st = unsafe {
            promise_recommend(s, h.as_ptr(), h.len(), out.as_mut_ptr(), out.len(), &mut n)
        };
        assert_eq!(st, PROMISE_STATUS_OK, "{}", last_error());
        out.truncate(n);
        out.iter().map(|r| r.item).collect::<Vec<_>>()
    };
    let before = run(s);
    for e in fs::read_dir(d.path()).unwrap() {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(e.unwrap().path())
            .unwrap();
        f.set_len(0).unwrap();
    }
    assert_eq!(run(s), before);
    let mut s2: *mut PromiseSession = std::ptr::null_mut();
    // SAFETY: as above.
    assert_eq!(
        unsafe { promise_session_new(m, std::ptr::null(), &mut s2) },
        PROMISE_STATUS_OK
    );
    assert_eq!(run(s2), before);
    assert_eq!(promise_session_free(s), PROMISE_STATUS_OK);
    assert_eq!(promise_session_free(s2), PROMISE_STATUS_OK);
    assert_eq!(promise_model_free(m), PROMISE_STATUS_OK);
}

#[test]
fn every_bad_request_gives_its_code_on_every_surface() {
    let model = rust_bundle(&tiny()).unwrap();
    let path = CString::new(tiny().to_str().unwrap()).unwrap();
    let mut cm: *mut PromiseModel = std::ptr::null_mut();
    // SAFETY: as a C caller.
    let st = unsafe { promise_model_open(path.as_ptr(), PROMISE_DEVICE_CPU, &mut cm) };
    assert_eq!(st, PROMISE_STATUS_OK);
    let cases = request_cases();
    for (name, h, cfg, want) in &cases {
        // Rust
        let e = rust_request(&model, h, *cfg).expect_err(name);
        assert_eq!(e.code(), *want, "{name}: Rust says {e}");
        // CLI (`--history=` is the empty list); a million-item history does not fit
        // a command line
        if h.len() < 10_000 {
            check_cli(name, cli(&tiny(), h, *cfg), *want);
        }
        // C
        let conf = c_config(*cfg);
        let mut s: *mut PromiseSession = std::ptr::null_mut();
        // SAFETY: as a C caller: valid model handle, config and out pointer.
        let st = unsafe { promise_session_new(cm, &conf, &mut s) };
        let st = if st != PROMISE_STATUS_OK {
            assert!(s.is_null(), "{name}: no session on failure");
            st
        } else {
            let mut out = vec![
                PromiseRecommendation {
                    item: u32::MAX,
                    score: 0.0
                };
                cfg.results.max(1)
            ];
            let mut written = 7usize;
            // SAFETY: history and out buffers of the stated lengths.
            let st = unsafe {
                promise_recommend(
                    s,
                    h.as_ptr(),
                    h.len(),
                    out.as_mut_ptr(),
                    out.len(),
                    &mut written,
                )
            };
            assert_eq!(written, 7, "{name}: outputs untouched on failure");
            assert!(out.iter().all(|r| r.item == u32::MAX), "{name}");
            assert_eq!(promise_session_free(s), PROMISE_STATUS_OK);
            st
        };
        assert_eq!(st, *want as i32, "{name}: C status ({})", last_error());
    }
    assert_eq!(promise_model_free(cm), PROMISE_STATUS_OK);
    eprintln!("{} request cases agree on Rust, CLI and C", cases.len());
}
