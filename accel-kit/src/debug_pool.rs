//! The per-VM debug pool: hardware breakpoints and watchpoints up to the probed capacity, software
//! breakpoints with their saved instructions and use counts, per-vCPU single-step, and the
//! matching of debug exits against it.

use std::collections::{BTreeMap, BTreeSet};

use accel_api::{
    debug::{DebugEvent, DebugSetup, Watchpoint, BRK_INSN, MAX_DEBUG_REGS},
    AccelError, ErrorKind, Result,
};

use crate::{
    debug_regs::{breakpoint_control, breakpoint_value, sign_extend_va, watchpoint_registers},
    exception::ec,
};

/// A software breakpoint: the instruction it replaced and how many inserts share it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwBreakpoint {
    /// The guest physical address of the instruction.
    pub pa: u64,
    /// The original instruction.
    pub saved: u32,
    /// Inserts not yet removed.
    pub uses: u32,
}

/// The debug state of one VM.
#[derive(Clone, Debug, Default)]
pub struct DebugPool {
    max_breakpoints: usize,
    max_watchpoints: usize,
    breakpoints: Vec<u64>,
    watchpoints: Vec<Watchpoint>,
    sw: BTreeMap<u64, SwBreakpoint>,
    stepping: BTreeSet<u32>,
    generation: u64,
}

impl DebugPool {
    /// An empty pool with the given hardware capacity.
    pub fn new(max_breakpoints: u32, max_watchpoints: u32) -> Self {
        Self {
            max_breakpoints: (max_breakpoints as usize).min(MAX_DEBUG_REGS),
            max_watchpoints: (max_watchpoints as usize).min(MAX_DEBUG_REGS),
            ..Default::default()
        }
    }

