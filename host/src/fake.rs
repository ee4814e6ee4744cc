//! An in-process fake backend, for tests and the fuzz targets of the gdb stub: registers kept in
//! memory and no guest. A resumed vCPU waits in `run` until it is kicked (an interrupted exit),
//! or, when its debug pool asks for a single step, advances its PC by one instruction and
//! reports the step at once. Its debug pool is the shared [`DebugPool`] (software breakpoints are
//! recorded, not planted in memory). It is opened through the same ABI glue as a plugin
//! ([`accel_api::glue`]), so the host drives it through the real client handles.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use accel_api::{
    backend::{Backend, BackendDebug, BackendGic, BackendSve, BackendVcpu, BackendVm, Kick},
    client::Accelerator,
    debug::{DebugCapacity, DebugEvent, DebugProgram, Watchpoint},
    events::MpState,
    regs::{CoreRegs, FpRegs, PutLevel, SyncCounters},
    sve::SveRegs,
    sysreg::{self, RegClass, RegValue},
    AccelError, Capabilities, DebugExit, ErrorKind, GicConfig, IrqLine, MemoryRegion, ProbeInfo, Result,
    VcpuConfig, VcpuExit, VcpuFeatures, VmConfig,
};

use accel_kit::debug_pool::DebugPool;

/// The SVE vector length of the fake's vCPUs, in quadwords.
pub const SVE_VQ: u32 = 2;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one run shares with the fake: whether it is over, and how many vCPUs are alive.
#[derive(Default)]
pub struct World {
    state: Mutex<WorldState>,
    changed: Condvar,
}

#[derive(Default)]
struct WorldState {
    /// The run is over: every `run` returns at once.
    over: bool,
    /// vCPUs not yet dropped.
    vcpus: usize,
    /// Kicks not yet consumed, per vCPU index.
    kicks: Vec<bool>,
}

