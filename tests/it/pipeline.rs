//! The whole training pipeline on a small synthetic log, to a bundle that speaks the log's
//! ids (`python -m promise_train build --log LOG --out DIR --quick`, about a minute on 2
//! cores). It needs the training packages (torch, onnx, onnxruntime), so it runs only with
//! `PROMISE_PIPELINE_TEST=1` (and prints why it skips otherwise); `PROMISE_PY` names the
//! python (default `python3`).
use std::path::Path;
use std::process::Command;

use promise_rt::{Bundle, Device, Model, SearchConfig};

fn python(args: &[&str], dir: &Path) {
    let py = std::env::var("PROMISE_PY").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&py)
        .args(["-m", "promise_train"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{py}: {e}"));
    assert!(
        out.status.success(),
        "promise_train {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_synthetic_log_becomes_a_bundle_that_speaks_its_ids() {
    if std::env::var("PROMISE_PIPELINE_TEST").as_deref() != Ok("1") {
        eprintln!("skipped: set PROMISE_PIPELINE_TEST=1 (needs torch, onnx, onnxruntime)");
        return;
    }
    let train = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/train");
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log.tsv");
    let out = tmp.path().join("out");
    let (log_s, out_s) = (log.to_str().unwrap(), out.to_str().unwrap());
    python(&["synth-log", "--out", log_s], &train);
    python(
        &["build", "--log", log_s, "--out", out_s, "--quick"],
        &train,
    );
    for curve in ["sasrec_curve.jsonl", "gen_dense_curve.jsonl"] {
        let text = std::fs::read_to_string(out.join("curves").join(curve)).unwrap();
        assert!(
            text.lines().count() >= 2,
            "{curve}: a learning curve of at least two points"
        );
    }
    // the default recipe learned the log's structure: at the epoch the build keeps (by the
    // PRM's exhaustive validation Recall@20), the PRM alone and the PRM-guided search are
    // both well above a random feed (20 of 400 items)
    let gen: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("work/gen_dense.json")).unwrap())
            .unwrap();
    let head = gen["valid_head_recall@20"].as_f64().unwrap();
    let best = gen["best_epoch"].as_u64().unwrap();
    let curve = std::fs::read_to_string(out.join("curves/gen_dense_curve.jsonl")).unwrap();
    let row: serde_json::Value = curve
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["epoch"].as_u64() == Some(best))
        .unwrap();
    let guided = row["valid"]["guided_recall@20"].as_f64().unwrap();
    for (what, recall) in [("the PRM alone", head), ("the PRM-guided search", guided)] {
        assert!(
            recall > 0.15,
            "{what}: validation Recall@20 {recall}, a random feed gets 0.05"
        );
    }
    assert_eq!(
        Bundle::open(out.join("bundle-int8.promise"))
            .unwrap()
            .manifest()
            .dims
            .prm_kind,
        promise_rt::bundle::PrmKind::Dense
    );
    // a second run finds every step finished and changes nothing
    let before = std::fs::read(out.join("bundle-int8.promise")).unwrap();
    python(
        &["build", "--log", log_s, "--out", out_s, "--quick"],
        &train,
    );
    assert_eq!(
        std::fs::read(out.join("bundle-int8.promise")).unwrap(),
        before
    );

    // the two training variants the verifier's measurements compare, on the build's inputs:
    // --tie-leaf saves a model whose leaf rows are its items' encoder rows (so its bundle is
    // the usual format), --freeze-gen trains the head alone and leaves the generator as it was
    let w = out.join("work");
    let w_s = w.to_str().unwrap();
    let curves = tmp.path().join("variants");
    std::fs::create_dir_all(&curves).unwrap();
    let variant = |name: &str, extra: &str| {
        // (a temporary folder's path holds no spaces)
        let args = format!(
            "train --log {w_s}/log.pkl --work {w_s} --causal --out {name} --curve-dir {} \
             --item-ids --dense-aux 1.0 --dense-negatives 64 --size small --history 20 \
             --valid-users 50 --batch-targets 256 --samples 3000 {extra}",
            curves.display()
        );
        python(&args.split_whitespace().collect::<Vec<_>>(), &train);
    };
    variant("tied", "--item-init sasrec_items.npy --tie-leaf");
    variant("frozen", "--freeze-gen gen_dense");
    let check = r#"
