//! The traits a backend implements, in plain Rust, and the glue that turns them into the ABI
//! objects of [`crate::abi`] with every call guarded against panics.
//!
//! A plugin implements [`Backend`], [`BackendVm`] and [`BackendVcpu`] and exports them with
//! [`crate::export_plugin!`]. No panic unwinds across the boundary: each call runs under
//! `catch_unwind`, and a caught panic comes back as an [`ErrorKind::PANIC`] error.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::Arc,
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RErr, ROption, RResult, RSlice, RVec},
};

use crate::{
    abi::{
        AccelBox, AccelOps, AccelOps_TO, DebugBox, DebugCapacity, DebugOps, DebugOps_TO, KickOps, KickOps_TO,
        KickerBox, VcpuBox, VcpuOps, VcpuOps_TO, VmBox, VmOps, VmOps_TO,
    },
    config::{MemoryRegion, ProbeInfo, VcpuConfig, VmConfig},
    debug::{DebugEvent, Watchpoint},
    error::{AccelError, ErrorKind, Result},
    events::{MpState, VcpuEvents},
    exit::{DebugExit, VcpuExit},
    irq::{GicConfig, IrqLine},
    regs::{CoreRegs, FpRegs, PutLevel, SyncCounters},
    sve::SveRegs,
    sysreg::{RegClass, RegValue},
};

/// An opened accelerator.
pub trait Backend: Send + Sync + 'static {
    /// The backend's VM type.
    type Vm: BackendVm;

    /// Probes the host through the opened accelerator.
    fn probe(&self) -> ProbeInfo;

    /// Creates a VM.
    fn create_vm(&self, config: &VmConfig) -> Result<Self::Vm>;
}

/// A backend's VM.
pub trait BackendVm: Send + Sync + 'static {
    /// The backend's vCPU type.
    type Vcpu: BackendVcpu;

    /// Maps host memory into the guest. See [`MemoryRegion`] for the caller's obligations.
    fn add_memory(&self, region: &MemoryRegion) -> Result<u32>;

    /// Unmaps a region added before.
    fn remove_memory(&self, slot: u32) -> Result<()>;

    /// See [`crate::abi::VmOps::set_dirty_log`].
    fn set_dirty_log(&self, slot: u32, enabled: bool) -> Result<()>;

    /// See [`crate::abi::VmOps::take_dirty_log`].
    fn take_dirty_log(&self, slot: u32) -> Result<Vec<u64>>;

    /// See [`crate::abi::VmOps::create_gic`].
    fn create_gic(&self, config: &GicConfig) -> Result<()>;

    /// See [`crate::abi::VmOps::set_irq`].
    fn set_irq(&self, line: IrqLine, level: bool) -> Result<()>;

    /// See [`crate::abi::VmOps::register_irqfd`].
    fn register_irqfd(&self, fd: i32, spi: u32) -> Result<()>;

    /// See [`crate::abi::VmOps::unregister_irqfd`].
    fn unregister_irqfd(&self, fd: i32, spi: u32) -> Result<()>;

    /// See [`crate::abi::VmOps::register_ioeventfd`].
    fn register_ioeventfd(&self, fd: i32, addr: u64, len: u32, datamatch: Option<u64>) -> Result<()>;

    /// See [`crate::abi::VmOps::unregister_ioeventfd`].
    fn unregister_ioeventfd(&self, fd: i32, addr: u64, len: u32, datamatch: Option<u64>) -> Result<()>;

    /// The VM's guest-debug pool, if the backend supports guest debug.
    fn debug(&self) -> Option<Arc<dyn BackendDebug>>;

    /// Creates and initialises a vCPU.
    fn create_vcpu(&self, config: &VcpuConfig) -> Result<Self::Vcpu>;
}

/// A backend's guest-debug pool. See [`crate::abi::DebugOps`] for the meaning of each call.
#[allow(missing_docs)]
pub trait BackendDebug: Send + Sync + 'static {
    fn capacity(&self) -> DebugCapacity;
    fn insert_hw_breakpoint(&self, addr: u64) -> Result<()>;
    fn remove_hw_breakpoint(&self, addr: u64) -> Result<()>;
    fn insert_watchpoint(&self, watch: &Watchpoint) -> Result<()>;
    fn remove_watchpoint(&self, watch: &Watchpoint) -> Result<()>;
    fn insert_sw_breakpoint(&self, va: u64, pa: u64) -> Result<()>;
    fn remove_sw_breakpoint(&self, va: u64) -> Result<()>;
    fn set_single_step(&self, index: u32, on: bool) -> Result<()>;
    fn remove_all(&self) -> Result<()>;
    fn classify(&self, index: u32, exit: &DebugExit) -> DebugEvent;
}

