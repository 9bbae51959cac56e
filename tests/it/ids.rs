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

/// The C calls: `promise_recommend_ids` is `promise_recommend` over the known ids, with
/// the unknown ones counted; `promise_model_item_id` maps each index back; a bad table is
/// refused by `promise_model_open` with the Rust code; a bundle without ids says so.
#[cfg(feature = "ffi")]
#[test]
fn the_c_calls_speak_the_apps_ids() {
    use promise_rt::ffi::*;
    use std::ffi::{c_char, CStr, CString};

    let last_error = || {
        // SAFETY: the library returns a valid NUL-terminated string.
        unsafe { CStr::from_ptr(promise_last_error()) }
            .to_string_lossy()
            .into_owned()
    };
    let open = |dir: &std::path::Path| {
        let path = CString::new(dir.to_str().unwrap()).unwrap();
        let mut m: *mut PromiseModel = std::ptr::null_mut();
        // SAFETY: as a C caller.
        let st = unsafe { promise_model_open(path.as_ptr(), PROMISE_DEVICE_CPU, &mut m) };
        (st, m)
    };
    let n = items();
    let names: Vec<String> = (0..n).map(sku).collect();
    let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let good = encode(&refs);
    let bad = with_ids(&good[..good.len() - 1]);
    let (st, m) = open(bad.path());
    assert_eq!(st, ErrorCode::Catalog as i32, "{}", last_error());
    assert!(
        m.is_null() && last_error().contains("ids.bin"),
        "{}",
        last_error()
    );

    let dir = with_ids(&good);
    let (st, m) = open(dir.path());
    assert_eq!(st, PROMISE_STATUS_OK, "{}", last_error());
    let mut s: *mut PromiseSession = std::ptr::null_mut();
    // SAFETY: a live model, NULL config (defaults), an out pointer.
    assert_eq!(
        unsafe { promise_session_new(m, std::ptr::null(), &mut s) },
        PROMISE_STATUS_OK
    );
    let blank = PromiseRecommendation {
        item: u32::MAX,
        score: 0.0,
    };
    let mut by_index = vec![blank; 10];
    let mut w = 0usize;
    let h = [3u32, 1, 4];
    // SAFETY: buffers of the stated lengths.
    let st = unsafe { promise_recommend(s, h.as_ptr(), 3, by_index.as_mut_ptr(), 10, &mut w) };
    assert_eq!(st, PROMISE_STATUS_OK, "{}", last_error());
    by_index.truncate(w);

    let hist: Vec<CString> = [sku(3), "new-item".into(), sku(1), sku(4)]
        .into_iter()
        .map(|s| CString::new(s).unwrap())
        .collect();
    let ptrs: Vec<*const c_char> = hist.iter().map(|c| c.as_ptr()).collect();
    let (mut out, mut w, mut unknown) = (vec![blank; 10], 0usize, usize::MAX);
    let call = |ptrs: &[*const c_char],
                out: &mut [PromiseRecommendation],
                w: &mut usize,
                u: &mut usize| {
        // SAFETY: buffers of the stated lengths, NUL-terminated ids (or NULL, refused).
        unsafe {
            promise_recommend_ids(
                s,
                ptrs.as_ptr(),
                ptrs.len(),
                out.as_mut_ptr(),
                out.len(),
                w,
                u,
            )
        }
    };
    assert_eq!(
        call(&ptrs, &mut out, &mut w, &mut unknown),
        PROMISE_STATUS_OK,
        "{}",
        last_error()
    );
    out.truncate(w);
    assert_eq!(unknown, 1);
    let pairs =
        |v: &[PromiseRecommendation]| v.iter().map(|r| (r.item, r.score)).collect::<Vec<_>>();
    assert_eq!(pairs(&out), pairs(&by_index), "by id = by index");
    for r in &out {
        let (mut p, mut len) = (std::ptr::null::<u8>(), 0usize);
        // SAFETY: a live model and out pointers.
        assert_eq!(
            unsafe { promise_model_item_id(m, r.item, &mut p, &mut len) },
            PROMISE_STATUS_OK
        );
        // SAFETY: the library's pointer and length into the mapped table, model alive.
        let id = unsafe { std::slice::from_raw_parts(p, len) };
        assert_eq!(id, sku(r.item as usize).as_bytes());
    }
    let (mut p, mut len) = (std::ptr::null::<u8>(), 0usize);
    // SAFETY: as above.
    let st = unsafe { promise_model_item_id(m, n as u32, &mut p, &mut len) };
    assert_eq!(st, PROMISE_STATUS_UNKNOWN_ITEM, "{}", last_error());
    assert!(last_error().contains(&n.to_string()), "{}", last_error());

    // a NULL id is named by its position, nothing is written
    let with_null = [ptrs[0], std::ptr::null(), ptrs[2]];
    let (mut out, mut w, mut unknown) = (vec![blank; 10], 7usize, 7usize);
    let st = call(&with_null, &mut out, &mut w, &mut unknown);
    assert_eq!(st, PROMISE_STATUS_INVALID_ARGUMENT);
    assert!(last_error().contains("history id 1"), "{}", last_error());
    assert_eq!((w, unknown, out[0].item), (7, 7, u32::MAX));
    // only unknown ids: an empty feed, not an error
    let nobody = CString::new("nobody").unwrap();
    let st = call(&[nobody.as_ptr()], &mut out, &mut w, &mut unknown);
    assert_eq!((st, w, unknown), (PROMISE_STATUS_OK, 0, 1));
    // an empty history is the library's empty-history error; a short buffer is CAPACITY
    assert_eq!(
        call(&[], &mut out, &mut w, &mut unknown),
        PROMISE_STATUS_EMPTY_HISTORY
    );
    assert_eq!(
        call(&ptrs, &mut out[..3], &mut w, &mut unknown),
        PROMISE_STATUS_CAPACITY
    );
    assert_eq!(promise_session_free(s), PROMISE_STATUS_OK);
    assert_eq!(promise_model_free(m), PROMISE_STATUS_OK);

    // a bundle without ids: CONFIG from both calls
    let (st, m) = open(&tiny());
    assert_eq!(st, PROMISE_STATUS_OK);
    let (mut p, mut len) = (std::ptr::null::<u8>(), 0usize);
    // SAFETY: as above.
    let st = unsafe { promise_model_item_id(m, 0, &mut p, &mut len) };
    assert_eq!(st, PROMISE_STATUS_CONFIG, "{}", last_error());
    assert_eq!(promise_model_free(m), PROMISE_STATUS_OK);
}