import sys, numpy as np, torch
from promise_train.trie import Trie
w = sys.argv[1]
t = Trie(np.load(w + "/sids.npy"))
tied = torch.load(w + "/tied.pt")
leaf0 = t.level_start[t.levels]
off = tied["gen.enc_code_emb"].shape[0] - len(t.leaf_item)    # the item rows follow the code rows
rows = tied["gen.enc_code_emb"][off + torch.from_numpy(t.leaf_item.astype(np.int64))]
assert torch.equal(tied["prm.node"][leaf0:], rows), "tied leaf rows differ from the item rows"
g, f = torch.load(w + "/gen_dense.pt"), torch.load(w + "/frozen.pt")
assert all(torch.equal(g[k], f[k]) for k in g if k.startswith("gen.")), "the frozen generator changed"
assert not torch.equal(g["prm.node"], f["prm.node"]), "the frozen run trained no head"
print("ok")
"#;
    let py = std::env::var("PROMISE_PY").unwrap_or_else(|_| "python3".into());
    let out_check = Command::new(&py)
        .args(["-c", check, w_s])
        .current_dir(&train)
        .output()
        .unwrap();
    assert!(
        out_check.status.success(),
        "{}",
        String::from_utf8_lossy(&out_check.stderr)
    );

    // the same folder with another log is refused (its inputs' fingerprint), not resumed
    let other = tmp.path().join("other.tsv");
    std::fs::write(
        &other,
        std::fs::read_to_string(&log).unwrap() + "user-0\tsku-0\t1e9\n",
    )
    .unwrap();
    let py = std::env::var("PROMISE_PY").unwrap_or_else(|_| "python3".into());
    let refused = Command::new(&py)
        .args(["-m", "promise_train", "build", "--log"])
        .args([other.to_str().unwrap(), "--out", out_s, "--quick"])
        .current_dir(&train)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("holds a build of other inputs") && err.lines().count() == 1,
        "{err}"
    );

    let b = Bundle::open(out.join("bundle-int8.promise")).unwrap();
    let ids = b.ids().expect("the bundle carries the log's ids");
    // the log's first user's items, as the app names them
    let text = std::fs::read_to_string(&log).unwrap();
    let history: Vec<&str> = text
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("user-0\t"))
        .map(|l| l.split('\t').nth(1).unwrap())
        .take(5)
        .collect();
    assert!(history.iter().all(|id| ids.lookup(id.as_bytes()).is_some()));
    let m = Model::load(&b, Device::Cpu).unwrap();
    let mut s = m.session(SearchConfig::default()).unwrap();
    let mut with_new = history.clone();
    with_new.push("an-item-the-log-never-saw");
    let feed = s.recommend_ids(&with_new).unwrap();
    assert_eq!(feed.unknown(), 1);
    assert_eq!(feed.len(), SearchConfig::default().results);
    assert!(feed.iter().all(|(id, _)| id.starts_with("sku-")));
}

/// The pipeline's log reader and outputs (needs only python3: `log` imports no training
/// package): every bad input is one error line naming the file, the true row or line and
/// the column, never a traceback; no output is written through a planted symlink.
#[test]
fn the_log_reader_refuses_bad_input_in_one_line() {
    let py = std::env::var("PROMISE_PY").unwrap_or_else(|_| "python3".into());
    if Command::new(&py).arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and no {py}"
        );
        eprintln!("skipped: no {py}");
        return;
    }
    let train = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/train");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let run = |args: &[&str]| {
        Command::new(&py)
            .args(["-m", "promise_train", "log"])
            .args(args)
            .env("PYTHONPATH", &train)
            .current_dir(d)
            .output()
            .unwrap()
    };
    let head = "user_id,item_id,timestamp\n";
    let mut late = head.to_owned();
    for i in 1..2000 {
        late += &format!("u{},i{i},{i}\n", i % 50);
    }
    let cases: Vec<(&str, Vec<u8>, &[&str], &str)> = vec![
        (
            "nan.csv",
            format!("{head}u,a,1\nu,b,nan\n").into_bytes(),
            &[],
            "row 2 (line 3), column 'timestamp': timestamp 'nan' is not a finite number",
        ),
        (
            "big.csv",
            format!("{head}u,a,1\nu,b,1e400\n").into_bytes(),
            &[],
            "timestamp '1e400' is not a finite number",
        ),
        (
            "latin.csv",
            [head.as_bytes(), b"u,a,1\nu,\xe9t\xe9,3\n"].concat(),
            &[],
            "line 3, byte 3: not UTF-8",
        ),
        (
            "late.csv",
            [late.as_bytes(), b"u,\xff,5\n"].concat(),
            &[],
            "line 2001, byte 3: not UTF-8",
        ),
        (
            "long.csv",
            vec![b'a'; 2 << 20],
            &[],
            "line 1 is longer than 1048576 bytes",
        ),
        (
            "sep.csv",
            format!("{head}u,a,1\n").into_bytes(),
            &["--sep", ""],
            "--sep '': expected a field separator",
        ),
        (
            "ok.csv",
            format!("{head}u,a,1\nu,b,2\nu,c,3\n").into_bytes(),
            &["--out", "no/such/o.pkl"],
            "the folder",
        ),
        (
            "ok2.csv",
            format!("{head}u,a,1\nu,b,2\nu,c,3\n").into_bytes(),
            &["--out", "."],
            "is a folder, expected a file path",
        ),
    ];
    for (name, bytes, extra, needle) in cases {
        std::fs::write(d.join(name), bytes).unwrap();
        let mut args = vec!["--log", name];
        if !extra.contains(&"--out") {
            args.extend(["--out", "o.pkl"]);
        }
        args.extend(extra);
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: accepted");
        assert!(err.contains(needle), "{name}: {err}");
        assert!(
            err.trim_end().lines().count() == 1 && !err.contains("Traceback"),
            "{name}: {err}"
        );
    }
    // '::' (MovieLens .dat) splits plainly; the output is not written through a symlink
    // planted at a predictable temporary name
    std::fs::write(
        d.join("ml.dat"),
        "user_id::item_id::timestamp\nu::a::1\nu::b::2\nu::c::3\n",
    )
    .unwrap();
    std::fs::write(d.join("victim"), "keep").unwrap();
    std::os::unix::fs::symlink(d.join("victim"), d.join("o.pkl.tmp")).unwrap();
    let out = run(&["--log", "ml.dat", "--sep", "::", "--out", "o.pkl"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(d.join("victim")).unwrap(), "keep");
    assert!(d.join("o.pkl").is_file());
}
