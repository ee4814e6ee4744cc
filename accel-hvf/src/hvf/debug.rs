//! The VM's guest-debug pool on HVF: the kit's [`PoolDebug`], with software breakpoints written
//! into guest memory. Each vCPU applies the pool's set-up on its own thread before it next enters
//! the guest (the debug traps, the hardware registers, MDSCR_EL1).

use std::sync::{Arc, Mutex};

use accel_api::{AccelError, Result};

use accel_kit::{
    memory_map::MemoryMap,
    pool_debug::{DebugTarget, PoolDebug},
};

/// A VM's debug pool.
pub type HvfDebug = PoolDebug<GuestText>;

/// The guest's instructions, through the VM's memory map.
pub struct GuestText(pub Arc<Mutex<MemoryMap>>);

/// Makes the instruction at `host` visible to instruction fetch: clean the data cache line to the
/// point of unification and invalidate the instruction cache line (Arm ARM D7.5.9).
fn sync_icache(host: u64) {
    // SAFETY: DC CVAU and IC IVAU on a mapped address of this process (just written) are
    // permitted at EL0 on macOS and change no memory contents.
    unsafe {
        std::arch::asm!("dc cvau, {0}", "dsb ish", "ic ivau, {0}", "dsb ish", "isb", in(reg) host, options(nostack));
    }
}

impl GuestText {
    /// The host address of the 4 bytes at guest physical `pa`.
    fn host_word(&self, pa: u64) -> Result<u64> {
        if pa & 3 != 0 {
            return Err(AccelError::invalid(format!("instruction address {pa:#x} is not 4-byte aligned")));
        }
        let map = self.0.lock().map_err(|_| AccelError::bad_state("the memory map lock is poisoned"))?;
        map.guest_to_host(pa)
            .filter(|_| map.guest_to_host(pa + 3).is_some())
            .ok_or_else(|| AccelError::invalid(format!("guest physical address {pa:#x} is not in guest RAM")))
    }
}

impl DebugTarget for GuestText {
    fn read_insn(&self, pa: u64) -> Result<u32> {
        let host = self.host_word(pa)?;
        // SAFETY: `host` is inside a region the host registered as guest RAM, which stays mapped
        // while it is registered (the contract of `add_memory`); it is 4-byte aligned.
        Ok(unsafe { (host as *const u32).read_volatile() })
    }

    fn write_insn(&self, pa: u64, insn: u32) -> Result<()> {
        let host = self.host_word(pa)?;
        // SAFETY: as in `read_insn`; the guest may race with this single aligned store and sees
        // the old or the new instruction.
        unsafe { (host as *mut u32).write_volatile(insn) };
        sync_icache(host);
        Ok(())
    }
}