/// A debug pool behind the ABI, with every call guarded.
struct GuardedDebug(Arc<dyn BackendDebug>);

impl DebugOps for GuardedDebug {
    fn capacity(&self) -> DebugCapacity {
        catch_unwind(AssertUnwindSafe(|| self.0.capacity())).unwrap_or_default()
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
    fn classify(&self, index: u32, exit: &DebugExit) -> DebugEvent {
        catch_unwind(AssertUnwindSafe(|| self.0.classify(index, exit))).unwrap_or(DebugEvent::Guest)
    }
}

/// Kicks a vCPU out of `run`; see [`crate::abi::KickOps`].
pub trait Kick: Send + Sync + 'static {
    /// Requests that the vCPU's current or next `run` return [`VcpuExit::Interrupted`].
    fn kick(&self);
}

impl KickOps for Box<dyn Kick> {
    fn kick(&self) {
        let _ = catch_unwind(AssertUnwindSafe(|| (**self).kick()));
    }
}

/// A backend's vCPU. See [`crate::abi::VcpuOps`] for the meaning of each call.
#[allow(missing_docs)]
pub trait BackendVcpu: Send + 'static {
    fn index(&self) -> u32;
    fn get_core(&mut self) -> Result<CoreRegs>;
    fn put_core(&mut self, regs: &CoreRegs, level: PutLevel) -> Result<()>;
    fn get_fp(&mut self) -> Result<FpRegs>;
    fn put_fp(&mut self, regs: &FpRegs, level: PutLevel) -> Result<()>;
    fn get_sve(&mut self) -> Result<SveRegs>;
    fn put_sve(&mut self, regs: &SveRegs, level: PutLevel) -> Result<()>;
    fn get_regs(&mut self, class: RegClass) -> Result<Vec<RegValue>>;
    fn put_regs(&mut self, values: &[RegValue], level: PutLevel) -> Result<()>;
    fn get_events(&mut self) -> Result<VcpuEvents>;
    fn put_events(&mut self, events: &VcpuEvents) -> Result<()>;
    fn get_mp_state(&mut self) -> Result<MpState>;
    fn set_mp_state(&mut self, state: MpState) -> Result<()>;
    fn kicker(&self) -> Box<dyn Kick>;
    fn counters(&self) -> SyncCounters;
    fn set_mmio_read_data(&mut self, value: u64) -> Result<()>;
    fn run(&mut self) -> Result<VcpuExit>;
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

/// Runs `f`, turning a panic into an [`ErrorKind::PANIC`] error that names `op`.
pub fn guard<T>(op: &str, f: impl FnOnce() -> Result<T>) -> RResult<T, AccelError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.into(),
        Err(payload) => RErr(AccelError::new(
            ErrorKind::PANIC,
            format!("{op}: the plugin panicked: {}", panic_message(payload.as_ref())),
        )),
    }
}

/// Runs a probe function, turning a panic into an "unavailable" answer.
pub fn guarded_probe(probe: fn() -> ProbeInfo) -> ProbeInfo {
    catch_unwind(probe).unwrap_or_else(|payload| {
        ProbeInfo::unavailable(format!("the probe panicked: {}", panic_message(payload.as_ref())))
    })
}

/// Runs a plugin's open function and wraps the backend for the ABI.
pub fn guarded_open<B: Backend>(open: fn() -> Result<B>) -> RResult<AccelBox, AccelError> {
    guard("open", || open().map(|b| AccelOps_TO::from_value(Guarded(b), TD_Opaque)))
}

/// A backend object behind the ABI, with every call guarded.
pub struct Guarded<T>(T);

impl<B: Backend> AccelOps for Guarded<B> {
    fn probe(&self) -> ProbeInfo {
        match guard("probe", || Ok(self.0.probe())) {
            abi_stable::std_types::ROk(info) => info,
            RErr(e) => ProbeInfo::unavailable(e.message),
        }
    }

    fn create_vm(&self, config: &VmConfig) -> RResult<VmBox, AccelError> {
        guard("create_vm", || self.0.create_vm(config).map(|vm| VmOps_TO::from_value(Guarded(vm), TD_Opaque)))
    }
}

