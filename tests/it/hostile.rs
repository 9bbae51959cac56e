//! A hostile or careless bundle never hangs, aborts or kills the host, and never yields
//! wrong items with status OK: one test per failure class (README "Reliability").

use std::fs;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use promise_rt::{Bundle, Device, ErrorCode, Model, SearchConfig};

use crate::util::{append_initializer, append_node, copy_bundle, edit_manifest, repo, tiny};

/// `Bundle::open(dir)` on another thread; fails the test if it takes more than 10 s
/// (a hang is the defect being tested).
fn open_within_10s(dir: &Path) -> promise_rt::Result<Bundle> {
    let (tx, rx) = mpsc::channel();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(Bundle::open(&dir));
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("Bundle::open hung on a special file")
}

/// Replace `p` by a FIFO.
#[cfg(unix)]
fn make_fifo(p: &Path) {
    fs::remove_file(p).unwrap();
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

#[cfg(unix)]
#[test]
fn special_files_are_refused_at_once() {
    use std::os::unix::fs::symlink;
    // a FIFO where a graph belongs (opening it for reading would block forever)
    let d = copy_bundle(&tiny());
    make_fifo(&d.path().join("prm.onnx"));
    let e = open_within_10s(d.path()).expect_err("a FIFO must be refused");
    assert_eq!(e.code(), ErrorCode::Io, "{e}");
    assert!(e.to_string().contains("regular file"), "{e}");
    // a symlink to a device file (reads without bound), and a directory, as the catalog
    for target in ["/dev/zero", "/tmp"] {
        let d = copy_bundle(&tiny());
        let p = d.path().join("catalog.bin");
        fs::remove_file(&p).unwrap();
        symlink(target, &p).unwrap();
        let e = open_within_10s(d.path()).expect_err("a special file must be refused");
        assert_eq!(e.code(), ErrorCode::Io, "{target}: {e}");
    }
    // the manifest itself as a FIFO
    let d = copy_bundle(&tiny());
    make_fifo(&d.path().join("manifest.json"));
    let e = open_within_10s(d.path()).expect_err("a FIFO manifest must be refused");
    assert_eq!(e.code(), ErrorCode::Io, "{e}");
}

#[test]
fn a_file_of_another_size_is_refused_before_it_is_read() {
    let d = copy_bundle(&tiny());
    // a large sparse file where the 0.3 MB decoder belongs: refused by its size alone
    let f = fs::OpenOptions::new()
        .write(true)
        .open(d.path().join("decoder.onnx"))
        .unwrap();
    f.set_len(1 << 40).unwrap();
    let e = open_within_10s(d.path()).expect_err("wrong size");
    assert_eq!(e.code(), ErrorCode::Checksum, "{e}");
    assert!(e.to_string().contains("1099511627776"), "{e}");
}

#[test]
fn heads_that_the_graphs_do_not_back_are_refused() {
    // the tiny bundle is heads 4 x head_dim 4, prm_heads 1: the same products (16 and 4),
    // another split; the fused and GPU engines would compute another model than the graphs
    for (heads, head_dim, prm_heads) in [(2, 8, 1), (8, 2, 2), (16, 1, 4)] {
        let d = copy_bundle(&tiny());
        edit_manifest(d.path(), |v| {
            v["model"]["heads"] = heads.into();
            v["model"]["head_dim"] = head_dim.into();
            v["model"]["prm_heads"] = prm_heads.into();
        });
        let what = format!("heads {heads} x {head_dim}, prm_heads {prm_heads}");
        let e = Bundle::open(d.path()).expect_err("lying heads must be refused");
        assert_eq!(e.code(), ErrorCode::Graph, "{what}: {e}");
        assert!(
            e.to_string()
                .contains(&format!("the manifest says {heads} x head_dim {head_dim}")),
            "{what}: {e}"
        );
    }
}

#[test]
fn a_weight_in_the_wrong_graph_is_refused() {
    let bundle = Bundle::open(tiny()).unwrap();
    let d_model = bundle.manifest().dims.d_model as u64;
    // an initializer in the PRM graph named like an encoder weight, of the right shape:
    // an engine with one table of names would have read it instead of the encoder's
    let d = copy_bundle(&tiny());
    append_initializer(d.path(), "prm.onnx", "gen.enc_norm.w", &[d_model], 5.0);
    let e = Bundle::open(d.path()).expect_err("a weight in the wrong graph");
    assert_eq!(e.code(), ErrorCode::Graph, "{e}");
    assert!(
        e.to_string().contains("gen.enc_norm.w") && e.to_string().contains("encoder graph"),
        "{e}"
    );
    // a second copy in its own graph, and a weight no architecture has
    for (file, name) in [
        ("encoder.onnx", "gen.enc_norm.w"),
        ("decoder.onnx", "gen.dec.7.n1.w"),
    ] {
        let d = copy_bundle(&tiny());
        append_initializer(d.path(), file, name, &[d_model], 1.0);
        let e = Bundle::open(d.path()).expect_err("an unexpected initializer");
        assert_eq!(e.code(), ErrorCode::Graph, "{name}: {e}");
        assert!(e.to_string().contains(name), "{e}");
    }
}

#[test]
fn bombs_inside_graphs_are_refused_before_tract_sees_them() {
    // a 2^21-element initializer no weight list holds
    let d = copy_bundle(&tiny());
    append_initializer(d.path(), "encoder.onnx", "gen.enc.0.bomb", &[1 << 21], 0.0);
    let e = Bundle::open(d.path()).expect_err("an unexpected large initializer");
    // refused on its size, before a byte is read (more than its weights can fill)
    assert_eq!(e.code(), ErrorCode::Limits, "{e}");
    assert!(e.to_string().contains("weights can fill"), "{e}");
    // the same initializer small enough to pass the size bound: refused by name
    let d = copy_bundle(&tiny());
    append_initializer(d.path(), "encoder.onnx", "gen.enc.0.bomb", &[1 << 10], 0.0);
    let e = Bundle::open(d.path()).expect_err("an unexpected initializer");
    assert_eq!(e.code(), ErrorCode::Graph, "{e}");
    // each: nodes appended to the encoder graph, and what the error must name
    type Node<'a> = (
        &'a str,
        &'a [&'a str],
        &'a [&'a str],
        Option<(&'a [u64], &'a [i64])>,
    );
    let cases: [(&str, Vec<Node>, &str); 4] = [
        (
            "a Constant declared with 2^30 elements (its dims alone decide)",
            vec![("Constant", &[], &["bomb"], Some((&[1 << 30], &[])))],
            "1073741824",
        ),
        (
            "a small constant shape that ConstantOfShape would fill with 2^36 elements",
            vec![
                (
                    "Constant",
                    &[],
                    &["shape"],
                    Some((&[2], &[1 << 18, 1 << 18])),
                ),
                ("ConstantOfShape", &["shape"], &["filled"], None),
            ],
            "ConstantOfShape",
        ),
        (
            "an operator the exporter never emits (Tile repeats a tensor without bound)",
            vec![("Tile", &["memory", "memory"], &["tiled"], None)],
            "Tile",
        ),
        (
            "arithmetic on constants alone (tract would fold it at load)",
            vec![
                ("Constant", &[], &["c1"], Some((&[4], &[1, 2, 3, 4]))),
                ("MatMul", &["c1", "c1"], &["folded"], None),
            ],
            "constants only",
        ),
    ];
    for (what, nodes, needle) in cases {
        let d = copy_bundle(&tiny());
        for (op, inputs, outputs, value) in nodes {
            append_node(d.path(), "encoder.onnx", op, inputs, outputs, value);
        }
        let e = Bundle::open(d.path()).expect_err(what);
        assert_eq!(e.code(), ErrorCode::Graph, "{what}: {e}");
        assert!(e.to_string().contains(needle), "{what}: {e}");
    }
}

