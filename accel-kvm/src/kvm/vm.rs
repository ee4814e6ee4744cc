//! A KVM VM: memory slots, vCPU creation, and the extensions it offers: the in-kernel GICv3,
//! guest debug, dirty-page logging, and irqfd/ioeventfd.

use std::sync::Arc;

use accel_api::{
    backend::{BackendDebug, BackendDirtyLog, BackendGic, BackendLinuxEventFd, BackendVm},
    debug::DebugCapacity,
    AccelError, Capabilities, MemoryRegion, Result, VcpuConfig, VcpuFeatures, VmConfig,
};
use accel_kit::{guest_text::GuestText, memory_map::MemoryMap};
use kvm_bindings::{kvm_enable_cap, kvm_vcpu_init, KVM_CAP_ARM_NISV_TO_USER, KVM_CAP_ARM_SYSTEM_SUSPEND};
use kvm_ioctls::{Kvm, VmFd};

use super::{
    debug::KvmDebug, error::ioctl_error, eventfd::EventFds, gic::Gic, psci::UserPsci, slots::Slots,
    vcpu::KvmVcpu,
};

/// A KVM VM.
pub struct KvmVm {
    fd: Arc<VmFd>,
    caps: Capabilities,
    slots: Arc<Slots>,
    debug: Option<Arc<KvmDebug>>,
    eventfds: Arc<EventFds>,
    gic: Arc<Gic>,
    target: kvm_vcpu_init,
    /// PSCI answered in the plugin (the `userspace_psci` option).
    psci: Option<Arc<UserPsci>>,
}

impl Drop for KvmVm {
    /// The host may unmap guest memory once the VM is dropped, while the debug pool (which vCPUs
    /// share) may live on: no region stays reachable through the map.
    fn drop(&mut self) {
        let map = self.slots.map();
        let mut map = map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *map = MemoryMap::new();
    }
}

/// The host page size: the granule of guest memory regions.
pub(super) fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

impl KvmVm {
    pub(super) fn new(kvm: &Kvm, caps: Capabilities, guest_debug: bool, config: &VmConfig) -> Result<Self> {
        if config.userspace_psci && !caps.userspace_psci {
            return Err(AccelError::unsupported(
                "PSCI in user space (the userspace-psci VM option) needs KVM_ARM_VM_SMCCC_FILTER, \
                 from Linux 6.4; this kernel lacks it",
            ));
        }
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
        if caps.system_suspend {
            // PSCI SYSTEM_SUSPEND then exits to the monitor as a suspend event.
            let cap = kvm_enable_cap { cap: KVM_CAP_ARM_SYSTEM_SUSPEND, ..Default::default() };
            fd.enable_cap(&cap).map_err(|e| ioctl_error("KVM_ENABLE_CAP(KVM_CAP_ARM_SYSTEM_SUSPEND)", e))?;
        }
        let psci = if config.userspace_psci {
            super::psci::install_filter(&fd)?;
            let offer = accel_kit::psci::Offer { system_suspend: caps.system_suspend };
            Some(Arc::new(UserPsci::new(offer)))
        } else {
            None
        };
        let mut target = kvm_vcpu_init::default();
        fd.get_preferred_target(&mut target).map_err(|e| ioctl_error("KVM_ARM_PREFERRED_TARGET", e))?;
        let fd = Arc::new(fd);
        let max_slots = u32::try_from(kvm.get_nr_memslots()).unwrap_or(u32::MAX);
        let slots = Arc::new(Slots::new(Arc::clone(&fd), max_slots, page_size(), caps.readonly_memory));
        let gic = Arc::new(Gic::new(Arc::clone(&fd), caps.gic_its));
        Ok(Self {
            debug: guest_debug.then(|| {
                let capacity =
                    DebugCapacity { breakpoints: caps.hw_breakpoints, watchpoints: caps.hw_watchpoints };
                // SAFETY: a region enters the map in `Slots::add`, whose caller keeps its memory
                // mapped until it is removed or the VM is dropped; `Slots::remove` takes it out of
                // the map under the lock before returning, and the VM's `drop` empties the map.
                let text = unsafe { GuestText::new(slots.map()) };
                Arc::new(KvmDebug::new(capacity, text))
            }),
            eventfds: Arc::new(EventFds::new(Arc::clone(&fd), Arc::clone(&gic))),
            fd,
            caps,
            slots,
            gic,
            target,
            psci,
        })
    }
}

impl BackendVm for KvmVm {
    type Vcpu = KvmVcpu;

    unsafe fn add_memory(&self, region: &MemoryRegion) -> Result<u32> {
        // SAFETY: the caller upholds `add_memory`'s contract, which `Slots::add` shares.
        unsafe { self.slots.add(region) }
    }

    fn remove_memory(&self, slot: u32) -> Result<()> {
        self.slots.remove(slot)
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
        // With PSCI in the plugin, a vCPU created powered off is off on the power board, and
        // runnable as far as KVM knows.
        let features = match &self.psci {
            Some(_) => config.features.difference(VcpuFeatures::POWER_OFF),
            None => config.features,
        };
        for (feature, bit) in [
            (VcpuFeatures::POWER_OFF, kvm_bindings::KVM_ARM_VCPU_POWER_OFF),
            (VcpuFeatures::EL1_32BIT, kvm_bindings::KVM_ARM_VCPU_EL1_32BIT),
            (VcpuFeatures::PSCI_0_2, kvm_bindings::KVM_ARM_VCPU_PSCI_0_2),
            (VcpuFeatures::PTRAUTH_ADDRESS, kvm_bindings::KVM_ARM_VCPU_PTRAUTH_ADDRESS),
            (VcpuFeatures::PTRAUTH_GENERIC, kvm_bindings::KVM_ARM_VCPU_PTRAUTH_GENERIC),
            (VcpuFeatures::PMU_V3, kvm_bindings::KVM_ARM_VCPU_PMU_V3),
            (VcpuFeatures::SVE, kvm_bindings::KVM_ARM_VCPU_SVE),
        ] {
            if features.contains(feature) {
                init.features[(bit / 32) as usize] |= 1 << (bit % 32);
            }
        }
        let parts = super::vcpu::VcpuParts {
            gic: Arc::clone(&self.gic),
            debug: self.debug.clone(),
            psci: self.psci.clone(),
        };
        KvmVcpu::new(&self.fd, config, &init, &self.caps, parts)
    }

    fn support_gic(&self) -> Option<Arc<dyn BackendGic>> {
        Some(Arc::clone(&self.gic) as Arc<dyn BackendGic>)
    }

    fn support_debug(&self) -> Option<Arc<dyn BackendDebug>> {
        self.debug.clone().map(|d| d as Arc<dyn BackendDebug>)
    }

    fn support_dirty_log(&self) -> Option<Arc<dyn BackendDirtyLog>> {
        Some(Arc::clone(&self.slots) as Arc<dyn BackendDirtyLog>)
    }

    fn support_linux_eventfd(&self) -> Option<Arc<dyn BackendLinuxEventFd>> {
        Some(Arc::clone(&self.eventfds) as Arc<dyn BackendLinuxEventFd>)
    }
}
