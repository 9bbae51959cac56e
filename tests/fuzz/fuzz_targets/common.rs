//! What the whole-bundle targets share: the tiny bundle's files, and a scratch directory
//! per process.
use std::path::PathBuf;
use std::sync::OnceLock;

pub const FILES: [&str; 5] = [
    "manifest.json",
    "encoder.onnx",
    "decoder.onnx",
    "prm.onnx",
    "catalog.bin",
];

/// The tiny bundle's files, in [`FILES`] order.
pub fn base() -> &'static Vec<Vec<u8>> {
    static B: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    B.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny");
        FILES
            .iter()
            .map(|f| std::fs::read(dir.join(f)).expect("the tiny bundle"))
            .collect()
    })
}

/// A scratch directory for this process, `promise-fuzz-<tag>-<pid>` in the temp dir.
pub fn scratch(tag: &str) -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("promise-fuzz-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch dir");
        d
    })
}
