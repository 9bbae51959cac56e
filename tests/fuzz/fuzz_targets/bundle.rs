//! open -> recommend on mutated whole bundles: the tiny bundle with one of its five files
//! patched (bytes overwritten, bits flipped, or the file cut short), opened and, if that
//! succeeds, loaded on the CPU backend (both engines: fused and tract) and asked for
//! recommendations. Property: every
//! step either returns an error or gives valid output (items of the catalogue, distinct,
//! not in the history, finite scores); nothing panics.
//!
//! Input: [file, mode, offset u32 LE, payload...]; file = manifest, encoder, decoder, prm,
//! catalog (mod 5); mode 0 overwrite with payload, 1 xor with payload, 2 truncate.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::{base, scratch, FILES};
use promise_rt::{Bundle, CpuEngine, Device, LoadOptions, Model, SearchConfig};


fuzz_target!(
    init: {
        // libfuzzer-sys aborts in its panic hook, before the runtime's catch_unwind around
        // tract can turn a tract panic into an error; print instead. A panic that escapes
        // the runtime still aborts: libfuzzer-sys catches it around this closure.
        std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
    },
    |data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let which = data[0] as usize % FILES.len();
    let mode = data[1] % 3;
    let payload = &data[6..];
    let dir = scratch("bundle");
    for (i, (name, bytes)) in FILES.iter().zip(base()).enumerate() {
        let mut b = bytes.clone();
        if i == which && !b.is_empty() {
            let at = u32::from_le_bytes([data[2], data[3], data[4], data[5]]) as usize % b.len();
            match mode {
                0 => {
                    let n = payload.len().min(b.len() - at);
                    b[at..at + n].copy_from_slice(&payload[..n]);
                }
                1 => {
                    for (x, p) in b[at..].iter_mut().zip(payload) {
                        *x ^= p;
                    }
                }
                _ => b.truncate(at),
            }
        }
        std::fs::write(dir.join(name), &b).expect("write scratch bundle");
    }
    let Ok(bundle) = Bundle::open(dir) else { return };
    for cpu_engine in [CpuEngine::Fused, CpuEngine::Tract] {
        let opts = LoadOptions::default().with_cpu_engine(cpu_engine);
        let Ok(model) = Model::load_with(&bundle, Device::Cpu, &opts) else { continue };
        let cfg = SearchConfig { beams: 2, candidates: 4, results: 3, prm: true, mix: 0.5 };
        let Ok(mut session) = model.session(cfg) else { continue };
        let n_items = bundle.catalog().num_items() as u32;
        let history = [0u32, 1, 2];
        if let Ok(recs) = session.recommend(&history) {
            assert!(recs.len() <= 3);
            for (i, r) in recs.iter().enumerate() {
                assert!(r.item < n_items, "item {} out of the catalogue", r.item);
                assert!(!history.contains(&r.item), "a seen item was recommended");
                assert!(r.score.is_finite(), "non-finite score {}", r.score);
                assert!(recs[..i].iter().all(|o| o.item != r.item), "duplicate item");
            }
        }
    }
});
