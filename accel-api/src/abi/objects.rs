//! The objects a plugin hands to a host: `#[sabi_trait]` interfaces for the accelerator, the VM,
//! the vCPU, the kicker and the optional extensions, and the boxes they cross the boundary in.
//!
//! Each interface's methods up to its `#[sabi(last_prefix_field)]` are those of ABI 2.0 and never
//! change. A method added in a later 2.x version goes after them, with a default body: a host
//! calling it on an older plugin's object runs the default, which reports `unsupported` (or
//! `None` for an extension), because the older plugin's table does not have the method.

// The `#[sabi_trait]` expansion places trait impls inside a generated module.
#![allow(non_local_definitions)]

use abi_stable::{
    sabi_trait,
    std_types::{RBox, RErr, ROption, RResult, RSlice, RVec},
};

use super::records::{
    DebugEventRecord, DebugProgramRecord, ExitRecord, GicConfigRecord, MemoryRegionRecord, ProbeRecord,
    VcpuConfigRecord, VmConfigRecord,
};
use crate::{
    debug::{DebugCapacity, Watchpoint},
    error::AccelError,
    events::{MpState, VcpuEvents},
    exit::DebugExit,
    irq::IrqLine,
    regs::{CoreRegs, FpRegs, PutLevel, SyncCounters},
    sve::SveRegs,
    sysreg::{RegClass, RegValue},
};

/// An accelerator opened by a plugin: the factory of VMs.
#[sabi_trait]
pub trait AccelOps: Send + Sync {
    /// Probes the host again, through the opened accelerator.
    fn probe(&self) -> ProbeRecord;

    /// Creates a VM.
    #[sabi(last_prefix_field)]
    fn create_vm(&self, config: &VmConfigRecord) -> RResult<VmBox, AccelError>;
}

/// A virtual machine: guest memory, vCPUs, and its optional extensions.
#[sabi_trait]
pub trait VmOps: Send + Sync {
    /// Maps a host memory range into the guest physical address space; returns its slot.
    ///
    /// # Safety
    /// The host range must be memory of the calling process that stays mapped until the region
    /// is removed or the VM is dropped; the guest may write it whenever a vCPU runs.
    unsafe fn add_memory(&self, region: &MemoryRegionRecord) -> RResult<u32, AccelError>;

    /// Unmaps the region in `slot`.
    fn remove_memory(&self, slot: u32) -> RResult<(), AccelError>;

    /// Creates and initialises a vCPU.
    fn create_vcpu(&self, config: &VcpuConfigRecord) -> RResult<VcpuBox, AccelError>;

    /// The in-kernel interrupt controller, when the backend has one.
    fn gic(&self) -> ROption<GicBox>;

    /// The guest-debug pool, when the backend supports guest debug.
    fn debug(&self) -> ROption<DebugBox>;

    /// Dirty-page logging, when the backend supports it.
    fn dirty_log(&self) -> ROption<DirtyLogBox>;

    /// irqfd and ioeventfd on Linux eventfds, when the backend runs on Linux and offers them.
    #[sabi(last_prefix_field)]
    fn linux_eventfd(&self) -> ROption<EventFdBox>;
}

/// A virtual CPU. Driven from one thread at a time.
#[sabi_trait]
pub trait VcpuOps: Send {
    /// The vCPU's index in its VM.
    fn index(&self) -> u32;

    /// Reads the core registers.
    fn get_core(&mut self) -> RResult<CoreRegs, AccelError>;

    /// Writes the core registers that differ from the last get (all at [`PutLevel::FULL`], or
    /// when no get came first).
    fn put_core(&mut self, regs: &CoreRegs, level: PutLevel) -> RResult<(), AccelError>;

    /// Reads the FP/SIMD registers.
    fn get_fp(&mut self) -> RResult<FpRegs, AccelError>;

    /// Writes the FP/SIMD registers that differ from the last get, as `put_core`.
    fn put_fp(&mut self, regs: &FpRegs, level: PutLevel) -> RResult<(), AccelError>;

