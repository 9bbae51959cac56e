//! Link settings for the shared library (`cdylib`) that apps load.
//!
//! - 16 KB pages: on Linux and Android (every architecture), the cdylib's LOAD segments are
//!   aligned to 16,384 bytes (`-z max-page-size=16384`), which Google Play requires of
//!   native libraries for Android 15+ targets and which 4 KB-page kernels load as well.
//! - Only the C ABI is exported: `src/ffi/exports.map` is a linker version script that
//!   keeps `promise_*` global and makes every other symbol local (Rust's std, tract and
//!   wgpu included), so the library cannot clash with an app's own copies of them.
//!
//! `.ci/elf_check.sh` reads both properties back from the built library.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/ffi/exports.map");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" || os == "android" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,max-page-size=16384");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,common-page-size=16384");
        let map = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
            .join("src/ffi/exports.map");
        println!(
            "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
            map.display()
        );
    }
}
