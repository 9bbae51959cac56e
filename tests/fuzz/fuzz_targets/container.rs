//! A structured container: the tiny bundle's files (and extra ones) laid out by the fuzzer
//! (which entries, in which order, under which names, with which bytes patched in the
//! index or the body), then `Bundle::from_bytes` -> `Model::load` (fused) -> `recommend`,
//! and `unpack` into a fresh directory. Properties: every step an error or valid output;
//! an unpack that succeeds leaves exactly `manifest.json` and the files the manifest
//! lists, as plain regular files, and nothing outside its directory.
//!
//! Input: [entry count, then per entry: source (file index or extra), name choice], then
//! [index patch offset u16, patch bytes...] for the rest.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::{base, scratch};
use promise_rt::bundle::container::{build, unpack};
use promise_rt::{Bundle, Device, Model, SearchConfig};

const NAMES: [&str; 12] = [
    "manifest.json", "encoder.onnx", "decoder.onnx", "prm.onnx", "catalog.bin", "notes.txt",
    ".bashrc", "a\nb", "../x", "esc\u{1b}[2J", "dir/y", "catalog.bin",
];

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let n = 1 + data[0] as usize % 8;
    if data.len() < 1 + 2 * n {
        return;
    }
    let mut files = Vec::new();
    for e in 0..n {
        let (src, name) = (data[1 + 2 * e] as usize, data[2 + 2 * e] as usize);
        let bytes = if src % 6 < 5 { base()[src % 6].clone() } else { b"echo owned".to_vec() };
        files.push((NAMES[name % NAMES.len()].to_string(), bytes));
    }
    // names the builder refuses are what a hand-made container would hold: patch them in
    let Ok(mut bytes) = build(&files).or_else(|_| {
        let safe: Vec<_> = files.iter().enumerate().map(|(i, (_, b))| (format!("f{i}"), b.clone())).collect();
        build(&safe)
    }) else {
        return;
    };
    let rest = &data[1 + 2 * n..];
    if rest.len() >= 2 {
        let at = u16::from_le_bytes([rest[0], rest[1]]) as usize % bytes.len();
        for (x, p) in bytes[at..].iter_mut().zip(&rest[2..]) {
            *x = *p;
        }
    }
    if let Ok(bundle) = Bundle::from_bytes(bytes.clone()) {
        if let Ok(model) = Model::load(&bundle, Device::Cpu) {
            let cfg = SearchConfig { beams: 2, candidates: 4, results: 3, prm: true, mix: 0.5 };
            if let Ok(mut s) = model.session(cfg) {
                let n_items = bundle.catalog().num_items() as u32;
                if let Ok(recs) = s.recommend(&[0, 1, 2]) {
                    assert!(recs.iter().all(|r| r.item < n_items && r.score.is_finite()));
                }
            }
        }
    }
    let file = scratch("container").join("in.promise");
    let out = scratch("container").join("out");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::write(&file, &bytes).expect("write the container");
    if unpack(&file, &out).is_ok() {
        let bundle = Bundle::open(&out).expect("an unpacked bundle opens");
        let mut want: Vec<String> = bundle.file_names();
        want.push("manifest.json".into());
        want.sort();
        let mut got: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                assert!(e.file_type().unwrap().is_file(), "unpack made a non-file");
                e.file_name().into_string().unwrap()
            })
            .collect();
        got.sort();
        assert_eq!(got, want, "unpack wrote files the manifest does not list");
    }
    for stray in ["x", ".bashrc", "notes.txt"] {
        assert!(!scratch("container").join(stray).exists(), "unpack wrote outside its directory");
    }
});
