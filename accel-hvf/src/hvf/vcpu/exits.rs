//! The worker's run loop: it enters the guest and turns the framework's exits into accel's, with
//! the shared code of the backend kit: MMIO from data aborts ([`accel_kit::mmio`]), PSCI and
//! SMCCC ([`accel_kit::psci`]), trapped system registers ([`accel_kit::systrap`]), WFI until the
//! virtual timer's deadline ([`accel_kit::timer`]), dirty pages, and debug exceptions; and,
//! before each entry, what others asked of the vCPU (PPIs, the debug pool, a CPU_ON).

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use accel_api::{
    debug::DebugSetup,
    sysreg::{CNTV_CTL_EL0, CNTV_CVAL_EL0, MDSCR_EL1},
    AccelError, CoreReg, DebugExit, MmioAccess, Result, SystemEventKind, VcpuExit,
};

use accel_kit::{
    exception::{self, ec, esr_ec},
    hvf_regs::{self, debug_regs},
    mmio::{self, DataAbort},
    psci::{self, Call, Conduit, Outcome, StartContext, Wake},
    systrap::{SysRegAccess, SysRegTraps, TrapOutcome},
    timer::{self, WfiWait},
};
use applevisor::prelude::{ExitReason, VcpuExitException};

use super::registers::Worker;
use crate::hvf::{error::hv_error, regs::redistributor_reg, sync::locked};

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

impl Worker {
    pub(super) fn run(&mut self) -> Result<VcpuExit> {
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
