//! The plugin side of the boundary: wraps a backend's plain Rust objects into the ABI's objects,
//! converting records and containing panics. Used by [`crate::export_plugin!`]; not an API.

use std::{
    cell::Cell,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::Arc,
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RErr, RNone, ROk, ROption, RResult, RSlice, RSome, RVec},
};

use crate::{
    abi::{
        AccelBox, AccelOps, AccelOps_TO, DebugBox, DebugEventRecord, DebugOps, DebugOps_TO,
        DebugProgramRecord, DirtyLogBox, DirtyLogOps, DirtyLogOps_TO, EventFdBox, EventFdOps, EventFdOps_TO,
        EventsBox, EventsOps, EventsOps_TO, ExitRecord, GicBox, GicConfigRecord, GicOps, GicOps_TO, KickOps,
        KickOps_TO, KickerBox, MemoryRegionRecord, ProbeRecord, SveBox, SveOps, SveOps_TO, VcpuBox,
        VcpuConfigRecord, VcpuOps, VcpuOps_TO, VmBox, VmConfigRecord, VmOps, VmOps_TO,
    },
    backend::{
        Backend, BackendDebug, BackendDirtyLog, BackendEvents, BackendGic, BackendLinuxEventFd, BackendSve,
        BackendVcpu, BackendVm, Kick,
    },
    config::ProbeInfo,
    debug::{DebugCapacity, DebugEvent, Watchpoint},
    error::{AccelError, ErrorKind, Result},
    events::{MpState, VcpuEvents},
    exit::DebugExit,
    irq::IrqLine,
    regs::{CoreRegs, FpRegs, PutLevel, SyncCounters},
    sve::SveRegs,
    sysreg::{RegClass, RegValue},
};

thread_local! {
    /// Where the last panic on this thread happened, for the error the guard makes of it.
    static PANIC_AT: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Replaces the plugin's panic hook (a cdylib has its own copy of std, so this is the plugin's
/// alone): a panic is logged at debug level, and its location is kept for the error that the
/// boundary returns, instead of being printed on stderr.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
        log::debug!("panic at {}: {}", at.as_deref().unwrap_or("?"), panic_message(info.payload()));
        let leaked: Option<&'static str> = at.map(|s| &*Box::leak(s.into_boxed_str()));
        PANIC_AT.with(|p| p.set(leaked));
    }));
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

fn panic_error(op: &str, payload: &(dyn std::any::Any + Send)) -> AccelError {
    let at = PANIC_AT.with(|p| p.take()).map(|a| format!(" at {a}")).unwrap_or_default();
    AccelError::new(ErrorKind::PANIC, format!("{op}: the plugin panicked{at}: {}", panic_message(payload)))
}

/// Runs `f`, turning a panic into an [`ErrorKind::PANIC`] error that names `op`.
pub fn guard<T>(op: &str, f: impl FnOnce() -> Result<T>) -> RResult<T, AccelError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.into(),
        Err(payload) => RErr(panic_error(op, payload.as_ref())),
    }
}

