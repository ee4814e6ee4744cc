//! KVM arm64 through `kvm-ioctls`: opening `/dev/kvm`, probing, and creating VMs.

mod vcpu;
mod vm;

use std::sync::Arc;

use accel_api::{
    backend::Backend, AccelError, Capabilities, ErrorKind, ProbeInfo, Result, VcpuFeatures, VmConfig,
};
use kvm_ioctls::{Cap, Kvm};

pub use vcpu::KvmVcpu;
pub use vm::KvmVm;

/// The KVM API version this backend speaks (`KVM_GET_API_VERSION`).
const KVM_API_VERSION: i32 = 12;

/// Wraps a failed ioctl into the shared error type, naming the operation.
pub(crate) fn ioctl_error(op: impl std::fmt::Display, e: kvm_ioctls::Error) -> AccelError {
    AccelError::os(e.errno(), format!("{op} failed"))
}

/// An opened `/dev/kvm`.
pub struct KvmBackend {
    kvm: Arc<Kvm>,
    caps: Capabilities,
}

fn read_caps(kvm: &Kvm) -> Capabilities {
    let mut features = VcpuFeatures::POWER_OFF;
    for (cap, feature) in [
        (Cap::ArmPsci02, VcpuFeatures::PSCI_0_2),
        (Cap::ArmEl132bit, VcpuFeatures::EL1_32BIT),
        (Cap::ArmPtrAuthAddress, VcpuFeatures::PTRAUTH_ADDRESS),
        (Cap::ArmPtrAuthGeneric, VcpuFeatures::PTRAUTH_GENERIC),
    ] {
        if kvm.check_extension(cap) {
            features |= feature;
        }
    }
    let ipa_bits = if kvm.check_extension(Cap::ArmVmIPASize) { kvm.get_host_ipa_limit() } else { 40 };
    Capabilities {
        max_vcpus: u32::try_from(kvm.get_max_vcpus()).unwrap_or(u32::MAX),
        ipa_bits: u32::try_from(ipa_bits).unwrap_or(0),
        hw_breakpoints: u32::try_from(kvm.check_extension_int(Cap::DebugHwBps)).unwrap_or(0),
        hw_watchpoints: u32::try_from(kvm.check_extension_int(Cap::DebugHwWps)).unwrap_or(0),
        vcpu_features: features,
        guest_debug: kvm.check_extension(Cap::SetGuestDebug),
        readonly_memory: kvm.check_extension(Cap::ReadonlyMem),
    }
}

impl KvmBackend {
    /// Opens `/dev/kvm`, checks the API version and creates a scratch VM to prove that KVM works
    /// here (a `/dev/kvm` that opens is not enough: under user-mode emulation its ioctls fail).
    pub fn open() -> Result<Self> {
        let kvm = Kvm::new()
            .map_err(|e| AccelError { kind: ErrorKind::UNAVAILABLE, ..ioctl_error("opening /dev/kvm", e) })?;
        let version = kvm.get_api_version();
        if version != KVM_API_VERSION {
            return Err(AccelError::new(
                ErrorKind::UNAVAILABLE,
                format!("KVM API version is {version}; version {KVM_API_VERSION} is required"),
            ));
        }
        kvm.create_vm().map_err(|e| AccelError {
            kind: ErrorKind::UNAVAILABLE,
            ..ioctl_error("KVM_CREATE_VM of a scratch VM", e)
        })?;
        let caps = read_caps(&kvm);
        Ok(Self { kvm: Arc::new(kvm), caps })
    }

    fn probe_info(&self) -> ProbeInfo {
        ProbeInfo {
            available: true,
            reason: format!("KVM API {KVM_API_VERSION} on /dev/kvm").into(),
            caps: self.caps,
        }
    }
}

/// Probes the host: available when a VM can be created.
pub fn probe() -> ProbeInfo {
    log::debug!("probe: opening /dev/kvm and a scratch VM");
    match KvmBackend::open() {
        Ok(backend) => backend.probe_info(),
        Err(e) => ProbeInfo { available: false, reason: e.to_string().into(), caps: Default::default() },
    }
}

/// Opens the backend.
pub fn open() -> Result<KvmBackend> {
    KvmBackend::open()
}

impl Backend for KvmBackend {
    type Vm = KvmVm;

    fn probe(&self) -> ProbeInfo {
        self.probe_info()
    }

    fn create_vm(&self, config: &VmConfig) -> Result<KvmVm> {
        KvmVm::new(&self.kvm, self.caps, config)
    }
}
