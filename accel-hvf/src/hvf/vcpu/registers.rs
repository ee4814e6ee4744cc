//! The worker's state and its registers: the framework's vCPU as the shared model's classes (core,
//! FP/SIMD, listed system, timer, firmware and cache-geometry registers), MP state and events, each
//! access counted.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use accel_api::{
    sysreg::{RegSpace, CNTVCT_EL0, CNTV_CTL_EL0, FW_PSCI_VERSION, MDSCR_EL1, VBAR_EL1},
    AccelError, CoreReg, CoreRegs, ErrorKind, FpReg, FpRegs, MpState, PutLevel, RegClass, RegId, RegValue,
    Result, VcpuEvents,
};

use accel_kit::{
    exception,
    hvf_regs::{self, core_location, debug_regs, fp_location, CoreLocation, FpLocation},
    mmio::MmioInstruction,
    psci,
    put::{LastGet, LastValues},
    systrap::{PmuAnswer, SysRegTraps},
};
use applevisor::prelude::{SysReg, Vcpu};

use super::kick::KickState;
use crate::hvf::{error::hv_error, regs, shared::VmShared, sync::locked};

/// The host counter (`mach_absolute_time` counts the counter's ticks).
fn host_count() -> u64 {
    // SAFETY: mach_absolute_time has no preconditions.
    #[allow(deprecated)]
    unsafe {
        libc::mach_absolute_time()
    }
}

/// The register accesses and entries of a vCPU, readable without a message.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) reads: AtomicU64,
    pub(super) writes: AtomicU64,
    pub(super) runs: AtomicU64,
}

/// The values a CPU_ON resets the vCPU to: its registers as created.
pub(super) struct ResetState {
    pub(super) core: CoreRegs,
    pub(super) sys: Vec<(RegId, u64)>,
}

/// The worker thread's state: the framework's vCPU and what the shared model needs.
pub(super) struct Worker {
    pub(super) vcpu: Vcpu,
    pub(super) index: u32,
    pub(super) vm: Arc<VmShared>,
    pub(super) kick: Arc<KickState>,
    pub(super) counters: Arc<Counters>,
    /// The registers of the SYS and TIMER classes.
    pub(super) listed: HashSet<RegId>,
    pub(super) last_core: LastGet<CoreRegs>,
    pub(super) last_fp: LastGet<FpRegs>,
    pub(super) last_sys: LastValues,
    /// An MMIO read waiting for its data.
    pub(super) pending_read: Option<MmioInstruction>,
    pub(super) traps: SysRegTraps,
    pub(super) pmu: PmuAnswer,
    /// The vtimer is masked since its last activation.
    pub(super) vtimer_masked: bool,
    pub(super) vtimer_offset: u64,
    /// MP state SUSPENDED, set by the host.
    pub(super) suspended: bool,
    pub(super) debug_applied: Option<u64>,
    /// The host debugs: the debug traps are on and the guest's debug registers are in the shadow.
    pub(super) debugging: bool,
    pub(super) stepping: bool,
    /// The faulting virtual address of the last exception.
    pub(super) last_far: u64,
    pub(super) reset: ResetState,
}

impl Drop for Worker {
    /// On the vCPU's thread, as the handle goes: kickers stop reaching the vCPU, and the VM
    /// forgets it, before the framework's vCPU is destroyed with `vcpu`.
    fn drop(&mut self) {
        *locked(&self.kick.vcpu) = None;
        self.vm.remove_vcpu(self.index);
    }
}