#[test]
fn sessions_over_the_budget_are_limits_errors() {
    // K' 256 with N 4096 on the large model: beyond a second of work per request
    let bundle = Bundle::open(repo().join("models/ml1m-large")).unwrap();
    let model = Model::load(&bundle, Device::Cpu).unwrap();
    let cfg = SearchConfig {
        beams: 256,
        candidates: 4096,
        results: 4096,
        prm: true,
        mix: 0.5,
    };
    let e = model.session(cfg).expect_err("over budget");
    assert_eq!(e.code(), ErrorCode::Limits, "{e}");
    assert!(e.to_string().contains("multiply-adds"), "{e}");
    // the default session is far inside it
    model.session(SearchConfig::default()).unwrap();
}

#[test]
fn a_loaded_model_survives_its_files_being_truncated() {
    // the mapped (default) open: after load nothing reads the files; truncating them in
    // place (the unsafe way to update) must not fault (SIGBUS) or change the answers
    let d = copy_bundle(&repo().join("models/ml1m"));
    let model = Model::load(&Bundle::open(d.path()).unwrap(), Device::Cpu).unwrap();
    let mut s = model.session(SearchConfig::default()).unwrap();
    let before = s.recommend(&[1, 2, 3, 50]).unwrap().to_vec();
    for e in fs::read_dir(d.path()).unwrap() {
        let p = e.unwrap().path();
        fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(0)
            .unwrap();
    }
    assert_eq!(s.recommend(&[1, 2, 3, 50]).unwrap(), &before[..]);
    let mut fresh = model.session(SearchConfig::default()).unwrap();
    assert_eq!(fresh.recommend(&[1, 2, 3, 50]).unwrap(), &before[..]);
}