impl World {
    /// Ends the run: vCPUs waiting in `run` return, and then waits until every vCPU is gone.
    pub fn end(&self) {
        let mut state = lock(&self.state);
        state.over = true;
        self.changed.notify_all();
        while state.vcpus > 0 {
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn kick(&self, index: usize) {
        let mut state = lock(&self.state);
        if state.kicks.len() <= index {
            state.kicks.resize(index + 1, false);
        }
        state.kicks[index] = true;
        self.changed.notify_all();
    }

    /// Takes vCPU `index`'s pending kick, if any.
    fn take_kick(state: &mut WorldState, index: usize) -> bool {
        state.kicks.get_mut(index).is_some_and(std::mem::take)
    }

    /// Waits until vCPU `index` is kicked or the run ends.
    fn wait_for_kick(&self, index: usize) -> Result<()> {
        let mut state = lock(&self.state);
        loop {
            if Self::take_kick(&mut state, index) {
                return Ok(());
            }
            if state.over {
                return Err(AccelError::bad_state("the run is over"));
            }
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

thread_local! {
    /// The world the next [`accelerator`] opens into (the ABI glue takes a plain `fn`).
    static NEXT: std::cell::RefCell<Option<Arc<World>>> = const { std::cell::RefCell::new(None) };
}

/// Opens the fake backend into `world`, through the ABI glue a plugin uses.
pub fn accelerator(world: &Arc<World>) -> Result<Accelerator> {
    NEXT.with(|n| *n.borrow_mut() = Some(Arc::clone(world)));
    Accelerator::in_process(open)
}

fn open() -> Result<FakeBackend> {
    let world = NEXT.with(|n| n.borrow_mut().take());
    world.map(|world| FakeBackend { world }).ok_or_else(|| AccelError::bad_state("no world to open into"))
}

struct FakeBackend {
    world: Arc<World>,
}

impl Backend for FakeBackend {
    type Vm = FakeVm;

    fn probe(&self) -> ProbeInfo {
        let mut info = ProbeInfo::unavailable("");
        info.available = true;
        info.reason = "the fuzz targets' fake backend".into();
        info.caps = Capabilities {
            max_vcpus: 4,
            ipa_bits: 40,
            hw_breakpoints: 4,
            hw_watchpoints: 4,
            vcpu_features: VcpuFeatures::PSCI_0_2 | VcpuFeatures::POWER_OFF | VcpuFeatures::SVE,
            sve_vqs: 1 << (SVE_VQ - 1),
            gic_v3: true,
            page_size: 4096,
            ..Capabilities::default()
        };
        info
    }

    fn create_vm(&self, _: &VmConfig) -> Result<FakeVm> {
        Ok(FakeVm {
            world: Arc::clone(&self.world),
            debug: Arc::new(FakeDebug(Mutex::new(DebugPool::new(4, 4)))),
        })
    }
}

struct FakeVm {
    world: Arc<World>,
    debug: Arc<FakeDebug>,
}

impl BackendVm for FakeVm {
    type Vcpu = FakeVcpu;

    unsafe fn add_memory(&self, _: &MemoryRegion) -> Result<u32> {
        Ok(0)
    }

    fn remove_memory(&self, _: u32) -> Result<()> {
        Ok(())
    }

    fn create_vcpu(&self, config: &VcpuConfig) -> Result<FakeVcpu> {
        lock(&self.world.state).vcpus += 1;
        let sys = [
            (sysreg::MPIDR_EL1, 0x8000_0000 | u64::from(config.index)),
            (sysreg::SCTLR_EL1, 0x30d0_0800),
            (sysreg::TCR_EL1, 0),
            (sysreg::TTBR0_EL1, 0),
            (sysreg::TTBR1_EL1, 0),
            (sysreg::VBAR_EL1, 0),
            (sysreg::TPIDR_EL1, 0),
        ];
        let off = config.index > 0 && config.features.contains(VcpuFeatures::POWER_OFF);
        Ok(FakeVcpu {
            index: config.index,
            world: Arc::clone(&self.world),
            debug: Arc::clone(&self.debug),
            core: CoreRegs::default(),
            fp: FpRegs::default(),
            sve: config.features.contains(VcpuFeatures::SVE).then(|| SveRegs::zeroed(SVE_VQ)),
            sys: sys.iter().map(|&(id, value)| RegValue { id, value }).collect(),
            mp_state: if off { MpState::STOPPED } else { MpState::RUNNABLE },
        })
    }

    fn support_gic(&self) -> Option<Arc<dyn BackendGic>> {
        Some(Arc::new(FakeGic))
    }

    fn support_debug(&self) -> Option<Arc<dyn BackendDebug>> {
        Some(Arc::clone(&self.debug) as Arc<dyn BackendDebug>)
    }
}

struct FakeGic;

impl BackendGic for FakeGic {
    fn create(&self, _: &GicConfig) -> Result<()> {
        Ok(())
    }

    fn set_irq(&self, _: IrqLine, _: bool) -> Result<()> {
        Ok(())
    }
}

/// The shared debug pool; software breakpoints are recorded, not planted in memory.
struct FakeDebug(Mutex<DebugPool>);

impl BackendDebug for FakeDebug {
    fn capacity(&self) -> DebugCapacity {
        DebugCapacity { breakpoints: 4, watchpoints: 4 }
    }

    fn insert_hw_breakpoint(&self, addr: u64) -> Result<()> {
        lock(&self.0).insert_hw_breakpoint(addr)
    }

    fn remove_hw_breakpoint(&self, addr: u64) -> Result<()> {
        lock(&self.0).remove_hw_breakpoint(addr)
    }

    fn insert_watchpoint(&self, watch: &Watchpoint) -> Result<()> {
        lock(&self.0).insert_watchpoint(*watch)
    }

    fn remove_watchpoint(&self, watch: &Watchpoint) -> Result<()> {
        lock(&self.0).remove_watchpoint(*watch)
    }

    fn insert_sw_breakpoint(&self, va: u64, pa: u64) -> Result<()> {
        lock(&self.0).insert_sw_breakpoint(va, pa, 0).map(drop)
    }

    fn remove_sw_breakpoint(&self, va: u64) -> Result<()> {
        lock(&self.0).remove_sw_breakpoint(va, accel_api::debug::BRK_INSN).map(drop)
    }

    fn set_single_step(&self, index: u32, on: bool) -> Result<()> {
        lock(&self.0).set_single_step(index, on);
        Ok(())
    }

    fn remove_all(&self) -> Result<()> {
        lock(&self.0).remove_all();
        Ok(())
    }

    fn classify(&self, index: u32, exit: &DebugExit) -> DebugEvent {
        lock(&self.0).classify(index, exit.esr, exit.far, exit.pc)
    }

    fn program(&self, index: u32) -> Result<DebugProgram> {
        let pool = lock(&self.0);
        Ok(DebugProgram { setup: pool.setup_for(index), sw_breakpoints: pool.sw_addresses() })
    }
}

struct FakeVcpu {
    index: u32,
    world: Arc<World>,
    debug: Arc<FakeDebug>,
    core: CoreRegs,
    fp: FpRegs,
    sve: Option<SveRegs>,
    sys: Vec<RegValue>,
    mp_state: MpState,
}

impl Drop for FakeVcpu {
    fn drop(&mut self) {
        let mut state = lock(&self.world.state);
        state.vcpus -= 1;
        self.world.changed.notify_all();
    }
}

struct FakeKick {
    world: Arc<World>,
    index: usize,
}

impl Kick for FakeKick {
    fn kick(&self) {
        self.world.kick(self.index);
    }
}

impl BackendVcpu for FakeVcpu {
    fn index(&self) -> u32 {
        self.index
    }

    fn get_core(&mut self) -> Result<CoreRegs> {
        Ok(self.core)
    }

    fn put_core(&mut self, regs: &CoreRegs, _: PutLevel) -> Result<()> {
        self.core = *regs;
        Ok(())
    }

    fn get_fp(&mut self) -> Result<FpRegs> {
        Ok(self.fp)
    }

    fn put_fp(&mut self, regs: &FpRegs, _: PutLevel) -> Result<()> {
        self.fp = *regs;
        Ok(())
    }

    fn get_regs(&mut self, class: RegClass) -> Result<Vec<RegValue>> {
        Ok(self.sys.iter().filter(|v| v.id.class() == class).copied().collect())
    }

    fn put_regs(&mut self, values: &[RegValue], _: PutLevel) -> Result<()> {
        for v in values {
            let slot = self.sys.iter_mut().find(|r| r.id == v.id).ok_or_else(|| {
                AccelError::new(ErrorKind::NOT_FOUND, format!("{} is not a register of the fake", v.id))
            })?;
            slot.value = v.value;
        }
        Ok(())
    }

    fn get_mp_state(&mut self) -> Result<MpState> {
        Ok(self.mp_state)
    }

    fn set_mp_state(&mut self, state: MpState) -> Result<()> {
        self.mp_state = state;
        Ok(())
    }

    fn kicker(&self) -> Box<dyn Kick> {
        Box::new(FakeKick { world: Arc::clone(&self.world), index: self.index as usize })
    }

    fn counters(&self) -> SyncCounters {
        SyncCounters::default()
    }

    fn set_mmio_read_data(&mut self, _: u64) -> Result<()> {
        Err(AccelError::bad_state("the fake never exits for MMIO"))
    }

    fn run(&mut self) -> Result<VcpuExit> {
        let index = self.index as usize;
        if World::take_kick(&mut lock(&self.world.state), index) {
            return Ok(VcpuExit::Interrupted);
        }
        let stepping =
            self.mp_state != MpState::STOPPED && lock(&self.debug.0).setup_for(self.index).single_step;
        if stepping {
            self.core.pc = self.core.pc.wrapping_add(4);
            let esr = 0x32 << 26 | 1 << 25;
            return Ok(VcpuExit::Debug(DebugExit { esr, far: 0, pc: self.core.pc }));
        }
        self.world.wait_for_kick(index).map(|()| VcpuExit::Interrupted)
    }

    fn support_sve(&mut self) -> Option<&mut dyn BackendSve> {
        self.sve.is_some().then_some(self as &mut dyn BackendSve)
    }
}

impl BackendSve for FakeVcpu {
    fn get_sve(&mut self) -> Result<SveRegs> {
        self.sve.clone().ok_or_else(|| AccelError::unsupported("no SVE"))
    }

    fn put_sve(&mut self, regs: &SveRegs, _: PutLevel) -> Result<()> {
        match &mut self.sve {
            Some(sve) if regs.is_well_formed() && regs.vq == sve.vq => {
                *sve = regs.clone();
                Ok(())
            }
            _ => Err(AccelError::invalid("SVE registers of another vector length")),
        }
    }
}
