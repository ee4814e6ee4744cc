//! Guest memory slots (`KVM_SET_USER_MEMORY_REGION`) and their dirty-page logging
//! (`KVM_MEM_LOG_DIRTY_PAGES`, `KVM_GET_DIRTY_LOG`).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, MutexGuard},
};

use accel_api::{backend::BackendDirtyLog, AccelError, ErrorKind, MemoryRegion, Result};

use accel_kit::memory_map::MemoryMap;
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;

use super::error::ioctl_error;

/// The memory slots of one VM.
pub struct Slots {
    vm: Arc<VmFd>,
    map: Arc<Mutex<MemoryMap>>,
    logged: Mutex<HashSet<u32>>,
    max_slots: u32,
    page_size: u64,
    readonly_memory: bool,
}

fn locked<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    m.lock().map_err(|_| AccelError::bad_state("a memory-slot lock is poisoned"))
}

impl Slots {
    /// The slots of `vm`: at most `max_slots`, regions aligned to `page_size`.
    pub fn new(vm: Arc<VmFd>, max_slots: u32, page_size: u64, readonly_memory: bool) -> Self {
        Self {
            vm,
            map: Arc::new(Mutex::new(MemoryMap::new())),
            logged: Mutex::new(HashSet::new()),
            max_slots,
            page_size,
            readonly_memory,
        }
    }

    /// The map of guest to host addresses, shared with the debug pool.
    pub fn map(&self) -> Arc<Mutex<MemoryMap>> {
        Arc::clone(&self.map)
    }

    fn set_region(&self, slot: u32, region: &MemoryRegion, size: u64, log_dirty: bool) -> Result<()> {
        let mut flags = if region.read_only { KVM_MEM_READONLY } else { 0 };
        if log_dirty {
            flags |= KVM_MEM_LOG_DIRTY_PAGES;
        }
        let kvm_region = kvm_userspace_memory_region {
            slot,
            flags,
            guest_phys_addr: region.guest_addr,
            memory_size: size,
            userspace_addr: region.host_addr,
        };
        // SAFETY: the caller of `add_memory` (an unsafe function) guarantees that the host range
        // stays mapped while the region exists; a size of 0 deletes the slot.
        unsafe { self.vm.set_user_memory_region(kvm_region) }
            .map_err(|e| ioctl_error(format!("KVM_SET_USER_MEMORY_REGION for slot {slot}"), e))
    }

    /// Adds a region in the lowest free slot.
    ///
    /// # Safety
    /// The host range must stay mapped until the region is removed or the VM is dropped.
    pub unsafe fn add(&self, region: &MemoryRegion) -> Result<u32> {
        if region.read_only && !self.readonly_memory {
            return Err(AccelError::unsupported(
                "read-only memory (KVM_CAP_READONLY_MEM) is not supported by this kernel",
            ));
        }
        let mut map = locked(&self.map)?;
        let slot = map.insert(*region, self.page_size, self.max_slots)?;
        if let Err(e) = self.set_region(slot, region, region.size, false) {
            // Keep the map in step with the kernel.
            let _ = map.remove(slot);
            return Err(e);
        }
        Ok(slot)
    }

    /// Removes the region in `slot`.
    pub fn remove(&self, slot: u32) -> Result<()> {
        let mut map = locked(&self.map)?;
        let region = *map.get(slot).ok_or_else(|| {
            AccelError::new(ErrorKind::NOT_FOUND, format!("no memory region in slot {slot}"))
        })?;
        self.set_region(slot, &region, 0, false)?;
        map.remove(slot)?;
        locked(&self.logged)?.remove(&slot);
        Ok(())
    }
}

impl BackendDirtyLog for Slots {
    fn set(&self, slot: u32, enabled: bool) -> Result<()> {
        let map = locked(&self.map)?;
        let region = *map.get(slot).ok_or_else(|| {
            AccelError::new(ErrorKind::NOT_FOUND, format!("no memory region in slot {slot}"))
        })?;
        self.set_region(slot, &region, region.size, enabled)?;
        let mut logged = locked(&self.logged)?;
        if enabled {
            logged.insert(slot);
        } else {
            logged.remove(&slot);
        }
        Ok(())
    }

    fn take(&self, slot: u32) -> Result<Vec<u64>> {
        if !locked(&self.logged)?.contains(&slot) {
            return Err(AccelError::bad_state(format!("dirty logging is off for slot {slot}")));
        }
        let size = locked(&self.map)?.get(slot).map(|r| r.size).unwrap_or(0);
        self.vm
            .get_dirty_log(slot, size as usize)
            .map_err(|e| ioctl_error(format!("KVM_GET_DIRTY_LOG of slot {slot}"), e))
    }
}
