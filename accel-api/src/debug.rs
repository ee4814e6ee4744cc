//! Guest debug: the debug-register encodings, the per-VM debug pool (hardware breakpoints and
//! watchpoints up to the probed capacity, software breakpoints with their saved instructions and
//! use counts, per-vCPU single-step), and the matching of debug exits against the pool.
//!
//! Encodings follow the Arm ARM (D2.8 breakpoints, D2.9 watchpoints; `DBGBCR<n>_EL1`,
//! `DBGBVR<n>_EL1`, `DBGWCR<n>_EL1`, `DBGWVR<n>_EL1`), as QEMU's `kvm64.c` programs them: breakpoints
//! unlinked with PMC = 0b11 and BAS = 0b1111, watchpoints with PAC = 0b11 and LSC by kind.

use std::collections::{BTreeMap, BTreeSet};

use abi_stable::StableAbi;

use crate::{
    error::{AccelError, ErrorKind, Result},
    exception::ec,
};

/// `BRK #0`, the instruction a software breakpoint plants.
pub const BRK_INSN: u32 = 0xd420_0000;

/// The most breakpoints or watchpoints the architecture defines (BRPs/WRPs are 4-bit fields).
pub const MAX_DEBUG_REGS: usize = 16;

/// What a watchpoint watches, with the DBGWCR.LSC encoding.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchKind(pub u32);

impl WatchKind {
    /// Loads.
    pub const READ: Self = Self(1);
    /// Stores.
    pub const WRITE: Self = Self(2);
    /// Loads and stores.
    pub const ACCESS: Self = Self(3);

    /// A lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::READ => "read",
            Self::WRITE => "write",
            Self::ACCESS => "access",
            _ => "unknown",
        }
    }
}

/// Sign-extends a virtual address from bit 52, as DBGBVR/DBGWVR hold it.
pub fn sign_extend_va(addr: u64) -> u64 {
    (((addr << 11) as i64) >> 11) as u64
}

/// `DBGBCR<n>_EL1` for an unlinked address breakpoint matching at EL0 and EL1: E = 1, PMC = 0b11,
/// BAS = 0b1111.
pub const fn breakpoint_control() -> u64 {
    1 | (0b11 << 1) | (0b1111 << 5)
}

/// `DBGBVR<n>_EL1` for a breakpoint at `addr`, which must be word-aligned.
pub fn breakpoint_value(addr: u64) -> Result<u64> {
    if addr & 3 != 0 {
        return Err(AccelError::invalid(format!(
            "a breakpoint address must be 4-byte aligned; {addr:#x} is not"
        )));
    }
    Ok(sign_extend_va(addr))
}

/// `DBGWCR<n>_EL1` and `DBGWVR<n>_EL1` for a watchpoint of `len` bytes at `addr`.
///
/// - Up to 8 bytes inside one doubleword: BAS selects the bytes (MASK = 0).
/// - A power-of-two range of 16 bytes to 2 GiB whose base is aligned to its size: MASK gives the
///   size and BAS = 0xff.
///
/// Anything else is refused: the watch would be wider or narrower than asked.
pub fn watchpoint_registers(addr: u64, len: u64, kind: WatchKind) -> Result<(u64, u64)> {
    if !(1..=3).contains(&kind.0) {
        return Err(AccelError::invalid(format!("watchpoint kind {} is not read, write or access", kind.0)));
    }
    let base = 1 | (0b11 << 1) | (u64::from(kind.0) << 3);
    let offset = addr & 7;
    if (1..=8).contains(&len) && offset + len <= 8 {
        let bas = ((1u64 << len) - 1) << offset;
        return Ok((base | bas << 5, sign_extend_va(addr & !7)));
    }
    if len.is_power_of_two() && (16..=1 << 31).contains(&len) && addr % len == 0 {
        let mask = u64::from(len.trailing_zeros());
        return Ok((base | 0xff << 5 | mask << 24, sign_extend_va(addr)));
    }
    Err(AccelError::invalid(format!(
        "a {len}-byte watchpoint at {addr:#x} cannot be exact: a watchpoint covers 1 to 8 bytes within one \
         aligned doubleword, or a power-of-two range of 16 bytes or more aligned to its size"
    )))
}

