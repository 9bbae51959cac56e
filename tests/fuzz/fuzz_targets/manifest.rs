//! manifest.json: any text gives a validated manifest or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = promise_rt::Manifest::from_json(text) {
            assert!(m.levels >= 1 && m.codebook.len() == m.levels && m.history >= 1);
        }
    }
});
