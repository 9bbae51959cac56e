use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny() -> PathBuf {
    repo().join("models/tiny")
}

/// A fresh copy of a bundle directory in a temp dir, to corrupt.
pub fn copy_bundle(src: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for e in std::fs::read_dir(src).expect("bundle dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), dir.path().join(e.file_name())).expect("copy");
    }
    dir
}

/// Edit a bundle's manifest.json in place.
pub fn edit_manifest(dir: &Path, f: impl Fn(&mut serde_json::Value)) {
    let p = dir.join("manifest.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Replace `file` by `bytes` and record its new size in the manifest, so that only the
/// file's own parser can notice what is wrong with it.
pub fn rewrite(dir: &Path, file: &str, bytes: &[u8]) {
    std::fs::write(dir.join(file), bytes).unwrap();
    let len = bytes.len();
    edit_manifest(dir, |v| {
        for f in v["files"].as_array_mut().unwrap() {
            if f["name"] == file {
                f["bytes"] = len.into();
            }
        }
    });
}

/// Overwrite the first value of the first rank-2 weight of graph `file` with `v`; returns
/// the weight's name.
pub fn poison_weight(dir: &Path, file: &str, v: f32) -> String {
    let p = dir.join(file);
    let mut b = std::fs::read(&p).unwrap();
    let idx = promise_rt::bundle::onnx::index(&b, file).unwrap();
    let w = idx
        .initializers
        .iter()
        .find(|i| i.raw && i.dims.len() == 2)
        .unwrap()
        .clone();
    b[w.offset..w.offset + 4].copy_from_slice(&v.to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    w.name
}
