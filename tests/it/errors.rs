//! Bad inputs give their specific error code and a message with the offending value;
//! nothing panics.

use std::fs;

use promise_rt::{Bundle, Device, ErrorCode, Model, OpenOptions, SearchConfig};

use crate::util::{copy_bundle, edit_manifest, poison_weight, rewrite, tiny};

fn open_err(dir: &std::path::Path) -> promise_rt::Error {
    Bundle::open(dir).expect_err("the bundle must be rejected")
}

#[test]
fn missing_directory_and_files() {
    let e = open_err(std::path::Path::new("/nonexistent/bundle"));
    assert_eq!(e.code(), ErrorCode::Io);
    assert!(e.to_string().contains("/nonexistent/bundle"), "{e}");
    for f in ["manifest.json", "catalog.bin", "prm.onnx"] {
        let d = copy_bundle(&tiny());
        fs::remove_file(d.path().join(f)).unwrap();
        let e = open_err(d.path());
        assert_eq!(e.code(), ErrorCode::Io, "{f}: {e}");
        assert!(e.to_string().contains(f), "{f}: {e}");
    }
}

#[test]
fn manifest_problems() {
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, ErrorCode, &str)> = vec![
        (
            "version",
            Box::new(|v| v["format_version"] = 99.into()),
            ErrorCode::Manifest,
            "99",
        ),
        (
            "numeric",
            Box::new(|v| v["numeric"] = "bf16".into()),
            ErrorCode::Manifest,
            "bf16",
        ),
        (
            "levels",
            Box::new(|v| v["sid"]["levels"] = 9.into()),
            ErrorCode::Manifest,
            "9",
        ),
        (
            "codebook len",
            Box::new(|v| v["sid"]["codebook"] = serde_json::json!([32, 32])),
            ErrorCode::Manifest,
            "codebook",
        ),
        (
            "items disagree",
            Box::new(|v| v["sid"]["num_items"] = 10.into()),
            ErrorCode::Manifest,
            "10",
        ),
        (
            "dims disagree",
            Box::new(|v| v["model"]["d_model"] = 17.into()),
            ErrorCode::Graph,
            "17",
        ),
        (
            "history disagree",
            Box::new(|v| v["history"] = 21.into()),
            ErrorCode::Graph,
            "21",
        ),
        (
            "zero heads",
            Box::new(|v| v["model"]["heads"] = 0.into()),
            ErrorCode::Manifest,
            "heads",
        ),
        (
            "encoder attention",
            Box::new(|v| v["model"]["encoder_attention"] = "sideways".into()),
            ErrorCode::Manifest,
            "\"sideways\"",
        ),
        (
            "prm query",
            Box::new(|v| v["model"]["prm_query"] = "edge".into()),
            ErrorCode::Manifest,
            "\"edge\"",
        ),
        (
            // a node-table PRM graph declared as the path form: its input and its table
            // are not what the path form reads
            "prm query that the graph does not have",
            Box::new(|v| v["model"]["prm_query"] = "path".into()),
            ErrorCode::Graph,
            "node_path",
        ),
        (
            "prm kind",
            Box::new(|v| v["model"]["prm_kind"] = "sparse".into()),
            ErrorCode::Manifest,
            "\"sparse\"",
        ),
        (
            "attention PRM without heads",
            Box::new(|v| {
                v["model"].as_object_mut().unwrap().remove("prm_heads");
            }),
            ErrorCode::Manifest,
            "prm_heads is missing",
        ),
        (
            // a dense PRM has no heads: a manifest that gives it some is contradictory
            "dense PRM with heads",
            Box::new(|v| v["model"]["prm_kind"] = "dense".into()),
            ErrorCode::Manifest,
            "dense PRM",
        ),
        (
            // the tiny bundle's attention PRM graph declared dense: its weights are not
            // the dense PRM's
            "dense PRM that the graph does not have",
            Box::new(|v| {
                let m = v["model"].as_object_mut().unwrap();
                m.remove("prm_heads");
                m.remove("prm_ff");
                m.insert("prm_kind".into(), "dense".into());
            }),
            ErrorCode::Graph,
            "prm.",
        ),
        (
            "encoder input",
            Box::new(|v| v["model"]["encoder_input"] = "item_only".into()),
            ErrorCode::Manifest,
            "\"item_only\"",
        ),
        (
            // the tiny encoder reads codes only: an item column is not in its graph
            "item column the graph does not have",
            Box::new(|v| v["model"]["encoder_input"] = "codes_and_item".into()),
            ErrorCode::Graph,
            "history_codes",
        ),
        (
            "unknown field",
            Box::new(|v| v["surprise"] = 1.into()),
            ErrorCode::Manifest,
            "surprise",
        ),
        (
            "path escape",
            Box::new(|v| v["files"][0]["name"] = "../x.onnx".into()),
            ErrorCode::Manifest,
            "../x.onnx",
        ),
        (
            "size",
            Box::new(|v| v["files"][3]["bytes"] = 5.into()),
            ErrorCode::Checksum,
            "5",
        ),
        (
            "codebook disagree",
            Box::new(|v| v["sid"]["codebook"][0] = 31.into()),
            ErrorCode::Manifest,
            "31",
        ),
    ];
    for (name, edit, code, needle) in cases {
        let d = copy_bundle(&tiny());
        edit_manifest(d.path(), edit);
        let e = open_err(d.path());
        assert_eq!(e.code(), code, "{name}: {e}");
        assert!(
            e.to_string().contains(needle),
            "{name}: {e:?} should mention {needle}"
        );
    }
    let d = copy_bundle(&tiny());
    fs::write(d.path().join("manifest.json"), "{ not json").unwrap();
    assert_eq!(open_err(d.path()).code(), ErrorCode::Manifest);
    fs::write(d.path().join("manifest.json"), [0xff, 0xfe, 0x00]).unwrap();
    assert_eq!(open_err(d.path()).code(), ErrorCode::Manifest);
}

