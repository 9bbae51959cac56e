//! Every shipped bundle opens (checksums verified), loads on the CPU and recommends; the
//! f16 and int8 variants agree with their f32 bundle on most of the top 10.

use promise_rt::{Bundle, Device, Model, OpenOptions, SearchConfig};

use crate::util::repo;

fn top10(dir: &str, history: &[u32]) -> Vec<u32> {
    let b = Bundle::open_with(
        repo().join(dir),
        OpenOptions::default()
            .with_checksums(true)
            .with_in_memory(false),
    )
    .unwrap_or_else(|e| panic!("{dir}: {e}"));
    let m = Model::load(&b, Device::Cpu).unwrap_or_else(|e| panic!("{dir}: {e}"));
    let mut s = m.session(SearchConfig::default()).unwrap();
    s.recommend(history)
        .unwrap()
        .iter()
        .map(|r| r.item)
        .collect()
}

#[test]
fn every_shipped_bundle_works_and_variants_agree() {
    let history = [12, 7, 99, 1024, 5, 318, 2000, 41];
    for base in ["models/ml1m", "models/ml1m-large"] {
        let f32_top = top10(base, &history);
        assert_eq!(f32_top.len(), 10);
        for variant in ["f16", "int8"] {
            let v = top10(&format!("{base}-{variant}"), &history);
            let common = v.iter().filter(|i| f32_top.contains(i)).count();
            println!("{base}-{variant}: {common}/10 items in common with f32");
            assert!(
                common >= if variant == "f16" { 8 } else { 5 },
                "{base}-{variant}: only {common}/10 in common"
            );
        }
    }
    assert_eq!(top10("models/tiny", &history).len(), 10);
}

/// The feeds of `bundle` for a few histories (default search).
fn feeds(bundle: &Bundle) -> Vec<Vec<(u32, f32)>> {
    let m = Model::load(bundle, Device::Cpu).unwrap();
    let mut s = m.session(SearchConfig::default()).unwrap();
    let items = bundle.catalog().num_items() as u32;
    (0..6u32)
        .map(|u| {
            let h: Vec<u32> = (0..3 + u * 7).map(|j| (u * 131 + j * 17) % items).collect();
            s.recommend(&h)
                .unwrap()
                .iter()
                .map(|r| (r.item, r.score))
                .collect()
        })
        .collect()
}

/// The shipped one-file bundle is exactly `promise pack models/ml1m`, and every way to
/// open a one-file bundle (a path, a buffer, an fd range inside a larger file, mapped or
/// read) gives the directory's feeds, bit for bit; `promise unpack` gives the directory
/// back file for file.
#[test]
fn one_file_bundles_open_every_way_and_match_their_directory() {
    let dir = repo().join("models/ml1m");
    let tmp = tempfile::tempdir().unwrap();
    let packed = tmp.path().join("ml1m.promise");
    promise_rt::bundle::container::pack(&dir, &packed).unwrap();
    let bytes = std::fs::read(&packed).unwrap();
    let shipped = std::fs::read(repo().join("models/ml1m.promise")).unwrap();
    assert!(
        shipped == bytes,
        "models/ml1m.promise is not `promise pack models/ml1m`: re-pack it"
    );
    let want = feeds(&Bundle::open(&dir).unwrap());
    for in_memory in [false, true] {
        let opts = OpenOptions::default().with_in_memory(in_memory);
        let b = Bundle::open_with(&packed, opts.with_checksums(true)).unwrap();
        assert_eq!(feeds(&b), want, "path, in_memory {in_memory}");
        #[cfg(unix)]
        {
            // an "APK": the bundle at an odd offset between other bytes
            let apk = tmp.path().join("app.apk");
            let mut a = vec![0xA5u8; 4097];
            a.extend_from_slice(&bytes);
            a.extend_from_slice(&[0x5A; 100]);
            std::fs::write(&apk, &a).unwrap();
            let f = std::fs::File::open(&apk).unwrap();
            use std::os::fd::AsFd;
            let b = Bundle::from_fd_range(f.as_fd(), 4097, bytes.len() as u64, opts).unwrap();
            drop(f);
            assert_eq!(feeds(&b), want, "fd range, in_memory {in_memory}");
            let e = Bundle::from_fd_range(
                std::fs::File::open(&apk).unwrap().as_fd(),
                4097,
                a.len() as u64,
                opts,
            )
            .unwrap_err();
            assert_eq!(e.code(), promise_rt::ErrorCode::InvalidArgument, "{e}");
        }
    }
    assert_eq!(feeds(&Bundle::from_bytes(bytes.clone()).unwrap()), want);
    let out = tmp.path().join("unpacked");
    promise_rt::bundle::container::unpack(&packed, &out).unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap();
        assert_eq!(
            std::fs::read(&p).unwrap(),
            std::fs::read(out.join(name)).unwrap(),
            "{name:?}"
        );
    }
    // a container cut short, or with a manifest that lies, is the same error as a file
    let e = Bundle::from_bytes(bytes[..bytes.len() - 1].to_vec()).unwrap_err();
    assert_eq!(e.code(), promise_rt::ErrorCode::Manifest, "{e}");
    let e = promise_rt::bundle::container::unpack(&packed, &out).unwrap_err();
    assert_eq!(
        e.code(),
        promise_rt::ErrorCode::InvalidArgument,
        "unpack into an existing dir: {e}"
    );
    assert!(e.to_string().contains("not empty"), "{e}");
}