    /// Reads every register of a class, in a stable order.
    fn get_regs(&mut self, class: RegClass) -> RResult<RVec<RegValue>, AccelError>;

    /// Writes the given registers that may be written at `level` and differ from the last get.
    fn put_regs(&mut self, values: RSlice<'_, RegValue>, level: PutLevel) -> RResult<(), AccelError>;

    /// Reads the multiprocessing state.
    fn get_mp_state(&mut self) -> RResult<MpState, AccelError>;

    /// Sets the multiprocessing state.
    fn set_mp_state(&mut self, state: MpState) -> RResult<(), AccelError>;

    /// A handle that another thread uses to make `run` return an interrupted exit.
    fn kicker(&self) -> KickerBox;

    /// How many register reads and writes, and guest entries, the vCPU has made so far.
    fn counters(&self) -> SyncCounters;

    /// Supplies the value of the MMIO read reported by the last exit.
    fn set_mmio_read_data(&mut self, value: u64) -> RResult<(), AccelError>;

    /// Runs the guest until an exit.
    fn run(&mut self) -> RResult<ExitRecord, AccelError>;

    /// The SVE registers, when SVE is enabled on this vCPU.
    fn sve(&mut self) -> ROption<SveBox<'_>>;

    /// Pending events (SError, external data abort), when the backend can inject them.
    #[sabi(last_prefix_field)]
    fn events(&mut self) -> ROption<EventsBox<'_>>;
}

/// The in-kernel GICv3 of a VM.
#[sabi_trait]
pub trait GicOps: Send + Sync {
    /// Creates the GIC; before the first vCPU is created.
    fn create(&self, config: &GicConfigRecord) -> RResult<(), AccelError>;

    /// Drives an interrupt line to `level`.
    #[sabi(last_prefix_field)]
    fn set_irq(&self, line: IrqLine, level: bool) -> RResult<(), AccelError>;
}

/// The guest-debug pool of a VM, shared by its vCPUs.
#[sabi_trait]
pub trait DebugOps: Send + Sync {
    /// How many hardware breakpoints and watchpoints the pool can hold.
    fn capacity(&self) -> DebugCapacity;

    /// Adds a hardware breakpoint at a (word-aligned) virtual address.
    fn insert_hw_breakpoint(&self, addr: u64) -> RResult<(), AccelError>;

    /// Removes a hardware breakpoint.
    fn remove_hw_breakpoint(&self, addr: u64) -> RResult<(), AccelError>;

    /// Adds a watchpoint; an inexact range is refused.
    fn insert_watchpoint(&self, watch: &Watchpoint) -> RResult<(), AccelError>;

    /// Removes a watchpoint.
    fn remove_watchpoint(&self, watch: &Watchpoint) -> RResult<(), AccelError>;

    /// Plants `BRK #0` at virtual address `va`, whose instruction is at guest physical `pa`.
    fn insert_sw_breakpoint(&self, va: u64, pa: u64) -> RResult<(), AccelError>;

    /// Drops a use of the software breakpoint at `va`.
    fn remove_sw_breakpoint(&self, va: u64) -> RResult<(), AccelError>;

    /// Turns single-step of vCPU `index` on or off.
    fn set_single_step(&self, index: u32, on: bool) -> RResult<(), AccelError>;

    /// Removes everything, restoring every software breakpoint's instruction.
    fn remove_all(&self) -> RResult<(), AccelError>;

    /// Matches a debug exit of vCPU `index` against the pool.
    #[sabi(last_prefix_field)]
    fn classify(&self, index: u32, exit: &DebugExit) -> DebugEventRecord;

    /// What the pool has programmed for vCPU `index` (ABI 2.2).
    fn program(&self, index: u32) -> RResult<DebugProgramRecord, AccelError> {
        let _ = index;
        RErr(AccelError::unsupported(
            "reading the debug pool's registers needs a plugin of accel ABI 2.2 or later",
        ))
    }
}

/// Dirty-page logging of a VM's memory slots.
#[sabi_trait]
pub trait DirtyLogOps: Send + Sync {
    /// Turns logging of `slot` on or off.
    fn set(&self, slot: u32, enabled: bool) -> RResult<(), AccelError>;

