//! The accelerator and its VMs: probing `/dev/kvm`, creating VMs, guest memory and vCPUs.

use std::sync::Mutex;

use accel_api::{
    backend::{Backend, BackendVm},
    AccelError, Capabilities, ErrorKind, IdRegisters, MemoryRegion, ProbeInfo, RegValue, Result, VcpuConfig,
    VcpuFeatures, VmConfig,
};

use accel_kit::memory_map::MemoryMap;
use kvm_bindings::{
    kvm_enable_cap, kvm_userspace_memory_region, kvm_vcpu_init, KVM_ARM_VCPU_POWER_OFF,
    KVM_ARM_VCPU_PSCI_0_2, KVM_CAP_ARM_NISV_TO_USER,
};
use kvm_ioctls::{Cap, Kvm, VmFd};

use crate::{error::os_error, ids, vcpu::MinimalVcpu};

/// The vCPU features this plugin implements. It reports exactly these on probe and refuses the
/// others by name.
const FEATURES: VcpuFeatures = VcpuFeatures(VcpuFeatures::POWER_OFF.0 | VcpuFeatures::PSCI_0_2.0);

/// The plugin's probe: can it run here, and what can it do.
pub fn probe() -> ProbeInfo {
    match open_and_probe() {
        Ok((_, info)) => info,
        Err(e) => ProbeInfo::unavailable(e.to_string()),
    }
}

/// Opens the accelerator; an error of kind `UNAVAILABLE` when it cannot run here.
pub fn open() -> Result<MinimalKvm> {
    let (kvm, info) = open_and_probe().map_err(|e| AccelError { kind: ErrorKind::UNAVAILABLE, ..e })?;
    Ok(MinimalKvm { kvm, info })
}

/// Opens `/dev/kvm` and probes it with a scratch VM and vCPU, which give the preferred CPU target
/// and the ID registers a guest sees.
fn open_and_probe() -> Result<(Kvm, ProbeInfo)> {
    let kvm = Kvm::new().map_err(|e| os_error("opening /dev/kvm", e))?;
    let vm = kvm.create_vm().map_err(|e| os_error("KVM_CREATE_VM of a scratch VM", e))?;
    let mut init = kvm_vcpu_init::default();
    vm.get_preferred_target(&mut init).map_err(|e| os_error("KVM_ARM_PREFERRED_TARGET", e))?;
    let vcpu = vm.create_vcpu(0).map_err(|e| os_error("KVM_CREATE_VCPU of a scratch vCPU", e))?;
    vcpu.vcpu_init(&init).map_err(|e| os_error("KVM_ARM_VCPU_INIT of a scratch vCPU", e))?;
    // The ID registers the probe reports; one this kernel does not expose stays 0.
    let wanted = IdRegisters::default().to_values();
    let id_values: Vec<RegValue> = wanted
        .into_iter()
        .filter_map(|RegValue { id, .. }| {
            let mut bytes = [0u8; 8];
            vcpu.get_one_reg(ids::sysreg(id), &mut bytes).ok()?;
            Some(RegValue { id, value: u64::from_le_bytes(bytes) })
        })
        .collect();
    let ipa_bits = if kvm.check_extension(Cap::ArmVmIPASize) { kvm.get_host_ipa_limit() } else { 40 };
    let caps = Capabilities {
        max_vcpus: u32::try_from(kvm.get_max_vcpus()).unwrap_or(u32::MAX),
        ipa_bits: u32::try_from(ipa_bits).unwrap_or(0),
        page_size: page_size(),
        vcpu_features: FEATURES,
        cpu_target: init.target,
        // No debug, SVE, read-only memory, event injection or GIC: all zero and false. And
        // `max_vms` 0: no fixed limit on VMs.
        ..Capabilities::default()
    };
    let reason = "KVM on /dev/kvm, through the minimal example plugin".to_string();
    Ok((kvm, ProbeInfo { available: true, reason, caps, id: IdRegisters::from_values(&id_values) }))
}

