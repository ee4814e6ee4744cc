//! The guest's instructions in host memory, through a VM's [`MemoryMap`]: the [`DebugTarget`] a
//! backend's debug pool plants software breakpoints with.
//!
//! Each access holds the map's lock from the lookup to the end of the load or store, so a region
//! cannot be removed (and its memory then unmapped by its owner) between finding the host address
//! and using it.

use std::sync::{Arc, Mutex, MutexGuard};

use accel_api::{AccelError, Result};

use crate::{memory_map::MemoryMap, pool_debug::DebugTarget};

/// The guest's instructions, through a VM's memory map.
pub struct GuestText {
    map: Arc<Mutex<MemoryMap>>,
}

impl GuestText {
    /// Instructions through `map`.
    ///
    /// # Safety
    /// Every region in `map` must be host memory mapped readable and, unless the region is
    /// read-only, writable, for as long as the region stays in `map` (the contract of
    /// `add_memory`, whose caller keeps the range mapped until the region is removed). A region
    /// must be taken out of `map`, under its lock, before its memory is unmapped.
    pub unsafe fn new(map: Arc<Mutex<MemoryMap>>) -> Self {
        Self { map }
    }

    /// The locked map and the host address of the 4 bytes at guest physical `pa`, checked to be
    /// aligned and inside one region; `write` also requires the region to be writable.
    fn word(&self, pa: u64, write: bool) -> Result<(MutexGuard<'_, MemoryMap>, u64)> {
        if pa & 3 != 0 {
            return Err(AccelError::invalid(format!("instruction address {pa:#x} is not 4-byte aligned")));
        }
        let map = self.map.lock().map_err(|_| AccelError::bad_state("the memory map lock is poisoned"))?;
        let (_, region) = map
            .regions()
            .into_iter()
            .find(|(_, r)| pa >= r.guest_addr && pa - r.guest_addr < r.size)
            .ok_or_else(|| {
                AccelError::invalid(format!("guest physical address {pa:#x} is not in guest RAM"))
            })?;
        // Regions are page aligned, so an aligned word that starts in one ends in it.
        if pa - region.guest_addr + 4 > region.size {
            return Err(AccelError::invalid(format!("guest physical address {pa:#x} is not in guest RAM")));
        }
        if write && region.read_only {
            return Err(AccelError::invalid(format!(
                "guest physical address {pa:#x} is in read-only memory: no breakpoint can be written there"
            )));
        }
        let host = region.host_addr + (pa - region.guest_addr);
        Ok((map, host))
    }
}

