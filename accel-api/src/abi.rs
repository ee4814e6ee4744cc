//! The binary interface between a host and a plugin: the root module every plugin exports and the
//! `#[sabi_trait]` objects for the accelerator, the VM and the vCPU.
//!
//! Plugin authors do not implement these traits by hand: they implement [`crate::backend`]'s
//! traits and export them with [`crate::export_plugin!`], which adds panic containment. Hosts use
//! them through [`crate::client`].

// The `#[sabi_trait]` expansion places trait impls inside a generated module.
#![allow(non_local_definitions)]

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, ROption, RResult, RSlice, RStr, RVec},
    StableAbi,
};

use crate::{
    config::{MemoryRegion, ProbeInfo, VcpuConfig, VmConfig},
    debug::{DebugEvent, Watchpoint},
    error::AccelError,
    events::{MpState, VcpuEvents},
    exit::{DebugExit, VcpuExit},
    irq::{GicConfig, IrqLine},
    logging::LogSink,
    regs::{CoreRegs, FpRegs, PutLevel, SyncCounters},
    sve::SveRegs,
    sysreg::{RegClass, RegValue},
};

/// The ABI version of this crate's interface, checked when a plugin loads: a host accepts plugins
/// of the same major version.
///
/// 1.0 is frozen. The sabi traits and the root module keep their methods and fields; later
/// versions extend them only through new trailing fields of prefix types and optional extension
/// objects (as `VmOps::debug`), so that a plugin built against 1.0 keeps loading.
pub const ABI_VERSION: &str = "1.0.0";

/// An accelerator opened by a plugin: the factory of VMs.
#[sabi_trait]
pub trait AccelOps: Send + Sync {
    /// Probes the host again, through the opened accelerator.
    fn probe(&self) -> ProbeInfo;

    /// Creates a VM.
    #[sabi(last_prefix_field)]
    fn create_vm(&self, config: &VmConfig) -> RResult<VmBox, AccelError>;
}

/// A virtual machine: guest memory and vCPUs.
#[sabi_trait]
pub trait VmOps: Send + Sync {
    /// Maps a host memory range into the guest physical address space; returns its slot.
    fn add_memory(&self, region: &MemoryRegion) -> RResult<u32, AccelError>;

    /// Unmaps the region in `slot`.
    fn remove_memory(&self, slot: u32) -> RResult<(), AccelError>;

    /// Turns dirty-page logging of `slot` on or off.
    fn set_dirty_log(&self, slot: u32, enabled: bool) -> RResult<(), AccelError>;

    /// Returns the pages of `slot` written since the last call (bit `n` of word `n / 64` for page
    /// `n`), and clears the log.
    fn take_dirty_log(&self, slot: u32) -> RResult<RVec<u64>, AccelError>;

    /// Creates the in-kernel GICv3. Must come before the first vCPU is created; the backend
    /// finishes its set-up before the first vCPU runs.
    fn create_gic(&self, config: &GicConfig) -> RResult<(), AccelError>;

    /// Drives an interrupt line to `level`.
    fn set_irq(&self, line: IrqLine, level: bool) -> RResult<(), AccelError>;

    /// Raises SPI `spi` whenever the eventfd `fd` is written. The backend keeps its own duplicate
    /// of the descriptor.
    fn register_irqfd(&self, fd: i32, spi: u32) -> RResult<(), AccelError>;

    /// Undoes [`VmOps::register_irqfd`].
    fn unregister_irqfd(&self, fd: i32, spi: u32) -> RResult<(), AccelError>;

    /// Completes guest writes of `len` bytes to `addr` (matching `datamatch` if given) in the
    /// backend and signals the eventfd `fd` instead of exiting.
    fn register_ioeventfd(
        &self,
        fd: i32,
        addr: u64,
        len: u32,
        datamatch: ROption<u64>,
    ) -> RResult<(), AccelError>;

    /// Undoes [`VmOps::register_ioeventfd`].
    fn unregister_ioeventfd(
        &self,
        fd: i32,
        addr: u64,
        len: u32,
        datamatch: ROption<u64>,
    ) -> RResult<(), AccelError>;

    /// The VM's guest-debug pool, when the backend supports guest debug.
    fn debug(&self) -> ROption<DebugBox>;

    /// Creates and initialises a vCPU.
    #[sabi(last_prefix_field)]
    fn create_vcpu(&self, config: &VcpuConfig) -> RResult<VcpuBox, AccelError>;
}

/// A virtual CPU. Driven from one thread at a time.
#[sabi_trait]
pub trait VcpuOps: Send {
    /// The vCPU's index in its VM.
    fn index(&self) -> u32;

    /// Reads the core registers.
    fn get_core(&mut self) -> RResult<CoreRegs, AccelError>;

    /// Writes the core registers that differ from the last get (all of them at [`PutLevel::Full`]
    /// or when no get came first).
    fn put_core(&mut self, regs: &CoreRegs, level: PutLevel) -> RResult<(), AccelError>;

    /// Reads the FP/SIMD registers.
    fn get_fp(&mut self) -> RResult<FpRegs, AccelError>;

