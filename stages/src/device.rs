//! burn devices for the devices a topology names.

use brigade_partitioner::{DeviceKind, ScheduleKind, TrainDType};
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
    #[error("device {device} cannot be used: {why}")]
    NoGpu { device: DeviceKind, why: String },
    #[error(
        "schedule = \"{}\" does not yet train reproducibly on CUDA devices ({device}): on an H200 its losses differed from run to run and from `reference` (docs/gpu.md). Use \"1f1b\" or \"zb-h1\" on GPUs",
        schedule.name()
    )]
    NotExactOnGpu {
        device: DeviceKind,
        schedule: ScheduleKind,
    },
}

/// The variable under which the GPU bench runs a refused schedule anyway, to see whether it has
/// become exact (benches/gpu/side_by_side.sh compares it with `reference`; docs/gpu.md).
pub const TRY_INEXACT_ENV: &str = "BRIGADE_CUDA_TRY_INEXACT_SCHEDULE";

/// Refuses a schedule that is not exact on `kind` (interleaved 1F1B on CUDA, see docs/gpu.md),
/// unless [`TRY_INEXACT_ENV`] is set to 1.
pub fn check_schedule(kind: DeviceKind, schedule: ScheduleKind) -> Result<(), DeviceUnavailable> {
    let trying = std::env::var(TRY_INEXACT_ENV).is_ok_and(|v| v == "1");
    match kind {
        DeviceKind::Cuda(_) if !schedule.needs().exact_on_cuda && !trying => {
            Err(DeviceUnavailable::NotExactOnGpu {
                device: kind,
                schedule,
            })
        }
        _ => Ok(()),
    }
}

/// The burn device for `kind`: the flex CPU backend, or CUDA when built with the `cuda` feature.
pub fn burn_device(kind: DeviceKind) -> Result<Device, DeviceUnavailable> {
    match kind {
        DeviceKind::Cpu => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda(i) => {
            cuda_probe::check(i).map_err(|why| DeviceUnavailable::NoGpu { device: kind, why })?;
            Ok(Device::cuda(i as usize))
        }
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

/// What burn's CUDA backend needs, checked up front: cubecl panics (on another thread) when the
/// driver, NVRTC or the device is missing.
#[cfg(feature = "cuda")]
mod cuda_probe {
    pub fn check(index: u32) -> Result<(), String> {
        // SAFETY: these only try to dlopen the libraries (no symbol of them is called).
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(
                "the NVIDIA driver library (libcuda.so) is not installed on this machine; \
                        run on a machine with an NVIDIA GPU and its driver"
                    .into(),
            );
        }
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(
                "NVRTC (libnvrtc.so, from the CUDA toolkit) is not found; install the CUDA \
                        toolkit and set CUDA_PATH (e.g. /usr/local/cuda) or LD_LIBRARY_PATH"
                    .into(),
            );
        }
        cudarc::driver::result::init()
            .map_err(|e| format!("the CUDA driver failed to start: {e}"))?;
        let count = cudarc::driver::result::device::get_count()
            .map_err(|e| format!("cannot count CUDA devices: {e}"))?;
        if count <= 0 {
            return Err("the driver sees no CUDA device on this machine".into());
        }
        if index as i32 >= count {
            return Err(format!(
                "this machine has {count} CUDA device(s) (cuda:0 to cuda:{}); use one of them",
                count - 1
            ));
        }
        Ok(())
    }
}
