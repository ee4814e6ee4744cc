//! Host probing, once per process: the KVM API version, capabilities, the SVE vector lengths and
//! the ID registers of a scratch vCPU, as QEMU's `kvm_arm_get_host_cpu_features` reads them.

use std::sync::OnceLock;

use accel_api::{
    idregs::synthesize_dbgdidr,
    sve::SVE_VQ_MAX,
    sysreg::{self, RegId},
    AccelError, Capabilities, ErrorKind, IdRegisters, ProbeInfo, Result, VcpuFeatures,
};
use kvm_bindings::{
    kvm_create_device, kvm_device_attr, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS, kvm_vcpu_init,
    KVM_ARM_VCPU_SVE, KVM_ARM_VM_SMCCC_CTRL, KVM_ARM_VM_SMCCC_FILTER, KVM_CAP_ARM_INJECT_EXT_DABT,
    KVM_CAP_ARM_INJECT_SERROR_ESR, KVM_CAP_ARM_SYSTEM_SUSPEND, KVM_CAP_COUNTER_OFFSET,
    KVM_CREATE_DEVICE_TEST,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd};

use super::{error::ioctl_error, vm::page_size};
use crate::reg_ids::{kvm_id_of, KVM_REG_ARM64_SVE_VLS};

/// The KVM API version this backend speaks (`KVM_GET_API_VERSION`).
pub const KVM_API_VERSION: i32 = 12;

/// What probing found.
pub struct Probed {
    /// The capabilities.
    pub caps: Capabilities,
    /// The scratch vCPU's ID registers.
    pub id: IdRegisters,
    /// KVM_SET_GUEST_DEBUG works (the VM then offers a debug pool).
    pub guest_debug: bool,
}

impl Probed {
    /// The probe's answer.
    pub fn info(&self) -> ProbeInfo {
        ProbeInfo {
            available: true,
            reason: format!("KVM API {KVM_API_VERSION} on /dev/kvm"),
            caps: self.caps,
            id: self.id,
        }
    }
}

/// The process's probe result, computed on first use.
pub fn probed() -> Result<&'static Probed> {
    static PROBED: OnceLock<Result<Probed>> = OnceLock::new();
    PROBED.get_or_init(probe_host).as_ref().map_err(Clone::clone)
}

fn unavailable(e: AccelError) -> AccelError {
    AccelError { kind: ErrorKind::UNAVAILABLE, ..e }
}

/// Opens `/dev/kvm` and checks the API version.
pub fn open_kvm() -> Result<Kvm> {
    let kvm = Kvm::new().map_err(|e| unavailable(ioctl_error("opening /dev/kvm", e)))?;
    let version = kvm.get_api_version();
    if version != KVM_API_VERSION {
        return Err(AccelError::new(
            ErrorKind::UNAVAILABLE,
            format!("KVM API version is {version}; version {KVM_API_VERSION} is required"),
        ));
    }
    Ok(kvm)
}

/// A scratch vCPU of a scratch VM, with `features` (KVM_ARM_VCPU_* bit numbers) and the
/// preferred target; returns the vCPU and the target.
fn scratch_vcpu(kvm: &Kvm, features: &[u32]) -> Result<(VcpuFd, u32)> {
    let vm = kvm.create_vm().map_err(|e| unavailable(ioctl_error("KVM_CREATE_VM of a scratch VM", e)))?;
    let mut init = kvm_vcpu_init::default();
    vm.get_preferred_target(&mut init).map_err(|e| ioctl_error("KVM_ARM_PREFERRED_TARGET", e))?;
    for bit in features {
        init.features[(bit / 32) as usize] |= 1 << (bit % 32);
    }
    let vcpu = vm.create_vcpu(0).map_err(|e| ioctl_error("KVM_CREATE_VCPU of a scratch vCPU", e))?;
    vcpu.vcpu_init(&init).map_err(|e| ioctl_error("KVM_ARM_VCPU_INIT of a scratch vCPU", e))?;
    Ok((vcpu, init.target))
}

fn read_sys(vcpu: &VcpuFd, id: RegId) -> Result<u64> {
    let kvm_id = kvm_id_of(id, 8).ok_or_else(|| AccelError::invalid(format!("{id} has no KVM id")))?;
    let mut buf = [0u8; 8];
    vcpu.get_one_reg(kvm_id, &mut buf)
        .map_err(|e| ioctl_error(format!("reading {id} of the scratch vCPU"), e))?;
    Ok(u64::from_le_bytes(buf))
}