/// Runs `f` whose answer cannot fail, returning `fallback` if it panics.
fn guard_value<T>(f: impl FnOnce() -> T, fallback: T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// Runs a probe function, turning a panic into an "unavailable" answer.
pub fn guarded_probe(probe: fn() -> ProbeInfo) -> ProbeRecord {
    let info = catch_unwind(probe).unwrap_or_else(|payload| {
        ProbeInfo::unavailable(panic_error("probe", payload.as_ref()).message.to_string())
    });
    ProbeRecord::from(&info)
}

/// The probe of a plugin that cannot run here, logged under the plugin's own module path.
pub fn unavailable(plugin: &str, reason: String) -> ProbeInfo {
    log::debug!(target: plugin, "probe: {reason}");
    ProbeInfo::unavailable(reason)
}

/// Runs a plugin's open function and wraps the backend for the ABI.
pub fn guarded_open<B: Backend>(open: fn() -> Result<B>) -> RResult<AccelBox, AccelError> {
    guard("open", || open().map(|b| AccelOps_TO::from_value(Guarded(b), TD_Opaque)))
}

/// A backend object behind the ABI, with every call guarded.
pub struct Guarded<T>(T);

impl<B: Backend> AccelOps for Guarded<B> {
    fn probe(&self) -> ProbeRecord {
        let info = match guard("probe", || Ok(self.0.probe())) {
            ROk(info) => info,
            RErr(e) => ProbeInfo::unavailable(e.message.to_string()),
        };
        ProbeRecord::from(&info)
    }

    fn create_vm(&self, config: &VmConfigRecord) -> RResult<VmBox, AccelError> {
        guard("create_vm", || {
            let config = config.to_config()?;
            self.0.create_vm(&config).map(|vm| VmOps_TO::from_value(Guarded(vm), TD_Opaque))
        })
    }
}

impl<V: BackendVm> VmOps for Guarded<V> {
    unsafe fn add_memory(&self, region: &MemoryRegionRecord) -> RResult<u32, AccelError> {
        // SAFETY: the host's call carries the same obligation as `BackendVm::add_memory`.
        guard("add_memory", || region.to_region().and_then(|r| unsafe { self.0.add_memory(&r) }))
    }

    fn remove_memory(&self, slot: u32) -> RResult<(), AccelError> {
        guard("remove_memory", || self.0.remove_memory(slot))
    }

    fn create_vcpu(&self, config: &VcpuConfigRecord) -> RResult<VcpuBox, AccelError> {
        guard("create_vcpu", || {
            let config = config.to_config()?;
            self.0.create_vcpu(&config).map(|vcpu| VcpuOps_TO::from_value(Guarded(vcpu), TD_Opaque))
        })
    }

    fn gic(&self) -> ROption<GicBox> {
        guard_value(|| self.0.support_gic(), None).map(|g| GicOps_TO::from_value(Shared(g), TD_Opaque)).into()
    }

    fn debug(&self) -> ROption<DebugBox> {
        guard_value(|| self.0.support_debug(), None)
            .map(|d| DebugOps_TO::from_value(Shared(d), TD_Opaque))
            .into()
    }

    fn dirty_log(&self) -> ROption<DirtyLogBox> {
        guard_value(|| self.0.support_dirty_log(), None)
            .map(|d| DirtyLogOps_TO::from_value(Shared(d), TD_Opaque))
            .into()
    }

    fn linux_eventfd(&self) -> ROption<EventFdBox> {
        guard_value(|| self.0.support_linux_eventfd(), None)
            .map(|e| EventFdOps_TO::from_value(Shared(e), TD_Opaque))
            .into()
    }
}

impl<C: BackendVcpu> VcpuOps for Guarded<C> {
    fn index(&self) -> u32 {
        // A panic here reads as u32::MAX rather than unwinding.
        guard_value(|| self.0.index(), u32::MAX)
    }

    fn get_core(&mut self) -> RResult<CoreRegs, AccelError> {
        guard("get_core", || self.0.get_core())
    }

    fn put_core(&mut self, regs: &CoreRegs, level: PutLevel) -> RResult<(), AccelError> {
        guard("put_core", || self.0.put_core(regs, level))
    }

    fn get_fp(&mut self) -> RResult<FpRegs, AccelError> {
        guard("get_fp", || self.0.get_fp())
    }

    fn put_fp(&mut self, regs: &FpRegs, level: PutLevel) -> RResult<(), AccelError> {
        guard("put_fp", || self.0.put_fp(regs, level))
    }

    fn get_regs(&mut self, class: RegClass) -> RResult<RVec<RegValue>, AccelError> {
        guard("get_regs", || self.0.get_regs(class).map(RVec::from))
    }

    fn put_regs(&mut self, values: RSlice<'_, RegValue>, level: PutLevel) -> RResult<(), AccelError> {
        guard("put_regs", || self.0.put_regs(values.as_slice(), level))
    }

    fn get_mp_state(&mut self) -> RResult<MpState, AccelError> {
        guard("get_mp_state", || self.0.get_mp_state())
    }

    fn set_mp_state(&mut self, state: MpState) -> RResult<(), AccelError> {
        guard("set_mp_state", || self.0.set_mp_state(state))
    }

    fn kicker(&self) -> KickerBox {
        let kick: Box<dyn Kick> = guard_value(|| self.0.kicker(), Box::new(NoKick));
        KickOps_TO::from_value(kick, TD_Opaque)
    }

    fn counters(&self) -> SyncCounters {
        guard_value(|| self.0.counters(), SyncCounters::default())
    }

    fn set_mmio_read_data(&mut self, value: u64) -> RResult<(), AccelError> {
        guard("set_mmio_read_data", || self.0.set_mmio_read_data(value))
    }

    fn run(&mut self) -> RResult<ExitRecord, AccelError> {
        guard("run", || self.0.run().map(ExitRecord::from))
    }

    fn sve(&mut self) -> ROption<SveBox<'_>> {
        match guard_value(|| self.0.support_sve(), None) {
            Some(sve) => RSome(SveOps_TO::from_value(GuardedSve(sve), TD_Opaque)),
            None => RNone,
        }
    }

    fn events(&mut self) -> ROption<EventsBox<'_>> {
        match guard_value(|| self.0.support_events(), None) {
            Some(events) => RSome(EventsOps_TO::from_value(GuardedEvents(events), TD_Opaque)),
            None => RNone,
        }
    }
}