/// An encoder that reads an item column (tests/data/causal, `model.encoder_input:
/// "codes_and_item"`) opens; declared as reading codes only, its graph's input and its
/// embedding table disagree with the manifest: a graph error, never a wrong answer.
#[test]
fn an_item_column_must_match_the_encoder_graph() {
    let causal = crate::util::repo().join("tests/data/causal");
    let b = Bundle::open(&causal).expect("opens");
    assert!(b.manifest().dims.encoder_item);
    assert_eq!(b.manifest().encoder_columns(), b.manifest().levels + 1);
    let d = copy_bundle(&causal);
    edit_manifest(d.path(), |v| {
        v["model"].as_object_mut().unwrap().remove("encoder_input");
    });
    let e = open_err(d.path());
    assert_eq!(e.code(), ErrorCode::Graph, "{e}");
    assert!(e.to_string().contains("history_codes"), "{e}");
}

/// The shipped bundle's dense PRM (`model.prm_kind: "dense"`) has no heads, no FFN and no
/// query kind: a manifest that gives it any is refused, naming the field; declared as the
/// attention PRM it lacks that PRM's weights.
#[test]
fn a_dense_prm_manifest_has_no_attention_fields() {
    let ml1m = crate::util::repo().join("models/ml1m");
    assert!(Bundle::open(&ml1m).is_ok());
    for (field, value) in [
        ("prm_heads", serde_json::json!(4)),
        ("prm_ff", serde_json::json!(128)),
        ("prm_query", serde_json::json!("node")),
    ] {
        let d = copy_bundle(&ml1m);
        edit_manifest(d.path(), |v| v["model"][field] = value.clone());
        let e = open_err(d.path());
        assert_eq!(e.code(), ErrorCode::Manifest, "{field}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains(field) && msg.contains("dense"),
            "{field}: {msg}"
        );
    }
    let d = copy_bundle(&ml1m);
    edit_manifest(d.path(), |v| {
        let m = v["model"].as_object_mut().unwrap();
        m.insert("prm_kind".into(), "attention".into());
        m.insert("prm_heads".into(), 4.into());
        m.insert("prm_ff".into(), 128.into());
    });
    let e = open_err(d.path());
    assert_eq!(e.code(), ErrorCode::Graph, "{e}");
    assert!(e.to_string().contains("prm."), "{e}");
}

