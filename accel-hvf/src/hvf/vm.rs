//! An HVF VM: guest memory through `hv_vm_map`/`hv_vm_unmap`/`hv_vm_protect` in 16 KiB pages,
//! vCPUs, and the extensions: the GIC (macOS 15), guest debug, and dirty logging by write
//! protection. What its vCPU threads share with it is in [`super::shared`].
//!
//! Linux eventfds are not offered: macOS has none, so `support_linux_eventfd` stays `None`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use accel_api::{
    backend::{BackendDebug, BackendDirtyLog, BackendGic, BackendVm},
    debug::DebugCapacity,
    AccelError, ErrorKind, MemoryRegion, Result, VcpuConfig, VmConfig,
};

use accel_kit::{
    dirty::DirtyBitmap,
    guest_text::GuestText,
    memory_map::MemoryMap,
    psci::{Offer, PowerBoard},
};
use applevisor::{prelude::VirtualMachineConfig, vm::VirtualMachine};
use applevisor_sys::{hv_vm_map, hv_vm_unmap, HV_MEMORY_EXEC, HV_MEMORY_READ, HV_MEMORY_WRITE};

use super::{
    debug::HvfDebug,
    error::{hv_check, hv_error},
    gic::HvfGic,
    probe::{Probed, PAGE_SIZE},
    shared::{protect, VmShared},
    slot::VmSlot,
    sync::locked,
    vcpu::HvfVcpu,
};

/// The most memory regions a VM takes (a bookkeeping bound; HVF itself sets none).
const MAX_SLOTS: u32 = 512;

/// The memory permissions of a region: read-only regions fault on writes, which exit as MMIO.
fn permissions(region: &MemoryRegion) -> u64 {
    if region.read_only {
        HV_MEMORY_READ | HV_MEMORY_EXEC
    } else {
        HV_MEMORY_READ | HV_MEMORY_WRITE | HV_MEMORY_EXEC
    }
}

/// An HVF VM.
pub struct HvfVm {
    shared: Arc<VmShared>,
    gic: Arc<HvfGic>,
}

impl HvfVm {
    pub(super) fn new(probed: &'static Probed, config: &VmConfig) -> Result<Self> {
        let caps = probed.caps;
        let ipa_bits = match config.ipa_bits {
            0 => caps.ipa_bits,
            bits if (32..=caps.ipa_bits).contains(&bits) => bits,
            bits => {
                return Err(AccelError::unsupported(format!(
                    "an IPA size of {bits} bits is not supported; this host allows 32 to {}",
                    caps.ipa_bits
                )))
            }
        };
        // PSCI is always answered in the plugin here: the userspace-psci option changes nothing.
        let slot = VmSlot::claim()?;
        let mut vm_config = VirtualMachineConfig::new();
        vm_config
            .set_ipa_size(ipa_bits)
            .map_err(|e| hv_error(format!("hv_vm_config_set_ipa_size({ipa_bits})"), e))?;
        let instance = VirtualMachine::with_config(vm_config).map_err(|e| hv_error("hv_vm_create", e))?;
        let memory = Arc::new(Mutex::new(MemoryMap::new()));
        let capacity = DebugCapacity { breakpoints: caps.hw_breakpoints, watchpoints: caps.hw_watchpoints };
        let shared = Arc::new(VmShared {
            instance: Some(instance),
            probed,
            memory: Arc::clone(&memory),
            dirty: Mutex::new(HashMap::new()),
            gic: Mutex::new(None),
            vcpus: Mutex::new(BTreeMap::new()),
            psci: Arc::new(PowerBoard::default()),
            offer: Offer { system_suspend: caps.system_suspend },
            // SAFETY: a region enters the map in `add_memory`, whose caller keeps its memory mapped
            // until it is removed or the VM is dropped; `remove_memory` and the VM's `drop` take
            // regions out of the map under its lock.
            debug: Arc::new(HvfDebug::new(capacity, unsafe { GuestText::new(memory) })),
            slot: Some(slot),
        });
        Ok(Self { gic: Arc::new(HvfGic::new(Arc::clone(&shared))), shared })
    }
}

impl Drop for HvfVm {
    /// The host's memory may go once the VM is dropped, even while its vCPUs still exist (their
    /// threads keep the framework's VM until they end): unmap every region now.
    fn drop(&mut self) {
        let mut map = locked(&self.shared.memory);
        for (slot, region) in map.regions() {
            if let Err(e) = unmap(&region) {
                log::warn!("dropping the VM: slot {slot}: {e}");
            }
        }
        *map = MemoryMap::new();
        locked(&self.shared.dirty).clear();
    }
}

fn unmap(region: &MemoryRegion) -> Result<()> {
    let size = usize::try_from(region.size)
        .map_err(|_| AccelError::invalid(format!("a region of {:#x} bytes is too large", region.size)))?;
    // SAFETY: unmaps a range this VM mapped; host memory is not touched.
    let rc = unsafe { hv_vm_unmap(region.guest_addr, size) };
    hv_check(format!("hv_vm_unmap of {:#x}+{:#x}", region.guest_addr, region.size), rc)
}

