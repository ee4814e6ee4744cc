//! Host-side handles over the ABI objects, with `Result`-returning methods.

use abi_stable::std_types::RVec;

use crate::{
    abi::{AccelBox, DebugBox, DebugCapacity, KickerBox, VcpuBox, VmBox},
    config::{MemoryRegion, ProbeInfo, VcpuConfig, VmConfig},
    debug::{DebugEvent, Watchpoint},
    error::Result,
    error::{AccelError, ErrorKind},
    events::{MpState, VcpuEvents},
    exit::DebugExit,
    exit::VcpuExit,
    irq::{GicConfig, IrqLine},
    regs::{CoreRegs, FpRegs, PutLevel, SyncCounters},
    sve::SveRegs,
    sysreg::{RegClass, RegId, RegValue},
};

/// An opened accelerator.
pub struct Accelerator {
    inner: AccelBox,
}

impl Accelerator {
    /// Wraps an accelerator object returned by a plugin's `open`.
    pub fn from_abi(inner: AccelBox) -> Self {
        Self { inner }
    }

    /// Probes the host through the opened accelerator.
    pub fn probe(&self) -> ProbeInfo {
        self.inner.probe()
    }

    /// Creates a VM.
    pub fn create_vm(&self, config: &VmConfig) -> Result<Vm> {
        self.inner.create_vm(config).into_result().map(|inner| Vm { inner })
    }
}

/// A virtual machine.
pub struct Vm {
    inner: VmBox,
}

impl Vm {
    /// Maps host memory into the guest; returns the slot.
    ///
    /// # Safety
    /// `region.host_addr .. + region.size` must be memory of this process that stays mapped
    /// until the region is removed or the VM is dropped. The guest can write to it at any time
    /// while a vCPU runs.
    pub unsafe fn add_memory(&self, region: &MemoryRegion) -> Result<u32> {
        self.inner.add_memory(region).into_result()
    }

    /// Unmaps the region in `slot`.
    pub fn remove_memory(&self, slot: u32) -> Result<()> {
        self.inner.remove_memory(slot).into_result()
    }

    /// Turns dirty-page logging of `slot` on or off.
    pub fn set_dirty_log(&self, slot: u32, enabled: bool) -> Result<()> {
        self.inner.set_dirty_log(slot, enabled).into_result()
    }

    /// The pages of `slot` written since the last call, as a bitmap; clears the log.
    pub fn take_dirty_log(&self, slot: u32) -> Result<Vec<u64>> {
        self.inner.take_dirty_log(slot).into_result().map(RVec::into_vec)
    }

    /// Creates the in-kernel GICv3 (before the first vCPU).
    pub fn create_gic(&self, config: &GicConfig) -> Result<()> {
        self.inner.create_gic(config).into_result()
    }

    /// Drives an interrupt line.
    pub fn set_irq(&self, line: IrqLine, level: bool) -> Result<()> {
        self.inner.set_irq(line, level).into_result()
    }

    /// Raises SPI `spi` whenever the eventfd `fd` is written.
    pub fn register_irqfd(&self, fd: i32, spi: u32) -> Result<()> {
        self.inner.register_irqfd(fd, spi).into_result()
    }

    /// Undoes [`Vm::register_irqfd`].
    pub fn unregister_irqfd(&self, fd: i32, spi: u32) -> Result<()> {
        self.inner.unregister_irqfd(fd, spi).into_result()
    }

    /// Signals the eventfd `fd` on guest writes to `addr` instead of exiting.
    pub fn register_ioeventfd(&self, fd: i32, addr: u64, len: u32, datamatch: Option<u64>) -> Result<()> {
        self.inner.register_ioeventfd(fd, addr, len, datamatch.into()).into_result()
    }

    /// Undoes [`Vm::register_ioeventfd`].
    pub fn unregister_ioeventfd(&self, fd: i32, addr: u64, len: u32, datamatch: Option<u64>) -> Result<()> {
        self.inner.unregister_ioeventfd(fd, addr, len, datamatch.into()).into_result()
    }

    /// The VM's guest-debug pool, if the backend supports guest debug.
    pub fn debug(&self) -> Option<Debug> {
        self.inner.debug().into_option().map(|inner| Debug { inner })
    }

    /// Creates and initialises a vCPU.
    pub fn create_vcpu(&self, config: &VcpuConfig) -> Result<Vcpu> {
        self.inner.create_vcpu(config).into_result().map(|inner| Vcpu { inner })
    }
}

/// A virtual CPU.
pub struct Vcpu {
    inner: VcpuBox,
}

impl Vcpu {
    /// The vCPU's index in its VM.
    pub fn index(&self) -> u32 {
        self.inner.index()
    }

    /// Reads the core registers.
    pub fn get_core(&mut self) -> Result<CoreRegs> {
        self.inner.get_core().into_result()
    }

    /// Writes the core registers changed since the last get (all at [`PutLevel::Full`]).
    pub fn put_core(&mut self, regs: &CoreRegs, level: PutLevel) -> Result<()> {
        self.inner.put_core(regs, level).into_result()
    }

    /// Reads the FP/SIMD registers.
    pub fn get_fp(&mut self) -> Result<FpRegs> {
        self.inner.get_fp().into_result()
    }

    /// Writes the FP/SIMD registers changed since the last get (all at [`PutLevel::Full`]).
    pub fn put_fp(&mut self, regs: &FpRegs, level: PutLevel) -> Result<()> {
        self.inner.put_fp(regs, level).into_result()
    }

