//! Host-side handles over a plugin's objects: `Result`-returning methods in the plain Rust types,
//! with the records converted, and optional extensions as `Option`s.

use abi_stable::std_types::{RNone, RSome, RVec};

use crate::{
    abi::{
        AccelBox, DebugBox, DirtyLogBox, EventFdBox, EventsBox, GicBox, GicConfigRecord, KickerBox,
        MemoryRegionRecord, SveBox, VcpuBox, VcpuConfigRecord, VmBox, VmConfigRecord,
    },
    backend::Backend,
    config::{MemoryRegion, ProbeInfo, VcpuConfig, VmConfig},
    debug::{DebugCapacity, DebugEvent, DebugProgram, Watchpoint},
    error::{AccelError, ErrorKind, Result},
    events::{MpState, VcpuEvents},
    exit::{DebugExit, VcpuExit},
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

    /// Opens a backend linked into this program, behind the same ABI objects, record conversions
    /// and panic guards that [`crate::export_plugin!`] puts around a plugin's `open`: every call
    /// takes the path it takes into a loaded plugin, only without the shared-library boundary.
    /// For comparing a backend linked in with the same backend loaded, and for programs that
    /// want one backend without loading files.
    ///
    /// Unlike a loaded plugin, the backend shares this program's `log` logger and panic hook.
    pub fn in_process<B: Backend>(open: fn() -> Result<B>) -> Result<Self> {
        crate::glue::guarded_open(open).into_result().map(Self::from_abi)
    }

    /// Probes the host through the opened accelerator.
    pub fn probe(&self) -> ProbeInfo {
        ProbeInfo::from(&self.inner.probe())
    }

    /// Creates a VM.
    pub fn create_vm(&self, config: &VmConfig) -> Result<Vm> {
        self.inner.create_vm(&VmConfigRecord::from(config)).into_result().map(|inner| Vm { inner })
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
        // SAFETY: the caller upholds the same contract, which the ABI call passes on.
        unsafe { self.inner.add_memory(&MemoryRegionRecord::from(region)) }.into_result()
    }

    /// Unmaps the region in `slot`.
    pub fn remove_memory(&self, slot: u32) -> Result<()> {
        self.inner.remove_memory(slot).into_result()
    }

    /// Creates and initialises a vCPU.
    pub fn create_vcpu(&self, config: &VcpuConfig) -> Result<Vcpu> {
        self.inner.create_vcpu(&VcpuConfigRecord::from(config)).into_result().map(|inner| Vcpu { inner })
    }

    /// The in-kernel GICv3, if the backend has one.
    pub fn gic(&self) -> Option<Gic> {
        self.inner.gic().into_option().map(|inner| Gic { inner })
    }

    /// The in-kernel GICv3, or an `unsupported` error that says the backend has none.
    pub fn require_gic(&self) -> Result<Gic> {
        self.gic().ok_or_else(|| AccelError::unsupported("this backend has no in-kernel GICv3"))
    }

    /// The VM's guest-debug pool, if the backend supports guest debug.
    pub fn debug(&self) -> Option<Debug> {
        self.inner.debug().into_option().map(|inner| Debug { inner })
    }

    /// Dirty-page logging, if the backend supports it.
    pub fn dirty_log(&self) -> Option<DirtyLog> {
        self.inner.dirty_log().into_option().map(|inner| DirtyLog { inner })
    }

    /// irqfd and ioeventfd on Linux eventfds, if the backend offers them.
    pub fn linux_eventfd(&self) -> Option<EventFds> {
        self.inner.linux_eventfd().into_option().map(|inner| EventFds { inner })
    }
}

/// A VM's in-kernel GICv3.
pub struct Gic {
    inner: GicBox,
}

impl Gic {
    /// Creates the GIC (before the first vCPU).
    pub fn create(&self, config: &GicConfig) -> Result<()> {
        self.inner.create(&GicConfigRecord::from(config)).into_result()
    }

    /// Drives an interrupt line.
    pub fn set_irq(&self, line: IrqLine, level: bool) -> Result<()> {
        self.inner.set_irq(line, level).into_result()
    }
}

/// Dirty-page logging of a VM.
pub struct DirtyLog {
    inner: DirtyLogBox,
}