impl Worker {
    pub(super) fn new(
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

    pub(super) fn get_sys(&self, id: RegId) -> Result<u64> {
        let reg = regs::sys_reg(id).ok_or_else(|| self.not_found(id))?;
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        self.vcpu.get_sys_reg(reg).map_err(|e| hv_error(format!("reading {id} of vCPU {}", self.index), e))
    }

    pub(super) fn set_sys(&self, id: RegId, value: u64) -> Result<()> {
        let reg = regs::sys_reg(id).ok_or_else(|| self.not_found(id))?;
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.vcpu
            .set_sys_reg(reg, value)
            .map_err(|e| hv_error(format!("writing {id} of vCPU {}", self.index), e))
    }

    fn not_found(&self, id: RegId) -> AccelError {
        AccelError::new(ErrorKind::NOT_FOUND, format!("{id} is not a register of vCPU {}", self.index))
    }

    pub(super) fn read_core_reg(&self, reg: CoreReg) -> Result<u64> {
        match core_location(reg) {
            CoreLocation::Reg(number) => self.get_reg(number, &reg.name()),
            CoreLocation::Sys(id) => self.get_sys(id),
            CoreLocation::Absent => Ok(0),
        }
    }

    pub(super) fn write_core_reg(&self, reg: CoreReg, value: u64) -> Result<()> {
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

    pub(super) fn x(&self, n: u8) -> Result<u64> {
        self.read_core_reg(CoreReg::X(n))
    }

    pub(super) fn set_x(&self, n: u8, value: u64) -> Result<()> {
        self.write_core_reg(CoreReg::X(n), value)
    }

    pub(super) fn advance_pc(&self, by: u64) -> Result<()> {
        if by == 0 {
            return Ok(());
        }
        let pc = self.read_core_reg(CoreReg::Pc)?;
        self.write_core_reg(CoreReg::Pc, pc.wrapping_add(by))
    }

    /// Enters an exception at EL1 with the shared exception entry `enter`.
    pub(super) fn enter(&self, enter: impl FnOnce(&mut CoreRegs, u64) -> Vec<RegValue>) -> Result<()> {
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
    pub(super) fn virtual_count(&self) -> u64 {
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

    pub(super) fn get_core(&mut self) -> Result<CoreRegs> {
        self.no_pending_read()?;
        let regs = self.read_core()?;
        self.last_core.got(&regs);
        Ok(regs)
    }

    pub(super) fn put_core(&mut self, regs: &CoreRegs, level: PutLevel) -> Result<()> {
        self.no_pending_read()?;
        for reg in self.last_core.to_write(level, regs) {
            self.write_core_reg(reg, regs.get(reg))?;
        }
        self.last_core.got(regs);
        Ok(())
    }

    pub(super) fn get_fp(&mut self) -> Result<FpRegs> {
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

    pub(super) fn put_fp(&mut self, regs: &FpRegs, level: PutLevel) -> Result<()> {
        self.no_pending_read()?;
        for reg in self.last_fp.to_write(level, regs) {
            self.write_fp_reg(regs, reg)?;
        }
        self.last_fp.got(regs);
        Ok(())
    }

    pub(super) fn get_regs(&mut self, class: RegClass) -> Result<Vec<RegValue>> {
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

    pub(super) fn put_regs(&mut self, values: &[RegValue], level: PutLevel) -> Result<()> {
        self.no_pending_read()?;
        for v in self.last_sys.to_write(level, values) {
            self.put_one(v)?;
            self.last_sys.wrote(v);
        }
        Ok(())
    }

    pub(super) fn get_mp_state(&self) -> Result<MpState> {
        self.no_pending_read()?;
        Ok(if !self.vm.psci.lock().is_on(self.index) {
            MpState::STOPPED
        } else if self.suspended {
            MpState::SUSPENDED
        } else {
            MpState::RUNNABLE
        })
    }

    pub(super) fn set_mp_state(&mut self, state: MpState) -> Result<()> {
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

    pub(super) fn put_events(&mut self, events: &VcpuEvents) -> Result<()> {
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

    pub(super) fn set_mmio_read_data(&mut self, value: u64) -> Result<()> {
        let instruction = self.pending_read.take().ok_or_else(|| {
            AccelError::bad_state("no MMIO read is pending: the last exit was not an MMIO read")
        })?;
        self.complete_read(instruction, value)
    }

    /// Completes an MMIO read: the value into its register, the PC past the instruction.
    pub(super) fn complete_read(&mut self, instruction: MmioInstruction, data: u64) -> Result<()> {
        if let Some(n) = instruction.register() {
            self.set_x(n, instruction.load_value(data))?;
        }
        self.advance_pc(4)
    }
}
