//! Link settings for the shared library (`cdylib`) that apps load.
//!
//! - 16 KB pages: on Linux and Android (every architecture), the cdylib's LOAD segments are
//!   aligned to 16,384 bytes (`-z max-page-size=16384`), which Google Play requires of
//!   native libraries for Android 15+ targets and which 4 KB-page kernels load as well.
//! - Only the C ABI is exported. rustc already links a cdylib with a version script of its
//!   own that keeps only the exported (`#[no_mangle] extern "C"`) symbols global; a second
//!   script cannot be added (GNU ld refuses to combine it with rustc's anonymous one), so
//!   `.ci/elf_check.sh` holds the line instead: it fails when the dynamic symbol table
//!   defines anything but `promise_*` (a dependency's exported symbol included).
//!
//! `.ci/elf_check.sh` reads both properties back from the built library.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" || os == "android" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,max-page-size=16384");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,common-page-size=16384");
    }
}
