//! The VM's guest-debug pool on KVM: the kit's [`PoolDebug`], software breakpoints written into
//! guest memory, and the pool's set-up in KVM's form, which each vCPU applies with
//! `KVM_SET_GUEST_DEBUG` on its own thread before it next enters the guest.

use std::sync::{Arc, Mutex};

use accel_api::{debug::DebugSetup, AccelError, Result};

use accel_kit::{
    memory_map::MemoryMap,
    pool_debug::{DebugTarget, PoolDebug},
};
use kvm_bindings::{
    kvm_guest_debug, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW,
    KVM_GUESTDBG_USE_SW_BP,
};

/// A VM's debug pool.
pub type KvmDebug = PoolDebug<GuestText>;

/// The guest's instructions, through the VM's memory map.
pub struct GuestText(pub Arc<Mutex<MemoryMap>>);

/// Makes the instruction at `host` visible to instruction fetch: clean the data cache line to the
/// point of unification and invalidate the instruction cache line (Arm ARM D7.5.9).
fn sync_icache(host: u64) {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: DC CVAU and IC IVAU on a mapped address of this process (the caller just wrote it)
    // are permitted at EL0 under Linux (SCTLR_EL1.UCI = 1) and change no memory contents.
    unsafe {
        std::arch::asm!("dc cvau, {0}", "dsb ish", "ic ivau, {0}", "dsb ish", "isb", in(reg) host, options(nostack));
    }
    #[cfg(not(target_arch = "aarch64"))]
    let _ = host;
}

impl GuestText {
    /// The host address of the 4 bytes at guest physical `pa`.
    fn host_word(&self, pa: u64) -> Result<u64> {
        let map = self.0.lock().map_err(|_| AccelError::bad_state("the memory map lock is poisoned"))?;
        let host =
            map.guest_to_host(pa).filter(|_| map.guest_to_host(pa + 3).is_some()).ok_or_else(|| {
                AccelError::invalid(format!("guest physical address {pa:#x} is not in guest RAM"))
            })?;
        if pa & 3 != 0 {
            return Err(AccelError::invalid(format!("instruction address {pa:#x} is not 4-byte aligned")));
        }
        Ok(host)
    }
}

impl DebugTarget for GuestText {
    fn read_insn(&self, pa: u64) -> Result<u32> {
        let host = self.host_word(pa)?;
        // SAFETY: `host` is inside a region the host registered as guest RAM, which stays mapped
        // while it is registered (the contract of `Vm::add_memory`); it is 4-byte aligned.
        Ok(unsafe { (host as *const u32).read_volatile() })
    }

    fn write_insn(&self, pa: u64, insn: u32) -> Result<()> {
        let host = self.host_word(pa)?;
        // SAFETY: as in `read_insn`; the guest may race with this store, which is a single
        // aligned word: it sees the old or the new instruction.
        unsafe { (host as *mut u32).write_volatile(insn) };
        sync_icache(host);
        Ok(())
    }
}

/// The `KVM_SET_GUEST_DEBUG` argument of a debug set-up.
pub fn to_kvm(s: &DebugSetup) -> kvm_guest_debug {
    let mut d = kvm_guest_debug::default();
    if s.active() {
        d.control = KVM_GUESTDBG_ENABLE;
    }
    if s.sw_breakpoints {
        d.control |= KVM_GUESTDBG_USE_SW_BP;
    }
    if s.hardware {
        d.control |= KVM_GUESTDBG_USE_HW;
    }
    if s.single_step {
        d.control |= KVM_GUESTDBG_SINGLESTEP;
    }
    d.arch.dbg_bcr = s.bcr;
    d.arch.dbg_bvr = s.bvr;
    d.arch.dbg_wcr = s.wcr;
    d.arch.dbg_wvr = s.wvr;
    d
}
