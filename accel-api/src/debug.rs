//! Guest-debug types of the contract: watchpoints and their kinds, a debug pool's capacity, what a
//! debug exit means once matched, and what a pool has programmed for a vCPU. The pool itself and
//! the debug-register encodings are in the backend kit (`accel-kit`).

use abi_stable::StableAbi;

/// `BRK #0`, the instruction a software breakpoint plants.
pub const BRK_INSN: u32 = 0xd420_0000;

/// The most breakpoints or watchpoints the architecture defines (BRPs/WRPs are 4-bit fields).
pub const MAX_DEBUG_REGS: usize = 16;

crate::numbered! {
    /// What a watchpoint watches, with the DBGWCR.LSC encoding.
    #[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct WatchKind(u32) {
        /// Loads.
        READ = 1 => "read",
        /// Stores.
        WRITE = 2 => "write",
        /// Loads and stores.
        ACCESS = 3 => "access",
    }
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