impl DirtyLog {
    /// Turns logging of `slot` on or off.
    pub fn set(&self, slot: u32, enabled: bool) -> Result<()> {
        self.inner.set(slot, enabled).into_result()
    }

    /// The pages of `slot` written since the last call, as a bitmap; clears the log.
    pub fn take(&self, slot: u32) -> Result<Vec<u64>> {
        self.inner.take(slot).into_result().map(RVec::into_vec)
    }
}

/// Linux eventfds wired to a VM.
pub struct EventFds {
    inner: EventFdBox,
}

impl EventFds {
    /// Raises SPI `spi` whenever the eventfd `fd` is written. Create every vCPU first: the
    /// backend may complete the GIC's set-up here, as before a vCPU's first run.
    pub fn register_irqfd(&self, fd: i32, spi: u32) -> Result<()> {
        self.inner.register_irqfd(fd, spi).into_result()
    }

    /// Undoes [`EventFds::register_irqfd`].
    pub fn unregister_irqfd(&self, fd: i32, spi: u32) -> Result<()> {
        self.inner.unregister_irqfd(fd, spi).into_result()
    }

    /// Signals the eventfd `fd` on guest writes to `addr` instead of exiting.
    pub fn register_ioeventfd(&self, fd: i32, addr: u64, len: u32, datamatch: Option<u64>) -> Result<()> {
        self.inner.register_ioeventfd(fd, addr, len, datamatch.into()).into_result()
    }

    /// Undoes [`EventFds::register_ioeventfd`].
    pub fn unregister_ioeventfd(&self, fd: i32, addr: u64, len: u32, datamatch: Option<u64>) -> Result<()> {
        self.inner.unregister_ioeventfd(fd, addr, len, datamatch.into()).into_result()
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

    /// Writes the core registers changed since the last get (all at [`PutLevel::FULL`]).
    pub fn put_core(&mut self, regs: &CoreRegs, level: PutLevel) -> Result<()> {
        self.inner.put_core(regs, level).into_result()
    }

    /// Reads the FP/SIMD registers.
    pub fn get_fp(&mut self) -> Result<FpRegs> {
        self.inner.get_fp().into_result()
    }

    /// Writes the FP/SIMD registers changed since the last get (all at [`PutLevel::FULL`]).
    pub fn put_fp(&mut self, regs: &FpRegs, level: PutLevel) -> Result<()> {
        self.inner.put_fp(regs, level).into_result()
    }

    /// The SVE registers, if SVE is enabled on this vCPU.
    pub fn sve(&mut self) -> Option<Sve<'_>> {
        match self.inner.sve() {
            RSome(inner) => Some(Sve { inner }),
            RNone => None,
        }
    }

    /// Reads the SVE registers; `unsupported` when the vCPU has no SVE.
    pub fn get_sve(&mut self) -> Result<SveRegs> {
        let index = self.index();
        self.sve().ok_or_else(|| no_sve(index))?.get()
    }

    /// Writes the SVE registers changed since the last get; `unsupported` when the vCPU has no
    /// SVE.
    pub fn put_sve(&mut self, regs: &SveRegs, level: PutLevel) -> Result<()> {
        let index = self.index();
        self.sve().ok_or_else(|| no_sve(index))?.put(regs, level)
    }

    /// Pending events, if the backend can inject them.
    pub fn events(&mut self) -> Option<Events<'_>> {
        match self.inner.events() {
            RSome(inner) => Some(Events { inner }),
            RNone => None,
        }
    }

    /// Reads the pending events; `unsupported` when the backend has none.
    pub fn get_events(&mut self) -> Result<VcpuEvents> {
        self.events().ok_or_else(no_events)?.get()
    }

    /// Sets the pending events; `unsupported` when the backend cannot inject them.
    pub fn put_events(&mut self, events: &VcpuEvents) -> Result<()> {
        self.events().ok_or_else(no_events)?.put(events)
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
        self.inner.run().into_result().map(VcpuExit::from)
    }
}

fn no_sve(index: u32) -> AccelError {
    AccelError::unsupported(format!("vCPU {index} has no SVE (not enabled, or the backend lacks it)"))
}