/// A VM extension behind the ABI, with every call guarded.
struct Shared<T: ?Sized>(Arc<T>);

impl GicOps for Shared<dyn BackendGic> {
    fn create(&self, config: &GicConfigRecord) -> RResult<(), AccelError> {
        guard("gic create", || config.to_config().and_then(|c| self.0.create(&c)))
    }

    fn set_irq(&self, line: IrqLine, level: bool) -> RResult<(), AccelError> {
        guard("set_irq", || self.0.set_irq(line, level))
    }
}

impl DebugOps for Shared<dyn BackendDebug> {
    fn capacity(&self) -> DebugCapacity {
        guard_value(|| self.0.capacity(), DebugCapacity::default())
    }
    fn insert_hw_breakpoint(&self, addr: u64) -> RResult<(), AccelError> {
        guard("insert_hw_breakpoint", || self.0.insert_hw_breakpoint(addr))
    }
    fn remove_hw_breakpoint(&self, addr: u64) -> RResult<(), AccelError> {
        guard("remove_hw_breakpoint", || self.0.remove_hw_breakpoint(addr))
    }
    fn insert_watchpoint(&self, watch: &Watchpoint) -> RResult<(), AccelError> {
        guard("insert_watchpoint", || self.0.insert_watchpoint(watch))
    }
    fn remove_watchpoint(&self, watch: &Watchpoint) -> RResult<(), AccelError> {
        guard("remove_watchpoint", || self.0.remove_watchpoint(watch))
    }
    fn insert_sw_breakpoint(&self, va: u64, pa: u64) -> RResult<(), AccelError> {
        guard("insert_sw_breakpoint", || self.0.insert_sw_breakpoint(va, pa))
    }
    fn remove_sw_breakpoint(&self, va: u64) -> RResult<(), AccelError> {
        guard("remove_sw_breakpoint", || self.0.remove_sw_breakpoint(va))
    }
    fn set_single_step(&self, index: u32, on: bool) -> RResult<(), AccelError> {
        guard("set_single_step", || self.0.set_single_step(index, on))
    }
    fn remove_all(&self) -> RResult<(), AccelError> {
        guard("remove_all", || self.0.remove_all())
    }
    fn classify(&self, index: u32, exit: &DebugExit) -> DebugEventRecord {
        guard_value(|| self.0.classify(index, exit), DebugEvent::Guest).into()
    }
    fn program(&self, index: u32) -> RResult<DebugProgramRecord, AccelError> {
        guard("debug program", || self.0.program(index).map(|p| DebugProgramRecord::from(&p)))
    }
}