/// Splits `len` bytes at `addr` into ranges that one watchpoint register each watches exactly
/// (see [`watchpoint_registers`]), in address order and as few as a greedy cover gives: the
/// largest aligned power-of-two range of 16 bytes or more that fits, else the bytes up to the end
/// of the doubleword. `None` for an empty or wrapping range, or one that needs more than
/// [`MAX_DEBUG_REGS`] registers. A 12-byte range at an odd address, say, becomes two: the rest of
/// its first doubleword and the start of the next.
pub fn watch_pieces(addr: u64, len: u64) -> Option<Vec<(u64, u64)>> {
    let end = addr.checked_add(len).filter(|_| len > 0)?;
    let mut pieces = Vec::new();
    let mut at = addr;
    while at < end {
        let left = end - at;
        let masked = (4..=31).rev().map(|bits| 1u64 << bits).find(|size| *size <= left && at % size == 0);
        let size = masked.unwrap_or_else(|| (8 - (at & 7)).min(left));
        pieces.push((at, size));
        if pieces.len() > MAX_DEBUG_REGS {
            return None;
        }
        at += size;
    }
    Some(pieces)
}

/// A hardware watchpoint in the pool.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watchpoint {
    /// The first watched byte.
    pub addr: u64,
    /// The number of bytes watched.
    pub len: u64,
    /// What is watched.
    pub kind: WatchKind,
}

impl Watchpoint {
    /// True when the access at `addr` touches the watched bytes.
    pub fn covers(&self, addr: u64) -> bool {
        addr >= self.addr && addr - self.addr < self.len
    }
}

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

/// How many hardware debug registers a pool can use.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DebugCapacity {
    /// Hardware breakpoints.
    pub breakpoints: u32,
    /// Hardware watchpoints.
    pub watchpoints: u32,
}

/// What a debug exit means, after matching against the pool. It crosses the boundary as a
/// [`DebugEventRecord`](crate::abi::DebugEventRecord).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugEvent {
    /// A host hardware breakpoint at this address.
    HwBreakpoint {
        /// Its address.
        addr: u64,
    },
    /// A host software breakpoint at this address.
    SwBreakpoint {
        /// Its address.
        addr: u64,
    },
    /// A host watchpoint was hit before the access completed.
    Watchpoint {
        /// The watchpoint.
        watch: Watchpoint,
        /// The address the guest accessed (FAR).
        accessed: u64,
    },
    /// A single step the host asked for completed.
    Step,
    /// The exception is the guest's own (its BRK, or a debug event the host did not set up):
    /// deliver it to the guest.
    Guest,
    /// An event kind this side of the boundary does not know (from a newer plugin).
    Unknown {
        /// The event kind's number.
        kind: u32,
        /// Its arguments, uninterpreted.
        args: [u64; 4],
    },
}

/// The debug registers and control flags for a vCPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DebugSetup {
    /// Trap BRK instructions (software breakpoints are in use).
    pub sw_breakpoints: bool,
    /// Use the hardware breakpoint and watchpoint registers below.
    pub hardware: bool,
    /// Single-step this vCPU.
    pub single_step: bool,
    /// `DBGBCR<n>_EL1`.
    pub bcr: [u64; MAX_DEBUG_REGS],
    /// `DBGBVR<n>_EL1`.
    pub bvr: [u64; MAX_DEBUG_REGS],
    /// `DBGWCR<n>_EL1`.
    pub wcr: [u64; MAX_DEBUG_REGS],
    /// `DBGWVR<n>_EL1`.
    pub wvr: [u64; MAX_DEBUG_REGS],
}