/// Reads the ID registers: those the seeds read are required; newer ones (ID_AA64ISAR2,
/// ID_AA64MMFR3, ID_AA64ZFR0, ID_AA64SMFR0) read as 0 where the kernel does not list them.
fn read_id_registers(vcpu: &VcpuFd) -> Result<IdRegisters> {
    let optional = |id: RegId| {
        read_sys(vcpu, id).unwrap_or_else(|e| {
            log::debug!("probe: {e}; taking 0");
            0
        })
    };
    let mut id = IdRegisters {
        midr: read_sys(vcpu, sysreg::MIDR_EL1)?,
        aa64pfr0: read_sys(vcpu, sysreg::ID_AA64PFR0_EL1)?,
        aa64pfr1: read_sys(vcpu, sysreg::ID_AA64PFR1_EL1)?,
        aa64dfr0: read_sys(vcpu, sysreg::ID_AA64DFR0_EL1)?,
        aa64dfr1: read_sys(vcpu, sysreg::ID_AA64DFR1_EL1)?,
        aa64isar0: read_sys(vcpu, sysreg::ID_AA64ISAR0_EL1)?,
        aa64isar1: read_sys(vcpu, sysreg::ID_AA64ISAR1_EL1)?,
        aa64isar2: optional(sysreg::ID_AA64ISAR2_EL1),
        aa64mmfr0: read_sys(vcpu, sysreg::ID_AA64MMFR0_EL1)?,
        aa64mmfr1: read_sys(vcpu, sysreg::ID_AA64MMFR1_EL1)?,
        aa64mmfr2: read_sys(vcpu, sysreg::ID_AA64MMFR2_EL1)?,
        aa64mmfr3: optional(sysreg::ID_AA64MMFR3_EL1),
        aa64zfr0: optional(sysreg::ID_AA64ZFR0_EL1),
        aa64smfr0: optional(sysreg::ID_AA64SMFR0_EL1),
        ..Default::default()
    };
    // ID_PFR0_EL1 .. ID_ISAR6_EL1 are op0=3, op1=0, CRn=0, CRm=1..2, op2=0..7.
    for (i, slot) in id.aarch32.iter_mut().enumerate() {
        *slot = read_sys(vcpu, RegId::sys(3, 0, 0, 1 + (i / 8) as u8, (i % 8) as u8))? as u32;
    }
    for (i, slot) in id.mvfr.iter_mut().enumerate() {
        *slot = read_sys(vcpu, RegId::sys(3, 0, 0, 3, i as u8))? as u32;
    }
    id.dbgdidr = synthesize_dbgdidr(id.aa64pfr0, id.aa64dfr0);
    Ok(id)
}

/// The SVE vector lengths KVM offers, as a bit set of `vq - 1`, from `KVM_REG_ARM64_SVE_VLS` of
/// a scratch SVE vCPU.
fn sve_vector_lengths(kvm: &Kvm) -> Result<u32> {
    let (vcpu, _) = scratch_vcpu(kvm, &[KVM_ARM_VCPU_SVE])?;
    let mut vls = [0u8; 64];
    vcpu.get_one_reg(KVM_REG_ARM64_SVE_VLS, &mut vls)
        .map_err(|e| ioctl_error("KVM_GET_ONE_REG of KVM_REG_ARM64_SVE_VLS", e))?;
    let word0 = u64::from_le_bytes(vls[..8].try_into().unwrap_or_default());
    Ok((word0 & ((1 << SVE_VQ_MAX) - 1)) as u32)
}

vmm_sys_util::ioctl_iowr_nr!(KVM_CREATE_DEVICE, kvm_bindings::KVMIO, 0xe0, kvm_create_device);

/// Whether this kernel can create an ITS: `KVM_CREATE_DEVICE` with `KVM_CREATE_DEVICE_TEST`,
/// which creates nothing. It is made by hand: kvm-ioctls' `create_device` wraps the `fd` field
/// into a `DeviceFd` even for a test, and dropping that closes descriptor 0, this process's stdin.
fn can_create_its(kvm: &Kvm) -> bool {
    let Ok(vm) = kvm.create_vm() else {
        return false;
    };
    let mut test = kvm_create_device {
        type_: kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS,
        fd: 0,
        flags: KVM_CREATE_DEVICE_TEST,
    };
    // SAFETY: KVM_CREATE_DEVICE on a VM descriptor with a valid `kvm_create_device`, which the
    // kernel only reads (and with the test flag does not fill in); no descriptor is created.
    unsafe { vmm_sys_util::ioctl::ioctl_with_mut_ref(&vm, KVM_CREATE_DEVICE(), &mut test) == 0 }
}

