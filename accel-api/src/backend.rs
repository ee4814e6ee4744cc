//! The traits a backend implements, in plain Rust: the contract every plugin fulfils.
//!
//! A plugin implements [`Backend`], [`BackendVm`] and [`BackendVcpu`] (and the optional
//! extensions it has) and exports them with [`crate::export_plugin!`]. The export glue converts
//! between these types and the ABI's records, and runs every call under `catch_unwind`, so a
//! panic comes back to the host as an [`ErrorKind::PANIC`](crate::ErrorKind::PANIC) error.
//!
//! # The contract
//!
//! - **Threads.** An accelerator and a VM are used from any thread at once (`Send + Sync`). A
//!   vCPU is driven from one thread at a time, but that thread may change from call to call
//!   (`Send`); only its kicker and its debug pool are used from other threads while it runs. A
//!   backend whose vCPUs are bound to one OS thread (Hypervisor.framework) hides that inside the
//!   plugin, with a thread per vCPU that the calls are sent to.
//! - **Puts write only what changed.** A `put_*` at [`PutLevel::RUNTIME`] or
//!   [`PutLevel::RESET`] writes only the registers whose value differs from the backend's last
//!   get of them, and registers above the level are left alone. At [`PutLevel::FULL`] (or with
//!   no earlier get, or after a failed put) it writes everything. A register the backend refuses
//!   is an error naming the register and the errno.
//! - **Kicks.** After [`Kick::kick`], the vCPU's current `run` returns
//!   [`VcpuExit::Interrupted`] soon, or its next `run` does so at once if it was not in the
//!   guest. One kick is consumed by one interrupted exit.
//! - **MMIO.** After an MMIO read exit, the host supplies the value with
//!   [`BackendVcpu::set_mmio_read_data`] before any register access or the next `run`; the
//!   access completes (the destination register written, the PC advanced) before registers are
//!   read or the guest continues. A register read after an MMIO write exit sees the PC after the
//!   access.
//! - **Optional extensions.** What a backend may lack is an extension: a `support_*` method that
//!   returns `None` by default. A backend returns `Some` only when the operation works here.
//!   Anything else the host asks that the backend cannot do is an
//!   [`ErrorKind::UNSUPPORTED`](crate::ErrorKind::UNSUPPORTED) error that names it.

use std::sync::Arc;

use crate::{
    config::{MemoryRegion, ProbeInfo, VcpuConfig, VmConfig},
    debug::{DebugCapacity, DebugEvent, DebugProgram, Watchpoint},
    error::Result,
    events::{MpState, VcpuEvents},
    exit::{DebugExit, VcpuExit},
    irq::{GicConfig, IrqLine},
    regs::{CoreRegs, FpRegs, PutLevel, SyncCounters},
    sve::SveRegs,
    sysreg::{RegClass, RegValue},
};

/// An opened accelerator: the factory of VMs.
pub trait Backend: Send + Sync + 'static {
    /// The backend's VM type.
    type Vm: BackendVm;

    /// Probes the host through the opened accelerator.
    fn probe(&self) -> ProbeInfo;

    /// Creates a VM. A backend that holds one VM per process refuses a second one as
    /// [`ErrorKind::NO_RESOURCE`](crate::ErrorKind::NO_RESOURCE), saying why. A configuration
    /// it cannot honour (an IPA size too large, [`VmConfig::userspace_psci`] where the plugin
    /// cannot answer PSCI itself) is refused as unsupported, naming it.
    fn create_vm(&self, config: &VmConfig) -> Result<Self::Vm>;
}

/// A backend's VM: guest memory, vCPUs and its optional extensions.
pub trait BackendVm: Send + Sync + 'static {
    /// The backend's vCPU type.
    type Vcpu: BackendVcpu;

    /// Maps host memory into the guest; returns the slot. A region that is not aligned to the
    /// backend's page size, overlaps another, or asks for read-only memory the backend lacks is
    /// refused.
    ///
    /// # Safety
    /// `region.host_addr .. + region.size` must be memory of this process that stays mapped until
    /// the region is removed or the VM is dropped; the guest may write it whenever a vCPU runs.
    unsafe fn add_memory(&self, region: &MemoryRegion) -> Result<u32>;

    /// Unmaps the region in `slot`.
    fn remove_memory(&self, slot: u32) -> Result<()>;

    /// Creates and initialises a vCPU with the given features; a feature the backend lacks is
    /// refused by name.
    fn create_vcpu(&self, config: &VcpuConfig) -> Result<Self::Vcpu>;

    /// The in-kernel GICv3, if the backend has one.
    fn support_gic(&self) -> Option<Arc<dyn BackendGic>> {
        None
    }

    /// The VM's guest-debug pool, if the backend supports guest debug.
    fn support_debug(&self) -> Option<Arc<dyn BackendDebug>> {
        None
    }

    /// Dirty-page logging, if the backend supports it.
    fn support_dirty_log(&self) -> Option<Arc<dyn BackendDirtyLog>> {
        None
    }

    /// irqfd and ioeventfd on Linux eventfds, if the backend offers them.
    fn support_linux_eventfd(&self) -> Option<Arc<dyn BackendLinuxEventFd>> {
        None
    }
}