    /// Increases with every change; vCPUs compare it to know when to reprogram.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn changed(&mut self) {
        self.generation += 1;
    }

    /// Adds a hardware breakpoint.
    pub fn insert_hw_breakpoint(&mut self, addr: u64) -> Result<()> {
        breakpoint_value(addr)?;
        if self.breakpoints.len() >= self.max_breakpoints {
            return Err(AccelError::new(
                ErrorKind::NO_RESOURCE,
                format!("no free hardware breakpoint: all {} are in use", self.max_breakpoints),
            ));
        }
        self.breakpoints.push(addr);
        self.changed();
        Ok(())
    }

    /// Removes a hardware breakpoint.
    pub fn remove_hw_breakpoint(&mut self, addr: u64) -> Result<()> {
        let pos = self.breakpoints.iter().position(|a| *a == addr).ok_or_else(|| {
            AccelError::new(ErrorKind::NOT_FOUND, format!("no hardware breakpoint at {addr:#x}"))
        })?;
        self.breakpoints.remove(pos);
        self.changed();
        Ok(())
    }

    /// Adds a watchpoint.
    pub fn insert_watchpoint(&mut self, watch: Watchpoint) -> Result<()> {
        watchpoint_registers(watch.addr, watch.len, watch.kind)?;
        if self.watchpoints.len() >= self.max_watchpoints {
            return Err(AccelError::new(
                ErrorKind::NO_RESOURCE,
                format!("no free hardware watchpoint: all {} are in use", self.max_watchpoints),
            ));
        }
        self.watchpoints.push(watch);
        self.changed();
        Ok(())
    }

    /// Removes a watchpoint.
    pub fn remove_watchpoint(&mut self, watch: Watchpoint) -> Result<()> {
        let pos = self.watchpoints.iter().position(|w| *w == watch).ok_or_else(|| {
            AccelError::new(
                ErrorKind::NOT_FOUND,
                format!("no {} watchpoint of {} bytes at {:#x}", watch.kind.name(), watch.len, watch.addr),
            )
        })?;
        self.watchpoints.remove(pos);
        self.changed();
        Ok(())
    }

    /// Records a software breakpoint at virtual address `va` (physical `pa`) whose memory holds
    /// `current`. Returns true when the caller must write [`BRK_INSN`] at `pa` (the first use).
    pub fn insert_sw_breakpoint(&mut self, va: u64, pa: u64, current: u32) -> Result<bool> {
        if va & 3 != 0 {
            return Err(AccelError::invalid(format!(
                "a breakpoint address must be 4-byte aligned; {va:#x} is not"
            )));
        }
        if let Some(bp) = self.sw.get_mut(&va) {
            bp.uses += 1;
            return Ok(false);
        }
        if current == BRK_INSN {
            return Err(AccelError::invalid(format!(
                "the instruction at {va:#x} is already a BRK #0 that the host did not plant"
            )));
        }
        self.sw.insert(va, SwBreakpoint { pa, saved: current, uses: 1 });
        self.changed();
        Ok(true)
    }

    /// Drops one use of the software breakpoint at `va`, whose memory now holds `current`.
    /// Returns the instruction to write back at the returned physical address when it was the
    /// last use. Refuses (and keeps the breakpoint) if memory no longer holds the BRK.
    pub fn remove_sw_breakpoint(&mut self, va: u64, current: u32) -> Result<Option<(u64, u32)>> {
        let bp = *self.sw.get(&va).ok_or_else(|| {
            AccelError::new(ErrorKind::NOT_FOUND, format!("no software breakpoint at {va:#x}"))
        })?;
        if bp.uses > 1 {
            if let Some(b) = self.sw.get_mut(&va) {
                b.uses -= 1;
            }
            return Ok(None);
        }
        if current != BRK_INSN {
            return Err(AccelError::new(
                ErrorKind::BAD_STATE,
                format!(
                    "memory at {va:#x} holds {current:#010x}, not the BRK the host planted; the original instruction \
                     {:#010x} is not restored",
                    bp.saved
                ),
            ));
        }
        self.sw.remove(&va);
        self.changed();
        Ok(Some((bp.pa, bp.saved)))
    }

    /// The software breakpoint at `va`, if any.
    pub fn sw_breakpoint(&self, va: u64) -> Option<SwBreakpoint> {
        self.sw.get(&va).copied()
    }

    /// Turns single-step of vCPU `index` on or off.
    pub fn set_single_step(&mut self, index: u32, on: bool) {
        let was = self.stepping.contains(&index);
        if on {
            self.stepping.insert(index);
        } else {
            self.stepping.remove(&index);
        }
        if was != on {
            self.changed();
        }
    }

    /// Empties the pool; returns the software breakpoints to restore, as (physical address,
    /// saved instruction).
    pub fn remove_all(&mut self) -> Vec<(u64, u32)> {
        let restore = self.sw.values().map(|b| (b.pa, b.saved)).collect();
        self.breakpoints.clear();
        self.watchpoints.clear();
        self.sw.clear();
        self.stepping.clear();
        self.changed();
        restore
    }

    /// The addresses of the software breakpoints, in order.
    pub fn sw_addresses(&self) -> Vec<u64> {
        self.sw.keys().copied().collect()
    }

    /// The hardware breakpoints, watchpoints and software breakpoints in use.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.breakpoints.len(), self.watchpoints.len(), self.sw.len())
    }

    /// The debug set-up vCPU `index` needs.
    pub fn setup_for(&self, index: u32) -> DebugSetup {
        let mut s = DebugSetup {
            sw_breakpoints: !self.sw.is_empty(),
            hardware: !self.breakpoints.is_empty() || !self.watchpoints.is_empty(),
            single_step: self.stepping.contains(&index),
            ..Default::default()
        };
        for (i, addr) in self.breakpoints.iter().enumerate() {
            s.bcr[i] = breakpoint_control();
            s.bvr[i] = sign_extend_va(*addr);
        }
        for (i, w) in self.watchpoints.iter().enumerate() {
            // Validated on insert.
            if let Ok((wcr, wvr)) = watchpoint_registers(w.addr, w.len, w.kind) {
                s.wcr[i] = wcr;
                s.wvr[i] = wvr;
            }
        }
        s
    }

    /// Matches a debug exit of vCPU `index` (syndrome `esr`, fault address `far`, PC `pc`).
    pub fn classify(&self, index: u32, esr: u64, far: u64, pc: u64) -> DebugEvent {
        let ec = crate::exception::esr_ec(esr);
        match ec {
            ec::BREAKPOINT_LOWER | ec::BREAKPOINT_CURRENT if self.breakpoints.contains(&pc) => {
                DebugEvent::HwBreakpoint { addr: pc }
            }
            ec::SOFTWARE_STEP_LOWER | ec::SOFTWARE_STEP_CURRENT if self.stepping.contains(&index) => {
                DebugEvent::Step
            }
            ec::WATCHPOINT_LOWER | ec::WATCHPOINT_CURRENT => {
                // FAR is the address the access used, which may lie before the watched bytes
                // within the doubleword they share. Comparing doublewords rather than forming the
                // end of FAR's one keeps the top of the address space from overflowing.
                match self.watchpoints.iter().find(|w| w.covers(far) || far & !7 == w.addr & !7) {
                    Some(w) => DebugEvent::Watchpoint { watch: *w, accessed: far },
                    None => DebugEvent::Guest,
                }
            }
            ec::BRK if self.sw.contains_key(&pc) => DebugEvent::SwBreakpoint { addr: pc },
            _ => DebugEvent::Guest,
        }
    }
}

#[cfg(test)]
mod tests {
    use accel_api::debug::WatchKind;

    use super::*;