#[test]
fn messages_quoting_the_bundle_are_one_line() {
    let d = copy_bundle(&tiny());
    let evil = "x\nerror[io]: forged \u{1b}[31mred\u{202e}.onnx";
    edit_manifest(d.path(), |v| {
        v["graphs"]["prm"] = evil.into();
        v["files"][2]["name"] = evil.into();
    });
    // a file name with control characters is refused, and quoted without them
    let e = Bundle::open(d.path()).expect_err("a name with control characters");
    assert_eq!(e.code(), ErrorCode::Manifest, "{e}");
    let m = e.to_string();
    assert!(
        !m.contains('\n') && !m.contains('\u{1b}') && !m.contains('\u{202e}'),
        "{m:?}"
    );
    assert!(m.contains("control character"), "{m}");
}

#[test]
fn manifest_shapes_that_serde_would_accept_are_refused() {
    // a manifest written as a JSON array of its fields
    let d = copy_bundle(&tiny());
    let text = fs::read_to_string(d.path().join("manifest.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let arr: Vec<serde_json::Value> = [
        "format",
        "format_version",
        "name",
        "dataset",
        "numeric",
        "sid",
        "history",
        "model",
        "graphs",
        "catalog",
        "files",
    ]
    .iter()
    .map(|k| v[*k].clone())
    .collect();
    fs::write(
        d.path().join("manifest.json"),
        serde_json::to_string(&arr).unwrap(),
    )
    .unwrap();
    let e = Bundle::open(d.path()).expect_err("an array manifest");
    assert_eq!(e.code(), ErrorCode::Manifest, "{e}");
    assert!(e.to_string().contains("array"), "{e}");
    // files[] repeated, and too many entries
    let d = copy_bundle(&tiny());
    edit_manifest(d.path(), |v| {
        let f = v["files"][0].clone();
        v["files"].as_array_mut().unwrap().push(f);
    });
    let e = Bundle::open(d.path()).expect_err("a repeated file");
    assert_eq!(e.code(), ErrorCode::Manifest, "{e}");
    assert!(e.to_string().contains("twice"), "{e}");
    let d = copy_bundle(&tiny());
    edit_manifest(d.path(), |v| {
        let f = v["files"][0].clone();
        let files = v["files"].as_array_mut().unwrap();
        for i in 0..17 {
            let mut g = f.clone();
            g["name"] = format!("f{i}").into();
            files.push(g);
        }
    });
    let e = Bundle::open(d.path()).expect_err("too many files");
    assert_eq!(e.code(), ErrorCode::Manifest, "{e}");
    assert!(e.to_string().contains("at most 16"), "{e}");
    // a manifest of 2 MiB (whitespace): refused by its size before it is parsed
    let d = copy_bundle(&tiny());
    let mut text = fs::read_to_string(d.path().join("manifest.json")).unwrap();
    text.push_str(&" ".repeat(2 << 20));
    fs::write(d.path().join("manifest.json"), text).unwrap();
    let e = Bundle::open(d.path()).expect_err("a 2 MiB manifest");
    assert_eq!(e.code(), ErrorCode::Manifest, "{e}");
}

/// The structured mutations of the `structured` fuzz target, as a property test that runs
/// on stable in CI: the manifest's numbers set to arbitrary values (within and far beyond
/// each field's bound), the PRM's query form switched, and weights appended under other
/// graphs' names, on a node-table, a path-query and a dense-PRM bundle; every step either fails with an
/// error or serves a valid feed. Nothing panics or aborts.
mod structured {
    use proptest::prelude::*;

    use super::*;

    const FIELDS: [&str; 8] = [
        "d_model",
        "heads",
        "head_dim",
        "ff",
        "encoder_layers",
        "decoder_layers",
        "prm_heads",
        "prm_ff",
    ];
    const GRAPHS: [&str; 3] = ["encoder.onnx", "decoder.onnx", "prm.onnx"];

    fn number() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..8,
            1u64..70_000,
            Just(1 << 16),
            Just(4096),
            any::<u32>().prop_map(u64::from)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn mutated_bundles_fail_cleanly_or_serve_valid_feeds(
            fields in proptest::collection::vec((0usize..14, number()), 0..4),
            weights in proptest::collection::vec((0usize..3, 0usize..3, 0usize..64), 0..2),
            kind in 0usize..4,
        ) {
            // the tiny bundle (a per-node PRM table), tests/data/path (the path query),
            // tests/data/causal (an item column) or models/ml1m (the dense PRM)
            let base = match kind {
                0 => tiny(),
                1 => repo().join("tests/data/path"),
                2 => repo().join("tests/data/causal"),
                _ => repo().join("models/ml1m"),
            };
            let d = copy_bundle(&base);
            let src = Bundle::open(&base).unwrap();
            for (g, from, k) in &weights {
                // a weight of graph `from`, appended to graph `g` under its own name
                let bytes = fs::read(base.join(GRAPHS[*from])).unwrap();
                let idx = promise_rt::internals::onnx::index(&bytes, "src").unwrap();
                let w = &idx.initializers[k % idx.initializers.len()];
                let dims: Vec<u64> = w.dims.iter().map(|&x| x as u64).collect();
                append_initializer(d.path(), GRAPHS[*g], &w.name, &dims, 0.5);
            }
            edit_manifest(d.path(), |v| {
                for (f, x) in &fields {
                    match f {
                        0..=7 => v["model"][FIELDS[*f]] = (*x).into(),
                        8 => v["history"] = (*x).into(),
                        9 => v["sid"]["codebook"][0] = (*x).into(),
                        10 => v["sid"]["num_nodes"] = (*x).into(),
                        11 => v["model"]["prm_query"] = if x % 2 == 0 { "path" } else { "node" }.into(),
                        12 => v["model"]["encoder_input"] =
                            if x % 2 == 0 { "codes_and_item" } else { "codes" }.into(),
                        _ => v["model"]["prm_kind"] = if x % 2 == 0 { "dense" } else { "attention" }.into(),
                    }
                }
            });
            let Ok(bundle) = Bundle::open(d.path()) else { return Ok(()) };
            let Ok(model) = Model::load(&bundle, Device::Cpu) else { return Ok(()) };
            let Ok(mut s) = model.session(SearchConfig::default()) else { return Ok(()) };
            let items = src.catalog().num_items() as u32;
            if let Ok(recs) = s.recommend(&[0, 1, 2]) {
                let mut ids: Vec<u32> = recs.iter().map(|r| r.item).collect();
                prop_assert!(recs.iter().all(|r| r.score.is_finite() && r.item < items));
                prop_assert!(ids.iter().all(|i| *i > 2));
                ids.sort();
                ids.dedup();
                prop_assert_eq!(ids.len(), recs.len());
            }
        }
    }
}

