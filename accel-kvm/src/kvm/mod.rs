//! KVM arm64 through `kvm-ioctls`: opening `/dev/kvm`, probing, and creating VMs.

mod vcpu;
mod vm;

use std::sync::Arc;

use accel_api::sve::SVE_VQ_MAX;
use accel_api::{
    backend::Backend, AccelError, Capabilities, ErrorKind, ProbeInfo, Result, VcpuFeatures, VmConfig,
};
use kvm_ioctls::{Cap, Kvm};

use kvm_bindings::{KVM_CAP_ARM_INJECT_EXT_DABT, KVM_CAP_ARM_INJECT_SERROR_ESR};

use crate::reg_ids::KVM_REG_ARM64_SVE_VLS;

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

/// The SVE vector lengths KVM offers, as a bit set of `vq - 1`, read from
/// `KVM_REG_ARM64_SVE_VLS` of a scratch vCPU created with SVE.
fn sve_vector_lengths(kvm: &Kvm) -> Result<u32> {
    let vm = kvm.create_vm().map_err(|e| ioctl_error("KVM_CREATE_VM of a scratch VM for SVE", e))?;
    let mut init = kvm_bindings::kvm_vcpu_init::default();
    vm.get_preferred_target(&mut init).map_err(|e| ioctl_error("KVM_ARM_PREFERRED_TARGET", e))?;
    init.features[0] |= 1 << kvm_bindings::KVM_ARM_VCPU_SVE;
    let vcpu = vm.create_vcpu(0).map_err(|e| ioctl_error("KVM_CREATE_VCPU of a scratch vCPU", e))?;
    vcpu.vcpu_init(&init).map_err(|e| ioctl_error("KVM_ARM_VCPU_INIT of a scratch vCPU with SVE", e))?;
    let mut vls = [0u8; 64];
    vcpu.get_one_reg(KVM_REG_ARM64_SVE_VLS, &mut vls)
        .map_err(|e| ioctl_error("KVM_GET_ONE_REG of KVM_REG_ARM64_SVE_VLS", e))?;
    let word0 = u64::from_le_bytes(vls[..8].try_into().unwrap_or_default());
    Ok((word0 & ((1 << SVE_VQ_MAX) - 1)) as u32)
}

fn read_caps(kvm: &Kvm) -> Capabilities {
    let mut features = VcpuFeatures::POWER_OFF;
    for (cap, feature) in [
        (Cap::ArmPsci02, VcpuFeatures::PSCI_0_2),
        (Cap::ArmEl132bit, VcpuFeatures::EL1_32BIT),
        (Cap::ArmPtrAuthAddress, VcpuFeatures::PTRAUTH_ADDRESS),
        (Cap::ArmPtrAuthGeneric, VcpuFeatures::PTRAUTH_GENERIC),
        (Cap::ArmPmuV3, VcpuFeatures::PMU_V3),
    ] {
        if kvm.check_extension(cap) {
            features |= feature;
        }
    }
    let mut sve_vqs = 0;
    if kvm.check_extension(Cap::ArmSve) {
        match sve_vector_lengths(kvm) {
            Ok(vqs) if vqs != 0 => {
                features |= VcpuFeatures::SVE;
                sve_vqs = vqs;
            }
            Ok(_) => log::warn!("KVM reports SVE but offers no vector length; SVE stays off"),
            Err(e) => log::warn!("KVM reports SVE but probing its vector lengths failed: {e}; SVE stays off"),
        }
    }
    let ipa_bits = if kvm.check_extension(Cap::ArmVmIPASize) { kvm.get_host_ipa_limit() } else { 40 };
    Capabilities {
        max_vcpus: u32::try_from(kvm.get_max_vcpus()).unwrap_or(u32::MAX),
        ipa_bits: u32::try_from(ipa_bits).unwrap_or(0),
        hw_breakpoints: u32::try_from(kvm.check_extension_int(Cap::DebugHwBps)).unwrap_or(0),
        hw_watchpoints: u32::try_from(kvm.check_extension_int(Cap::DebugHwWps)).unwrap_or(0),
        vcpu_features: features,
        sve_vqs,
        guest_debug: kvm.check_extension(Cap::SetGuestDebug),
        readonly_memory: kvm.check_extension(Cap::ReadonlyMem),
        serror_esr: kvm.check_extension_raw(KVM_CAP_ARM_INJECT_SERROR_ESR.into()) > 0,
        ext_dabt: kvm.check_extension_raw(KVM_CAP_ARM_INJECT_EXT_DABT.into()) > 0,
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
