//! Inference backends. The set is closed ([`Device`]); a backend that is compiled out
//! still exists and answers [`ErrorCode::BackendUnavailable`](crate::ErrorCode).

#[cfg(feature = "cpu")]
pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;

/// Where a [`Model`](crate::Model) runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// tract-onnx on the CPU (feature `cpu`, default).
    Cpu,
    /// Our WGSL kernels through wgpu on the device GPU (feature `gpu`); any adapter,
    /// software ones (lavapipe) included.
    Gpu,
    /// A hardware GPU when one qualifies (found, with the limits the model needs), else
    /// the CPU. Never a software adapter: the CPU backend is faster than one.
    Auto,
}

impl std::str::FromStr for Device {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Device> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "gpu" => Ok(Device::Gpu),
            "auto" => Ok(Device::Auto),
            other => Err(crate::error::err!(
                InvalidArgument,
                "device is {other:?}, expected \"cpu\", \"gpu\" or \"auto\""
            )),
        }
    }
}