impl DebugSetup {
    /// True when anything is enabled.
    pub fn active(&self) -> bool {
        self.sw_breakpoints || self.hardware || self.single_step
    }
}

/// What a debug pool has programmed for one vCPU, for a person to read (`monitor debug-pool`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DebugProgram {
    /// The debug registers and flags the vCPU runs with.
    pub setup: DebugSetup,
    /// The addresses of the software breakpoints (shared by every vCPU).
    pub sw_breakpoints: Vec<u64>,
}

impl DebugProgram {
    /// The registers in use, by their Arm ARM ids: `DBGBCR<n>`/`DBGBVR<n>` of each enabled
    /// breakpoint and `DBGWCR<n>`/`DBGWVR<n>` of each enabled watchpoint.
    pub fn registers(&self) -> Vec<crate::RegValue> {
        use crate::sysreg::{dbgbcr, dbgbvr, dbgwcr, dbgwvr};
        let mut out = Vec::new();
        for n in 0..MAX_DEBUG_REGS {
            if self.setup.bcr[n] & 1 != 0 {
                out.push(crate::RegValue { id: dbgbcr(n as u8), value: self.setup.bcr[n] });
                out.push(crate::RegValue { id: dbgbvr(n as u8), value: self.setup.bvr[n] });
            }
        }
        for n in 0..MAX_DEBUG_REGS {
            if self.setup.wcr[n] & 1 != 0 {
                out.push(crate::RegValue { id: dbgwcr(n as u8), value: self.setup.wcr[n] });
                out.push(crate::RegValue { id: dbgwvr(n as u8), value: self.setup.wvr[n] });
            }
        }
        out
    }
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

/// The syndrome to give the guest for its own debug exception, taken from `pstate`: KVM reports
/// the exception as taken from a lower EL (to EL2); to EL1 from EL1 it is the current-EL class.
pub fn guest_syndrome(esr: u64, pstate: u64) -> u64 {
    let from_el1 = pstate & 0b1_1111 != 0 && pstate & (1 << 4) == 0;
    let ec = crate::exception::esr_ec(esr);
    let ec = match ec {
        ec::BREAKPOINT_LOWER | ec::SOFTWARE_STEP_LOWER | ec::WATCHPOINT_LOWER if from_el1 => ec + 1,
        other => other,
    };
    (esr & !(0x3f << 26)) | u64::from(ec) << 26
}

/// Enters the guest's EL1 vector for a debug exception the host does not own (the guest's own
/// BRK, or a debug event the host did not set up), as the guest would have taken it: ESR_EL1 with
/// the class for the EL it came from, FAR_EL1 for a watchpoint, ELR_EL1 = the PC of the exit, and
/// the PC at the vector. Updates `core` and returns the system registers to write.
pub fn guest_debug_entry(
    core: &mut crate::CoreRegs,
    vbar: u64,
    exit: &crate::DebugExit,
) -> Vec<crate::RegValue> {
    use crate::exception::{enter_el1, esr_ec, Exception, ExceptionType};
    let esr = guest_syndrome(exit.esr, core.pstate);
    let is_watchpoint = matches!(esr_ec(esr), ec::WATCHPOINT_LOWER | ec::WATCHPOINT_CURRENT);
    let exception = Exception {
        kind: ExceptionType::Synchronous,
        esr,
        far: is_watchpoint.then_some(exit.far),
        return_address: exit.pc,
    };
    enter_el1(core, vbar, &exception)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breakpoint_encodings() {
        assert_eq!(breakpoint_control(), 0x1e7);
        assert_eq!(breakpoint_value(0x4000_1000), Ok(0x4000_1000));
        assert_eq!(breakpoint_value(0x0010_0000_0000_0000), Ok(0xfff0_0000_0000_0000), "bit 52 sign-extends");
        assert!(breakpoint_value(0x4000_1002).is_err());
    }

    #[test]
    fn watchpoints_inside_a_doubleword_use_bas() {
        let (wcr, wvr) = watchpoint_registers(0x4000_0003, 4, WatchKind::WRITE).unwrap();
        assert_eq!(wvr, 0x4000_0000);
        assert_eq!((wcr >> 5) & 0xff, 0b0111_1000, "bytes 3..7");
        assert_eq!((wcr >> 3) & 3, 2, "LSC store");
        assert_eq!(wcr & 7, 0b111, "E and PAC");
        assert_eq!((wcr >> 24) & 0x1f, 0);
        let (wcr, _) = watchpoint_registers(0x4000_0000, 8, WatchKind::ACCESS).unwrap();
        assert_eq!((wcr >> 5) & 0xff, 0xff);
        assert!(watchpoint_registers(0x4000_0006, 4, WatchKind::READ).is_err(), "crosses a doubleword");
        assert!(watchpoint_registers(0x4000_0000, 0, WatchKind::READ).is_err());
    }

    #[test]
    fn larger_watchpoints_need_aligned_powers_of_two() {
        let (wcr, wvr) = watchpoint_registers(0x4000_0100, 256, WatchKind::READ).unwrap();
        assert_eq!(wvr, 0x4000_0100);
        assert_eq!((wcr >> 24) & 0x1f, 8, "MASK = log2(256)");
        assert_eq!((wcr >> 5) & 0xff, 0xff);
        assert!(watchpoint_registers(0x4000_0080, 256, WatchKind::READ).is_err(), "unaligned base");
        assert!(watchpoint_registers(0x4000_0000, 24, WatchKind::READ).is_err(), "not a power of two");
        assert!(watchpoint_registers(0x4000_0000, 16, WatchKind(0)).is_err(), "no kind");
    }

    #[test]
    fn watch_pieces_cover_exactly_and_each_fits_one_register() {
        assert_eq!(watch_pieces(0x1003, 12), Some(vec![(0x1003, 5), (0x1008, 7)]));
        assert_eq!(watch_pieces(0x1000, 8), Some(vec![(0x1000, 8)]));
        assert_eq!(watch_pieces(0x1000, 24), Some(vec![(0x1000, 16), (0x1010, 8)]));
        assert_eq!(
            watch_pieces(0x1004, 64),
            Some(vec![(0x1004, 4), (0x1008, 8), (0x1010, 16), (0x1020, 32), (0x1040, 4)])
        );
        assert_eq!(watch_pieces(0x1000, 0), None);
        assert_eq!(watch_pieces(u64::MAX, 2), None);
        assert_eq!(watch_pieces(0x1001, 16 * 8 + 7).map(|p| p.len()), Some(6));
        assert_eq!(watch_pieces(0, 1 << 36), None, "32 pieces of 2 GiB: more than there are registers");
        for (addr, len) in [(0x4000_0001u64, 3u64), (0x77, 100), (0x1000, 0x1000), (0xfff9, 30)] {
            let pieces = watch_pieces(addr, len).unwrap();
            let mut at = addr;
            for (a, l) in &pieces {
                assert_eq!(*a, at, "contiguous");
                assert!(
                    watchpoint_registers(*a, *l, WatchKind::WRITE).is_ok(),
                    "{a:#x}+{l} fits one register"
                );
                at += l;
            }
            assert_eq!(at, addr + len, "covers exactly");
        }
    }

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

    #[test]
    fn guest_syndromes_name_the_current_el() {
        assert_eq!(guest_syndrome(0x30 << 26 | 1 << 25, 0x3c5) >> 26, 0x31);
        assert_eq!(guest_syndrome(0x30 << 26, 0x0) >> 26, 0x30, "from EL0 stays lower-EL");
        assert_eq!(guest_syndrome(0x3c << 26 | 5, 0x3c5), 0x3c << 26 | 5, "BRK has one class");
    }
}
