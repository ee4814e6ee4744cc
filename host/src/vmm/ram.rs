//! Guest RAM: anonymous host memory on a huge-page boundary ([`HostMapping`]), reached through
//! `vm-memory`, registered with a VM.

use std::sync::Arc;

use accel_api::{client::Vm, AccelError, ErrorKind, MemoryRegion, Result};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use super::host_mapping::HostMapping;

/// One contiguous block of guest RAM.
pub struct GuestRam {
    mem: GuestMemoryMmap,
    /// The host memory behind `mem`; declared after it, so it is unmapped after `mem` is gone.
    _host: HostMapping,
    base: u64,
    size: u64,
}

impl GuestRam {
    /// Allocates `size` bytes of guest RAM at guest physical `base`, on a 2 MiB boundary of host
    /// memory and offered for huge pages ([`HostMapping`]).
    pub fn new(base: u64, size: u64) -> Result<Self> {
        let len = usize::try_from(size)
            .map_err(|_| AccelError::invalid(format!("RAM size {size:#x} is too large")))?;
        let no_memory = |e: &dyn std::fmt::Display| {
            AccelError::new(ErrorKind::NO_RESOURCE, format!("allocating {size:#x} bytes of guest RAM: {e}"))
        };
        let host = HostMapping::new(len).map_err(|e| no_memory(&e))?;
        // SAFETY: `host` is a private anonymous read-write mapping of exactly `len` bytes, kept
        // alive beside the region for as long as the region is.
        let region = unsafe {
            MmapRegion::build_raw(
                host.addr(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            )
        }
        .map_err(|e| no_memory(&e))?;
        let region = GuestRegionMmap::new(region, GuestAddress(base)).ok_or_else(|| {
            AccelError::invalid(format!("RAM at {base:#x} of {size:#x} bytes ends past 2^64"))
        })?;
        let mem = GuestMemoryMmap::from_regions(vec![region]).map_err(|e| no_memory(&e))?;
        Ok(Self { mem, _host: host, base, size })
    }

    /// The guest memory, for loaders that take `vm-memory`'s types. Borrow it for a load: the
    /// host memory behind it goes with this `GuestRam`, so a clone must not outlive it.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The host address of the first byte.
    pub fn host_addr(&self) -> Result<u64> {
        self.mem.get_host_address(GuestAddress(self.base)).map(|p| p as u64).map_err(|e| {
            AccelError::new(ErrorKind::NO_RESOURCE, format!("guest RAM has no host address: {e}"))
        })
    }

    /// Maps the RAM into `vm` and returns the slot.
    ///
    /// # Safety
    /// The RAM must outlive every vCPU of `vm` that may run, or be removed from `vm` first:
    /// the guest accesses it through the backend, not through this object.
    pub unsafe fn map_into(&self, vm: &Vm) -> Result<u32> {
        let region = MemoryRegion {
            guest_addr: self.base,
            size: self.size,
            host_addr: self.host_addr()?,
            read_only: false,
        };
        // SAFETY: the mapping is owned by `self.mem`, which the caller keeps alive while the VM
        // can use it (this function's contract).
        unsafe { vm.add_memory(&region) }
    }

    /// The guest physical address backed by host address `hva`, if it is in this RAM.
    pub fn host_to_guest(&self, hva: u64) -> Option<u64> {
        let base = self.host_addr().ok()?;
        (hva >= base && hva - base < self.size).then(|| self.base + (hva - base))
    }

    /// The guest physical address of the first byte.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// True when `addr .. addr + len` lies inside the RAM.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= self.base && len <= self.size && addr - self.base <= self.size - len
    }

