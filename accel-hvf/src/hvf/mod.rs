//! Hypervisor.framework through `applevisor`: the backend, its errors, and opening it.
//!
//! One VM per process and thread-bound vCPUs are HVF's rules; the plugin keeps them inside:
//! a second VM is refused as no resource, and each vCPU lives on a thread of its own that the
//! ABI calls are sent to ([`vcpu`]).

mod debug;
mod gic;
mod probe;
mod regs;
mod vcpu;
mod vm;

use std::fmt::Display;

use accel_api::{backend::Backend, AccelError, ErrorKind, ProbeInfo, Result, VmConfig};
use applevisor::error::HypervisorError;
use applevisor_sys::hv_return_t;

pub use vcpu::HvfVcpu;
pub use vm::HvfVm;

/// The HVF error of a failed call, as an OS error with the nearest errno and the operation's
/// name; `HV_UNSUPPORTED` is an unsupported error.
pub(crate) fn hv_error(op: impl Display, e: HypervisorError) -> AccelError {
    let errno = match e {
        HypervisorError::BadArgument | HypervisorError::IllegalState => libc::EINVAL,
        HypervisorError::Busy => libc::EBUSY,
        HypervisorError::Denied => libc::EPERM,
        HypervisorError::Fault => libc::EFAULT,
        HypervisorError::NoDevice => libc::ENODEV,
        HypervisorError::NoResources => libc::ENOMEM,
        HypervisorError::Unsupported => {
            return AccelError::unsupported(format!("{op}: Hypervisor.framework does not support it"))
        }
        HypervisorError::Error | HypervisorError::Unknown(_) => libc::EIO,
    };
    AccelError::os(errno, format!("{op} failed ({e:?})"))
}

/// Checks the return code of a raw `applevisor-sys` call.
pub(crate) fn hv_check(op: impl Display, ret: hv_return_t) -> Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(hv_error(op, HypervisorError::from(ret)))
    }
}

/// The opened backend: what the probe found.
pub struct HvfBackend {
    probed: &'static probe::Probed,
}

/// Probes the host: available when `kern.hv_support` says so and a scratch VM and vCPU work.
pub fn probe() -> ProbeInfo {
    match probe::probed() {
        Ok(probed) => probed.info(),
        Err(e) => ProbeInfo::unavailable(e.to_string()),
    }
}

/// Opens the backend.
pub fn open() -> Result<HvfBackend> {
    let probed = probe::probed().map_err(|e| AccelError { kind: ErrorKind::UNAVAILABLE, ..e })?;
    Ok(HvfBackend { probed })
}

impl Backend for HvfBackend {
    type Vm = HvfVm;

    fn probe(&self) -> ProbeInfo {
        self.probed.info()
    }

    fn create_vm(&self, config: &VmConfig) -> Result<HvfVm> {
        HvfVm::new(self.probed, config)
    }
}
