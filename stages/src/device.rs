//! burn devices for the devices a topology names.

use brigade_partitioner::DeviceKind;
use burn::prelude::Device;

/// A device this build cannot drive.
#[derive(Debug, thiserror::Error)]
#[error(
    "device {device} needs brigade built with `--features cuda` (this build has the CPU backend only)"
)]
pub struct DeviceUnavailable {
    pub device: DeviceKind,
}

/// The burn device for `kind`: the flex CPU backend, or CUDA when built with the `cuda` feature.
pub fn burn_device(kind: DeviceKind) -> Result<Device, DeviceUnavailable> {
    match kind {
        DeviceKind::Cpu => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda(i) => Ok(Device::cuda(i as usize)),
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda(_) => Err(DeviceUnavailable { device: kind }),
    }
}
