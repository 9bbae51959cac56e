//! The app's item ids (`ids.bin`): checked at open, mapped both ways, unknown history ids
//! skipped and counted.
use promise_rt::bundle::ids::encode;
use promise_rt::{Bundle, Device, ErrorCode, Model, SearchConfig};

use crate::util::{copy_bundle, edit_manifest, rewrite, tiny};

pub(crate) fn sku(i: usize) -> String {
    format!("sku-{i:05}")
}

/// A copy of the tiny bundle carrying `ids.bin` with `bytes`.
pub(crate) fn with_ids(bytes: &[u8]) -> tempfile::TempDir {
    let dir = copy_bundle(&tiny());
    std::fs::write(dir.path().join("ids.bin"), b"").unwrap();
    edit_manifest(dir.path(), |v| {
        v["ids"] = "ids.bin".into();
        v["files"].as_array_mut().unwrap().push(serde_json::json!(
            {"name": "ids.bin", "bytes": 0, "sha256": "0".repeat(64)}));
    });
    rewrite(dir.path(), "ids.bin", bytes);
    dir
}

pub(crate) fn items() -> usize {
    Bundle::open(tiny()).unwrap().manifest().num_items
}

#[test]
fn ids_map_both_ways_and_unknown_ids_are_counted() {
    let n = items();
    let names: Vec<String> = (0..n).map(sku).collect();
    let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let dir = with_ids(&encode(&refs));
    let b = Bundle::open(dir.path()).unwrap();
    let m = Model::load(&b, Device::Cpu).unwrap();
    let mut s = m.session(SearchConfig::default()).unwrap();
    let by_index: Vec<(u32, f32)> = s
        .recommend(&[3, 1, 4])
        .unwrap()
        .iter()
        .map(|r| (r.item, r.score))
        .collect();
    let feed = s
        .recommend_ids(&[&sku(3), "new-item", &sku(1), &sku(4), "another"])
        .unwrap();
    assert_eq!(feed.unknown(), 2);
    let got: Vec<(String, f32)> = feed.iter().map(|(id, sc)| (id.to_owned(), sc)).collect();
    let want: Vec<(String, f32)> = by_index
        .iter()
        .map(|&(i, sc)| (sku(i as usize), sc))
        .collect();
    assert_eq!(got, want, "the id call is the index call, mapped both ways");
    let feed = s.recommend_ids(&["nobody-knows-me"]).unwrap();
    assert!(feed.is_empty() && feed.unknown() == 1);
    for (bad, what) in [
        ("", "empty"),
        ("a\u{7}b", "control"),
        (&"x".repeat(257) as &str, "bytes"),
    ] {
        let e = s.recommend_ids(&[&sku(1), bad]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
        assert!(
            e.to_string().contains("history id 1") && e.to_string().contains(what),
            "{e}"
        );
    }
    let e = s
        .recommend_id_bytes([&b"\xff"[..]].into_iter())
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    assert_eq!(
        s.recommend_ids(&[]).unwrap_err().code(),
        ErrorCode::EmptyHistory
    );
}

#[test]
fn a_bundle_without_ids_says_so() {
    let b = Bundle::open(tiny()).unwrap();
    assert!(b.ids().is_none());
    let m = Model::load(&b, Device::Cpu).unwrap();
    let mut s = m.session(SearchConfig::default()).unwrap();
    assert_eq!(
        s.recommend_ids(&["a"]).unwrap_err().code(),
        ErrorCode::Config
    );
}

#[test]
fn bad_id_tables_are_refused_at_open() {
    let n = items();
    let names: Vec<String> = (0..n).map(sku).collect();
    let mut refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let good = encode(&refs);
    let mut cases: Vec<(Vec<u8>, &str)> = vec![(good[..good.len() - 1].to_vec(), "header")];
    let mut bad_utf8 = good.clone();
    let last = bad_utf8.len() - 1;
    bad_utf8[last] = 0xff;
    cases.push((bad_utf8, "UTF-8"));
    refs[n - 1] = refs[0];
    cases.push((encode(&refs), "same id"));
    let long = "y".repeat(300);
    refs[n - 1] = &long;
    cases.push((encode(&refs), "spans"));
    cases.push((encode(&refs[..n - 1]), "ids, the catalog has"));
    for (bytes, what) in cases {
        let dir = with_ids(&bytes);
        let e = Bundle::open(dir.path()).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Catalog, "{e}");
        assert!(e.to_string().contains(what), "{e} lacks {what:?}");
    }
    // sized before a byte is read
    let dir = with_ids(&good);
    edit_manifest(dir.path(), |v| {
        for f in v["files"].as_array_mut().unwrap() {
            if f["name"] == "ids.bin" {
                f["bytes"] = (1u64 << 40).into();
            }
        }
    });
    assert_eq!(
        Bundle::open(dir.path()).unwrap_err().code(),
        ErrorCode::Limits
    );
}