impl BackendVm for HvfVm {
    type Vcpu = HvfVcpu;

    unsafe fn add_memory(&self, region: &MemoryRegion) -> Result<u32> {
        let mut map = locked(&self.shared.memory);
        let slot = map.insert(*region, PAGE_SIZE, MAX_SLOTS)?;
        let size = usize::try_from(region.size);
        // SAFETY: the caller of `add_memory` guarantees that the host range is this process's
        // memory and stays mapped until the region is removed or the VM dropped; it is 16 KiB
        // aligned (checked by the map above).
        let rc = size.map(|size| unsafe {
            hv_vm_map(region.host_addr as *const libc::c_void, region.guest_addr, size, permissions(region))
        });
        let result = match rc {
            Ok(rc) => hv_check(format!("hv_vm_map of {:#x}+{:#x}", region.guest_addr, region.size), rc),
            Err(_) => Err(AccelError::invalid(format!("a region of {:#x} bytes is too large", region.size))),
        };
        if let Err(e) = result {
            // Keep the map in step with the framework.
            let _ = map.remove(slot);
            return Err(e);
        }
        Ok(slot)
    }

    fn remove_memory(&self, slot: u32) -> Result<()> {
        let mut map = locked(&self.shared.memory);
        let region = *map.get(slot).ok_or_else(|| {
            AccelError::new(ErrorKind::NOT_FOUND, format!("no memory region in slot {slot}"))
        })?;
        unmap(&region)?;
        map.remove(slot)?;
        locked(&self.shared.dirty).remove(&slot);
        Ok(())
    }

    fn create_vcpu(&self, config: &VcpuConfig) -> Result<HvfVcpu> {
        let caps = self.shared.probed.caps;
        let missing = config.features.difference(caps.vcpu_features);
        if !missing.is_empty() {
            return Err(AccelError::unsupported(format!(
                "vCPU feature(s) {} not supported by Hypervisor.framework",
                missing.names().join(", ")
            )));
        }
        if config.index >= caps.max_vcpus {
            return Err(AccelError::invalid(format!(
                "vCPU index {} is out of range: this host allows {} vCPUs",
                config.index, caps.max_vcpus
            )));
        }
        HvfVcpu::spawn(Arc::clone(&self.shared), config)
    }

    fn support_gic(&self) -> Option<Arc<dyn BackendGic>> {
        self.shared.probed.caps.gic_v3.then(|| Arc::clone(&self.gic) as Arc<dyn BackendGic>)
    }

    fn support_debug(&self) -> Option<Arc<dyn BackendDebug>> {
        Some(Arc::clone(&self.shared.debug) as Arc<dyn BackendDebug>)
    }

    fn support_dirty_log(&self) -> Option<Arc<dyn BackendDirtyLog>> {
        Some(Arc::new(HvfDirtyLog(Arc::clone(&self.shared))))
    }
}

/// Dirty logging without a dirty log: a logged region is write-protected, the first write to
/// each page faults, the run loop marks the page ([`VmShared::log_write`]), gives it its write
/// permission back and runs the instruction again.
struct HvfDirtyLog(Arc<VmShared>);

impl HvfDirtyLog {
    fn region(&self, slot: u32) -> Result<MemoryRegion> {
        locked(&self.0.memory)
            .get(slot)
            .copied()
            .ok_or_else(|| AccelError::new(ErrorKind::NOT_FOUND, format!("no memory region in slot {slot}")))
    }
}

impl BackendDirtyLog for HvfDirtyLog {
    fn set(&self, slot: u32, enabled: bool) -> Result<()> {
        let region = self.region(slot)?;
        if region.read_only {
            return Err(AccelError::invalid(format!(
                "slot {slot} is read-only: the guest cannot dirty it, so it is not logged"
            )));
        }
        let mut dirty = locked(&self.0.dirty);
        if enabled {
            let log = DirtyBitmap::new(region.guest_addr, region.size, PAGE_SIZE)?;
            protect(region.guest_addr, region.size, HV_MEMORY_READ | HV_MEMORY_EXEC)?;
            dirty.insert(slot, log);
        } else if dirty.remove(&slot).is_some() {
            protect(region.guest_addr, region.size, permissions(&region))?;
        }
        Ok(())
    }

    fn take(&self, slot: u32) -> Result<Vec<u64>> {
        let mut dirty = locked(&self.0.dirty);
        let log = dirty
            .get_mut(&slot)
            .ok_or_else(|| AccelError::bad_state(format!("dirty logging is off for slot {slot}")))?;
        // Protect the dirty pages again before the bitmap is cleared, under the lock the fault
        // path takes: a write in between faults and lands in the next bitmap.
        for page in log.dirty_pages().collect::<Vec<_>>() {
            protect(page, PAGE_SIZE, HV_MEMORY_READ | HV_MEMORY_EXEC)?;
        }
        Ok(log.take())
    }
}
