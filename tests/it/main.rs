//! The integration test binary: golden files from the Python reference, bad inputs,
//! search properties against a naive reference, and the CLI.

#[cfg(any(feature = "gpu", feature = "tract"))]
mod agree;
mod bundles;
mod cli;
mod concurrency;
mod cpu_engines;
mod errors;
#[path = "../support/fake.rs"]
mod fake;
mod ffi;
mod file_ops;
mod golden;
mod gpu;
mod hostile;
mod ids;
mod matrix;
mod one_reading;
mod pipeline;
mod search_props;
mod util;
