//! The VM's guest-debug pool on KVM: the shared [`DebugPool`] bookkeeping, software breakpoints
//! written into guest memory, and `KVM_SET_GUEST_DEBUG` applied by each vCPU on its own thread
//! before it next enters the guest (so changes reach running vCPUs at their next entry, and
//! vCPUs created later too).

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, Mutex, MutexGuard,
};

use accel_api::{
    backend::BackendDebug,
    debug::{DebugCapacity, DebugEvent, DebugProgram, DebugSetup, Watchpoint, BRK_INSN},
    AccelError, DebugExit, ErrorKind, Result,
};

use accel_kit::{debug_pool::DebugPool, memory_map::MemoryMap};
use kvm_bindings::{
    kvm_guest_debug, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW,
    KVM_GUESTDBG_USE_SW_BP,
};

/// A VM's debug pool.
pub struct KvmDebug {
    pool: Mutex<DebugPool>,
    generation: AtomicU64,
    capacity: DebugCapacity,
    memory: Arc<Mutex<MemoryMap>>,
}

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

impl KvmDebug {
    /// A pool with the host's breakpoint and watchpoint counts, writing through `memory`.
    pub fn new(capacity: DebugCapacity, memory: Arc<Mutex<MemoryMap>>) -> Self {
        Self {
            pool: Mutex::new(DebugPool::new(capacity.breakpoints, capacity.watchpoints)),
            generation: AtomicU64::new(0),
            capacity,
            memory,
        }
    }

    fn pool(&self) -> Result<MutexGuard<'_, DebugPool>> {
        self.pool.lock().map_err(|_| AccelError::bad_state("the debug pool lock is poisoned"))
    }

    fn changed(&self, pool: &DebugPool) {
        self.generation.store(pool.generation(), Ordering::Release);
    }

    /// The host address of the 4 bytes at guest physical `pa`.
    fn host_word(&self, pa: u64) -> Result<u64> {
        let map = self.memory.lock().map_err(|_| AccelError::bad_state("the memory map lock is poisoned"))?;
        let host =
            map.guest_to_host(pa).filter(|_| map.guest_to_host(pa + 3).is_some()).ok_or_else(|| {
                AccelError::invalid(format!("guest physical address {pa:#x} is not in guest RAM"))
            })?;
        if pa & 3 != 0 {
            return Err(AccelError::invalid(format!("instruction address {pa:#x} is not 4-byte aligned")));
        }
        Ok(host)
    }

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

    /// The pool's generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The KVM_SET_GUEST_DEBUG argument for vCPU `index`, if the pool changed since `applied`.
    pub fn setup_if_changed(&self, index: u32, applied: &mut Option<u64>) -> Result<Option<kvm_guest_debug>> {
        let now = self.generation();
        if *applied == Some(now) {
            return Ok(None);
        }
        let pool = self.pool()?;
        *applied = Some(pool.generation());
        Ok(Some(to_kvm(&pool.setup_for(index))))
    }
}

/// KVM's form of a debug set-up.
fn to_kvm(s: &DebugSetup) -> kvm_guest_debug {
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

impl BackendDebug for KvmDebug {
    fn capacity(&self) -> DebugCapacity {
        self.capacity
    }

    fn insert_hw_breakpoint(&self, addr: u64) -> Result<()> {
        let mut pool = self.pool()?;
        pool.insert_hw_breakpoint(addr)?;
        self.changed(&pool);
        Ok(())
    }

    fn remove_hw_breakpoint(&self, addr: u64) -> Result<()> {
        let mut pool = self.pool()?;
        pool.remove_hw_breakpoint(addr)?;
        self.changed(&pool);
        Ok(())
    }

    fn insert_watchpoint(&self, watch: &Watchpoint) -> Result<()> {
        let mut pool = self.pool()?;
        pool.insert_watchpoint(*watch)?;
        self.changed(&pool);
        Ok(())
    }

    fn remove_watchpoint(&self, watch: &Watchpoint) -> Result<()> {
        let mut pool = self.pool()?;
        pool.remove_watchpoint(*watch)?;
        self.changed(&pool);
        Ok(())
    }

    fn insert_sw_breakpoint(&self, va: u64, pa: u64) -> Result<()> {
        let mut pool = self.pool()?;
        let current = self.read_insn(pa)?;
        if pool.insert_sw_breakpoint(va, pa, current)? {
            if let Err(e) = self.write_insn(pa, BRK_INSN) {
                let _ = pool.remove_sw_breakpoint(va, BRK_INSN);
                return Err(e);
            }
        }
        self.changed(&pool);
        Ok(())
    }

    fn remove_sw_breakpoint(&self, va: u64) -> Result<()> {
        let mut pool = self.pool()?;
        let bp = pool.sw_breakpoint(va).ok_or_else(|| {
            AccelError::new(ErrorKind::NOT_FOUND, format!("no software breakpoint at {va:#x}"))
        })?;
        let current = self.read_insn(bp.pa)?;
        if let Some((pa, saved)) = pool.remove_sw_breakpoint(va, current)? {
            self.write_insn(pa, saved)?;
        }
        self.changed(&pool);
        Ok(())
    }

    fn set_single_step(&self, index: u32, on: bool) -> Result<()> {
        let mut pool = self.pool()?;
        pool.set_single_step(index, on);
        self.changed(&pool);
        Ok(())
    }

    fn remove_all(&self) -> Result<()> {
        let mut pool = self.pool()?;
        for (pa, saved) in pool.remove_all() {
            match self.read_insn(pa) {
                Ok(BRK_INSN) => self.write_insn(pa, saved)?,
                Ok(other) => log::warn!(
                    "software breakpoint at {pa:#x} was overwritten (now {other:#010x}); not restoring {saved:#010x}"
                ),
                Err(e) => log::warn!("software breakpoint at {pa:#x} cannot be restored: {e}"),
            }
        }
        self.changed(&pool);
        Ok(())
    }

    fn classify(&self, index: u32, exit: &DebugExit) -> DebugEvent {
        match self.pool() {
            Ok(pool) => pool.classify(index, exit.esr, exit.far, exit.pc),
            Err(_) => DebugEvent::Guest,
        }
    }

    fn program(&self, index: u32) -> Result<DebugProgram> {
        let pool = self.pool()?;
        Ok(DebugProgram { setup: pool.setup_for(index), sw_breakpoints: pool.sw_addresses() })
    }
}