/// Makes the instruction at `host` visible to instruction fetch: clean the data cache line to the
/// point of unification and invalidate the instruction cache line (Arm ARM D7.5.9).
fn sync_icache(host: u64) {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: DC CVAU and IC IVAU on a mapped address of this process (the caller just wrote it
    // and still holds the lock that keeps it mapped) are permitted at EL0 on Linux
    // (SCTLR_EL1.UCI = 1) and macOS, and change no memory contents.
    unsafe {
        std::arch::asm!("dc cvau, {0}", "dsb ish", "ic ivau, {0}", "dsb ish", "isb", in(reg) host, options(nostack));
    }
    #[cfg(not(target_arch = "aarch64"))]
    let _ = host;
}

impl DebugTarget for GuestText {
    fn read_insn(&self, pa: u64) -> Result<u32> {
        let (map, host) = self.word(pa, false)?;
        // SAFETY: `host` is 4 aligned bytes inside a region of the map, which is mapped readable
        // while it is in the map (the contract of `new`); `map` holds the lock, so the region
        // cannot leave the map, nor its memory be unmapped, before the load completes.
        let insn = unsafe { (host as *const u32).read_volatile() };
        drop(map);
        Ok(insn)
    }

    fn write_insn(&self, pa: u64, insn: u32) -> Result<()> {
        let (map, host) = self.word(pa, true)?;
        // SAFETY: as in `read_insn`, and the region is not read-only, so it is mapped writable.
        // The guest may race with this single aligned store: it sees the old or the new word.
        unsafe { (host as *mut u32).write_volatile(insn) };
        sync_icache(host);
        drop(map);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use accel_api::{backend::BackendDebug, config::MemoryRegion, debug::DebugCapacity, ErrorKind};

    use super::*;
    use crate::pool_debug::PoolDebug;

    const NOP: u32 = 0xd503_201f;
    const PAGE: usize = 4096;
    const GUEST: u64 = 0x4000_0000;

    /// An anonymous page holding NOPs.
    fn map_page() -> *mut libc::c_void {
        // SAFETY: a fresh anonymous private mapping, no address hint.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        // SAFETY: the page was just mapped, readable and writable, and is PAGE bytes long.
        unsafe { std::slice::from_raw_parts_mut(p.cast::<u32>(), PAGE / 4).fill(NOP) };
        p
    }

    fn region(host: *mut libc::c_void, read_only: bool) -> MemoryRegion {
        MemoryRegion { guest_addr: GUEST, size: PAGE as u64, host_addr: host as u64, read_only }
    }

    #[test]
    fn read_only_and_unmapped_words_are_refused() {
        let map = Arc::new(Mutex::new(MemoryMap::new()));
        let page = map_page();
        map.lock().unwrap().insert(region(page, true), PAGE as u64, 4).unwrap();
        // SAFETY: the only region is the page above, which stays mapped until the end of the test.
        let text = unsafe { GuestText::new(Arc::clone(&map)) };
        assert_eq!(text.read_insn(GUEST + 8), Ok(NOP));
        let e = text.write_insn(GUEST + 8, 0).unwrap_err();
        assert!(e.message.contains("read-only"), "{e}");
        assert_eq!(text.read_insn(GUEST + 2).unwrap_err().kind, ErrorKind::INVALID_ARGUMENT);
        assert_eq!(text.read_insn(GUEST + PAGE as u64).unwrap_err().kind, ErrorKind::INVALID_ARGUMENT);
        map.lock().unwrap().remove(0).unwrap();
        // SAFETY: the region left the map, so nothing reaches the page any more.
        assert_eq!(unsafe { libc::munmap(page, PAGE) }, 0);
    }

    /// One thread plants and removes a breakpoint while another adds the region, removes it and
    /// unmaps its memory, over and over: every access either lands in mapped memory or fails
    /// cleanly because the region is gone. Were the lock released between the lookup and the
    /// access, a store could hit the page after its unmapping and kill the process with SIGSEGV.
    #[test]
    fn breakpoints_race_with_removal_of_their_memory() {
        const ROUNDS: usize = 2000;
        let map = Arc::new(Mutex::new(MemoryMap::new()));
        // SAFETY: the thread below takes each region out of the map, under its lock, before it
        // unmaps the region's page.
        let debug =
            Arc::new(PoolDebug::new(DebugCapacity::default(), unsafe { GuestText::new(Arc::clone(&map)) }));
        let done = Arc::new(AtomicBool::new(false));
        let churn = {
            let (map, done) = (Arc::clone(&map), Arc::clone(&done));
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    let page = map_page();
                    let slot = map.lock().unwrap().insert(region(page, false), PAGE as u64, 4).unwrap();
                    std::thread::yield_now();
                    map.lock().unwrap().remove(slot).unwrap();
                    // SAFETY: the region left the map above, so the debug pool no longer reaches
                    // the page.
                    assert_eq!(unsafe { libc::munmap(page, PAGE) }, 0);
                }
                done.store(true, Ordering::Release);
            })
        };
        let (mut planted, mut refused) = (0u64, 0u64);
        while !done.load(Ordering::Acquire) {
            match debug.insert_sw_breakpoint(GUEST + 0x10, GUEST + 0x10) {
                Ok(()) => {
                    planted += 1;
                    // The region may have gone since: then the breakpoint stays recorded, and
                    // removing it fails cleanly too; drop it from the pool either way.
                    if let Err(e) = debug.remove_sw_breakpoint(GUEST + 0x10) {
                        assert!(matches!(e.kind, ErrorKind::INVALID_ARGUMENT | ErrorKind::BAD_STATE), "{e}");
                        if let Err(e) = debug.remove_all() {
                            assert_eq!(e.kind, ErrorKind::INVALID_ARGUMENT, "{e}");
                        }
                    }
                }
                Err(e) => {
                    assert_eq!(e.kind, ErrorKind::INVALID_ARGUMENT, "{e}");
                    refused += 1;
                }
            }
        }
        churn.join().unwrap();
        assert_eq!(
            debug.program(0).unwrap().sw_breakpoints,
            Vec::<u64>::new(),
            "{planted} planted, {refused} refused"
        );
    }
}
