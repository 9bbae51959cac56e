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