impl DirtyLogOps for Shared<dyn BackendDirtyLog> {
    fn set(&self, slot: u32, enabled: bool) -> RResult<(), AccelError> {
        guard("set_dirty_log", || self.0.set(slot, enabled))
    }

    fn take(&self, slot: u32) -> RResult<RVec<u64>, AccelError> {
        guard("take_dirty_log", || self.0.take(slot).map(RVec::from))
    }
}

impl EventFdOps for Shared<dyn BackendLinuxEventFd> {
    fn register_irqfd(&self, fd: i32, spi: u32) -> RResult<(), AccelError> {
        guard("register_irqfd", || self.0.register_irqfd(fd, spi))
    }

    fn unregister_irqfd(&self, fd: i32, spi: u32) -> RResult<(), AccelError> {
        guard("unregister_irqfd", || self.0.unregister_irqfd(fd, spi))
    }

    fn register_ioeventfd(
        &self,
        fd: i32,
        addr: u64,
        len: u32,
        datamatch: ROption<u64>,
    ) -> RResult<(), AccelError> {
        guard("register_ioeventfd", || self.0.register_ioeventfd(fd, addr, len, datamatch.into()))
    }

    fn unregister_ioeventfd(
        &self,
        fd: i32,
        addr: u64,
        len: u32,
        datamatch: ROption<u64>,
    ) -> RResult<(), AccelError> {
        guard("unregister_ioeventfd", || self.0.unregister_ioeventfd(fd, addr, len, datamatch.into()))
    }
}

/// A vCPU's SVE extension behind the ABI.
struct GuardedSve<'a>(&'a mut dyn BackendSve);

impl SveOps for GuardedSve<'_> {
    fn get(&mut self) -> RResult<SveRegs, AccelError> {
        guard("get_sve", || self.0.get_sve())
    }

    fn put(&mut self, regs: &SveRegs, level: PutLevel) -> RResult<(), AccelError> {
        guard("put_sve", || self.0.put_sve(regs, level))
    }
}

/// A vCPU's events extension behind the ABI.
struct GuardedEvents<'a>(&'a mut dyn BackendEvents);

impl EventsOps for GuardedEvents<'_> {
    fn get(&mut self) -> RResult<VcpuEvents, AccelError> {
        guard("get_events", || self.0.get_events())
    }

    fn put(&mut self, events: &VcpuEvents) -> RResult<(), AccelError> {
        guard("put_events", || self.0.put_events(events))
    }
}

impl KickOps for Box<dyn Kick> {
    fn kick(&self) {
        guard_value(|| (**self).kick(), ());
    }
}

/// The kicker of a vCPU whose backend failed to make one: kicking does nothing.
struct NoKick;

impl Kick for NoKick {
    fn kick(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_turns_a_panic_into_an_error() {
        let r: RResult<u32, AccelError> = guard("run", || panic!("boom {}", 7));
        let e = r.into_result().unwrap_err();
        assert_eq!(e.kind, ErrorKind::PANIC);
        assert!(e.message.starts_with("run: the plugin panicked"), "{e}");
        assert!(e.message.ends_with(": boom 7"), "{e}");
    }

    #[test]
    fn guard_passes_results_through() {
        assert_eq!(guard("x", || Ok(5)).into_result(), Ok(5));
        let e = AccelError::invalid("no");
        assert_eq!(guard::<()>("x", || Err(e.clone())).into_result(), Err(e));
    }

    #[test]
    fn a_panicking_probe_reads_as_unavailable() {
        fn bad() -> ProbeInfo {
            panic!("no device")
        }
        let info = ProbeInfo::from(&guarded_probe(bad));
        assert!(!info.available);
        assert!(info.reason.contains("no device"));
    }
}
