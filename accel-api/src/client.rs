//! Host-side handles over a plugin's objects: `Result`-returning methods in the plain Rust types,
//! with the records converted, and optional extensions as `Option`s. Each handle is generated
//! from its interface's declaration in [`crate::interface`]; this file adds the conveniences a
//! host wants on top.

pub use crate::interface::{
    accel::Accelerator, debug::Debug, dirty_log::DirtyLog, events::Events, gic::Gic, kick::Kicker,
    linux_eventfd::EventFds, sve::Sve, vcpu::Vcpu, vm::Vm,
};
use crate::{
    backend::Backend,
    error::{AccelError, ErrorKind, Result},
    events::VcpuEvents,
    regs::{CoreReg, PutLevel},
    sve::SveRegs,
    sysreg::{RegClass, RegId, RegValue, FPCR, FPSR},
};

impl Accelerator {
    /// Opens a backend linked into this program, behind the same ABI objects, record conversions
    /// and panic guards that [`crate::export_plugin!`] puts around a plugin's `open`: every call
    /// takes the path it takes into a loaded plugin, only without the shared-library boundary.
    /// For comparing a backend linked in with the same backend loaded, and for programs that
    /// want one backend without loading files.
    ///
    /// Unlike a loaded plugin, the backend shares this program's `log` logger and panic hook.
    pub fn in_process<B: Backend>(open: fn() -> Result<B>) -> Result<Self> {
        crate::interface::accel::guarded_open(open).into_result().map(Self::from_abi)
    }
}

impl Vm {
    /// The in-kernel GICv3, or an `unsupported` error that says the backend has none.
    pub fn require_gic(&self) -> Result<Gic> {
        self.gic().ok_or_else(|| AccelError::unsupported("this backend has no in-kernel GICv3"))
    }
}

impl Vcpu {
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

    /// Reads the pending events; `unsupported` when the backend has none.
    pub fn get_events(&mut self) -> Result<VcpuEvents> {
        self.events().ok_or_else(no_events)?.get()
    }

    /// Sets the pending events; `unsupported` when the backend cannot inject them.
    pub fn put_events(&mut self, events: &VcpuEvents) -> Result<()> {
        self.events().ok_or_else(no_events)?.put(events)
    }

    /// MPIDR_EL1: the vCPU's affinity as the backend assigned it (what PSCI CPU_ON targets).
    pub fn mpidr(&mut self) -> Result<u64> {
        self.get_reg(crate::sysreg::MPIDR_EL1)
    }

    /// Reads one register.
    pub fn get_reg(&mut self, id: RegId) -> Result<u64> {
        Ok(self.read_named(&[id])?[0].value)
    }

    /// Reads the registers `ids`, in that order: by id where the backend can (ABI 2.3), and
    /// otherwise through their classes, each class read once (the core registers' ids through
    /// `get_core`, FPSR and FPCR, kept with the FP/SIMD registers, through `get_fp`).
    pub fn read_named(&mut self, ids: &[RegId]) -> Result<Vec<RegValue>> {
        match self.get_named(ids) {
            Err(e) if e.kind == ErrorKind::UNSUPPORTED => {}
            other => return other,
        }
        // FPSR and FPCR are system registers that backends keep with the FP/SIMD registers.
        let status = |id: &&RegId| **id == FPSR || **id == FPCR;
        let mut classes: Vec<RegClass> = ids.iter().filter(|id| !status(id)).map(|id| id.class()).collect();
        classes.sort_unstable_by_key(|c| c.0);
        classes.dedup();
        let mut read = Vec::new();
        for class in classes {
            if class == RegClass::CORE {
                let core = self.get_core()?;
                read.extend(
                    CoreReg::all().map(|reg| RegValue { id: RegId::core(reg), value: core.get(reg) }),
                );
            } else {
                read.extend(self.get_regs(class)?);
            }
        }
        if ids.iter().any(|id| status(&id)) {
            let fp = self.get_fp()?;
            read.push(RegValue { id: FPSR, value: fp.fpsr.into() });
            read.push(RegValue { id: FPCR, value: fp.fpcr.into() });
        }
        ids.iter()
            .map(|&id| {
                read.iter().find(|v| v.id == id).copied().ok_or_else(|| {
                    AccelError::new(ErrorKind::NOT_FOUND, format!("{id} is not a register of this vCPU"))
                })
            })
            .collect()
    }
}

fn no_sve(index: u32) -> AccelError {
    AccelError::unsupported(format!("vCPU {index} has no SVE (not enabled, or the backend lacks it)"))
}

fn no_events() -> AccelError {
    AccelError::unsupported("this backend cannot read or inject vCPU events")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        backend::{BackendVcpu, BackendVm, Kick},
        config::{MemoryRegion, ProbeInfo, VcpuConfig, VmConfig},
        events::MpState,
        regs::{CoreRegs, FpRegs, SyncCounters},
        sysreg::{RegClass, RegValue},
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
