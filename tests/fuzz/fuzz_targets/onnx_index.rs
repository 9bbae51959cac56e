//! The ONNX weight index: any bytes give an index or an error; every indexed raw
//! initializer lies inside the input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(idx) = promise_rt::internals::onnx::index(data, "fuzz") {
        for i in &idx.initializers {
            assert!(i.offset + i.len <= data.len());
        }
        let _ = idx.check_finite(data, "fuzz");
    }
});