#[test]
fn checksum_mismatch_is_caught_on_request() {
    let d = copy_bundle(&tiny());
    let p = d.path().join("catalog.bin");
    let mut b = fs::read(&p).unwrap();
    let n = b.len();
    b[n - 3] ^= 0x01; // inside item codes padding or data: same size
    fs::write(&p, &b).unwrap();
    let e = Bundle::open_with(
        d.path(),
        OpenOptions::default()
            .with_checksums(true)
            .with_in_memory(false),
    )
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Checksum, "{e}");
}

fn with_catalog(f: impl Fn(&mut Vec<u8>)) -> promise_rt::Error {
    let d = copy_bundle(&tiny());
    let mut b = fs::read(d.path().join("catalog.bin")).unwrap();
    f(&mut b);
    rewrite(d.path(), "catalog.bin", &b);
    open_err(d.path())
}

#[test]
fn catalog_problems() {
    type Patch = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Patch, &str)> = vec![
        ("truncated header", Box::new(|b| b.truncate(40)), "header"),
        (
            "truncated body",
            Box::new(|b| b.truncate(b.len() - 8)),
            "bytes",
        ),
        ("magic", Box::new(|b| b[0] = b'X'), "magic"),
        ("version", Box::new(|b| b[8] = 7), "version 7"),
        (
            "byte order",
            Box::new(|b| b[12..16].copy_from_slice(&0x0D0C0B0Au32.to_le_bytes())),
            "byte-order",
        ),
        ("levels", Box::new(|b| b[20] = 0), "levels"),
        ("node count", Box::new(|b| b[24] ^= 1), "expected"),
        (
            "root code",
            Box::new(|b| {
                // node_code section: after level_start (L+2 u32) and first_child (nodes+1 u32)
                let l = u32::from_le_bytes(b[20..24].try_into().unwrap()) as usize;
                let n = u32::from_le_bytes(b[24..28].try_into().unwrap()) as usize;
                let fc = (64 + (l + 2) * 4 + 7) & !7;
                let nc = (fc + (n + 1) * 4 + 7) & !7;
                b[nc] = 0;
                b[nc + 1] = 0;
            }),
            "root",
        ),
        (
            "child order",
            Box::new(|b| {
                let l = u32::from_le_bytes(b[20..24].try_into().unwrap()) as usize;
                let n = u32::from_le_bytes(b[24..28].try_into().unwrap()) as usize;
                let fc = (64 + (l + 2) * 4 + 7) & !7;
                let nc = (fc + (n + 1) * 4 + 7) & !7;
                // swap the codes of nodes 1 and 2 (siblings under the root)
                let (a, c) = ((nc + 2, nc + 3), (nc + 4, nc + 5));
                b.swap(a.0, c.0);
                b.swap(a.1, c.1);
            }),
            "increasing",
        ),
        (
            "item codes",
            Box::new(|b| {
                // swap the SID rows of items 0 and 1 (the last section): each row is a
                // valid path, but no longer the one to its item's leaf
                let l = u32::from_le_bytes(b[20..24].try_into().unwrap()) as usize;
                let m = u32::from_le_bytes(b[16..20].try_into().unwrap()) as usize;
                let n = u32::from_le_bytes(b[24..28].try_into().unwrap()) as usize;
                // sections, each 8-aligned: level_start, first_child, node_code, leaf_item,
                // item_leaf, then the SID rows
                let mut at = 64;
                for len in [(l + 2) * 4, (n + 1) * 4, n * 2, m * 4, m * 4] {
                    at = (at + len + 7) & !7;
                }
                let (r0, r1) = (at, at + 2 * l);
                if b[r0..r0 + 2 * l] == b[r1..r1 + 2 * l] {
                    panic!("items 0 and 1 share a SID");
                }
                for k in 0..2 * l {
                    b.swap(r0 + k, r1 + k);
                }
            }),
            "its leaf",
        ),
        (
            "first child",
            Box::new(|b| {
                let l = u32::from_le_bytes(b[20..24].try_into().unwrap()) as usize;
                let fc = (64 + (l + 2) * 4 + 7) & !7;
                b[fc + 4] = b[fc + 4].wrapping_add(1);
            }),
            "children",
        ),
    ];
    for (name, f, needle) in cases {
        let e = with_catalog(f);
        assert_eq!(e.code(), ErrorCode::Catalog, "{name}: {e}");
        assert!(
            e.to_string().contains(needle),
            "{name}: {e} should mention {needle:?}"
        );
    }
}

