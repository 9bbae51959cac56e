//! Inference backends. The set is closed ([`Device`]); a backend that is compiled out
//! still exists and answers [`ErrorCode::BackendUnavailable`](crate::ErrorCode).

#[cfg(feature = "cpu")]
pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
#[cfg(test)]
#[cfg_attr(not(feature = "gpu"), allow(dead_code))] // the embeddings are GPU kernels only
pub(crate) mod reference;

/// The shape check of [`Scorer::encode`](crate::Scorer::encode)'s input, shared by the
/// backends that index it themselves: `codes` [H * L], `mask` [H].
#[cfg_attr(not(any(feature = "cpu", feature = "gpu")), allow(dead_code))]
pub(crate) fn check_encode_input(
    codes: &[i64],
    mask: &[f32],
    h: usize,
    l: usize,
) -> crate::Result<()> {
    if codes.len() != h * l || mask.len() != h {
        return Err(crate::error::err!(
            Backend,
            "encode got {} codes and {} mask values, expected {} and {h}",
            codes.len(),
            mask.len(),
            h * l
        ));
    }
    Ok(())
}

/// Which engine the CPU backend runs ([`LoadOptions::cpu_engine`](crate::LoadOptions)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CpuEngine {
    /// Our fused kernels for the bundle's architecture (default; several times faster).
    #[default]
    Fused,
    /// The bundle's ONNX graphs through tract-onnx.
    Tract,
}

impl std::str::FromStr for CpuEngine {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<CpuEngine> {
        match s {
            "fused" => Ok(CpuEngine::Fused),
            "tract" => Ok(CpuEngine::Tract),
            other => Err(crate::error::err!(
                InvalidArgument,
                "cpu engine is {other:?}, expected \"fused\" or \"tract\""
            )),
        }
    }
}

/// Where a [`Model`](crate::Model) runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// The CPU (feature `cpu`, default): our fused kernels or tract-onnx ([`CpuEngine`]).
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
