//! Differential: the fused engine against tract on mutated graphs. The tiny bundle with one
//! graph's bytes patched (overwrite or xor at an offset); if the bundle opens, both CPU
//! engines load it and answer the same histories. Property: a bundle that opens is one
//! model to both: both load and give the same items in the same order (swaps allowed only
//! where tract's own scores tie within 1e-5), or both refuse to load.
//!
//! Input: [graph (encoder, decoder, prm), mode, offset u32 LE, payload...].
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::{base, scratch, FILES};
use promise_rt::{Bundle, CpuEngine, Device, LoadOptions, Model, SearchConfig};


fuzz_target!(
    init: {
        std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
    },
    |data: &[u8]| {
    if data.len() < 7 {
        return;
    }
    let which = 1 + data[0] as usize % 3;
    let xor = data[1] % 2 == 1;
    let payload = &data[6..];
    let dir = scratch("diff");
    for (i, (name, bytes)) in FILES.iter().zip(base()).enumerate() {
        let mut b = bytes.clone();
        if i == which {
            let at = u32::from_le_bytes([data[2], data[3], data[4], data[5]]) as usize % b.len();
            for (x, p) in b[at..].iter_mut().zip(payload) {
                *x = if xor { *x ^ p } else { *p };
            }
        }
        std::fs::write(dir.join(name), &b).expect("write scratch bundle");
    }
    // sizes are unchanged: the manifest's sizes hold; checksums are not verified by default
    let Ok(bundle) = Bundle::open(dir) else { return };
    let load = |e| Model::load_with(&bundle, Device::Cpu, &LoadOptions::default().with_cpu_engine(e));
    let (fused, tract) = (load(CpuEngine::Fused), load(CpuEngine::Tract));
    let (fused, tract) = match (fused, tract) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(_), Err(_)) => return,
        (f, t) => panic!(
            "one engine loads what the other refuses: fused {:?}, tract {:?}",
            f.err().map(|e| e.to_string()),
            t.err().map(|e| e.to_string())
        ),
    };
    let cfg = SearchConfig { beams: 2, candidates: 8, results: 4, prm: true, mix: 0.5 };
    let (mut a, mut b) = (tract.session(cfg).unwrap(), fused.session(cfg).unwrap());
    for h in [&[0u32, 1, 2][..], &[5, 4], &[9]] {
        let x: Vec<(u32, f32)> = a.recommend(h).unwrap().iter().map(|r| (r.item, r.score)).collect();
        let y: Vec<(u32, f32)> = b.recommend(h).unwrap().iter().map(|r| (r.item, r.score)).collect();
        assert_eq!(x.len(), y.len(), "history {h:?}: tract {x:?}, fused {y:?}");
        for i in 0..x.len() {
            if x[i].0 != y[i].0 {
                let tie = x.iter().any(|o| o.0 == y[i].0 && (o.1 - x[i].1).abs() <= 1e-5 * x[i].1.abs().max(1.0));
                assert!(tie, "history {h:?}: tract {x:?}, fused {y:?}");
            }
        }
    }
});