#[test]
fn graph_problems() {
    // truncated ONNX (size updated so only the graph parser can notice)
    let d = copy_bundle(&tiny());
    let b = fs::read(d.path().join("decoder.onnx")).unwrap();
    rewrite(d.path(), "decoder.onnx", &b[..b.len() / 2]);
    let e = open_err(d.path());
    assert_eq!(e.code(), ErrorCode::Graph, "{e}");
    // a graph swapped for another role
    let d = copy_bundle(&tiny());
    let b = fs::read(d.path().join("encoder.onnx")).unwrap();
    rewrite(d.path(), "prm.onnx", &b);
    let e = open_err(d.path());
    assert_eq!(e.code(), ErrorCode::Graph, "{e}");
    assert!(e.to_string().contains("prm graph"), "{e}");
    // a NaN weight
    let d = copy_bundle(&tiny());
    let name = poison_weight(d.path(), "encoder.onnx", f32::NAN);
    let e = open_err(d.path());
    assert_eq!(e.code(), ErrorCode::Graph, "{e}");
    assert!(
        e.to_string().contains(&name) && e.to_string().contains("non-finite"),
        "{e}"
    );
}

#[test]
fn config_and_history_problems() {
    let bundle = Bundle::open(tiny()).unwrap();
    let model = Model::load(&bundle, Device::Cpu).unwrap();
    let bad = [
        (
            SearchConfig {
                beams: 0,
                ..Default::default()
            },
            "beams (K') is 0",
        ),
        (
            SearchConfig {
                beams: 1000,
                candidates: 2000,
                ..Default::default()
            },
            "beams (K') is 1000",
        ),
        (
            SearchConfig {
                beams: 8,
                candidates: 4,
                results: 2,
                ..Default::default()
            },
            "candidates (K+) is 4",
        ),
        (
            SearchConfig {
                beams: 8,
                candidates: 100000,
                ..Default::default()
            },
            "candidates (K+) is 100000",
        ),
        (
            SearchConfig {
                beams: 4,
                candidates: 8,
                results: 9,
                ..Default::default()
            },
            "results (N) is 9",
        ),
        (
            SearchConfig {
                results: 0,
                ..Default::default()
            },
            "results (N) is 0",
        ),
        (
            SearchConfig {
                mix: f32::NAN,
                ..Default::default()
            },
            "mix is NaN",
        ),
        (
            SearchConfig {
                mix: 1.5,
                ..Default::default()
            },
            "mix is 1.5",
        ),
    ];
    for (cfg, needle) in bad {
        let e = model.session(cfg).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Config, "{cfg:?}: {e}");
        assert!(
            e.to_string().contains(needle),
            "{e} should contain {needle:?}"
        );
    }
    let mut s = model.session(SearchConfig::default()).unwrap();
    let e = s.recommend(&[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::EmptyHistory);
    let n = bundle.catalog().num_items() as u32;
    let e = s.recommend(&[1, 2, n]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::UnknownItem);
    assert!(
        e.to_string().contains(&format!("history[2] is item {n}")),
        "{e}"
    );
    let e = s.recommend(&[u32::MAX]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::UnknownItem);
    // after errors the session still works, and a long history is fine (truncated to H)
    let long: Vec<u32> = (0..500).collect();
    assert_eq!(s.recommend(&long).unwrap().len(), 10);
    assert!(s.recommend(&long).unwrap().iter().all(|r| r.item >= 500));
    // duplicates are allowed (re-watches), and excluded once
    assert_eq!(s.recommend(&[5, 5, 5]).unwrap().len(), 10);
    // a compiled-out backend answers BackendUnavailable
    if !cfg!(feature = "gpu") {
        assert_eq!(
            Model::load(&bundle, Device::Gpu).unwrap_err().code(),
            ErrorCode::BackendUnavailable
        );
        assert_eq!(
            Model::load(&bundle, Device::Auto).unwrap().device(),
            Device::Cpu
        );
    }
}