fn no_events() -> AccelError {
    AccelError::unsupported("this backend cannot read or inject vCPU events")
}

/// A vCPU's SVE registers, borrowed from the vCPU.
pub struct Sve<'a> {
    inner: SveBox<'a>,
}

impl Sve<'_> {
    /// Reads the SVE registers at the vCPU's vector length.
    pub fn get(&mut self) -> Result<SveRegs> {
        self.inner.get().into_result()
    }

    /// Writes the SVE registers changed since the last get (all at [`PutLevel::FULL`]).
    pub fn put(&mut self, regs: &SveRegs, level: PutLevel) -> Result<()> {
        self.inner.put(regs, level).into_result()
    }
}

/// A vCPU's pending events, borrowed from the vCPU.
pub struct Events<'a> {
    inner: EventsBox<'a>,
}

impl Events<'_> {
    /// Reads the pending events.
    pub fn get(&mut self) -> Result<VcpuEvents> {
        self.inner.get().into_result()
    }

    /// Sets the pending events; a pending SError or external data abort is injected.
    pub fn put(&mut self, events: &VcpuEvents) -> Result<()> {
        self.inner.put(events).into_result()
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
        self.inner.classify(index, exit).into()
    }

    /// What the pool has programmed for vCPU `index`; `unsupported` from a plugin before ABI 2.2.
    pub fn program(&self, index: u32) -> Result<DebugProgram> {
        self.inner.program(index).into_result().map(|r| DebugProgram::from(&r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        backend::{BackendVcpu, BackendVm, Kick},
        events::MpState,
    };

    /// A backend that answers its probe and panics when asked for a VM.
    struct Probing;

    /// The VM and vCPU type of [`Probing`], which makes none.
    enum Never {}

    impl Backend for Probing {
        type Vm = Never;
        fn probe(&self) -> ProbeInfo {
            ProbeInfo::unavailable("only a probe")
        }
        fn create_vm(&self, _: &VmConfig) -> Result<Never> {
            panic!("no VMs here")
        }
    }

    impl BackendVm for Never {
        type Vcpu = Never;
        unsafe fn add_memory(&self, _: &MemoryRegion) -> Result<u32> {
            match *self {}
        }
        fn remove_memory(&self, _: u32) -> Result<()> {
            match *self {}
        }
        fn create_vcpu(&self, _: &VcpuConfig) -> Result<Never> {
            match *self {}
        }
    }

    impl BackendVcpu for Never {
        fn index(&self) -> u32 {
            match *self {}
        }
        fn get_core(&mut self) -> Result<CoreRegs> {
            match *self {}
        }
        fn put_core(&mut self, _: &CoreRegs, _: PutLevel) -> Result<()> {
            match *self {}
        }
        fn get_fp(&mut self) -> Result<FpRegs> {
            match *self {}
        }
        fn put_fp(&mut self, _: &FpRegs, _: PutLevel) -> Result<()> {
            match *self {}
        }
        fn get_regs(&mut self, _: RegClass) -> Result<Vec<RegValue>> {
            match *self {}
        }
        fn put_regs(&mut self, _: &[RegValue], _: PutLevel) -> Result<()> {
            match *self {}
        }
        fn get_mp_state(&mut self) -> Result<MpState> {
            match *self {}
        }
        fn set_mp_state(&mut self, _: MpState) -> Result<()> {
            match *self {}
        }
        fn kicker(&self) -> Box<dyn Kick> {
            match *self {}
        }
        fn counters(&self) -> SyncCounters {
            match *self {}
        }
        fn set_mmio_read_data(&mut self, _: u64) -> Result<()> {
            match *self {}
        }
        fn run(&mut self) -> Result<crate::exit::VcpuExit> {
            match *self {}
        }
    }

    #[test]
    fn an_in_process_backend_goes_through_the_guarded_objects() {
        let accel = Accelerator::in_process(|| Ok(Probing)).expect("open");
        assert_eq!(accel.probe().reason, "only a probe");
        let e = accel.create_vm(&VmConfig::default()).err().expect("a panic comes back as an error");
        assert_eq!(e.kind, ErrorKind::PANIC);
        assert!(e.message.contains("no VMs here"), "{e}");
    }
}