impl<V: BackendVm> VmOps for Guarded<V> {
    fn add_memory(&self, region: &MemoryRegion) -> RResult<u32, AccelError> {
        guard("add_memory", || self.0.add_memory(region))
    }

    fn remove_memory(&self, slot: u32) -> RResult<(), AccelError> {
        guard("remove_memory", || self.0.remove_memory(slot))
    }

    fn set_dirty_log(&self, slot: u32, enabled: bool) -> RResult<(), AccelError> {
        guard("set_dirty_log", || self.0.set_dirty_log(slot, enabled))
    }

    fn take_dirty_log(&self, slot: u32) -> RResult<RVec<u64>, AccelError> {
        guard("take_dirty_log", || self.0.take_dirty_log(slot).map(RVec::from))
    }

    fn create_gic(&self, config: &GicConfig) -> RResult<(), AccelError> {
        guard("create_gic", || self.0.create_gic(config))
    }

    fn set_irq(&self, line: IrqLine, level: bool) -> RResult<(), AccelError> {
        guard("set_irq", || self.0.set_irq(line, level))
    }

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

    fn debug(&self) -> ROption<DebugBox> {
        catch_unwind(AssertUnwindSafe(|| self.0.debug()))
            .ok()
            .flatten()
            .map(|d| DebugOps_TO::from_value(GuardedDebug(d), TD_Opaque))
            .into()
    }

    fn create_vcpu(&self, config: &VcpuConfig) -> RResult<VcpuBox, AccelError> {
        guard("create_vcpu", || {
            self.0.create_vcpu(config).map(|vcpu| VcpuOps_TO::from_value(Guarded(vcpu), TD_Opaque))
        })
    }
}

impl<C: BackendVcpu> VcpuOps for Guarded<C> {
    fn index(&self) -> u32 {
        // Reading an index cannot fail in any backend worth the name; a panic here reads as
        // u32::MAX rather than unwinding.
        catch_unwind(AssertUnwindSafe(|| self.0.index())).unwrap_or(u32::MAX)
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

    fn get_sve(&mut self) -> RResult<SveRegs, AccelError> {
        guard("get_sve", || self.0.get_sve())
    }

    fn put_sve(&mut self, regs: &SveRegs, level: PutLevel) -> RResult<(), AccelError> {
        guard("put_sve", || self.0.put_sve(regs, level))
    }

    fn get_regs(&mut self, class: RegClass) -> RResult<RVec<RegValue>, AccelError> {
        guard("get_regs", || self.0.get_regs(class).map(RVec::from))
    }

    fn put_regs(&mut self, values: RSlice<'_, RegValue>, level: PutLevel) -> RResult<(), AccelError> {
        guard("put_regs", || self.0.put_regs(values.as_slice(), level))
    }

    fn get_events(&mut self) -> RResult<VcpuEvents, AccelError> {
        guard("get_events", || self.0.get_events())
    }

    fn put_events(&mut self, events: &VcpuEvents) -> RResult<(), AccelError> {
        guard("put_events", || self.0.put_events(events))
    }

    fn get_mp_state(&mut self) -> RResult<MpState, AccelError> {
        guard("get_mp_state", || self.0.get_mp_state())
    }

    fn set_mp_state(&mut self, state: MpState) -> RResult<(), AccelError> {
        guard("set_mp_state", || self.0.set_mp_state(state))
    }

    fn kicker(&self) -> KickerBox {
        let kick = catch_unwind(AssertUnwindSafe(|| self.0.kicker())).unwrap_or_else(|_| Box::new(NoKick));
        KickOps_TO::from_value(kick, TD_Opaque)
    }

    fn counters(&self) -> SyncCounters {
        catch_unwind(AssertUnwindSafe(|| self.0.counters())).unwrap_or_default()
    }

    fn set_mmio_read_data(&mut self, value: u64) -> RResult<(), AccelError> {
        guard("set_mmio_read_data", || self.0.set_mmio_read_data(value))
    }

    fn run(&mut self) -> RResult<VcpuExit, AccelError> {
        guard("run", || self.0.run())
    }
}

/// Exports a backend as an accel plugin.
///
/// ```text
/// accel_api::export_plugin! {
///     name: "kvm",
///     probe: probe,      // fn() -> accel_api::ProbeInfo
///     open: open,        // fn() -> accel_api::Result<impl accel_api::backend::Backend>
/// }
/// ```
///
/// The plugin crate is a `cdylib` and depends on `abi_stable` directly.
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr, probe: $probe:path, open: $open:path $(,)?) => {
        /// The plugin's root module, found by the host through abi_stable's loader.
        #[::abi_stable::export_root_module]
        pub fn accel_plugin_root() -> $crate::abi::PluginRef {
            use ::abi_stable::prefix_type::PrefixTypeTrait;

            extern "C" fn plugin_name() -> ::abi_stable::std_types::RStr<'static> {
                ::abi_stable::std_types::RStr::from_str($name)
            }
            extern "C" fn plugin_set_logger(sink: $crate::logging::LogSink) {
                let _ = ::std::panic::catch_unwind(move || $crate::logging::install_plugin_logger(sink));
            }
            extern "C" fn plugin_probe() -> $crate::config::ProbeInfo {
                $crate::backend::guarded_probe($probe)
            }
            extern "C" fn plugin_open(
            ) -> ::abi_stable::std_types::RResult<$crate::abi::AccelBox, $crate::AccelError> {
                $crate::backend::guarded_open($open)
            }

            $crate::abi::Plugin {
                name: plugin_name,
                set_logger: plugin_set_logger,
                probe: plugin_probe,
                open: plugin_open,
            }
            .leak_into_prefix()
        }
    };
}