    #[test]
    fn pool_capacity_and_removal_errors() {
        let mut pool = DebugPool::new(2, 1);
        pool.insert_hw_breakpoint(0x1000).unwrap();
        pool.insert_hw_breakpoint(0x2000).unwrap();
        assert_eq!(pool.insert_hw_breakpoint(0x3000).unwrap_err().kind, ErrorKind::NO_RESOURCE);
        assert_eq!(pool.remove_hw_breakpoint(0x3000).unwrap_err().kind, ErrorKind::NOT_FOUND);
        let w = Watchpoint { addr: 0x5000, len: 8, kind: WatchKind::WRITE };
        pool.insert_watchpoint(w).unwrap();
        assert_eq!(pool.insert_watchpoint(w).unwrap_err().kind, ErrorKind::NO_RESOURCE);
        let s = pool.setup_for(0);
        assert!(s.hardware && !s.sw_breakpoints && !s.single_step);
        assert_eq!(s.bvr[1], 0x2000);
        assert_eq!(s.bcr[2], 0);
        pool.remove_watchpoint(w).unwrap();
        assert_eq!(pool.remove_watchpoint(w).unwrap_err().kind, ErrorKind::NOT_FOUND);
    }

    #[test]
    fn software_breakpoints_count_uses_and_check_memory() {
        let mut pool = DebugPool::new(0, 0);
        assert_eq!(pool.insert_sw_breakpoint(0x100, 0x4000_0100, 0xd503_201f), Ok(true));
        assert_eq!(pool.insert_sw_breakpoint(0x100, 0x4000_0100, BRK_INSN), Ok(false), "second use");
        assert_eq!(pool.remove_sw_breakpoint(0x100, BRK_INSN), Ok(None), "one use left");
        let e = pool.remove_sw_breakpoint(0x100, 0x1234_5678).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BAD_STATE, "memory no longer holds the BRK");
        assert_eq!(pool.remove_sw_breakpoint(0x100, BRK_INSN), Ok(Some((0x4000_0100, 0xd503_201f))));
        assert_eq!(pool.remove_sw_breakpoint(0x100, BRK_INSN).unwrap_err().kind, ErrorKind::NOT_FOUND);
        assert!(pool.insert_sw_breakpoint(0x102, 0x102, 0).is_err());
    }

    #[test]
    fn exits_are_classified() {
        let mut pool = DebugPool::new(4, 4);
        pool.insert_hw_breakpoint(0x4000_1000).unwrap();
        pool.insert_watchpoint(Watchpoint { addr: 0x4001_0000, len: 4, kind: WatchKind::WRITE }).unwrap();
        pool.insert_sw_breakpoint(0x4000_2000, 0x4000_2000, 0).unwrap();
        pool.set_single_step(1, true);
        let esr = |ec: u64| ec << 26 | 1 << 25;
        assert_eq!(
            pool.classify(0, esr(0x30), 0, 0x4000_1000),
            DebugEvent::HwBreakpoint { addr: 0x4000_1000 }
        );
        assert_eq!(pool.classify(0, esr(0x30), 0, 0x4000_1004), DebugEvent::Guest);
        assert_eq!(pool.classify(1, esr(0x32), 0, 0), DebugEvent::Step);
        assert_eq!(pool.classify(0, esr(0x32), 0, 0), DebugEvent::Guest, "vCPU 0 is not stepping");
        assert!(matches!(
            pool.classify(0, esr(0x34), 0x4001_0002, 0),
            DebugEvent::Watchpoint { accessed: 0x4001_0002, .. }
        ));
        assert_eq!(pool.classify(0, esr(0x34), 0x4002_0000, 0), DebugEvent::Guest);
        assert_eq!(
            pool.classify(0, esr(0x3c), 0, 0x4000_2000),
            DebugEvent::SwBreakpoint { addr: 0x4000_2000 }
        );
        assert_eq!(pool.classify(0, esr(0x3c) | 7, 0, 0x4000_3000), DebugEvent::Guest, "the guest's own BRK");
        assert_eq!(pool.remove_all(), vec![(0x4000_2000, 0)]);
        assert_eq!(pool.counts(), (0, 0, 0));
    }

    #[test]
    fn watchpoint_exits_at_the_top_of_the_address_space_are_matched() {
        let mut pool = DebugPool::new(0, 2);
        let top = Watchpoint { addr: 0xffff_ffff_ffff_fffc, len: 4, kind: WatchKind::WRITE };
        pool.insert_watchpoint(top).unwrap();
        let esr = 0x34 << 26 | 1 << 25;
        let hit = pool.classify(0, esr, 0xffff_ffff_ffff_fff8, 0);
        assert_eq!(
            hit,
            DebugEvent::Watchpoint { watch: top, accessed: 0xffff_ffff_ffff_fff8 },
            "same doubleword"
        );
        assert_eq!(
            pool.classify(0, esr, u64::MAX, 0),
            DebugEvent::Watchpoint { watch: top, accessed: u64::MAX }
        );
        pool.remove_watchpoint(top).unwrap();
        pool.insert_watchpoint(Watchpoint { addr: 0x1000, len: 8, kind: WatchKind::WRITE }).unwrap();
        assert_eq!(pool.classify(0, esr, u64::MAX, 0), DebugEvent::Guest, "not ours");
    }
}
