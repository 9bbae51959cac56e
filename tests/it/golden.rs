//! The CPU runtime against the golden files written by `models/train/promise_train/reference.py`
//! (onnxruntime + NumPy): same items in the same order, scores within 1e-4, on both CPU
//! engines (the GPU's run in gpu.rs).
//! Tolerance for order: two adjacent items may swap only when the reference's own
//! scores for them differ by less than 1e-5 (an exact near-tie that float rounding
//! between onnxruntime and tract can flip).

use promise_rt::{Bundle, Device, LoadOptions, Model, SearchConfig};
use serde_json::Value;

use crate::util::repo;

const SCORE_TOL: f32 = 1e-4;
const TIE_TOL: f64 = 1e-5;

pub fn check_golden(bundle_dir: &str, golden: &str, device: Device) -> usize {
    check_golden_with(bundle_dir, golden, device, &LoadOptions::default())
}

pub fn check_golden_with(
    bundle_dir: &str,
    golden: &str,
    device: Device,
    opts: &LoadOptions,
) -> usize {
    let g: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(golden)).expect("golden file"))
            .expect("json");
    let bundle = Bundle::open(repo().join(bundle_dir)).expect("bundle");
    let model = Model::load_with(&bundle, device, opts).expect("model");
    let mut checked = 0;
    for c in g["configs"].as_array().expect("configs") {
        let cfg = SearchConfig {
            beams: c["beams"].as_u64().unwrap() as usize,
            candidates: c["candidates"].as_u64().unwrap() as usize,
            results: c["results"].as_u64().unwrap() as usize,
            prm: c["prm"].as_bool().unwrap(),
            mix: c["mix"].as_f64().unwrap() as f32,
        };
        let mut s = model.session(cfg).expect("session");
        for case in c["cases"].as_array().unwrap() {
            let ids = |v: &Value| -> Vec<u32> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect()
            };
            // "all_but": every catalog item except these, in item order
            let hist: Vec<u32> = match case.get("all_but") {
                Some(out) => {
                    let out = ids(out);
                    (0..bundle.catalog().num_items() as u32)
                        .filter(|i| !out.contains(i))
                        .collect()
                }
                None => ids(&case["history"]),
            };
            let items: Vec<u32> = case["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let scores: Vec<f64> = case["scores"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let got = s.recommend(&hist).expect("recommend");
            let name = c["name"].as_str().unwrap();
            assert_eq!(
                got.len(),
                items.len(),
                "{name}, case {}: result count",
                case["user"]
            );
            for (i, r) in got.iter().enumerate() {
                let same = r.item == items[i];
                let swapped = !same
                    && ((i + 1 < items.len()
                        && r.item == items[i + 1]
                        && (scores[i] - scores[i + 1]).abs() < TIE_TOL)
                        || (i > 0
                            && r.item == items[i - 1]
                            && (scores[i] - scores[i - 1]).abs() < TIE_TOL));
                assert!(
                    same || swapped,
                    "{name}, case {}: rank {i} is item {}, expected {} (got {:?}, expected {:?})",
                    case["user"],
                    r.item,
                    items[i],
                    got.iter().map(|r| r.item).collect::<Vec<_>>(),
                    items
                );
                assert!(
                    (r.score as f64 - scores[i]).abs() < SCORE_TOL as f64 || swapped,
                    "{name}, case {}: rank {i} score {} vs {}",
                    case["user"],
                    r.score,
                    scores[i]
                );
            }
            checked += 1;
        }
    }
    checked
}

#[test]
fn tiny_bundle_matches_the_reference_on_the_cpu() {
    let n = check_golden("models/tiny", "tests/golden/tiny.json", Device::Cpu);
    assert!(n >= 400, "only {n} golden cases");
}

#[test]
fn default_bundle_matches_the_reference_on_the_cpu() {
    let n = check_golden("models/ml1m", "tests/golden/ml1m.json", Device::Cpu);
    assert!(n >= 400, "only {n} golden cases");
}

#[test]
fn a_path_query_bundle_matches_the_reference_on_the_cpu() {
    // tests/data/path: int8, `model.prm_query: "path"` (models/train/promise_train/synth.py --prm-query path)
    let n = check_golden("tests/data/path", "tests/golden/path.json", Device::Cpu);
    assert!(n >= 400, "only {n} golden cases");
}

#[cfg(feature = "tract")]
#[test]
fn the_tract_engine_matches_the_reference_too() {
    use promise_rt::CpuEngine;
    let opts = LoadOptions::default().with_cpu_engine(CpuEngine::Tract);
    for (bundle, golden) in [
        ("models/tiny", "tests/golden/tiny.json"),
        ("models/ml1m", "tests/golden/ml1m.json"),
        ("tests/data/path", "tests/golden/path.json"),
    ] {
        let n = check_golden_with(bundle, golden, Device::Cpu, &opts);
        assert!(n >= 400, "only {n} golden cases");
    }
}
