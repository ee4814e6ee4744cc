//! A VM's guest-debug pool: breakpoints, watchpoints and single-step for all its vCPUs.

use std::sync::Arc;

use accel_api_macros::interface;

use crate::{
    abi::records::{DebugEventRecord, DebugProgramRecord},
    debug::{DebugCapacity, DebugEvent, DebugProgram, Watchpoint},
    error::Result,
    exit::DebugExit,
};

/// A VM's guest-debug pool, shared by its vCPUs: a change reaches every vCPU (those created later
/// too) before it next enters the guest.
#[interface(abi = DebugOps, boxed = DebugBox, client = Debug, bounds(Send + Sync), holds = Arc<dyn BackendDebug>)]
pub trait BackendDebug: Send + Sync + 'static {
    /// How many hardware breakpoints and watchpoints the pool can hold.
    fn capacity(&self) -> DebugCapacity;

    /// Adds a hardware breakpoint at a word-aligned virtual address; refuses one more than the
    /// capacity as [`ErrorKind::NO_RESOURCE`](crate::ErrorKind::NO_RESOURCE).
    fn insert_hw_breakpoint(&self, addr: u64) -> Result<()>;

    /// Removes a hardware breakpoint.
    fn remove_hw_breakpoint(&self, addr: u64) -> Result<()>;

    /// Adds a watchpoint that covers exactly the range asked, or refuses it.
    fn insert_watchpoint(&self, watch: &Watchpoint) -> Result<()>;

    /// Removes a watchpoint.
    fn remove_watchpoint(&self, watch: &Watchpoint) -> Result<()>;

    /// Plants `BRK #0` at virtual address `va` (guest physical `pa`), saving the instruction;
    /// later inserts at the same address count uses.
    fn insert_sw_breakpoint(&self, va: u64, pa: u64) -> Result<()>;

    /// Drops a use of the software breakpoint at `va`, restoring the instruction on the last.
    fn remove_sw_breakpoint(&self, va: u64) -> Result<()>;

    /// Turns single-step of vCPU `index` on or off.
    fn set_single_step(&self, index: u32, on: bool) -> Result<()>;

    /// Removes everything, restoring every software breakpoint's instruction.
    fn remove_all(&self) -> Result<()>;

    /// Matches a debug exit of vCPU `index` against the pool.
    #[abi(ret = DebugEventRecord, or_else = |_| DebugEvent::Guest, last)]
    fn classify(&self, index: u32, exit: &DebugExit) -> DebugEvent;

    /// What the pool has programmed for vCPU `index`, for a person to read (ABI 2.2).
    #[abi(op = "debug program", ret = DebugProgramRecord, since = "2.2", what = "reading the debug pool's registers")]
    fn program(&self, index: u32) -> Result<DebugProgram> {
        let _ = index;
        Err(crate::AccelError::unsupported("this backend cannot show its debug pool's registers"))
    }
}
