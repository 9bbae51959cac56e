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
//!
//! - pkg-config: `promise_rt.pc` is written beside the built library (`target/<profile>/`,
//!   three levels above `OUT_DIR`), naming that folder as the library's and the crate's
//!   `src/ffi` as the header's, so a C build finds both with
//!   `PKG_CONFIG_PATH=target/<profile> pkg-config --cflags --libs promise_rt`
//!   (`tests/c/run.sh` and the C example's test build that way). Nothing else is written
//!   outside `OUT_DIR`.

fn pkg_config() {
    let (Ok(out), Ok(manifest)) = (
        std::env::var("OUT_DIR"),
        std::env::var("CARGO_MANIFEST_DIR"),
    ) else {
        return;
    };
    let Some(libdir) = std::path::Path::new(&out).ancestors().nth(3) else {
        return;
    };
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let pc = format!(
        "libdir={}\nincludedir={}/src/ffi\n\nName: promise_rt\nDescription: promise-rt, on-device PRM-guided \
         generative recommendation (the C ABI)\nVersion: {version}\nLibs: -L${{libdir}} -lpromise_rt\n\
         Libs.private: -lm -ldl -lpthread\nCflags: -I${{includedir}}\n",
        libdir.display(),
        manifest
    );
    // a failure to write it must not fail the library's build (a read-only target, say)
    let _ = std::fs::write(libdir.join("promise_rt.pc"), pc);
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    pkg_config();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" || os == "android" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,max-page-size=16384");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,common-page-size=16384");
    }
}
