//! What a VM's vCPU threads and extensions share: the framework's VM, the probe's findings, guest
//! memory and its dirty logs, the GIC's configuration, the vCPUs' kick states, the power board
//! PSCI answers on, and the debug pool.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use accel_api::{AccelError, GicConfig, Result};

use accel_kit::{
    dirty::DirtyBitmap,
    memory_map::MemoryMap,
    psci::{Offer, PowerBoard},
};
use applevisor::vm::{GicDisabled, VirtualMachineInstance};
use applevisor_sys::{hv_vm_protect, HV_MEMORY_EXEC, HV_MEMORY_READ, HV_MEMORY_WRITE};

use super::{
    debug::HvfDebug,
    error::hv_check,
    probe::{Probed, PAGE_SIZE},
    slot::VmSlot,
    sync::locked,
    vcpu::kick::KickState,
};

/// What a VM's vCPU threads and extensions share.
pub struct VmShared {
    /// The framework's VM; `None` only while it is destroyed. Its last holder destroys it once
    /// every vCPU is gone.
    pub(super) instance: Option<VirtualMachineInstance<GicDisabled>>,
    /// The probe's findings.
    pub probed: &'static Probed,
    /// The guest memory regions.
    pub memory: Arc<Mutex<MemoryMap>>,
    /// The dirty bitmaps of logged regions, by slot.
    pub(super) dirty: Mutex<HashMap<u32, DirtyBitmap>>,
    /// The GIC, once created.
    pub(super) gic: Mutex<Option<GicConfig>>,
    /// The kick states of the vCPUs, by index.
    pub(super) vcpus: Mutex<BTreeMap<u32, Arc<KickState>>>,
    /// The vCPUs' power states, for PSCI.
    pub psci: Arc<PowerBoard>,
    /// What PSCI offers.
    pub offer: Offer,
    /// The debug pool.
    pub debug: Arc<HvfDebug>,
    /// Released last, after the framework's VM is destroyed.
    pub(super) slot: Option<VmSlot>,
}

impl Drop for VmShared {
    fn drop(&mut self) {
        // Destroy the framework's VM before another can be claimed.
        drop(self.instance.take());
        drop(self.slot.take());
    }
}

/// Sets the guest's stage-2 permissions (`HV_MEMORY_*`) of a mapped range.
pub fn protect(ipa: u64, size: u64, flags: u64) -> Result<()> {
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
