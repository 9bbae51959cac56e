//! The C ABI: the committed header is what cbindgen makes now, and the C example builds
//! with the system C compiler against the library and runs clean.

use crate::util::repo;

#[test]
fn committed_header_is_fresh() {
    let cfg =
        cbindgen::Config::from_file(repo().join("src/ffi/cbindgen.toml")).expect("cbindgen.toml");
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_config(cfg)
        .with_src(repo().join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen")
        .write(&mut out);
    let fresh = String::from_utf8(out).unwrap();
    let path = repo().join("src/ffi/promise_rt.h");
    if std::env::var_os("PROMISE_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(committed == fresh, "src/ffi/promise_rt.h is stale: regenerate with `PROMISE_BLESS=1 cargo test --features ffi --test it ffi`");
}

#[cfg(feature = "ffi")]
#[test]
fn c_example_builds_and_runs() {
    // the cdylib next to this test binary: target/<profile>/libpromise_rt.so
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let lib = profile_dir.join(if cfg!(target_os = "macos") {
        "libpromise_rt.dylib"
    } else {
        "libpromise_rt.so"
    });
    assert!(
        lib.exists(),
        "{} not built: run `cargo build --all-features --all-targets` first (the README's test command does)",
        lib.display()
    );
    // `cargo test` does not relink the cdylib: refuse to test a stale one
    let built = std::fs::metadata(&lib).unwrap().modified().unwrap();
    let newest_src = lib_sources(profile_dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .max()
        .unwrap();
    assert!(built >= newest_src, "{} is older than the sources: run `cargo build --all-features --all-targets` first (the README's test command does)", lib.display());
    let out_dir = tempfile::tempdir().unwrap();
    let bin = out_dir.path().join("feed");
    // the flags from the promise_rt.pc the build wrote beside the library (build.rs)
    let pc = std::process::Command::new("pkg-config")
        .args(["--cflags", "--libs", "promise_rt"])
        .env("PKG_CONFIG_PATH", profile_dir)
        .output()
        .expect("pkg-config (Debian: pkg-config)");
    assert!(
        pc.status.success(),
        "pkg-config found no promise_rt.pc in {}",
        profile_dir.display()
    );
    let flags = String::from_utf8(pc.stdout).unwrap();
    assert!(
        flags.contains("-lpromise_rt") && flags.contains("src/ffi"),
        "{flags}"
    );
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let st = std::process::Command::new(&cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror"])
        .arg(repo().join("examples/c/feed.c"))
        .args(flags.split_whitespace())
        .arg("-o")
        .arg(&bin)
        .status()
        .expect("a C compiler (set CC)");
    assert!(st.success(), "compiling examples/c/feed.c failed");
    let out = std::process::Command::new(&bin)
        .arg(repo().join("models/ml1m"))
        .arg(repo().join("models/ml1m.promise"))
        .env("LD_LIBRARY_PATH", profile_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "feed failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("all C API checks passed")
            && text.contains(" 10. item")
            && text.contains("the same feed from memory and from an fd range"),
        "{text}"
    );
}

/// The sources the library was built from, as cargo's dep-info next to it lists them (so a
/// test-only module edited since does not count), else every .rs file under src/.
#[cfg(feature = "ffi")]
fn lib_sources(profile_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_to_string(profile_dir.join("libpromise_rt.d")) {
        Ok(d) => d
            .split_whitespace()
            .filter(|t| !t.ends_with(':'))
            .map(std::path::PathBuf::from)
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => walk(&repo().join("src")),
    }
}

#[cfg(feature = "ffi")]
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            v.push(p);
        }
    }
    v
}

/// A session whose call panicked inside the library is usable again (the panic is a
/// status, `PROMISE_STATUS_PANIC`, and the session's lock is not left poisoned), and a
/// session used from a second thread while a call runs answers "in use" instead of
/// racing, then serves both threads again. The faults are injected through the hidden
/// `internals::inject_fault` hook (a thread-local, read once per `promise_recommend`).
#[cfg(feature = "ffi")]
#[test]
fn the_c_api_survives_a_panic_and_reports_a_session_in_use() {
    use promise_rt::ffi::*;
    use promise_rt::internals::{inject_fault, Fault};
    use std::ffi::{CStr, CString};

    let last_error = || {
        // SAFETY: the library returns a valid NUL-terminated string.
        unsafe { CStr::from_ptr(promise_last_error()) }
            .to_string_lossy()
            .into_owned()
    };
    let path = CString::new(crate::util::tiny().to_str().unwrap()).unwrap();
    let mut m: *mut PromiseModel = std::ptr::null_mut();
    // SAFETY: as a C caller.
    let st = unsafe { promise_model_open(path.as_ptr(), PROMISE_DEVICE_CPU, &mut m) };
    assert_eq!(st, PROMISE_STATUS_OK, "{}", last_error());
    let mut s: *mut PromiseSession = std::ptr::null_mut();
    // SAFETY: a live model, NULL config (defaults), an out pointer.
    let st = unsafe { promise_session_new(m, std::ptr::null(), &mut s) };
    assert_eq!(st, PROMISE_STATUS_OK, "{}", last_error());
    // a raw session pointer as an integer, so another thread can call with it
    let key = s as usize;
    let run = move || {
        let h = [1u32, 2, 3];
        let mut out = [PromiseRecommendation {
            item: 0,
            score: 0.0,
        }; 10];
        let mut n = 0usize;
        // SAFETY: a live session, buffers of the stated lengths.
        let st = unsafe {
            promise_recommend(
                key as *mut PromiseSession,
                h.as_ptr(),
                h.len(),
                out.as_mut_ptr(),
                out.len(),
                &mut n,
            )
        };
        (
            st,
            out[..n.min(10)].iter().map(|r| r.item).collect::<Vec<_>>(),
        )
    };
    let (st, before) = run();
    assert_eq!(st, PROMISE_STATUS_OK, "{}", last_error());
    assert_eq!(before.len(), 10);

    inject_fault(Fault::Panic);
    let (st, _) = run();
    assert_eq!(st, PROMISE_STATUS_PANIC);
    assert!(last_error().contains("internal panic"), "{}", last_error());
    for _ in 0..3 {
        let (st, after) = run();
        assert_eq!(st, PROMISE_STATUS_OK, "after a panic: {}", last_error());
        assert_eq!(after, before);
    }

    let started = std::sync::Arc::new(std::sync::Barrier::new(2));
    let t = {
        let started = started.clone();
        std::thread::spawn(move || {
            inject_fault(Fault::Hold(std::time::Duration::from_millis(600)));
            started.wait();
            run()
        })
    };
    started.wait();
    std::thread::sleep(std::time::Duration::from_millis(150));
    let (st, _) = run();
    assert_eq!(st, PROMISE_STATUS_INVALID_ARGUMENT);
    assert!(last_error().contains("in use"), "{}", last_error());
    let (st, held) = t.join().unwrap();
    assert_eq!(st, PROMISE_STATUS_OK);
    assert_eq!(held, before);
    let (st, again) = run();
    assert_eq!(st, PROMISE_STATUS_OK, "{}", last_error());
    assert_eq!(again, before);
    assert_eq!(promise_session_free(s), PROMISE_STATUS_OK);
    assert_eq!(promise_model_free(m), PROMISE_STATUS_OK);
}

/// The JVM binding (bindings/jvm: Java classes over a JNI shim in C) built and run on the
/// desktop JVM by bindings/jvm/run.sh. Needs a JDK: under `CI=true` a missing `javac` fails
/// the test (.ci/run installs openjdk-17-jdk-headless); elsewhere it skips with a reason.
#[cfg(all(feature = "ffi", target_os = "linux"))]
#[test]
fn jvm_binding_runs_on_the_desktop_jvm() {
    let has_javac = std::process::Command::new("javac")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_javac {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and no javac: install openjdk-17-jdk-headless"
        );
        eprintln!("skipping the JVM binding test: no javac (install openjdk-17-jdk-headless)");
        return;
    }
    // the tiny bundle with ids "sku-%05d", for the id calls
    let n = crate::ids::items();
    let names: Vec<String> = (0..n).map(crate::ids::sku).collect();
    let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let with_ids = crate::ids::with_ids(&promise_rt::bundle::ids::encode(&refs));
    let out = std::process::Command::new("bash")
        .arg(repo().join("bindings/jvm/run.sh"))
        .arg(with_ids.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && text.contains("all JVM binding checks passed")
            && text.contains("id feed: "),
        "bindings/jvm/run.sh failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