/// The one-file container as untrusted input: a packed tiny bundle with bytes overwritten
/// anywhere (header, index, entries) or cut short opens with an error or as a bundle that
/// serves valid feeds; nothing panics or aborts.
mod container {
    use proptest::prelude::*;

    use super::*;

    fn packed() -> Vec<u8> {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("tiny.promise");
        promise_rt::bundle::container::pack(&tiny(), &f).unwrap();
        std::fs::read(f).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn mutated_containers_fail_cleanly_or_serve_valid_feeds(
            edits in proptest::collection::vec((0usize..4096, any::<u8>()), 1..6),
            in_header in any::<bool>(),
            cut in proptest::option::of(0usize..4096),
        ) {
            let mut b = packed();
            let n = b.len();
            for (at, v) in &edits {
                // half the cases aim at the header and index, where a lie steers the parse
                let i = if in_header { at % 64.min(n).max(1) + (at / 64 % 3) * 64 } else { at * 131 % n };
                b[i.min(n - 1)] = *v;
            }
            if let Some(c) = cut {
                b.truncate(n.saturating_sub(c));
            }
            let Ok(bundle) = Bundle::from_bytes(b) else { return Ok(()) };
            let Ok(model) = Model::load(&bundle, Device::Cpu) else { return Ok(()) };
            let Ok(mut s) = model.session(SearchConfig::default()) else { return Ok(()) };
            let items = bundle.catalog().num_items() as u32;
            if let Ok(recs) = s.recommend(&[0, 1, 2]) {
                prop_assert!(recs.iter().all(|r| r.score.is_finite() && r.item < items));
            }
        }
    }
}