/// A backend's vCPU.
pub trait BackendVcpu: Send + 'static {
    /// The vCPU's index in its VM.
    fn index(&self) -> u32;
    /// Reads the core registers.
    fn get_core(&mut self) -> Result<CoreRegs>;
    /// Writes the core registers that changed since the last get (see the module contract).
    fn put_core(&mut self, regs: &CoreRegs, level: PutLevel) -> Result<()>;
    /// Reads the FP/SIMD registers.
    fn get_fp(&mut self) -> Result<FpRegs>;
    /// Writes the FP/SIMD registers that changed since the last get.
    fn put_fp(&mut self, regs: &FpRegs, level: PutLevel) -> Result<()>;
    /// Reads every register of `class`, in a stable order.
    fn get_regs(&mut self, class: RegClass) -> Result<Vec<RegValue>>;
    /// Writes the given registers that may be written at `level` and changed since the last get;
    /// an unknown register is [`ErrorKind::NOT_FOUND`](crate::ErrorKind::NOT_FOUND).
    fn put_regs(&mut self, values: &[RegValue], level: PutLevel) -> Result<()>;
    /// Reads the multiprocessing state.
    fn get_mp_state(&mut self) -> Result<MpState>;
    /// Sets the multiprocessing state.
    fn set_mp_state(&mut self, state: MpState) -> Result<()>;
    /// A handle that another thread uses to kick the vCPU out of `run`.
    fn kicker(&self) -> Box<dyn Kick>;
    /// The register accesses and guest entries the vCPU has made so far.
    fn counters(&self) -> SyncCounters;
    /// Supplies the value of the MMIO read of the last exit (little-endian; the access's `len`
    /// low bytes are used). Without a pending MMIO read it is
    /// [`ErrorKind::BAD_STATE`](crate::ErrorKind::BAD_STATE).
    fn set_mmio_read_data(&mut self, value: u64) -> Result<()>;
    /// Runs the guest until an exit.
    fn run(&mut self) -> Result<VcpuExit>;

    /// The SVE registers, if SVE is enabled on this vCPU.
    fn support_sve(&mut self) -> Option<&mut dyn BackendSve> {
        None
    }

    /// Pending events, if the backend can inject SErrors or external data aborts.
    fn support_events(&mut self) -> Option<&mut dyn BackendEvents> {
        None
    }
}

/// A VM's in-kernel GICv3.
pub trait BackendGic: Send + Sync + 'static {
    /// Creates the GIC. Comes before the first vCPU is created; the backend finishes its set-up
    /// before the first vCPU runs.
    fn create(&self, config: &GicConfig) -> Result<()>;
    /// Drives an interrupt line to `level`.
    fn set_irq(&self, line: IrqLine, level: bool) -> Result<()>;
}

/// A VM's guest-debug pool, shared by its vCPUs: a change reaches every vCPU (those created later
/// too) before it next enters the guest.
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
    fn classify(&self, index: u32, exit: &DebugExit) -> DebugEvent;
    /// What the pool has programmed for vCPU `index`, for a person to read.
    fn program(&self, index: u32) -> Result<DebugProgram> {
        let _ = index;
        Err(crate::AccelError::unsupported("this backend cannot show its debug pool's registers"))
    }
}

/// Dirty-page logging of a VM's memory slots.
pub trait BackendDirtyLog: Send + Sync + 'static {
    /// Turns logging of `slot` on or off.
    fn set(&self, slot: u32, enabled: bool) -> Result<()>;
    /// The pages of `slot` written since the last call (bit `n % 64` of word `n / 64` for page
    /// `n`), and clears the log.
    fn take(&self, slot: u32) -> Result<Vec<u64>>;
}

/// Linux eventfds wired to a VM.
pub trait BackendLinuxEventFd: Send + Sync + 'static {
    /// Raises SPI `spi` whenever the eventfd `fd` is written; the backend keeps its own duplicate
    /// of the descriptor. Works as soon as the GIC and every vCPU exist, before any vCPU has run;
    /// the backend may complete the GIC's set-up here, after which no vCPU can be added.
    fn register_irqfd(&self, fd: i32, spi: u32) -> Result<()>;
    /// Undoes [`BackendLinuxEventFd::register_irqfd`].
    fn unregister_irqfd(&self, fd: i32, spi: u32) -> Result<()>;
    /// Completes guest writes of `len` bytes to `addr` (matching `datamatch` if given) in the
    /// backend and signals `fd` instead of exiting.
    fn register_ioeventfd(&self, fd: i32, addr: u64, len: u32, datamatch: Option<u64>) -> Result<()>;
    /// Undoes [`BackendLinuxEventFd::register_ioeventfd`].
    fn unregister_ioeventfd(&self, fd: i32, addr: u64, len: u32, datamatch: Option<u64>) -> Result<()>;
}

/// A vCPU's SVE registers.
pub trait BackendSve {
    /// Reads Z0–Z31, P0–P15 and FFR at the vCPU's vector length.
    fn get_sve(&mut self) -> Result<SveRegs>;
    /// Writes the SVE registers that changed since the last get (all at [`PutLevel::FULL`]); a
    /// file of another vector length is refused.
    fn put_sve(&mut self, regs: &SveRegs, level: PutLevel) -> Result<()>;
}

/// A vCPU's pending events.
pub trait BackendEvents {
    /// Reads the pending events.
    fn get_events(&mut self) -> Result<VcpuEvents>;
    /// Sets the pending events: a pending SError or external data abort is injected, or refused
    /// as unsupported by name where the backend cannot.
    fn put_events(&mut self, events: &VcpuEvents) -> Result<()>;
}

/// Kicks a vCPU out of `run`.
pub trait Kick: Send + Sync + 'static {
    /// Requests that the vCPU's current or next `run` return [`VcpuExit::Interrupted`].
    fn kick(&self);
}