    /// Copies `data` into guest RAM at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<()> {
        if !self.contains(addr, data.len() as u64) {
            return Err(self.out_of_range(addr, data.len()));
        }
        self.mem
            .write_slice(data, GuestAddress(addr))
            .map_err(|e| AccelError::invalid(format!("writing guest RAM at {addr:#x}: {e}")))
    }

    /// Copies guest RAM at `addr` into `buf`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        if !self.contains(addr, buf.len() as u64) {
            return Err(self.out_of_range(addr, buf.len()));
        }
        self.mem
            .read_slice(buf, GuestAddress(addr))
            .map_err(|e| AccelError::invalid(format!("reading guest RAM at {addr:#x}: {e}")))
    }

    /// Writes A64 instruction words at `addr`, little-endian.
    pub fn write_code(&self, addr: u64, words: &[u32]) -> Result<()> {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.write(addr, &bytes)
    }

    fn out_of_range(&self, addr: u64, len: usize) -> AccelError {
        AccelError::invalid(format!(
            "{len} bytes at {addr:#x} are outside guest RAM {:#x}..{:#x}",
            self.base,
            self.base + self.size
        ))
    }
}

/// A VM and the guest RAM registered with it, in the one order they may be dropped: the VM (and
/// with it the backend's map of guest to host addresses, which its debug pool plants software
/// breakpoints through) goes first, the RAM after it. Rust drops fields in declaration order,
/// so every path that drops this, an early error return included, keeps that order.
pub struct VmWithRam<V = Vm> {
    /// The VM; declared first, so it is dropped first.
    vm: V,
    /// The RAM; dropped last, once nothing registered with the VM can reach it.
    ram: Arc<GuestRam>,
}

impl VmWithRam<Vm> {
    /// Registers `ram` with `vm` and keeps them together.
    ///
    /// # Safety
    /// Every vCPU of `vm` that may run must hold a clone of the RAM (see [`VmWithRam::ram`]),
    /// so that it outlives them: the VM itself, dropped before the RAM, no longer reaches it.
    pub unsafe fn map(vm: Vm, ram: GuestRam) -> Result<Self> {
        let together = VmWithRam { vm, ram: Arc::new(ram) };
        // SAFETY: the RAM lives until `together` is dropped, after the VM (field order), and the
        // caller makes every vCPU that may run hold a clone (this function's contract).
        unsafe { together.ram.map_into(&together.vm) }?;
        Ok(together)
    }
}

impl<V> VmWithRam<V> {
    /// The VM.
    pub fn vm(&self) -> &V {
        &self.vm
    }

    /// The RAM.
    pub fn ram(&self) -> &Arc<GuestRam> {
        &self.ram
    }

    /// The VM and the RAM, for an owner that keeps the same order (see [`super::Machine`]).
    pub fn into_parts(self) -> (V, Arc<GuestRam>) {
        (self.vm, self.ram)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Weak,
    };

    use super::*;

    /// Stands for a VM: when dropped, records whether the RAM still exists.
    struct Witness {
        ram: Weak<GuestRam>,
        ram_alive_at_drop: Arc<AtomicBool>,
    }

    impl Drop for Witness {
        fn drop(&mut self) {
            self.ram_alive_at_drop.store(self.ram.upgrade().is_some(), Ordering::SeqCst);
        }
    }

    fn fails_after_both_exist(seen: &Arc<AtomicBool>) -> Result<VmWithRam<Witness>> {
        let ram = Arc::new(GuestRam::new(0x4000_0000, 1 << 20)?);
        let vm = Witness { ram: Arc::downgrade(&ram), ram_alive_at_drop: Arc::clone(seen) };
        let together = VmWithRam { vm, ram };
        together.ram().write(0x4000_0000, &[1, 2, 3, 4])?;
        if together.ram().size() > 0 {
            return Err(AccelError::invalid("a failure after the VM and its RAM exist"));
        }
        Ok(together)
    }

    #[test]
    fn the_vm_is_dropped_while_its_ram_still_exists() {
        let seen = Arc::new(AtomicBool::new(false));
        assert!(fails_after_both_exist(&seen).is_err());
        assert!(seen.load(Ordering::SeqCst), "the RAM was gone when the VM was dropped");
    }
}
