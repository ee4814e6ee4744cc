//! Hypervisor.framework through `applevisor`: the backend, its errors, and opening it.
//!
//! One VM per process and thread-bound vCPUs are HVF's rules; the plugin keeps them inside:
//! a second VM is refused as no resource, and each vCPU lives on a thread of its own that the
//! ABI calls are sent to ([`vcpu`]).

mod debug;
mod error;
mod gic;
mod probe;
mod regs;
mod shared;
mod slot;
mod sync;
mod vcpu;
mod vm;

use accel_api::{backend::Backend, AccelError, ErrorKind, ProbeInfo, Result, VmConfig};

pub use vcpu::HvfVcpu;
pub use vm::HvfVm;

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
