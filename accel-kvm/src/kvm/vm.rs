//! A KVM VM: memory slots and vCPU creation.

use std::sync::Mutex;

use accel_api::{
    backend::BackendVm, memory::MemoryMap, AccelError, Capabilities, MemoryRegion, Result, VcpuConfig,
    VcpuFeatures, VmConfig,
};
use kvm_bindings::{
    kvm_enable_cap, kvm_userspace_memory_region, kvm_vcpu_init, KVM_CAP_ARM_NISV_TO_USER, KVM_MEM_READONLY,
};
use kvm_ioctls::{Kvm, VmFd};

use super::{ioctl_error, vcpu::KvmVcpu};

/// A KVM VM.
pub struct KvmVm {
    fd: VmFd,
    caps: Capabilities,
    max_slots: u32,
    page_size: u64,
    memory: Mutex<MemoryMap>,
    target: kvm_vcpu_init,
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

impl KvmVm {
    pub(super) fn new(kvm: &Kvm, caps: Capabilities, config: &VmConfig) -> Result<Self> {
        let fd = match config.ipa_bits {
            0 => kvm.create_vm(),
            bits if !(32..=caps.ipa_bits).contains(&bits) => {
                return Err(AccelError::unsupported(format!(
                    "an IPA size of {bits} bits is not supported; this host allows 32 to {}",
                    caps.ipa_bits
                )))
            }
            bits => kvm.create_vm_with_ipa_size(bits),
        }
        .map_err(|e| ioctl_error("KVM_CREATE_VM", e))?;
        if fd.check_extension_raw(u64::from(KVM_CAP_ARM_NISV_TO_USER)) > 0 {
            // Data aborts without a valid syndrome (ESR_EL2.ISV = 0) outside guest memory then
            // exit as KVM_EXIT_ARM_NISV, which the monitor can report, instead of failing
            // KVM_RUN with ENOSYS.
            let cap = kvm_enable_cap { cap: KVM_CAP_ARM_NISV_TO_USER, ..Default::default() };
            fd.enable_cap(&cap).map_err(|e| ioctl_error("KVM_ENABLE_CAP(KVM_CAP_ARM_NISV_TO_USER)", e))?;
        }
        let mut target = kvm_vcpu_init::default();
        fd.get_preferred_target(&mut target).map_err(|e| ioctl_error("KVM_ARM_PREFERRED_TARGET", e))?;
        Ok(Self {
            fd,
            caps,
            max_slots: u32::try_from(kvm.get_nr_memslots()).unwrap_or(u32::MAX),
            page_size: page_size(),
            memory: Mutex::new(MemoryMap::new()),
            target,
        })
    }

    fn set_region(&self, slot: u32, region: &MemoryRegion, size: u64) -> Result<()> {
        let flags = if region.read_only { KVM_MEM_READONLY } else { 0 };
        let kvm_region = kvm_userspace_memory_region {
            slot,
            flags,
            guest_phys_addr: region.guest_addr,
            memory_size: size,
            userspace_addr: region.host_addr,
        };
        // SAFETY: the caller of `Vm::add_memory` (an unsafe function) guarantees that the host
        // range stays mapped while the region exists; a size of 0 deletes the slot.
        unsafe { self.fd.set_user_memory_region(kvm_region) }
            .map_err(|e| ioctl_error(format!("KVM_SET_USER_MEMORY_REGION for slot {slot}"), e))
    }
}

impl BackendVm for KvmVm {
    type Vcpu = KvmVcpu;

    fn add_memory(&self, region: &MemoryRegion) -> Result<u32> {
        if region.read_only && !self.caps.readonly_memory {
            return Err(AccelError::unsupported(
                "read-only memory (KVM_CAP_READONLY_MEM) is not supported by this kernel",
            ));
        }
        let mut map =
            self.memory.lock().map_err(|_| AccelError::bad_state("the memory map lock is poisoned"))?;
        let slot = map.insert(*region, self.page_size, self.max_slots)?;
        if let Err(e) = self.set_region(slot, region, region.size) {
            // Keep the map in step with the kernel.
            let _ = map.remove(slot);
            return Err(e);
        }
        Ok(slot)
    }

    fn remove_memory(&self, slot: u32) -> Result<()> {
        let mut map =
            self.memory.lock().map_err(|_| AccelError::bad_state("the memory map lock is poisoned"))?;
        let region = *map.get(slot).ok_or_else(|| {
            AccelError::new(accel_api::ErrorKind::NOT_FOUND, format!("no memory region in slot {slot}"))
        })?;
        self.set_region(slot, &region, 0)?;
        map.remove(slot)?;
        Ok(())
    }

    fn create_vcpu(&self, config: &VcpuConfig) -> Result<KvmVcpu> {
        let missing = config.features.difference(self.caps.vcpu_features);
        if !missing.is_empty() {
            return Err(AccelError::unsupported(format!(
                "vCPU feature(s) {} not supported by this backend on this host",
                missing.names().join(", ")
            )));
        }
        let ptrauth = VcpuFeatures::PTRAUTH_ADDRESS | VcpuFeatures::PTRAUTH_GENERIC;
        let requested_ptrauth = VcpuFeatures(config.features.0 & ptrauth.0);
        if !requested_ptrauth.is_empty() && requested_ptrauth != ptrauth {
            return Err(AccelError::invalid(
                "KVM enables pointer authentication only with both ptrauth-address and ptrauth-generic",
            ));
        }
        if config.index >= self.caps.max_vcpus {
            return Err(AccelError::invalid(format!(
                "vCPU index {} is out of range: this host allows {} vCPUs",
                config.index, self.caps.max_vcpus
            )));
        }
        let mut init = self.target;
        for (feature, bit) in [
            (VcpuFeatures::POWER_OFF, kvm_bindings::KVM_ARM_VCPU_POWER_OFF),
            (VcpuFeatures::EL1_32BIT, kvm_bindings::KVM_ARM_VCPU_EL1_32BIT),
            (VcpuFeatures::PSCI_0_2, kvm_bindings::KVM_ARM_VCPU_PSCI_0_2),
            (VcpuFeatures::PTRAUTH_ADDRESS, kvm_bindings::KVM_ARM_VCPU_PTRAUTH_ADDRESS),
            (VcpuFeatures::PTRAUTH_GENERIC, kvm_bindings::KVM_ARM_VCPU_PTRAUTH_GENERIC),
            (VcpuFeatures::PMU_V3, kvm_bindings::KVM_ARM_VCPU_PMU_V3),
            (VcpuFeatures::SVE, kvm_bindings::KVM_ARM_VCPU_SVE),
        ] {
            if config.features.contains(feature) {
                init.features[(bit / 32) as usize] |= 1 << (bit % 32);
            }
        }
        KvmVcpu::new(&self.fd, config, &init, &self.caps)
    }
}
