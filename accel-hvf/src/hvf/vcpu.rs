//! An HVF vCPU. The framework binds a vCPU to the thread that creates it, so each vCPU has a
//! thread of its own (the worker) that creates it, owns it and destroys it; the handle the host
//! holds sends each ABI call to that thread as one message and waits for the answer. The index,
//! the counters and the kicker need no message, and the kick is `hv_vcpus_exit`.
//!
//! The worker's run loop turns the framework's exits into accel's exits, with the shared code
//! of the backend kit: MMIO from data aborts ([`accel_kit::mmio`]), PSCI and SMCCC
//! ([`accel_kit::psci`]), trapped system registers ([`accel_kit::systrap`]), WFI until the
//! virtual timer's deadline ([`accel_kit::timer`]), dirty pages, and debug exceptions.

use std::{
    collections::HashSet,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc, Condvar, Mutex, MutexGuard,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use accel_api::{
    backend::{BackendEvents, BackendVcpu, Kick},
    debug::DebugSetup,
    sysreg::{RegSpace, CNTVCT_EL0, CNTV_CTL_EL0, CNTV_CVAL_EL0, FW_PSCI_VERSION, MDSCR_EL1, VBAR_EL1},
    AccelError, CoreReg, CoreRegs, DebugExit, ErrorKind, FpReg, FpRegs, MmioAccess, MpState, PutLevel,
    RegClass, RegId, RegValue, Result, SyncCounters, SystemEventKind, VcpuConfig, VcpuEvents, VcpuExit,
    VcpuFeatures,
};

use accel_kit::{
    exception::{self, ec, esr_ec},
    hvf_regs::{self, core_location, debug_regs, fp_location, CoreLocation, FpLocation},
    mmio::{self, DataAbort, MmioInstruction},
    psci::{self, Call, Conduit, Outcome, PowerBoard, StartContext, Wake},
    put::{LastGet, LastValues},
    systrap::{PmuAnswer, SysRegAccess, SysRegTraps, TrapOutcome},
    timer::{self, WfiWait},
};
use applevisor::prelude::{ExitReason, SysReg, Vcpu, VcpuExitException};
use applevisor_sys::{hv_vcpu_t, hv_vcpus_exit};

use super::{
    hv_error,
    regs::{self, redistributor_reg},
    vm::VmShared,
};

/// The longest a WFI sleeps before the guest looks again: interrupts the framework's GIC holds
/// for a vCPU (an SGI from another vCPU) raise no event here, so the sleep is bounded.
const WFI_POLL: Duration = Duration::from_millis(2);

/// MDSCR_EL1.SS: software step.
const MDSCR_SS: u64 = 1 << 0;
/// MDSCR_EL1.MDE: breakpoints and watchpoints.
const MDSCR_MDE: u64 = 1 << 15;
/// PSTATE.SS: the instruction to step.
const PSTATE_SS: u64 = 1 << 21;
/// PSTATE out of reset: EL1h with D, A, I and F masked.
const PSTATE_RESET: u64 = 0x3c5;

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The host counter (`mach_absolute_time` counts the counter's ticks).
fn host_count() -> u64 {
    // SAFETY: mach_absolute_time has no preconditions.
    #[allow(deprecated)]
    unsafe {
        libc::mach_absolute_time()
    }
}

/// What a vCPU's handle, kickers and VM share with its worker thread.
pub struct KickState {
    /// A host kick not yet reported.
    requested: AtomicBool,
    /// The plugin's own wake-up: PPIs queued, an SPI raised, a power state changed.
    nudged: AtomicBool,
    /// The framework's vCPU while it exists.
    vcpu: Mutex<Option<hv_vcpu_t>>,
    /// A WFI sleeps on these.
    sleep: Mutex<()>,
    wake: Condvar,
    /// PPI levels to apply on the vCPU's thread.
    ppis: Mutex<Vec<(u32, bool)>>,
    /// The VM's power board, on which a stopped vCPU waits.
    board: Arc<PowerBoard>,
}

impl KickState {
    fn new(board: Arc<PowerBoard>) -> Self {
        Self {
            requested: AtomicBool::new(false),
            nudged: AtomicBool::new(false),
            vcpu: Mutex::new(None),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            ppis: Mutex::new(Vec::new()),
            board,
        }
    }

    /// Makes the vCPU leave the guest, or its next entry return at once (`CANCELED`).
    fn exit_guest(&self) {
        let vcpu = locked(&self.vcpu);
        if let Some(id) = *vcpu {
            // SAFETY: `id` is a live vCPU: the worker clears it under this lock before the vCPU
            // is destroyed. The array holds one element.
            let rc = unsafe { hv_vcpus_exit(&id, 1) };
            if rc != 0 {
                log::warn!("hv_vcpus_exit failed ({rc:#x})");
            }
        }
    }

    fn notify(&self) {
        let _guard = locked(&self.sleep);
        self.wake.notify_all();
    }

    /// A host kick: the current or next `run` returns interrupted.
    fn kick(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.exit_guest();
        self.notify();
        self.board.wake_all();
    }

    /// Brings the worker back to the top of its run loop, without an exit for the host.
    fn nudge(&self) {
        self.nudged.store(true, Ordering::SeqCst);
        self.exit_guest();
        self.notify();
        self.board.wake_all();
    }

    /// Wakes a WFI sleep, to look again.
    pub fn wake_sleeper(&self) {
        self.nudged.store(true, Ordering::SeqCst);
        self.notify();
    }

    /// Queues a PPI level for the vCPU's thread, which applies it before it next enters.
    pub fn queue_ppi(&self, intid: u32, level: bool) {
        locked(&self.ppis).push((intid, level));
        self.nudge();
    }

    fn interrupted(&self) -> bool {
        self.requested.load(Ordering::SeqCst) || self.nudged.load(Ordering::SeqCst)
    }
}

/// A kicker handed to the host.
struct HvfKicker(Arc<KickState>);

impl Kick for HvfKicker {
    fn kick(&self) {
        self.0.kick();
    }
}

/// The register accesses and entries of a vCPU, readable without a message.
#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
    runs: AtomicU64,
}

/// A call sent to the worker.
type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// The values a CPU_ON resets the vCPU to: its registers as created.
struct ResetState {
    core: CoreRegs,
    sys: Vec<(RegId, u64)>,
}

/// The worker thread's state: the framework's vCPU and what the shared model needs.
struct Worker {
    vcpu: Vcpu,
    index: u32,
    vm: Arc<VmShared>,
    kick: Arc<KickState>,
    counters: Arc<Counters>,
    /// The registers of the SYS and TIMER classes.
    listed: HashSet<RegId>,
    last_core: LastGet<CoreRegs>,
    last_fp: LastGet<FpRegs>,
    last_sys: LastValues,
    /// An MMIO read waiting for its data.
    pending_read: Option<MmioInstruction>,
    traps: SysRegTraps,
    pmu: PmuAnswer,
    /// The vtimer is masked since its last activation.
    vtimer_masked: bool,
    vtimer_offset: u64,
    /// MP state SUSPENDED, set by the host.
    suspended: bool,
    debug_applied: Option<u64>,
    /// The host debugs: the debug traps are on and the guest's debug registers are in the shadow.
    debugging: bool,
    stepping: bool,
    /// The faulting virtual address of the last exception.
    last_far: u64,
    reset: ResetState,
}

impl Worker {
    fn new(
        vm: Arc<VmShared>,
        index: u32,
        kick: Arc<KickState>,
        counters: Arc<Counters>,
        on: bool,
    ) -> Result<Self> {
        let vcpu = vm
            .instance()?
            .vcpu_create()
            .map_err(|e| hv_error(format!("hv_vcpu_create of vCPU {index}"), e))?;
        let mpidr = hvf_regs::mpidr(index);
        vcpu.set_sys_reg(SysReg::MPIDR_EL1, mpidr)
            .map_err(|e| hv_error(format!("setting MPIDR_EL1 of vCPU {index}"), e))?;
        let vtimer_offset = vcpu
            .get_vtimer_offset()
            .map_err(|e| hv_error(format!("reading the vtimer offset of vCPU {index}"), e))?;
        let caps = vm.probed.caps;
        let listed = hvf_regs::SYS_REGS
            .iter()
            .chain(&hvf_regs::SYS_REGS_EL0)
            .chain(&hvf_regs::DEBUG_CONTROL_REGS)
            .chain(&hvf_regs::TIMER_REGS)
            .copied()
            .chain(debug_regs(caps.hw_breakpoints, caps.hw_watchpoints))
            .collect();
        let pmu = if vm.probed.id.field("ID_AA64DFR0_EL1", "PMUVer") == Some(0) {
            PmuAnswer::Undefined
        } else {
            PmuAnswer::NoCounters
        };
        let mut worker = Self {
            vcpu,
            index,
            vm,
            kick,
            counters,
            listed,
            last_core: LastGet::default(),
            last_fp: LastGet::default(),
            last_sys: LastValues::default(),
            pending_read: None,
            traps: SysRegTraps::new(pmu),
            pmu,
            vtimer_masked: false,
            vtimer_offset,
            suspended: false,
            debug_applied: None,
            debugging: false,
            stepping: false,
            last_far: 0,
            reset: ResetState { core: CoreRegs::default(), sys: Vec::new() },
        };
        worker.reset = worker.snapshot_reset()?;
        *locked(&worker.kick.vcpu) = Some(worker.vcpu.id());
        worker.vm.psci.lock().add(index, mpidr, on);
        Ok(worker)
    }

    /// The registers as created, for the reset of a later CPU_ON: the core registers, and the
    /// system registers the guest can change (not the ID registers).
    fn snapshot_reset(&self) -> Result<ResetState> {
        let core = self.read_core()?;
        let mut sys = Vec::new();
        let resettable = hvf_regs::SYS_REGS
            .iter()
            .chain(&hvf_regs::SYS_REGS_EL0)
            .copied()
            .filter(|id| id.fields().is_some_and(|(_, op1, crn, _, _)| crn != 0 || op1 != 0))
            .chain([CNTV_CTL_EL0, MDSCR_EL1]);
        for id in resettable {
            sys.push((id, self.get_sys(id)?));
        }
        Ok(ResetState { core, sys })
    }

    // Register access, counted.

    fn get_reg(&self, number: u32, name: &str) -> Result<u64> {
        let reg =
            regs::reg(number).ok_or_else(|| AccelError::invalid(format!("no hv_reg_t {number} ({name})")))?;
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        self.vcpu.get_reg(reg).map_err(|e| hv_error(format!("reading {name} of vCPU {}", self.index), e))
    }

    fn set_reg(&self, number: u32, name: &str, value: u64) -> Result<()> {
        let reg =
            regs::reg(number).ok_or_else(|| AccelError::invalid(format!("no hv_reg_t {number} ({name})")))?;
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.vcpu
            .set_reg(reg, value)
            .map_err(|e| hv_error(format!("writing {name} of vCPU {}", self.index), e))
    }

    fn get_sys(&self, id: RegId) -> Result<u64> {
        let reg = regs::sys_reg(id).ok_or_else(|| self.not_found(id))?;
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        self.vcpu.get_sys_reg(reg).map_err(|e| hv_error(format!("reading {id} of vCPU {}", self.index), e))
    }

    fn set_sys(&self, id: RegId, value: u64) -> Result<()> {
        let reg = regs::sys_reg(id).ok_or_else(|| self.not_found(id))?;
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.vcpu
            .set_sys_reg(reg, value)
            .map_err(|e| hv_error(format!("writing {id} of vCPU {}", self.index), e))
    }

    fn not_found(&self, id: RegId) -> AccelError {
        AccelError::new(ErrorKind::NOT_FOUND, format!("{id} is not a register of vCPU {}", self.index))
    }

    fn read_core_reg(&self, reg: CoreReg) -> Result<u64> {
        match core_location(reg) {
            CoreLocation::Reg(number) => self.get_reg(number, &reg.name()),
            CoreLocation::Sys(id) => self.get_sys(id),
            CoreLocation::Absent => Ok(0),
        }
    }

    fn write_core_reg(&self, reg: CoreReg, value: u64) -> Result<()> {
        match core_location(reg) {
            CoreLocation::Reg(number) => self.set_reg(number, &reg.name(), value),
            CoreLocation::Sys(id) => self.set_sys(id, value),
            CoreLocation::Absent if value == 0 => Ok(()),
            CoreLocation::Absent => Err(AccelError::unsupported(format!(
                "{}: Hypervisor.framework has no AArch32 state, so it reads as zero and cannot be set to {value:#x}",
                reg.name()
            ))),
        }
    }

    fn read_core(&self) -> Result<CoreRegs> {
        let mut regs = CoreRegs::default();
        for reg in CoreReg::all() {
            regs.set(reg, self.read_core_reg(reg)?);
        }
        Ok(regs)
    }

    fn x(&self, n: u8) -> Result<u64> {
        self.read_core_reg(CoreReg::X(n))
    }

    fn set_x(&self, n: u8, value: u64) -> Result<()> {
        self.write_core_reg(CoreReg::X(n), value)
    }

    fn advance_pc(&self, by: u64) -> Result<()> {
        if by == 0 {
            return Ok(());
        }
        let pc = self.read_core_reg(CoreReg::Pc)?;
        self.write_core_reg(CoreReg::Pc, pc.wrapping_add(by))
    }

    /// Enters an exception at EL1 with the shared exception entry `enter`.
    fn enter(&self, enter: impl FnOnce(&mut CoreRegs, u64) -> Vec<RegValue>) -> Result<()> {
        let before = self.read_core()?;
        let vbar = self.get_sys(VBAR_EL1)?;
        let mut core = before;
        let sys = enter(&mut core, vbar);
        for reg in core.changed_since(&before).collect::<Vec<_>>() {
            self.write_core_reg(reg, core.get(reg))?;
        }
        sys.into_iter().try_for_each(|v| self.set_sys(v.id, v.value))
    }

    /// The guest's virtual count: the host counter less the vtimer offset.
    fn virtual_count(&self) -> u64 {
        host_count().wrapping_sub(self.vtimer_offset)
    }

    fn no_pending_read(&self) -> Result<()> {
        match self.pending_read {
            None => Ok(()),
            Some(_) => Err(AccelError::bad_state(format!(
                "vCPU {} is stopped in an MMIO read: supply its data before accessing registers",
                self.index
            ))),
        }
    }

    /// A debug register the shadow holds while the host debugs.
    fn shadowed(&self, id: RegId) -> bool {
        self.debugging && (id == MDSCR_EL1 || matches!(id.fields(), Some((2, 0, 0, _, 4..=7))))
    }

    // The classes of the shared model.

    fn get_core(&mut self) -> Result<CoreRegs> {
        self.no_pending_read()?;
        let regs = self.read_core()?;
        self.last_core.got(&regs);
        Ok(regs)
    }

    fn put_core(&mut self, regs: &CoreRegs, level: PutLevel) -> Result<()> {
        self.no_pending_read()?;
        for reg in self.last_core.to_write(level, regs) {
            self.write_core_reg(reg, regs.get(reg))?;
        }
        self.last_core.got(regs);
        Ok(())
    }

    fn get_fp(&mut self) -> Result<FpRegs> {
        self.no_pending_read()?;
        let mut regs = FpRegs::default();
        for reg in FpReg::all() {
            match (reg, fp_location(reg)) {
                (FpReg::V(n), FpLocation::Simd(number)) => {
                    let q = regs::simd_fp_reg(number)
                        .ok_or_else(|| AccelError::invalid(format!("no hv_simd_fp_reg_t {number}")))?;
                    self.counters.reads.fetch_add(1, Ordering::Relaxed);
                    let value = self
                        .vcpu
                        .get_simd_fp_reg(q)
                        .map_err(|e| hv_error(format!("reading V{n} of vCPU {}", self.index), e))?;
                    regs.set_v_u128(usize::from(n), value);
                }
                (FpReg::Fpsr, FpLocation::Reg(number)) => regs.fpsr = self.get_reg(number, "FPSR")? as u32,
                (FpReg::Fpcr, FpLocation::Reg(number)) => regs.fpcr = self.get_reg(number, "FPCR")? as u32,
                (reg, location) => {
                    return Err(AccelError::invalid(format!("{} has no place at {location:?}", reg.name())))
                }
            }
        }
        self.last_fp.got(&regs);
        Ok(regs)
    }

    fn write_fp_reg(&self, regs: &FpRegs, reg: FpReg) -> Result<()> {
        match (reg, fp_location(reg)) {
            (FpReg::V(n), FpLocation::Simd(number)) => {
                let q = regs::simd_fp_reg(number)
                    .ok_or_else(|| AccelError::invalid(format!("no hv_simd_fp_reg_t {number}")))?;
                self.counters.writes.fetch_add(1, Ordering::Relaxed);
                self.vcpu
                    .set_simd_fp_reg(q, regs.v_u128(usize::from(n)))
                    .map_err(|e| hv_error(format!("writing V{n} of vCPU {}", self.index), e))
            }
            (FpReg::Fpsr, FpLocation::Reg(number)) => self.set_reg(number, "FPSR", u64::from(regs.fpsr)),
            (FpReg::Fpcr, FpLocation::Reg(number)) => self.set_reg(number, "FPCR", u64::from(regs.fpcr)),
            (reg, location) => {
                Err(AccelError::invalid(format!("{} has no place at {location:?}", reg.name())))
            }
        }
    }

    fn put_fp(&mut self, regs: &FpRegs, level: PutLevel) -> Result<()> {
        self.no_pending_read()?;
        for reg in self.last_fp.to_write(level, regs) {
            self.write_fp_reg(regs, reg)?;
        }
        self.last_fp.got(regs);
        Ok(())
    }

    fn get_regs(&mut self, class: RegClass) -> Result<Vec<RegValue>> {
        self.no_pending_read()?;
        let caps = self.vm.probed.caps;
        let sys = |w: &Self, ids: &mut dyn Iterator<Item = RegId>| -> Result<Vec<RegValue>> {
            ids.map(|id| {
                let value = if w.shadowed(id) { w.traps.shadow(id) } else { w.get_sys(id)? };
                Ok(RegValue { id, value })
            })
            .collect()
        };
        let values = match class {
            RegClass::SYS => sys(
                self,
                &mut hvf_regs::SYS_REGS
                    .iter()
                    .chain(&hvf_regs::SYS_REGS_EL0)
                    .chain(&hvf_regs::DEBUG_CONTROL_REGS)
                    .copied()
                    .chain(debug_regs(caps.hw_breakpoints, caps.hw_watchpoints)),
            )?,
            RegClass::TIMER => {
                let mut values = sys(self, &mut hvf_regs::TIMER_REGS.iter().copied())?;
                values.push(RegValue { id: CNTVCT_EL0, value: self.virtual_count() });
                values
            }
            RegClass::FIRMWARE => vec![RegValue { id: FW_PSCI_VERSION, value: psci::PSCI_VERSION_1_1 }],
            RegClass::CCSIDR => self.vm.probed.ccsidr.clone(),
            _ => Vec::new(),
        };
        self.last_sys.got(&values);
        Ok(values)
    }

    /// Writes one register of the SYS, TIMER, FIRMWARE or CCSIDR classes.
    fn put_one(&mut self, v: RegValue) -> Result<()> {
        let fixed = |what: &str, have: u64| {
            if v.value == have {
                Ok(())
            } else {
                Err(AccelError::invalid(format!(
                    "{}: {what} is {have:#x}; {:#x} cannot be set",
                    v.id, v.value
                )))
            }
        };
        if v.id == CNTVCT_EL0 {
            let offset = host_count().wrapping_sub(v.value);
            self.counters.writes.fetch_add(1, Ordering::Relaxed);
            self.vcpu
                .set_vtimer_offset(offset)
                .map_err(|e| hv_error(format!("setting the vtimer offset of vCPU {}", self.index), e))?;
            self.vtimer_offset = offset;
            return Ok(());
        }
        if v.id == FW_PSCI_VERSION {
            return fixed("the PSCI version the plugin answers", psci::PSCI_VERSION_1_1);
        }
        if v.id.space() == RegSpace::Ccsidr {
            let have =
                self.vm.probed.ccsidr.iter().find(|c| c.id == v.id).ok_or_else(|| self.not_found(v.id))?;
            return fixed("this host's cache geometry", have.value);
        }
        if !self.listed.contains(&v.id) {
            return Err(self.not_found(v.id));
        }
        if self.shadowed(v.id) {
            self.traps.save_guest_debug([(v.id, v.value)]);
            return Ok(());
        }
        self.set_sys(v.id, v.value)
    }

    fn put_regs(&mut self, values: &[RegValue], level: PutLevel) -> Result<()> {
        self.no_pending_read()?;
        for v in self.last_sys.to_write(level, values) {
            self.put_one(v)?;
            self.last_sys.wrote(v);
        }
        Ok(())
    }

    fn get_mp_state(&self) -> Result<MpState> {
        self.no_pending_read()?;
        Ok(if !self.vm.psci.lock().is_on(self.index) {
            MpState::STOPPED
        } else if self.suspended {
            MpState::SUSPENDED
        } else {
            MpState::RUNNABLE
        })
    }

    fn set_mp_state(&mut self, state: MpState) -> Result<()> {
        self.no_pending_read()?;
        if ![MpState::RUNNABLE, MpState::STOPPED, MpState::SUSPENDED].contains(&state) {
            return Err(AccelError::invalid(format!(
                "MP state {} is not one of runnable, stopped, suspended",
                state.0
            )));
        }
        self.vm.psci.lock().set_on(self.index, state != MpState::STOPPED);
        self.suspended = state == MpState::SUSPENDED;
        self.vm.psci.wake_all();
        Ok(())
    }

    fn put_events(&mut self, events: &VcpuEvents) -> Result<()> {
        self.no_pending_read()?;
        if events.serror_pending || events.serror_has_esr {
            return Err(AccelError::unsupported(
                "Hypervisor.framework cannot inject an SError: it has no virtual SError injection",
            ));
        }
        if events.ext_dabt_pending {
            let far = self.last_far;
            self.enter(|core, vbar| exception::enter_external_data_abort(core, vbar, far))?;
        }
        Ok(())
    }

    fn set_mmio_read_data(&mut self, value: u64) -> Result<()> {
        let instruction = self.pending_read.take().ok_or_else(|| {
            AccelError::bad_state("no MMIO read is pending: the last exit was not an MMIO read")
        })?;
        self.complete_read(instruction, value)
    }

    /// Completes an MMIO read: the value into its register, the PC past the instruction.
    fn complete_read(&mut self, instruction: MmioInstruction, data: u64) -> Result<()> {
        if let Some(n) = instruction.register() {
            self.set_x(n, instruction.load_value(data))?;
        }
        self.advance_pc(4)
    }

    // Running.

    fn run(&mut self) -> Result<VcpuExit> {
        if let Some(instruction) = self.pending_read.take() {
            log::warn!(
                "vCPU {}: running on after an MMIO read with no data supplied; the guest reads 0",
                self.index
            );
            self.complete_read(instruction, 0)?;
        }
        loop {
            let (board, kick) = (Arc::clone(&self.vm.psci), Arc::clone(&self.kick));
            match board.wait_until_on(self.index, || kick.requested.load(Ordering::SeqCst)) {
                Wake::Running => {}
                Wake::Start(start) => self.start_at(start)?,
                Wake::Interrupted => {
                    self.kick.requested.store(false, Ordering::SeqCst);
                    return Ok(VcpuExit::Interrupted);
                }
            }
            if self.kick.requested.swap(false, Ordering::SeqCst) {
                return Ok(VcpuExit::Interrupted);
            }
            if self.suspended {
                return self.suspended_wait();
            }
            self.kick.nudged.store(false, Ordering::SeqCst);
            self.apply_ppis()?;
            self.apply_debug()?;
            self.unmask_vtimer_when_quiet()?;
            if self.stepping {
                let pstate = self.read_core_reg(CoreReg::Pstate)?;
                self.write_core_reg(CoreReg::Pstate, pstate | PSTATE_SS)?;
            }
            self.counters.runs.fetch_add(1, Ordering::Relaxed);
            self.vcpu.run().map_err(|e| hv_error(format!("hv_vcpu_run of vCPU {}", self.index), e))?;
            let exit = self.vcpu.get_exit_info();
            match exit.reason {
                // A kick or a nudge: the top of the loop tells them apart.
                ExitReason::CANCELED => {}
                ExitReason::EXCEPTION => {
                    if let Some(exit) = self.exception(exit.exception)? {
                        return Ok(exit);
                    }
                }
                ExitReason::VTIMER_ACTIVATED => self.vtimer_activated()?,
                // A signal while in the guest, or the framework's own reason.
                ExitReason::UNKNOWN => {
                    if !self.kick.requested.load(Ordering::SeqCst) {
                        return Ok(VcpuExit::BackendSpecific { reason: ExitReason::UNKNOWN as u32 });
                    }
                }
            }
        }
    }

    /// MP state SUSPENDED: wait as for WFI, then report the wake-up (the state stays suspended
    /// until the host makes the vCPU runnable), as KVM does.
    fn suspended_wait(&mut self) -> Result<VcpuExit> {
        self.wfi_sleep()?;
        if self.kick.requested.swap(false, Ordering::SeqCst) {
            return Ok(VcpuExit::Interrupted);
        }
        Ok(VcpuExit::SystemEvent { kind: SystemEventKind::WAKEUP, data: Vec::new() })
    }

    /// Starts the vCPU where a CPU_ON says, from its registers as created.
    fn start_at(&mut self, start: StartContext) -> Result<()> {
        let mut core = self.reset.core;
        core.pc = start.entry;
        core.x[0] = start.context_id;
        core.pstate = PSTATE_RESET;
        for reg in CoreReg::all() {
            self.write_core_reg(reg, core.get(reg))?;
        }
        for (id, value) in self.reset.sys.clone() {
            self.set_sys(id, value)?;
        }
        self.traps = SysRegTraps::new(self.pmu);
        self.last_core.forget();
        self.last_fp.forget();
        self.last_sys.forget();
        self.debugging = false;
        self.debug_applied = None;
        Ok(())
    }

    fn apply_ppis(&mut self) -> Result<()> {
        let ppis = std::mem::take(&mut *locked(&self.kick.ppis));
        for (intid, level) in ppis {
            let number = if level { hvf_regs::GICR_ISPENDR0 } else { hvf_regs::GICR_ICPENDR0 };
            self.set_redistributor(number, 1 << intid)?;
        }
        Ok(())
    }

    fn set_redistributor(&self, number: u32, value: u64) -> Result<()> {
        let reg = redistributor_reg(number)
            .ok_or_else(|| AccelError::invalid(format!("no redistributor register {number:#x}")))?;
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.vcpu
            .set_redistributor_reg(reg, value)
            .map_err(|e| hv_error(format!("writing GICR {reg:?} of vCPU {}", self.index), e))
    }

    fn set_traps(&self, on: bool) -> Result<()> {
        self.vcpu
            .set_trap_debug_exceptions(on)
            .and_then(|()| self.vcpu.set_trap_debug_reg_accesses(on))
            .map_err(|e| hv_error(format!("setting the debug traps of vCPU {} to {on}", self.index), e))
    }

    /// Applies the debug pool's set-up when it changed.
    fn apply_debug(&mut self) -> Result<()> {
        let debug = Arc::clone(&self.vm.debug);
        let Some(setup) = debug.setup_if_changed(self.index, &mut self.debug_applied)? else {
            return Ok(());
        };
        self.program_debug(&setup).inspect_err(|_| self.debug_applied = None)
    }

    /// While the host debugs, the debug exceptions and register accesses trap, the hardware
    /// registers hold the host's breakpoints and watchpoints, and the guest's own values live in
    /// the shadow that its trapped accesses use; when it stops, the guest's values come back.
    fn program_debug(&mut self, setup: &DebugSetup) -> Result<()> {
        let caps = self.vm.probed.caps;
        if setup.active() && !self.debugging {
            let mut saved = Vec::new();
            for id in debug_regs(caps.hw_breakpoints, caps.hw_watchpoints).into_iter().chain([MDSCR_EL1]) {
                saved.push((id, self.get_sys(id)?));
            }
            self.traps.save_guest_debug(saved);
            self.set_traps(true)?;
            self.debugging = true;
        }
        if setup.active() {
            for n in 0..caps.hw_breakpoints.min(16) as u8 {
                self.set_sys(accel_api::sysreg::dbgbcr(n), setup.bcr[usize::from(n)])?;
                self.set_sys(accel_api::sysreg::dbgbvr(n), setup.bvr[usize::from(n)])?;
            }
            for n in 0..caps.hw_watchpoints.min(16) as u8 {
                self.set_sys(accel_api::sysreg::dbgwcr(n), setup.wcr[usize::from(n)])?;
                self.set_sys(accel_api::sysreg::dbgwvr(n), setup.wvr[usize::from(n)])?;
            }
            let guest = self.traps.shadow(MDSCR_EL1) & !(MDSCR_SS | MDSCR_MDE);
            let mdscr = guest
                | if setup.hardware { MDSCR_MDE } else { 0 }
                | if setup.single_step { MDSCR_SS } else { 0 };
            self.set_sys(MDSCR_EL1, mdscr)?;
            self.stepping = setup.single_step;
        } else if self.debugging {
            for (id, value) in self.traps.guest_debug().collect::<Vec<_>>() {
                self.set_sys(id, value)?;
            }
            self.set_traps(false)?;
            self.debugging = false;
            self.stepping = false;
        }
        Ok(())
    }

    /// The framework masked the vtimer as it fired: raise the timer's PPI, and keep the vtimer
    /// masked until the guest quiets it.
    fn vtimer_activated(&mut self) -> Result<()> {
        self.vtimer_masked = true;
        if self.vm.gic().is_some() {
            self.set_redistributor(hvf_regs::GICR_ISPENDR0, 1 << hvf_regs::VTIMER_INTID)?;
        }
        Ok(())
    }

    /// Unmasks the vtimer once its condition no longer asserts (disabled, masked by the guest, or
    /// a compare value in the future).
    fn unmask_vtimer_when_quiet(&mut self) -> Result<()> {
        if !self.vtimer_masked {
            return Ok(());
        }
        let (ctl, cval) = (self.get_sys(CNTV_CTL_EL0)?, self.get_sys(CNTV_CVAL_EL0)?);
        if !timer::asserts(ctl, cval, self.virtual_count()) {
            self.vcpu
                .set_vtimer_mask(false)
                .map_err(|e| hv_error(format!("unmasking the vtimer of vCPU {}", self.index), e))?;
            self.vtimer_masked = false;
        }
        Ok(())
    }

    /// Sleeps for a WFI: until the virtual timer's deadline, a kick or a wake-up, and at most
    /// [`WFI_POLL`].
    fn wfi_sleep(&mut self) -> Result<()> {
        let (ctl, cval) = (self.get_sys(CNTV_CTL_EL0)?, self.get_sys(CNTV_CVAL_EL0)?);
        let wait = match timer::wfi_wait(ctl, cval, self.virtual_count()) {
            WfiWait::Now => return Ok(()),
            WfiWait::Ticks(ticks) => timer::ticks_to_duration(ticks, self.vm.probed.counter_hz).min(WFI_POLL),
            WfiWait::Indefinitely => WFI_POLL,
        };
        let until = Instant::now() + wait;
        let kick = Arc::clone(&self.kick);
        let mut guard = locked(&kick.sleep);
        while !kick.interrupted() {
            let now = Instant::now();
            if now >= until {
                break;
            }
            guard = match kick.wake.wait_timeout(guard, until - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        Ok(())
    }

    /// A synchronous exception trapped to the framework: `Some` exit for the host, or `None` to
    /// carry on.
    fn exception(&mut self, e: VcpuExitException) -> Result<Option<VcpuExit>> {
        let esr = e.syndrome;
        self.last_far = e.virtual_address;
        match esr_ec(esr) {
            ec::DATA_ABORT_LOWER => self.data_abort(esr, e.physical_address, e.virtual_address),
            ec::HVC64 => self.psci_call(esr, Conduit::Hvc),
            ec::SMC64 => self.psci_call(esr, Conduit::Smc),
            ec::SYS64 => self.sysreg_trap(esr).map(|()| None),
            ec::WFX => {
                self.advance_pc(4)?;
                // WFE (ISS bit 0) goes on at once; WFI sleeps.
                if esr & 1 == 0 {
                    self.wfi_sleep()?;
                }
                Ok(None)
            }
            ec::BREAKPOINT_LOWER
            | ec::BREAKPOINT_CURRENT
            | ec::SOFTWARE_STEP_LOWER
            | ec::SOFTWARE_STEP_CURRENT
            | ec::WATCHPOINT_LOWER
            | ec::WATCHPOINT_CURRENT
            | ec::BRK => {
                let pc = self.read_core_reg(CoreReg::Pc)?;
                Ok(Some(VcpuExit::Debug(DebugExit { esr, far: e.virtual_address, pc })))
            }
            other => {
                log::warn!(
                    "vCPU {}: an exception the backend does not handle: ESR {esr:#x} (EC {other:#x}), FAR {:#x}, IPA {:#x}",
                    self.index,
                    e.virtual_address,
                    e.physical_address
                );
                Ok(Some(VcpuExit::BackendSpecific { reason: u32::from(other) }))
            }
        }
    }

    fn data_abort(&mut self, esr: u64, ipa: u64, va: u64) -> Result<Option<VcpuExit>> {
        let write = esr & (1 << 6) != 0;
        if write && mmio::is_permission_fault(esr) && self.vm.log_write(ipa)? {
            return Ok(None);
        }
        match DataAbort::decode(esr) {
            DataAbort::Access(instruction) if instruction.write => {
                let xt = match instruction.register() {
                    Some(n) => self.x(n)?,
                    None => 0,
                };
                let value = instruction.store_value(xt);
                self.advance_pc(4)?;
                Ok(Some(VcpuExit::MmioWrite(MmioAccess {
                    addr: ipa,
                    len: instruction.len,
                    data: value.to_le_bytes(),
                })))
            }
            DataAbort::Access(instruction) => {
                self.pending_read = Some(instruction);
                Ok(Some(VcpuExit::MmioRead(MmioAccess { addr: ipa, len: instruction.len, data: [0; 8] })))
            }
            DataAbort::Maintenance { .. } => self.advance_pc(4).map(|()| None),
            DataAbort::TableWalk { .. } => {
                self.enter(|core, vbar| exception::enter_external_data_abort(core, vbar, va)).map(|()| None)
            }
            DataAbort::NoSyndrome { iss } => Ok(Some(VcpuExit::ArmNisv { esr_iss: iss, fault_ipa: ipa })),
        }
    }

    fn psci_call(&mut self, esr: u64, conduit: Conduit) -> Result<Option<VcpuExit>> {
        self.advance_pc(conduit.pc_advance_after_trap())?;
        let call = Call {
            function: self.x(0)? as u32,
            args: [self.x(1)?, self.x(2)?, self.x(3)?],
            imm: (esr & 0xffff) as u16,
        };
        match self.vm.psci.handle(&call, self.index, self.vm.offer) {
            Outcome::Return(value) => self.set_x(0, value).map(|()| None),
            Outcome::Started { target } => {
                if let Some(vcpu) = self.vm.vcpu(target) {
                    vcpu.nudge();
                }
                self.set_x(0, psci::ret::SUCCESS).map(|()| None)
            }
            Outcome::Standby => {
                self.set_x(0, psci::ret::SUCCESS)?;
                self.wfi_sleep().map(|()| None)
            }
            Outcome::PoweredOff => Ok(None),
            Outcome::SystemEvent { kind, data, x0 } => {
                if let Some(value) = x0 {
                    self.set_x(0, value)?;
                }
                // The others stop too: bring them back to their power check.
                for vcpu in self.vm.vcpus() {
                    if !Arc::ptr_eq(&vcpu, &self.kick) {
                        vcpu.nudge();
                    }
                }
                Ok(Some(VcpuExit::SystemEvent { kind, data }))
            }
        }
    }

    fn sysreg_trap(&mut self, esr: u64) -> Result<()> {
        let access = SysRegAccess::decode(esr);
        let xt = if access.read || access.rt == 31 { 0 } else { self.x(access.rt)? };
        let count = self.virtual_count();
        match self.traps.emulate(&access, xt, count) {
            TrapOutcome::Read(value) => {
                if access.rt != 31 {
                    self.set_x(access.rt, value)?;
                }
                self.advance_pc(4)
            }
            TrapOutcome::Written => self.advance_pc(4),
            TrapOutcome::Undefined => {
                log::debug!(
                    "vCPU {}: {} of {} is UNDEFINED here",
                    self.index,
                    if access.read { "MRS" } else { "MSR" },
                    access.reg
                );
                self.enter(exception::enter_undefined)
            }
        }
    }
}

/// Serves the handle's calls until it goes, then destroys the vCPU on this thread.
fn serve(mut worker: Worker, jobs: mpsc::Receiver<Job>) {
    for job in jobs {
        if catch_unwind(AssertUnwindSafe(|| job(&mut worker))).is_err() {
            log::error!("vCPU {}: a call panicked on the vCPU's thread", worker.index);
        }
    }
    *locked(&worker.kick.vcpu) = None;
    worker.vm.remove_vcpu(worker.index);
}

/// An HVF vCPU, as the host holds it: a handle to its thread.
pub struct HvfVcpu {
    index: u32,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    kick: Arc<KickState>,
    counters: Arc<Counters>,
}

impl HvfVcpu {
    /// Starts vCPU `config.index`'s thread, which creates the framework's vCPU.
    pub(super) fn spawn(vm: Arc<VmShared>, config: &VcpuConfig) -> Result<Self> {
        let index = config.index;
        let kick = Arc::new(KickState::new(Arc::clone(&vm.psci)));
        vm.add_vcpu(index, Arc::clone(&kick))?;
        let on = !config.features.contains(VcpuFeatures::POWER_OFF);
        let counters = Arc::new(Counters::default());
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::sync_channel(1);
        let (worker_vm, worker_kick, worker_counters) =
            (Arc::clone(&vm), Arc::clone(&kick), Arc::clone(&counters));
        let spawned =
            thread::Builder::new().name(format!("hvf-vcpu-{index}")).spawn(move || {
                match Worker::new(worker_vm, index, worker_kick, worker_counters, on) {
                    Ok(worker) => {
                        let _ = ready_tx.send(Ok(()));
                        serve(worker, inbox);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        let thread = match spawned {
            Ok(thread) => thread,
            Err(e) => {
                vm.remove_vcpu(index);
                return Err(AccelError::from(e).context(format!("starting the thread of vCPU {index}")));
            }
        };
        let started = ready.recv().unwrap_or_else(|_| {
            Err(AccelError::bad_state(format!("the thread of vCPU {index} ended early")))
        });
        if let Err(e) = started {
            let _ = thread.join();
            vm.remove_vcpu(index);
            return Err(e);
        }
        Ok(Self { index, jobs: Some(jobs), thread: Some(thread), kick, counters })
    }

    /// Runs `f` on the vCPU's thread: one message there, one answer back.
    fn call<R: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Worker) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let gone = || AccelError::bad_state(format!("{op}: the thread of vCPU {} is gone", self.index));
        let jobs = self.jobs.as_ref().ok_or_else(gone)?;
        let (answer, answered) = mpsc::sync_channel(1);
        jobs.send(Box::new(move |w: &mut Worker| {
            let _ = answer.send(f(w));
        }))
        .map_err(|_| gone())?;
        answered.recv().map_err(|_| {
            AccelError::new(
                ErrorKind::PANIC,
                format!("{op} of vCPU {}: the call failed on the vCPU's thread", self.index),
            )
        })?
    }
}

impl Drop for HvfVcpu {
    fn drop(&mut self) {
        // Closing the channel ends the thread, which destroys the framework's vCPU itself.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the thread of vCPU {} panicked while ending", self.index);
            }
        }
    }
}

impl BackendVcpu for HvfVcpu {
    fn index(&self) -> u32 {
        self.index
    }

    fn get_core(&mut self) -> Result<CoreRegs> {
        self.call("get_core", Worker::get_core)
    }

    fn put_core(&mut self, regs: &CoreRegs, level: PutLevel) -> Result<()> {
        let regs = *regs;
        self.call("put_core", move |w| w.put_core(&regs, level))
    }

    fn get_fp(&mut self) -> Result<FpRegs> {
        self.call("get_fp", Worker::get_fp)
    }

    fn put_fp(&mut self, regs: &FpRegs, level: PutLevel) -> Result<()> {
        let regs = *regs;
        self.call("put_fp", move |w| w.put_fp(&regs, level))
    }

    fn get_regs(&mut self, class: RegClass) -> Result<Vec<RegValue>> {
        self.call("get_regs", move |w| w.get_regs(class))
    }

    fn put_regs(&mut self, values: &[RegValue], level: PutLevel) -> Result<()> {
        let values = values.to_vec();
        self.call("put_regs", move |w| w.put_regs(&values, level))
    }

    fn get_mp_state(&mut self) -> Result<MpState> {
        self.call("get_mp_state", |w| w.get_mp_state())
    }

    fn set_mp_state(&mut self, state: MpState) -> Result<()> {
        self.call("set_mp_state", move |w| w.set_mp_state(state))
    }

    fn kicker(&self) -> Box<dyn Kick> {
        Box::new(HvfKicker(Arc::clone(&self.kick)))
    }

    fn counters(&self) -> SyncCounters {
        SyncCounters {
            reg_reads: self.counters.reads.load(Ordering::Relaxed),
            reg_writes: self.counters.writes.load(Ordering::Relaxed),
            runs: self.counters.runs.load(Ordering::Relaxed),
        }
    }

    fn set_mmio_read_data(&mut self, value: u64) -> Result<()> {
        self.call("set_mmio_read_data", move |w| w.set_mmio_read_data(value))
    }

    fn run(&mut self) -> Result<VcpuExit> {
        self.call("run", Worker::run)
    }

    fn support_events(&mut self) -> Option<&mut dyn BackendEvents> {
        Some(self)
    }
}

impl BackendEvents for HvfVcpu {
    /// Nothing is ever pending: an external data abort is entered at once, and there is no
    /// SError injection.
    fn get_events(&mut self) -> Result<VcpuEvents> {
        Ok(VcpuEvents::default())
    }

    fn put_events(&mut self, events: &VcpuEvents) -> Result<()> {
        let events = *events;
        self.call("put_events", move |w| w.put_events(&events))
    }
}