/// Whether this kernel has the SMCCC filter (`KVM_ARM_VM_SMCCC_FILTER`, Linux 6.4): asked with
/// `KVM_HAS_DEVICE_ATTR` on a scratch VM.
fn has_smccc_filter(kvm: &Kvm) -> bool {
    let Ok(vm) = kvm.create_vm() else {
        return false;
    };
    let attr = kvm_device_attr {
        group: KVM_ARM_VM_SMCCC_CTRL,
        attr: u64::from(KVM_ARM_VM_SMCCC_FILTER),
        ..Default::default()
    };
    vm.has_device_attr(&attr).is_ok()
}

fn has_raw(kvm: &Kvm, cap: u32) -> bool {
    kvm.check_extension_raw(cap.into()) > 0
}

/// Capabilities the backend cannot work without.
const REQUIRED: [(Cap, &str); 5] = [
    (Cap::MpState, "KVM_CAP_MP_STATE"),
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    (Cap::OneReg, "KVM_CAP_ONE_REG"),
    (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
    (Cap::ArmPsci02, "KVM_CAP_ARM_PSCI_0_2"),
];

fn probe_host() -> Result<Probed> {
    let kvm = open_kvm()?;
    let missing: Vec<&str> =
        REQUIRED.iter().filter(|(cap, _)| !kvm.check_extension(*cap)).map(|(_, n)| *n).collect();
    if !missing.is_empty() {
        return Err(AccelError::new(
            ErrorKind::UNAVAILABLE,
            format!("this kernel's KVM lacks {}, which the accel KVM backend needs", missing.join(", ")),
        ));
    }
    let (vcpu, target) = scratch_vcpu(&kvm, &[])?;
    let mut id = read_id_registers(&vcpu)?;

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
        match sve_vector_lengths(&kvm) {
            Ok(vqs) if vqs != 0 => {
                features |= VcpuFeatures::SVE;
                sve_vqs = vqs;
                // As in the seeds: SVE appears in ID_AA64PFR0_EL1 only on vCPUs created with it.
                id.aa64pfr0 |= 1 << 32;
            }
            Ok(_) => log::warn!("KVM reports SVE but offers no vector length; SVE stays off"),
            Err(e) => log::warn!("KVM reports SVE but probing its vector lengths failed: {e}; SVE stays off"),
        }
    }
    let ipa_bits = if kvm.check_extension(Cap::ArmVmIPASize) { kvm.get_host_ipa_limit() } else { 40 };
    let caps = Capabilities {
        max_vcpus: u32::try_from(kvm.get_max_vcpus()).unwrap_or(u32::MAX),
        ipa_bits: u32::try_from(ipa_bits).unwrap_or(0),
        hw_breakpoints: u32::try_from(kvm.check_extension_int(Cap::DebugHwBps)).unwrap_or(0),
        hw_watchpoints: u32::try_from(kvm.check_extension_int(Cap::DebugHwWps)).unwrap_or(0),
        vcpu_features: features,
        sve_vqs,
        readonly_memory: kvm.check_extension(Cap::ReadonlyMem),
        serror_esr: has_raw(&kvm, KVM_CAP_ARM_INJECT_SERROR_ESR),
        ext_dabt: has_raw(&kvm, KVM_CAP_ARM_INJECT_EXT_DABT),
        system_suspend: has_raw(&kvm, KVM_CAP_ARM_SYSTEM_SUSPEND),
        counter_offset: has_raw(&kvm, KVM_CAP_COUNTER_OFFSET),
        cpu_target: target,
        max_vms: 0,
        page_size: page_size(),
        gic_v3: kvm.check_extension(Cap::Irqchip),
        gic_its: can_create_its(&kvm),
        userspace_psci: has_smccc_filter(&kvm),
    };
    Ok(Probed { caps, id, guest_debug: kvm.check_extension(Cap::SetGuestDebug) })
}
