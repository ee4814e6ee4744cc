//! A VM's [`BackendDebug`] over the [`DebugPool`], written once: the pool behind a lock, its
//! generation for the vCPUs to compare, and software breakpoints planted in and restored to guest
//! memory through what the backend supplies ([`DebugTarget`]).
//!
//! Each vCPU applies the pool's set-up on its own thread before it next enters the guest
//! ([`PoolDebug::setup_if_changed`]), so a change reaches running vCPUs at their next entry, and
//! vCPUs created later too.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Mutex, MutexGuard,
};

use accel_api::{
    backend::BackendDebug,
    debug::{DebugCapacity, DebugEvent, DebugProgram, DebugSetup, Watchpoint, BRK_INSN},
    AccelError, DebugExit, ErrorKind, Result,
};

use crate::debug_pool::DebugPool;

/// What a debug pool needs from its backend: the guest's instructions in memory.
pub trait DebugTarget: Send + Sync + 'static {
    /// Reads the instruction at guest physical address `pa`.
    fn read_insn(&self, pa: u64) -> Result<u32>;

    /// Writes `insn` at guest physical address `pa`, so that the guest's next fetch of it sees it.
    fn write_insn(&self, pa: u64, insn: u32) -> Result<()>;
}

/// A VM's debug pool, with the backend's access to guest instructions.
pub struct PoolDebug<T> {
    pool: Mutex<DebugPool>,
    /// The pool's generation as of its last change, readable without the lock.
    generation: AtomicU64,
    capacity: DebugCapacity,
    target: T,
}

impl<T: DebugTarget> PoolDebug<T> {
    /// A pool with the host's breakpoint and watchpoint counts, planting software breakpoints
    /// through `target`.
    pub fn new(capacity: DebugCapacity, target: T) -> Self {
        Self {
            pool: Mutex::new(DebugPool::new(capacity.breakpoints, capacity.watchpoints)),
            generation: AtomicU64::new(0),
            capacity,
            target,
        }
    }

    fn pool(&self) -> Result<MutexGuard<'_, DebugPool>> {
        self.pool.lock().map_err(|_| AccelError::bad_state("the debug pool lock is poisoned"))
    }

    fn changed(&self, pool: &DebugPool) {
        self.generation.store(pool.generation(), Ordering::Release);
    }

    /// The set-up vCPU `index` needs, if the pool changed since `applied`, which it updates. A
    /// vCPU that fails to apply the set-up sets `applied` to `None` to try again.
    pub fn setup_if_changed(&self, index: u32, applied: &mut Option<u64>) -> Result<Option<DebugSetup>> {
        if *applied == Some(self.generation.load(Ordering::Acquire)) {
            return Ok(None);
        }
        let pool = self.pool()?;
        *applied = Some(pool.generation());
        Ok(Some(pool.setup_for(index)))
    }
}

impl<T: DebugTarget> BackendDebug for PoolDebug<T> {
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
        let current = self.target.read_insn(pa)?;
        if pool.insert_sw_breakpoint(va, pa, current)? {
            if let Err(e) = self.target.write_insn(pa, BRK_INSN) {
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
        let current = self.target.read_insn(bp.pa)?;
        if let Some((pa, saved)) = pool.remove_sw_breakpoint(va, current)? {
            self.target.write_insn(pa, saved)?;
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
            match self.target.read_insn(pa) {
                Ok(BRK_INSN) => self.target.write_insn(pa, saved)?,
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const NOP: u32 = 0xd503_201f;

    /// Guest memory as a map of words; `refuse` is an address whose writes fail.
    #[derive(Default)]
    struct Memory {
        words: Mutex<HashMap<u64, u32>>,
        refuse: Option<u64>,
    }

    impl DebugTarget for Memory {
        fn read_insn(&self, pa: u64) -> Result<u32> {
            let words = self.words.lock().map_err(|_| AccelError::bad_state("poisoned"))?;
            words.get(&pa).copied().ok_or_else(|| AccelError::invalid(format!("{pa:#x} is not in guest RAM")))
        }

        fn write_insn(&self, pa: u64, insn: u32) -> Result<()> {
            if self.refuse == Some(pa) {
                return Err(AccelError::invalid(format!("{pa:#x} is read-only")));
            }
            self.words.lock().map_err(|_| AccelError::bad_state("poisoned"))?.insert(pa, insn);
            Ok(())
        }
    }

    fn debug(refuse: Option<u64>) -> PoolDebug<Memory> {
        let words = Mutex::new([(0x1000, NOP), (0x1004, NOP)].into_iter().collect());
        PoolDebug::new(DebugCapacity { breakpoints: 2, watchpoints: 2 }, Memory { words, refuse })
    }

    fn word(d: &PoolDebug<Memory>, pa: u64) -> u32 {
        d.target.read_insn(pa).unwrap()
    }

    #[test]
    fn software_breakpoints_are_planted_once_and_restored_on_the_last_remove() {
        let d = debug(None);
        d.insert_sw_breakpoint(0x8000_1000, 0x1000).unwrap();
        d.insert_sw_breakpoint(0x8000_1000, 0x1000).unwrap();
        assert_eq!(word(&d, 0x1000), BRK_INSN);
        d.remove_sw_breakpoint(0x8000_1000).unwrap();
        assert_eq!(word(&d, 0x1000), BRK_INSN, "one use left");
        d.remove_sw_breakpoint(0x8000_1000).unwrap();
        assert_eq!(word(&d, 0x1000), NOP);
        let e = d.remove_sw_breakpoint(0x8000_1000).unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::NOT_FOUND, "no software breakpoint at 0x80001000")
        );
        assert!(d.insert_sw_breakpoint(0x8000_2000, 0x2000).is_err(), "not in guest RAM");
    }

    #[test]
    fn a_breakpoint_that_cannot_be_planted_is_not_kept() {
        let d = debug(Some(0x1004));
        assert!(d.insert_sw_breakpoint(0x1004, 0x1004).is_err());
        assert_eq!(d.program(0).unwrap().sw_breakpoints, Vec::<u64>::new());
        assert_eq!(word(&d, 0x1004), NOP);
    }

    #[test]
    fn remove_all_restores_only_what_still_holds_the_brk() {
        let d = debug(None);
        d.insert_sw_breakpoint(0x1000, 0x1000).unwrap();
        d.insert_sw_breakpoint(0x1004, 0x1004).unwrap();
        d.target.write_insn(0x1004, 0x1234_5678).unwrap();
        d.remove_all().unwrap();
        assert_eq!((word(&d, 0x1000), word(&d, 0x1004)), (NOP, 0x1234_5678));
    }

    #[test]
    fn vcpus_see_each_change_once() {
        let d = debug(None);
        let mut applied = None;
        assert!(d.setup_if_changed(0, &mut applied).unwrap().is_some(), "the first entry applies");
        assert!(d.setup_if_changed(0, &mut applied).unwrap().is_none());
        d.insert_hw_breakpoint(0x4000).unwrap();
        let setup = d.setup_if_changed(0, &mut applied).unwrap().unwrap();
        assert!(setup.hardware && setup.bvr[0] == 0x4000);
        assert!(d.setup_if_changed(0, &mut applied).unwrap().is_none());
        d.set_single_step(1, true).unwrap();
        let mut other = applied;
        assert!(d.setup_if_changed(1, &mut other).unwrap().unwrap().single_step);
        let exit = DebugExit { esr: 0x30 << 26 | 1 << 25, far: 0, pc: 0x4000 };
        assert_eq!(d.classify(0, &exit), DebugEvent::HwBreakpoint { addr: 0x4000 });
    }
}