    /// The pages of `slot` written since the last call, as a bitmap; clears the log.
    #[sabi(last_prefix_field)]
    fn take(&self, slot: u32) -> RResult<RVec<u64>, AccelError>;
}

/// Linux eventfds wired to the VM: irqfd raises an SPI, ioeventfd completes MMIO writes.
#[sabi_trait]
pub trait EventFdOps: Send + Sync {
    /// Raises SPI `spi` whenever the eventfd `fd` is written.
    fn register_irqfd(&self, fd: i32, spi: u32) -> RResult<(), AccelError>;

    /// Undoes `register_irqfd`.
    fn unregister_irqfd(&self, fd: i32, spi: u32) -> RResult<(), AccelError>;

    /// Completes guest writes of `len` bytes to `addr` (matching `datamatch` if given) in the
    /// backend and signals `fd` instead of exiting.
    fn register_ioeventfd(
        &self,
        fd: i32,
        addr: u64,
        len: u32,
        datamatch: ROption<u64>,
    ) -> RResult<(), AccelError>;

    /// Undoes `register_ioeventfd`.
    #[sabi(last_prefix_field)]
    fn unregister_ioeventfd(
        &self,
        fd: i32,
        addr: u64,
        len: u32,
        datamatch: ROption<u64>,
    ) -> RResult<(), AccelError>;
}

/// The SVE registers of a vCPU.
#[sabi_trait]
pub trait SveOps {
    /// Reads the SVE registers at the vCPU's vector length.
    fn get(&mut self) -> RResult<SveRegs, AccelError>;

    /// Writes the SVE registers that differ from the last get (all at [`PutLevel::FULL`]).
    #[sabi(last_prefix_field)]
    fn put(&mut self, regs: &SveRegs, level: PutLevel) -> RResult<(), AccelError>;
}

/// The pending events of a vCPU.
#[sabi_trait]
pub trait EventsOps {
    /// Reads the pending events.
    fn get(&mut self) -> RResult<VcpuEvents, AccelError>;

    /// Sets the pending events: a pending SError or external data abort is injected.
    #[sabi(last_prefix_field)]
    fn put(&mut self, events: &VcpuEvents) -> RResult<(), AccelError>;
}

/// Kicks a vCPU out of `run` from another thread.
#[sabi_trait]
pub trait KickOps: Send + Sync {
    /// Requests that the vCPU's current or next `run` return an interrupted exit.
    #[sabi(last_prefix_field)]
    fn kick(&self);
}

/// An accelerator object as it crosses the boundary.
pub type AccelBox = AccelOps_TO<'static, RBox<()>>;
/// A VM object as it crosses the boundary.
pub type VmBox = VmOps_TO<'static, RBox<()>>;
/// A vCPU object as it crosses the boundary.
pub type VcpuBox = VcpuOps_TO<'static, RBox<()>>;
/// A GIC as it crosses the boundary.
pub type GicBox = GicOps_TO<'static, RBox<()>>;
/// A debug pool as it crosses the boundary.
pub type DebugBox = DebugOps_TO<'static, RBox<()>>;
/// Dirty logging as it crosses the boundary.
pub type DirtyLogBox = DirtyLogOps_TO<'static, RBox<()>>;
/// Linux eventfds as they cross the boundary.
pub type EventFdBox = EventFdOps_TO<'static, RBox<()>>;
/// A vCPU's SVE registers, borrowed from the vCPU.
pub type SveBox<'a> = SveOps_TO<'a, RBox<()>>;
/// A vCPU's events, borrowed from the vCPU.
pub type EventsBox<'a> = EventsOps_TO<'a, RBox<()>>;
/// A kicker as it crosses the boundary.
pub type KickerBox = KickOps_TO<'static, RBox<()>>;
