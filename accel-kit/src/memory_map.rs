//! Bookkeeping of guest memory regions, shared by backends: slot allocation, validation, overlap
//! rejection and address lookup in both directions.

use accel_api::{config::MemoryRegion, error::AccelError, error::Result, ErrorKind};

/// The regions of one VM, by slot.
#[derive(Debug, Default, Clone)]
pub struct MemoryMap {
    regions: Vec<(u32, MemoryRegion)>,
}

impl MemoryMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates `region` and records it in the lowest free slot below `max_slots`.
    ///
    /// Rejects an empty region, one not aligned to `page_size` (a power of two), one that wraps
    /// the address space, and one whose guest range overlaps a region already present.
    pub fn insert(&mut self, region: MemoryRegion, page_size: u64, max_slots: u32) -> Result<u32> {
        let mask = page_size - 1;
        if region.size == 0 {
            return Err(AccelError::invalid("memory region of size 0"));
        }
        if (region.guest_addr | region.size | region.host_addr) & mask != 0 {
            return Err(AccelError::invalid(format!(
                "memory region at guest {:#x} (size {:#x}, host {:#x}) is not aligned to the {page_size}-byte page size",
                region.guest_addr, region.size, region.host_addr
            )));
        }
        if region.guest_addr.checked_add(region.size).is_none()
            || region.host_addr.checked_add(region.size).is_none()
        {
            return Err(AccelError::invalid(format!(
                "memory region at guest {:#x} of size {:#x} wraps the address space",
                region.guest_addr, region.size
            )));
        }
        if let Some((slot, other)) = self.regions.iter().find(|(_, r)| overlaps(r, &region)) {
            return Err(AccelError::invalid(format!(
                "memory region {:#x}..{:#x} overlaps slot {slot} at {:#x}..{:#x}",
                region.guest_addr,
                region.guest_addr + region.size,
                other.guest_addr,
                other.guest_addr + other.size
            )));
        }
        let slot =
            (0..max_slots).find(|s| self.regions.iter().all(|(used, _)| used != s)).ok_or_else(|| {
                AccelError::new(ErrorKind::NO_RESOURCE, format!("all {max_slots} memory slots are in use"))
            })?;
        self.regions.push((slot, region));
        Ok(slot)
    }

    /// Removes the region in `slot` and returns it.
    pub fn remove(&mut self, slot: u32) -> Result<MemoryRegion> {
        let pos = self.regions.iter().position(|(s, _)| *s == slot).ok_or_else(|| {
            AccelError::new(ErrorKind::NOT_FOUND, format!("no memory region in slot {slot}"))
        })?;
        Ok(self.regions.swap_remove(pos).1)
    }

    /// The region in `slot`.
    pub fn get(&self, slot: u32) -> Option<&MemoryRegion> {
        self.regions.iter().find(|(s, _)| *s == slot).map(|(_, r)| r)
    }

    /// Every region with its slot.
    pub fn regions(&self) -> Vec<(u32, MemoryRegion)> {
        self.regions.clone()
    }

    /// The host address backing guest physical address `gpa`.
    pub fn guest_to_host(&self, gpa: u64) -> Option<u64> {
        self.regions
            .iter()
            .find(|(_, r)| gpa >= r.guest_addr && gpa - r.guest_addr < r.size)
            .map(|(_, r)| r.host_addr + (gpa - r.guest_addr))
    }

    /// The guest physical address that host address `hva` backs.
    pub fn host_to_guest(&self, hva: u64) -> Option<u64> {
        self.regions
            .iter()
            .find(|(_, r)| hva >= r.host_addr && hva - r.host_addr < r.size)
            .map(|(_, r)| r.guest_addr + (hva - r.host_addr))
    }
}

fn overlaps(a: &MemoryRegion, b: &MemoryRegion) -> bool {
    a.guest_addr < b.guest_addr + b.size && b.guest_addr < a.guest_addr + a.size
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(guest: u64, size: u64, host: u64) -> MemoryRegion {
        MemoryRegion { guest_addr: guest, size, host_addr: host, read_only: false }
    }

    #[test]
    fn slots_are_reused_lowest_first() {
        let mut m = MemoryMap::new();
        assert_eq!(m.insert(region(0x4000_0000, 0x1000, 0x10000), 0x1000, 4), Ok(0));
        assert_eq!(m.insert(region(0x8000_0000, 0x1000, 0x20000), 0x1000, 4), Ok(1));
        assert_eq!(m.remove(0).map(|r| r.guest_addr), Ok(0x4000_0000));
        assert_eq!(m.insert(region(0x9000_0000, 0x1000, 0x30000), 0x1000, 4), Ok(0));
        assert_eq!(m.remove(7).unwrap_err().kind, ErrorKind::NOT_FOUND);
        let slots: Vec<u32> = m.regions().into_iter().map(|(slot, _)| slot).collect();
        assert_eq!(slots, vec![1, 0]);
    }

    #[test]
    fn rejects_overlap_misalignment_and_exhaustion() {
        let mut m = MemoryMap::new();
        m.insert(region(0x4000_0000, 0x2000, 0x10000), 0x1000, 2).unwrap();
        let e = m.insert(region(0x4000_1000, 0x1000, 0x30000), 0x1000, 2).unwrap_err();
        assert!(e.message.contains("overlaps slot 0"), "{e}");
        // Touching, not overlapping.
        m.insert(region(0x4000_2000, 0x1000, 0x30000), 0x1000, 2).unwrap();
        assert_eq!(
            m.insert(region(0x5000_0000, 0x800, 0x50000), 0x1000, 2).unwrap_err().kind,
            ErrorKind::INVALID_ARGUMENT
        );
        assert_eq!(
            m.insert(region(0x5000_0000, 0, 0x50000), 0x1000, 2).unwrap_err().kind,
            ErrorKind::INVALID_ARGUMENT
        );
        assert_eq!(
            m.insert(region(u64::MAX - 0xfff, 0x2000, 0x50000), 0x1000, 2).unwrap_err().kind,
            ErrorKind::INVALID_ARGUMENT
        );
        assert_eq!(
            m.insert(region(0x6000_0000, 0x1000, 0x60000), 0x1000, 2).unwrap_err().kind,
            ErrorKind::NO_RESOURCE
        );
    }

    #[test]
    fn lookups_in_both_directions() {
        let mut m = MemoryMap::new();
        m.insert(region(0x4000_0000, 0x2000, 0x7f00_0000), 0x1000, 8).unwrap();
        assert_eq!(m.guest_to_host(0x4000_1234), Some(0x7f00_1234));
        assert_eq!(m.guest_to_host(0x4000_2000), None);
        assert_eq!(m.host_to_guest(0x7f00_0010), Some(0x4000_0010));
        assert_eq!(m.host_to_guest(0x7eff_ffff), None);
    }
}