    /// Writes the FP/SIMD registers that differ from the last get, as [`VcpuOps::put_core`].
    fn put_fp(&mut self, regs: &FpRegs, level: PutLevel) -> RResult<(), AccelError>;

    /// Reads the SVE registers at the vCPU's vector length. Fails as unsupported when SVE is not
    /// enabled on the vCPU.
    fn get_sve(&mut self) -> RResult<SveRegs, AccelError>;

    /// Writes the SVE registers that differ from the last get (all at [`PutLevel::Full`]).
    fn put_sve(&mut self, regs: &SveRegs, level: PutLevel) -> RResult<(), AccelError>;

    /// Reads every register of a class (system, timer, firmware, CCSIDR, raw), in a stable order.
    fn get_regs(&mut self, class: RegClass) -> RResult<RVec<RegValue>, AccelError>;

    /// Writes the given registers that may be written at `level` and differ from the last get
    /// (all of them at [`PutLevel::Full`]). A refused write names the register and its errno.
    fn put_regs(&mut self, values: RSlice<'_, RegValue>, level: PutLevel) -> RResult<(), AccelError>;

    /// Reads the pending events.
    fn get_events(&mut self) -> RResult<VcpuEvents, AccelError>;

    /// Sets the pending events: a pending SError or external data abort is injected.
    fn put_events(&mut self, events: &VcpuEvents) -> RResult<(), AccelError>;

    /// Reads the multiprocessing state.
    fn get_mp_state(&mut self) -> RResult<MpState, AccelError>;

    /// Sets the multiprocessing state.
    fn set_mp_state(&mut self, state: MpState) -> RResult<(), AccelError>;

    /// A handle that another thread can use to make `run` return [`VcpuExit::Interrupted`] soon:
    /// at once if the vCPU is in the guest, or at the next `run` if it is not.
    fn kicker(&self) -> KickerBox;

    /// How many register reads and writes, and guest entries, the vCPU has made so far.
    fn counters(&self) -> SyncCounters;

    /// Supplies the value of the MMIO read reported by the last exit, as a little-endian value of
    /// which the access's `len` low bytes are used.
    fn set_mmio_read_data(&mut self, value: u64) -> RResult<(), AccelError>;

    /// Runs the guest until an exit.
    #[sabi(last_prefix_field)]
    fn run(&mut self) -> RResult<VcpuExit, AccelError>;
}

/// The guest-debug pool of a VM, shared by its vCPUs: changes reach every vCPU (those created
/// later too) before it next enters the guest.
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

    /// Plants `BRK #0` at virtual address `va`, whose instruction is at guest physical `pa`
    /// (saving the instruction; later inserts at the same address count uses).
    fn insert_sw_breakpoint(&self, va: u64, pa: u64) -> RResult<(), AccelError>;

    /// Drops a use of the software breakpoint at `va`, restoring the instruction on the last.
    fn remove_sw_breakpoint(&self, va: u64) -> RResult<(), AccelError>;

    /// Turns single-step of vCPU `index` on or off.
    fn set_single_step(&self, index: u32, on: bool) -> RResult<(), AccelError>;

    /// Removes everything, restoring every software breakpoint's instruction.
    fn remove_all(&self) -> RResult<(), AccelError>;

    /// Matches a debug exit of vCPU `index` against the pool.
    #[sabi(last_prefix_field)]
    fn classify(&self, index: u32, exit: &DebugExit) -> DebugEvent;
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

/// A debug pool as it crosses the boundary.
pub type DebugBox = DebugOps_TO<'static, RBox<()>>;

/// Kicks a vCPU out of `run` from another thread.
#[sabi_trait]
pub trait KickOps: Send + Sync {
    /// Requests that the vCPU's current or next `run` return [`VcpuExit::Interrupted`].
    #[sabi(last_prefix_field)]
    fn kick(&self);
}

/// A kicker as it crosses the boundary.
pub type KickerBox = KickOps_TO<'static, RBox<()>>;

/// An accelerator object as it crosses the boundary.
pub type AccelBox = AccelOps_TO<'static, RBox<()>>;
/// A VM object as it crosses the boundary.
pub type VmBox = VmOps_TO<'static, RBox<()>>;
/// A vCPU object as it crosses the boundary.
pub type VcpuBox = VcpuOps_TO<'static, RBox<()>>;

/// The root module every plugin exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginRef)))]
#[sabi(missing_field(option))]
pub struct Plugin {
    /// The backend's short name (`kvm`, `hvf`, …), used to pick it on the command line.
    pub name: extern "C" fn() -> RStr<'static>,
    /// Routes the plugin's `log` records to the host. Called once, right after loading.
    pub set_logger: extern "C" fn(sink: LogSink),
    /// Whether the backend can run here, and why not.
    pub probe: extern "C" fn() -> ProbeInfo,
    /// Opens the accelerator.
    #[sabi(last_prefix_field)]
    pub open: extern "C" fn() -> RResult<AccelBox, AccelError>,
}

impl RootModule for PluginRef {
    declare_root_module_statics! {PluginRef}
    const BASE_NAME: &'static str = "accel_plugin";
    const NAME: &'static str = "accel plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(ABI_VERSION);
}