/// Numeric poison (issue 29): weights out of range (an int8 scale not in (0, 2], an f32 or
/// f16 weight beyond +-256) fail `Bundle::open` with a clear `graph` error; weights in
/// range cannot make an output non-finite, and the load-time probe (unit test
/// `session::tests`) catches any that would.
#[test]
fn numeric_poison_fails_at_open_or_load_never_per_request() {
    use crate::util::set_first_value;
    let int8 = repo().join("tests/data/path");
    for (what, v) in [
        ("a negative int8 scale", -1.0f32),
        ("an int8 scale of 1e38", 1e38),
    ] {
        let d = copy_bundle(&int8);
        set_first_value(d.path(), "decoder.onnx", "gen.head.scale", v);
        let e = Bundle::open(d.path()).expect_err(what);
        assert_eq!(e.code(), ErrorCode::Graph, "{what}: {e}");
        assert!(e.to_string().contains("int8 scale"), "{what}: {e}");
    }
    let d = copy_bundle(&repo().join("models/ml1m-f16"));
    set_first_value(d.path(), "decoder.onnx", "gen.head", 65504.0);
    let e = Bundle::open(d.path()).expect_err("an f16 weight of 65504");
    assert!(e.to_string().contains("f16 weight"), "{e}");
    // finite weights beyond the range: a norm gain of f32::MAX, an f32 weight of 1e35 (the
    // differential finding regression-weight-3050c477: engines summing in another order
    // ranked other items)
    for (file, name, v) in [
        ("decoder.onnx", "gen.dec_norm.w", f32::MAX),
        ("encoder.onnx", "gen.enc.0.att.wq", -2.3e35),
    ] {
        let d = copy_bundle(&tiny());
        set_first_value(d.path(), file, name, v);
        let e = Bundle::open(d.path()).expect_err(name);
        assert_eq!(e.code(), ErrorCode::Graph, "{name}: {e}");
        assert!(
            e.to_string()
                .contains("f32 weight is finite and within +-256"),
            "{e}"
        );
    }
}