#[test]
fn in_memory_open_survives_the_files_being_replaced() {
    let d = copy_bundle(&tiny());
    let model = Model::load(
        &Bundle::open_with(
            d.path(),
            OpenOptions::default()
                .with_checksums(true)
                .with_in_memory(true),
        )
        .unwrap(),
        Device::Cpu,
    )
    .unwrap();
    let mapped = Model::load(&Bundle::open(d.path()).unwrap(), Device::Cpu).unwrap();
    let mut a = model.session(SearchConfig::default()).unwrap();
    let mut b = mapped.session(SearchConfig::default()).unwrap();
    let before: Vec<_> = a.recommend(&[1, 2, 3]).unwrap().to_vec();
    assert_eq!(b.recommend(&[1, 2, 3]).unwrap(), &before[..]);
    // replace every file by writing a new one and renaming it over (the safe way)
    for e in fs::read_dir(d.path()).unwrap() {
        let p = e.unwrap().path();
        let tmp = p.with_extension("new");
        fs::write(&tmp, b"garbage").unwrap();
        fs::rename(&tmp, &p).unwrap();
    }
    assert_eq!(a.recommend(&[1, 2, 3]).unwrap(), &before[..]);
    assert_eq!(b.recommend(&[1, 2, 3]).unwrap(), &before[..]);
}

/// Regression test for the `bundle` fuzz target's first crash
/// (tests/fuzz/corpus/bundle/regression-tract-unsqueeze-panic): xor-ing 4 bytes of the
/// decoder graph made tract panic inside its shape inference (the runtime contained it
/// as a Graph error). The bytes are an Unsqueeze's axes, which `Bundle::open` now checks:
/// the bundle is refused before any engine sees it.
#[test]
fn a_graph_that_made_tract_panic_is_refused_at_open() {
    let d = copy_bundle(&tiny());
    let p = d.path().join("decoder.onnx");
    let mut b = fs::read(&p).unwrap();
    let at = u32::from_le_bytes([0x20, 0x02, 0x01, 0x00]) as usize % b.len();
    for (x, m) in b[at..].iter_mut().zip([0x00u8, 0x01, 0x27, 0x80]) {
        *x ^= m;
    }
    fs::write(&p, &b).unwrap();
    let e = Bundle::open(d.path()).expect_err("an Unsqueeze axis out of range");
    assert_eq!(e.code(), ErrorCode::Graph, "{e}");
    assert!(
        e.to_string().contains("decoder") && e.to_string().contains("axes"),
        "{e}"
    );
    // the CLI's contract holds even then: one line on stderr, no panic message, no
    // backtrace (the contained panic is silent), with RUST_BACKTRACE=1
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_promise"))
        .args([
            "recommend",
            "--history",
            "1,2,3",
            "--cpu-engine",
            "tract",
            "--bundle",
        ])
        .arg(d.path())
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error[graph]: ") && !err.contains("stack backtrace"),
        "{err}"
    );
}
