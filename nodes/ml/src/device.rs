//! Devices: which ones this machine has, and which one a stage runs on.

use std::fmt;

use rill_core::spec::{Device, Machine};

/// A device a model runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dev {
    Cpu,
    Cuda(usize),
}

impl fmt::Display for Dev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dev::Cpu => f.write_str("cpu"),
            Dev::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// A CUDA device found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    pub index: usize,
    pub name: String,
    pub memory: u64,
}

/// The CUDA devices rill can use: none without the `cuda` feature or
/// without a driver. Never panics (a missing libcuda is caught).
pub fn gpus() -> Vec<Gpu> {
    #[cfg(feature = "cuda")]
    {
        static GPUS: std::sync::OnceLock<Vec<Gpu>> = std::sync::OnceLock::new();
        GPUS.get_or_init(|| {
            // without libcuda, cudarc panics on first use: quietly (this
            // thread's panic only; other threads' still print)
            let found = crate::panics::quietly(|| std::panic::catch_unwind(cuda_devices));
            match found {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    tracing::debug!("no CUDA devices: {e}");
                    Vec::new()
                }
                Err(_) => {
                    tracing::debug!("no CUDA driver (libcuda) found");
                    Vec::new()
                }
            }
        })
        .clone()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Vec::new()
    }
}

#[cfg(feature = "cuda")]
fn cuda_devices() -> Result<Vec<Gpu>, cudarc::driver::DriverError> {
    use cudarc::driver::result;
    result::init()?;
    let n = result::device::get_count()?;
    let mut v = Vec::new();
    for i in 0..n {
        let dev = result::device::get(i)?;
        let name = result::device::get_name(dev).unwrap_or_else(|_| "CUDA device".into());
        // SAFETY: `dev` is a device handle the driver just gave us.
        let memory = unsafe { result::device::total_mem(dev)? } as u64;
        v.push(Gpu {
            index: i as usize,
            name,
            memory,
        });
    }
    Ok(v)
}

/// Adds the CUDA devices to a machine inventory (for `rill validate`).
pub fn detect_machine() -> Machine {
    let mut m = Machine::detect();
    m.gpus = gpus().iter().map(|g| g.memory).collect();
    m
}

/// The device a stage's `resources.device` means here: `auto` is the
/// first CUDA device when there is one, else the CPU.
pub fn resolve(device: Device) -> Result<Dev, String> {
    match device {
        Device::Cpu => Ok(Dev::Cpu),
        Device::Auto => Ok(if gpus().is_empty() {
            Dev::Cpu
        } else {
            Dev::Cuda(0)
        }),
        Device::Cuda(n) => {
            let n = n as usize;
            let g = gpus();
            if n < g.len() {
                Ok(Dev::Cuda(n))
            } else if cfg!(feature = "cuda") {
                Err(format!(
                    "cuda:{n} asked for, but this machine has {} CUDA device(s)",
                    g.len()
                ))
            } else {
                Err(format!(
                    "cuda:{n} asked for, but this build of rill has no CUDA support (build with `--features cuda`)"
                ))
            }
        }
    }
}