/// The host page size: guest memory regions are aligned to it.
fn page_size() -> u64 {
    // SAFETY: sysconf reads a system constant; it has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// The opened accelerator: `/dev/kvm` and what the probe found.
pub struct MinimalKvm {
    kvm: Kvm,
    info: ProbeInfo,
}

impl Backend for MinimalKvm {
    type Vm = MinimalVm;

    /// The same answer as the plugin's probe: the conformance suite compares the two.
    fn probe(&self) -> ProbeInfo {
        self.info.clone()
    }

    /// Creates a VM. Contract: any number of VMs (`max_vms` is 0), from any thread. An IPA size
    /// the host cannot give is refused as `unsupported`, naming it.
    fn create_vm(&self, config: &VmConfig) -> Result<MinimalVm> {
        if config.userspace_psci {
            return Err(AccelError::unsupported(
                "this example plugin leaves PSCI to KVM: the userspace-psci VM option is not offered",
            ));
        }
        let max = self.info.caps.ipa_bits;
        let fd = match config.ipa_bits {
            0 => self.kvm.create_vm(),
            bits if (32..=max).contains(&bits) => self.kvm.create_vm_with_ipa_size(bits),
            bits => {
                return Err(AccelError::unsupported(format!(
                    "an IPA size of {bits} bits is not supported; this host allows 32 to {max}"
                )))
            }
        }
        .map_err(|e| os_error("KVM_CREATE_VM", e))?;
        // A guest access to an address without memory whose syndrome does not say which
        // register it uses (a load with writeback, say) would otherwise fail KVM_RUN with ENOSYS;
        // with this capability it exits as KVM_EXIT_ARM_NISV, which `run` reports.
        if fd.check_extension_raw(KVM_CAP_ARM_NISV_TO_USER.into()) > 0 {
            let cap = kvm_enable_cap { cap: KVM_CAP_ARM_NISV_TO_USER, ..Default::default() };
            fd.enable_cap(&cap).map_err(|e| os_error("KVM_ENABLE_CAP(KVM_CAP_ARM_NISV_TO_USER)", e))?;
        }
        let mut target = kvm_vcpu_init::default();
        fd.get_preferred_target(&mut target).map_err(|e| os_error("KVM_ARM_PREFERRED_TARGET", e))?;
        Ok(MinimalVm {
            fd,
            target,
            max_slots: u32::try_from(self.kvm.get_nr_memslots()).unwrap_or(u32::MAX),
            page_size: self.info.caps.page_size,
            regions: Mutex::new(MemoryMap::new()),
        })
    }
}

/// A KVM VM. It offers no extension: `support_gic`, `support_debug`, `support_dirty_log` and
/// `support_linux_eventfd` keep their default, `None`. That is the ABI's pattern for optional
/// capabilities: a host asks, and works without (or reports the case as not run).
pub struct MinimalVm {
    fd: VmFd,
    /// `KVM_ARM_PREFERRED_TARGET`, the base of every vCPU's `KVM_ARM_VCPU_INIT`.
    target: kvm_vcpu_init,
    max_slots: u32,
    page_size: u64,
    /// The regions by slot. `MemoryMap` (from accel-api) checks alignment and overlaps and picks
    /// the lowest free slot; the mutex makes the VM usable from any thread (`Sync`).
    regions: Mutex<MemoryMap>,
}

impl MinimalVm {
    fn regions(&self) -> Result<std::sync::MutexGuard<'_, MemoryMap>> {
        self.regions.lock().map_err(|_| AccelError::bad_state("the memory-region lock is poisoned"))
    }

    fn set_region(&self, slot: u32, region: &MemoryRegion, size: u64) -> Result<()> {
        let kvm_region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.guest_addr,
            memory_size: size,
            userspace_addr: region.host_addr,
        };
        // SAFETY: `add_memory`'s caller guarantees the host range stays mapped until the region
        // is removed or the VM dropped; a size of 0 deletes the slot, which maps nothing.
        unsafe { self.fd.set_user_memory_region(kvm_region) }
            .map_err(|e| os_error(format!("KVM_SET_USER_MEMORY_REGION of slot {slot}"), e))
    }
}

impl BackendVm for MinimalVm {
    type Vcpu = MinimalVcpu;

    /// Maps host memory into the guest (`KVM_SET_USER_MEMORY_REGION`). Contract: a misaligned or
    /// overlapping region is `invalid argument`; read-only memory, which this plugin does not
    /// implement, is `unsupported`.
    unsafe fn add_memory(&self, region: &MemoryRegion) -> Result<u32> {
        if region.read_only {
            return Err(AccelError::unsupported("read-only memory is not implemented by the example plugin"));
        }
        let mut regions = self.regions()?;
        let slot = regions.insert(*region, self.page_size, self.max_slots)?;
        if let Err(e) = self.set_region(slot, region, region.size) {
            // Keep the map in step with the kernel.
            let _ = regions.remove(slot);
            return Err(e);
        }
        Ok(slot)
    }

    /// Unmaps a region; an unknown slot is `not found` (from `MemoryMap`).
    fn remove_memory(&self, slot: u32) -> Result<()> {
        let mut regions = self.regions()?;
        let region = *regions.get(slot).ok_or_else(|| {
            AccelError::new(ErrorKind::NOT_FOUND, format!("no memory region in slot {slot}"))
        })?;
        self.set_region(slot, &region, 0)?;
        regions.remove(slot).map(drop)
    }

    /// Creates a vCPU with the preferred target and the requested features. Contract: a feature
    /// the backend lacks is refused as `unsupported`, by name.
    fn create_vcpu(&self, config: &VcpuConfig) -> Result<MinimalVcpu> {
        let missing = config.features.difference(FEATURES);
        if !missing.is_empty() {
            return Err(AccelError::unsupported(format!(
                "vCPU feature(s) {} are not implemented by the example plugin",
                missing.names().join(", ")
            )));
        }
        let mut init = self.target;
        for (feature, bit) in [
            (VcpuFeatures::POWER_OFF, KVM_ARM_VCPU_POWER_OFF),
            (VcpuFeatures::PSCI_0_2, KVM_ARM_VCPU_PSCI_0_2),
        ] {
            if config.features.contains(feature) {
                init.features[0] |= 1 << bit;
            }
        }
        MinimalVcpu::new(&self.fd, config.index, &init)
    }
}