    /// Reads the SVE registers (the vCPU must have SVE enabled).
    pub fn get_sve(&mut self) -> Result<SveRegs> {
        self.inner.get_sve().into_result()
    }

    /// Writes the SVE registers changed since the last get (all at [`PutLevel::Full`]).
    pub fn put_sve(&mut self, regs: &SveRegs, level: PutLevel) -> Result<()> {
        self.inner.put_sve(regs, level).into_result()
    }

    /// Reads every register of `class`.
    pub fn get_regs(&mut self, class: RegClass) -> Result<Vec<RegValue>> {
        self.inner.get_regs(class).into_result().map(RVec::into_vec)
    }

    /// MPIDR_EL1: the vCPU's affinity as the backend assigned it (what PSCI CPU_ON targets).
    pub fn mpidr(&mut self) -> Result<u64> {
        self.get_reg(crate::sysreg::MPIDR_EL1)
    }

    /// Reads one register (through its class).
    pub fn get_reg(&mut self, id: RegId) -> Result<u64> {
        self.get_regs(id.class())?.into_iter().find(|v| v.id == id).map(|v| v.value).ok_or_else(|| {
            AccelError::new(ErrorKind::NOT_FOUND, format!("{id} is not a register of this vCPU"))
        })
    }

    /// Writes the registers that may be written at `level` and changed since the last get.
    pub fn put_regs(&mut self, values: &[RegValue], level: PutLevel) -> Result<()> {
        self.inner.put_regs(values.into(), level).into_result()
    }

    /// Reads the pending events.
    pub fn get_events(&mut self) -> Result<VcpuEvents> {
        self.inner.get_events().into_result()
    }

    /// Sets the pending events; a pending SError or external data abort is injected.
    pub fn put_events(&mut self, events: &VcpuEvents) -> Result<()> {
        self.inner.put_events(events).into_result()
    }

    /// Reads the multiprocessing state.
    pub fn get_mp_state(&mut self) -> Result<MpState> {
        self.inner.get_mp_state().into_result()
    }

    /// Sets the multiprocessing state.
    pub fn set_mp_state(&mut self, state: MpState) -> Result<()> {
        self.inner.set_mp_state(state).into_result()
    }

    /// A handle that kicks this vCPU out of `run` from another thread.
    pub fn kicker(&self) -> Kicker {
        Kicker { inner: self.inner.kicker() }
    }

    /// The vCPU's register-access and entry counters.
    pub fn counters(&self) -> SyncCounters {
        self.inner.counters()
    }

    /// Supplies the value for the MMIO read reported by the last exit (little-endian, the first
    /// `len` bytes are used).
    pub fn set_mmio_read_data(&mut self, value: u64) -> Result<()> {
        self.inner.set_mmio_read_data(value).into_result()
    }

    /// Runs the guest until the next exit.
    pub fn run(&mut self) -> Result<VcpuExit> {
        self.inner.run().into_result()
    }
}

/// Kicks a vCPU out of `run` from any thread.
pub struct Kicker {
    inner: KickerBox,
}

impl Kicker {
    /// Makes the vCPU's current or next `run` return `VcpuExit::Interrupted`.
    pub fn kick(&self) {
        self.inner.kick();
    }
}

/// A VM's guest-debug pool: breakpoints, watchpoints and single-step for all its vCPUs.
pub struct Debug {
    inner: DebugBox,
}

impl Debug {
    /// How many hardware breakpoints and watchpoints the pool can hold.
    pub fn capacity(&self) -> DebugCapacity {
        self.inner.capacity()
    }

    /// Adds a hardware breakpoint.
    pub fn insert_hw_breakpoint(&self, addr: u64) -> Result<()> {
        self.inner.insert_hw_breakpoint(addr).into_result()
    }

    /// Removes a hardware breakpoint.
    pub fn remove_hw_breakpoint(&self, addr: u64) -> Result<()> {
        self.inner.remove_hw_breakpoint(addr).into_result()
    }

    /// Adds a watchpoint.
    pub fn insert_watchpoint(&self, watch: &Watchpoint) -> Result<()> {
        self.inner.insert_watchpoint(watch).into_result()
    }

    /// Removes a watchpoint.
    pub fn remove_watchpoint(&self, watch: &Watchpoint) -> Result<()> {
        self.inner.remove_watchpoint(watch).into_result()
    }

    /// Plants a software breakpoint at virtual address `va` (guest physical `pa`).
    pub fn insert_sw_breakpoint(&self, va: u64, pa: u64) -> Result<()> {
        self.inner.insert_sw_breakpoint(va, pa).into_result()
    }

    /// Drops a use of the software breakpoint at `va`.
    pub fn remove_sw_breakpoint(&self, va: u64) -> Result<()> {
        self.inner.remove_sw_breakpoint(va).into_result()
    }

    /// Turns single-step of vCPU `index` on or off.
    pub fn set_single_step(&self, index: u32, on: bool) -> Result<()> {
        self.inner.set_single_step(index, on).into_result()
    }

    /// Removes everything.
    pub fn remove_all(&self) -> Result<()> {
        self.inner.remove_all().into_result()
    }

    /// Matches a debug exit of vCPU `index` against the pool.
    pub fn classify(&self, index: u32, exit: &DebugExit) -> DebugEvent {
        self.inner.classify(index, exit)
    }
}
