//! KVM arm64 through `kvm-ioctls`: opening `/dev/kvm`, probing, and creating VMs.

mod debug;
mod error;
mod eventfd;
mod gic;
mod kick;
mod probe;
mod psci;
mod slots;
mod vcpu;
mod vm;

use std::sync::Arc;

use accel_api::{backend::Backend, ProbeInfo, Result, VmConfig};
use kvm_ioctls::Kvm;

use self::probe::Probed;

pub use vcpu::KvmVcpu;
pub use vm::KvmVm;

/// An opened `/dev/kvm`.
pub struct KvmBackend {
    kvm: Arc<Kvm>,
    probed: &'static Probed,
}

impl KvmBackend {
    /// Probes the host (once per process) and opens `/dev/kvm` for this backend.
    pub fn open() -> Result<Self> {
        let probed = probe::probed()?;
        let kvm = probe::open_kvm()?;
        Ok(Self { kvm: Arc::new(kvm), probed })
    }
}

/// Probes the host: available when a scratch VM and vCPU can be created and read.
pub fn probe() -> ProbeInfo {
    log::debug!("probe: opening /dev/kvm and a scratch VM");
    match probe::probed() {
        Ok(probed) => probed.info(),
        Err(e) => ProbeInfo::unavailable(e.to_string()),
    }
}

/// Opens the backend.
pub fn open() -> Result<KvmBackend> {
    KvmBackend::open()
}

impl Backend for KvmBackend {
    type Vm = KvmVm;

    fn probe(&self) -> ProbeInfo {
        self.probed.info()
    }

    fn create_vm(&self, config: &VmConfig) -> Result<KvmVm> {
        KvmVm::new(&self.kvm, self.probed.caps, self.probed.guest_debug, config)
    }
}
