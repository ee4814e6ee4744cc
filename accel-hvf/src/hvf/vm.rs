//! An HVF VM: the process's one VM slot, guest memory through `hv_vm_map`/`hv_vm_unmap`/
//! `hv_vm_protect` in 16 KiB pages, the power board PSCI answers on, the vCPUs' kick states, and
//! the extensions: the GIC (macOS 15), guest debug, and dirty logging by write protection.
//!
//! Linux eventfds are not offered: macOS has none, so `support_linux_eventfd` stays `None`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use accel_api::{
    backend::{BackendDebug, BackendDirtyLog, BackendGic, BackendVm},
    debug::DebugCapacity,
    AccelError, ErrorKind, GicConfig, MemoryRegion, Result, VcpuConfig, VmConfig,
};

use accel_kit::{
    dirty::DirtyBitmap,
    memory_map::MemoryMap,
    psci::{Offer, PowerBoard},
};
use applevisor::{
    prelude::VirtualMachineConfig,
    vm::{GicDisabled, VirtualMachine, VirtualMachineInstance},
};
use applevisor_sys::{
    hv_vm_map, hv_vm_protect, hv_vm_unmap, HV_MEMORY_EXEC, HV_MEMORY_READ, HV_MEMORY_WRITE,
};

use super::{
    debug::{GuestText, HvfDebug},
    gic::HvfGic,
    hv_check, hv_error,
    probe::{Probed, PAGE_SIZE},
    vcpu::{HvfVcpu, KickState},
};

/// The most memory regions a VM takes (a bookkeeping bound; HVF itself sets none).
const MAX_SLOTS: u32 = 512;

/// Whether this process holds its one HVF VM.
static VM_HELD: AtomicBool = AtomicBool::new(false);

/// The process's one VM slot, held while a VM (or the probe's scratch VM) exists.
pub struct VmSlot(());

impl VmSlot {
    /// Claims the slot, or refuses as no resource: HVF allows one VM per process.
    pub fn claim() -> Result<Self> {
        if VM_HELD.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return Err(AccelError::new(
                ErrorKind::NO_RESOURCE,
                "Hypervisor.framework allows one VM per process, and this process has one already",
            ));
        }
        Ok(Self(()))
    }
}

impl Drop for VmSlot {
    fn drop(&mut self) {
        VM_HELD.store(false, Ordering::SeqCst);
    }
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a VM's vCPU threads and extensions share.
pub struct VmShared {
    /// The framework's VM; `None` only while it is destroyed. Its last holder destroys it once
    /// every vCPU is gone.
    instance: Option<VirtualMachineInstance<GicDisabled>>,
    /// The probe's findings.
    pub probed: &'static Probed,
    /// The guest memory regions.
    pub memory: Arc<Mutex<MemoryMap>>,
    /// The dirty bitmaps of logged regions, by slot.
    dirty: Mutex<HashMap<u32, DirtyBitmap>>,
    /// The GIC, once created.
    gic: Mutex<Option<GicConfig>>,
    /// The kick states of the vCPUs, by index.
    vcpus: Mutex<BTreeMap<u32, Arc<KickState>>>,
    /// The vCPUs' power states, for PSCI.
    pub psci: Arc<PowerBoard>,
    /// What PSCI offers.
    pub offer: Offer,
    /// The debug pool.
    pub debug: Arc<HvfDebug>,
    /// Released last, after the framework's VM is destroyed.
    slot: Option<VmSlot>,
}

impl Drop for VmShared {
    fn drop(&mut self) {
        // Destroy the framework's VM before another can be claimed.
        drop(self.instance.take());
        drop(self.slot.take());
    }
}

/// The memory permissions of a region: read-only regions fault on writes, which exit as MMIO.
fn permissions(region: &MemoryRegion) -> u64 {
    if region.read_only {
        HV_MEMORY_READ | HV_MEMORY_EXEC
    } else {
        HV_MEMORY_READ | HV_MEMORY_WRITE | HV_MEMORY_EXEC
    }
}

fn protect(ipa: u64, size: u64, flags: u64) -> Result<()> {
    let len =
        usize::try_from(size).map_err(|_| AccelError::invalid(format!("{size:#x} bytes is too large")))?;
    // SAFETY: hv_vm_protect changes the guest's stage-2 permissions of a mapped range; it touches
    // no host memory.
    let rc = unsafe { hv_vm_protect(ipa, len, flags) };
    hv_check(format!("hv_vm_protect of {ipa:#x}+{size:#x}"), rc)
}

impl VmShared {
    /// The framework's VM.
    pub fn instance(&self) -> Result<&VirtualMachineInstance<GicDisabled>> {
        self.instance.as_ref().ok_or_else(|| AccelError::bad_state("the VM is being destroyed"))
    }

    /// The GIC's configuration, if it was created.
    pub fn gic(&self) -> Option<GicConfig> {
        *locked(&self.gic)
    }

    /// Records the GIC, once created.
    pub fn set_gic(&self, config: GicConfig) {
        *locked(&self.gic) = Some(config);
    }

    /// The kick state of vCPU `index`.
    pub fn vcpu(&self, index: u32) -> Option<Arc<KickState>> {
        locked(&self.vcpus).get(&index).cloned()
    }

    /// Every vCPU's kick state.
    pub fn vcpus(&self) -> Vec<Arc<KickState>> {
        locked(&self.vcpus).values().cloned().collect()
    }

    /// Registers vCPU `index`; a second vCPU with the same index is refused.
    pub fn add_vcpu(&self, index: u32, kick: Arc<KickState>) -> Result<()> {
        let mut vcpus = locked(&self.vcpus);
        if vcpus.contains_key(&index) {
            return Err(AccelError::invalid(format!("the VM already has a vCPU {index}")));
        }
        vcpus.insert(index, kick);
        Ok(())
    }

    /// Forgets vCPU `index`.
    pub fn remove_vcpu(&self, index: u32) {
        locked(&self.vcpus).remove(&index);
        self.psci.lock().remove(index);
    }

    /// A guest write faulted at `ipa`: if the page is in a logged region, marks it dirty, gives
    /// the page its write permission back and returns true (the instruction runs again).
    pub fn log_write(&self, ipa: u64) -> Result<bool> {
        let mut dirty = locked(&self.dirty);
        for log in dirty.values_mut() {
            if let Some(page) = log.mark(ipa) {
                protect(page, PAGE_SIZE, HV_MEMORY_READ | HV_MEMORY_WRITE | HV_MEMORY_EXEC)?;
                return Ok(true);
            }
        }
        Ok(false)
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
            debug: Arc::new(HvfDebug::new(capacity, GuestText(memory))),
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
