//! burn devices for the devices a topology names.

use brigade_partitioner::{DeviceKind, TrainDType};
use burn::prelude::Device;

/// A device this build or this job cannot use.
#[derive(Debug, thiserror::Error)]
pub enum DeviceUnavailable {
    #[error(
        "device {device} needs brigade built with `--features cuda` (this build has the CPU backend only)"
    )]
    NotBuilt { device: DeviceKind },
    #[error(
        "train.dtype = \"{}\" needs a CUDA device, and this stage's device is {device} (CPU stages compute in f32): remove `dtype` from [train], or put every stage on a cuda:N device",
        dtype.name()
    )]
    HalfOnCpu {
        device: DeviceKind,
        dtype: TrainDType,
    },
}

/// The burn device for `kind`: the flex CPU backend, or CUDA when built with the `cuda` feature.
pub fn burn_device(kind: DeviceKind) -> Result<Device, DeviceUnavailable> {
    match kind {
        DeviceKind::Cpu => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda(i) => Ok(Device::cuda(i as usize)),
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda(_) => Err(DeviceUnavailable::NotBuilt { device: kind }),
    }
}

/// The device a stage trains on in `dtype`: half precision only on GPUs (flex's half-precision
/// kernels are slower than its f32 ones, so a CPU stage gains nothing from them).
pub fn training_device(kind: DeviceKind, dtype: TrainDType) -> Result<Device, DeviceUnavailable> {
    if kind == DeviceKind::Cpu && dtype != TrainDType::F32 {
        return Err(DeviceUnavailable::HalfOnCpu {
            device: kind,
            dtype,
        });
    }
    burn_device(kind)
}