/// The kicker of a vCPU whose backend failed to make one: kicking does nothing.
struct NoKick;

impl Kick for NoKick {
    fn kick(&self) {}
}

/// The backend of a plugin that cannot run on this host: no value of it is ever made, so its
/// plugin's `open` always fails with the reason.
pub enum NoBackend {}

impl Backend for NoBackend {
    type Vm = NoBackend;
    fn probe(&self) -> ProbeInfo {
        match *self {}
    }
    fn create_vm(&self, _: &VmConfig) -> Result<NoBackend> {
        match *self {}
    }
}

impl BackendVm for NoBackend {
    type Vcpu = NoBackend;
    fn add_memory(&self, _: &MemoryRegion) -> Result<u32> {
        match *self {}
    }
    fn remove_memory(&self, _: u32) -> Result<()> {
        match *self {}
    }
    fn set_dirty_log(&self, _: u32, _: bool) -> Result<()> {
        match *self {}
    }
    fn take_dirty_log(&self, _: u32) -> Result<Vec<u64>> {
        match *self {}
    }
    fn create_gic(&self, _: &GicConfig) -> Result<()> {
        match *self {}
    }
    fn set_irq(&self, _: IrqLine, _: bool) -> Result<()> {
        match *self {}
    }
    fn register_irqfd(&self, _: i32, _: u32) -> Result<()> {
        match *self {}
    }
    fn unregister_irqfd(&self, _: i32, _: u32) -> Result<()> {
        match *self {}
    }
    fn register_ioeventfd(&self, _: i32, _: u64, _: u32, _: Option<u64>) -> Result<()> {
        match *self {}
    }
    fn unregister_ioeventfd(&self, _: i32, _: u64, _: u32, _: Option<u64>) -> Result<()> {
        match *self {}
    }
    fn debug(&self) -> Option<Arc<dyn BackendDebug>> {
        match *self {}
    }
    fn create_vcpu(&self, _: &VcpuConfig) -> Result<NoBackend> {
        match *self {}
    }
}

impl BackendVcpu for NoBackend {
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
    fn get_sve(&mut self) -> Result<SveRegs> {
        match *self {}
    }
    fn put_sve(&mut self, _: &SveRegs, _: PutLevel) -> Result<()> {
        match *self {}
    }
    fn get_regs(&mut self, _: RegClass) -> Result<Vec<RegValue>> {
        match *self {}
    }
    fn put_regs(&mut self, _: &[RegValue], _: PutLevel) -> Result<()> {
        match *self {}
    }
    fn get_events(&mut self) -> Result<VcpuEvents> {
        match *self {}
    }
    fn put_events(&mut self, _: &VcpuEvents) -> Result<()> {
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
    fn run(&mut self) -> Result<VcpuExit> {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_turns_a_panic_into_an_error() {
        let r: RResult<u32, AccelError> = guard("run", || panic!("boom {}", 7));
        let e = r.into_result().unwrap_err();
        assert_eq!(e.kind, ErrorKind::PANIC);
        assert_eq!(e.message.as_str(), "run: the plugin panicked: boom 7");
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
        let info = guarded_probe(bad);
        assert!(!info.available);
        assert!(info.reason.contains("no device"));
    }
}
