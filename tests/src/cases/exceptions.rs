//! Exceptions into the guest: architectural entry to EL1 done by the host through register sync,
//! injected SErrors and external data aborts, and multiprocessing states.

use accel_kit::exception::{ec, enter_el1, esr_ec, Exception, ExceptionType};

use accel_api::{sysreg::VBAR_EL1, ErrorKind, MpState, PutLevel, VcpuConfig, VcpuEvents, VcpuFeatures};

use crate::{
    asm::{self, Size},
    ensure,
    guest::{TestGuest, MMIO_BASE},
    Case, CaseResult, Context, Failure,
};

pub fn cases() -> Vec<Case> {
    crate::case_list![exceptions: host_entered_exception_from_el1, host_entered_exception_from_el0, serror_injection, external_data_abort_injection; mp_state: states_round_trip]
}

/// A guest stopped at an MMIO write, ready for the host to deliver an exception.
fn stopped_guest(ctx: &Context) -> Result<TestGuest, Failure> {
    let mut code = asm::mov_imm64(9, MMIO_BASE);
    code.extend([asm::str(Size::X, 9, 9, 0), asm::b(0)]);
    let mut g = TestGuest::new(&ctx.accelerator()?, &code)?;
    g.expect_mmio_write()?;
    Ok(g)
}

/// The host enters a synchronous exception with its own ESR and FAR through `enter_el1` and the
/// register sync; the guest's handler must see exactly them, at the right vector.
fn deliver(g: &mut TestGuest, pstate: Option<u64>, want_offset: u64) -> CaseResult {
    let mut core = g.core()?;
    if let Some(p) = pstate {
        core.pstate = p;
    }
    let interrupted = core.pstate;
    let vbar = g.vcpu.get_reg(VBAR_EL1)?;
    // EC 0x15 (SVC from AArch64) with IL and an ISS of 0x1234, and an address of our choosing.
    let exception = Exception {
        kind: ExceptionType::Synchronous,
        esr: 0x5600_1234,
        far: Some(0xfeed_f00d_0000),
        return_address: core.pc,
    };
    let sys = enter_el1(&mut core, vbar, &exception);
    g.vcpu.put_core(&core, PutLevel::RUNTIME)?;
    g.vcpu.put_regs(&sys, PutLevel::RUNTIME)?;
    let taken = g.expect_exception()?;
    ensure!(taken.esr == exception.esr, "ESR_EL1 {:#x}, the host entered {:#x}", taken.esr, exception.esr);
    ensure!(taken.far == 0xfeed_f00d_0000, "FAR_EL1 {:#x}", taken.far);
    ensure!(
        taken.elr == exception.return_address,
        "ELR_EL1 {:#x}, expected {:#x}",
        taken.elr,
        exception.return_address
    );
    ensure!(taken.offset == want_offset, "vector offset {:#x}, expected {want_offset:#x}", taken.offset);
    ensure!(
        taken.spsr == interrupted,
        "SPSR_EL1 {:#x}, expected the interrupted PSTATE {interrupted:#x}",
        taken.spsr
    );
    Ok(())
}

fn host_entered_exception_from_el1(ctx: &Context) -> CaseResult {
    let mut g = stopped_guest(ctx)?;
    deliver(&mut g, None, 0x200)
}

fn host_entered_exception_from_el0(ctx: &Context) -> CaseResult {
    let mut g = stopped_guest(ctx)?;
    // As if the exception came from EL0 (EL0t, interrupts unmasked).
    deliver(&mut g, Some(0), 0x400)
}

/// A guest that unmasks SErrors (PSTATE.A) and spins.
fn unmasked_guest(ctx: &Context) -> Result<TestGuest, Failure> {
    TestGuest::new(&ctx.accelerator()?, &[asm::msr_daifclr(4), asm::b(0)])
}

fn serror_injection(ctx: &Context) -> CaseResult {
    let caps = ctx.accelerator()?.probe().caps;
    let mut g = unmasked_guest(ctx)?;
    crate::extension(g.vcpu.events().map(|_| ()), "vCPU events (SError injection)", caps.serror_esr)?;
    let with_esr =
        VcpuEvents { serror_pending: true, serror_has_esr: true, serror_esr: 0x1234, ..Default::default() };
    if !caps.serror_esr {
        let err = g.vcpu.put_events(&with_esr).err();
        ensure!(
            err.as_ref().is_some_and(|e| e.kind == ErrorKind::UNSUPPORTED),
            "an SError with a syndrome on a host without SError-ESR injection: {err:?}"
        );
    }
    let events =
        if caps.serror_esr { with_esr } else { VcpuEvents { serror_pending: true, ..Default::default() } };
    // A backend with no SError injection at all (HVF) says so: the case cannot run there.
    crate::offered(g.vcpu.put_events(&events), "SError injection")?;
    ensure!(g.vcpu.get_events()?.serror_pending, "the injected SError is not pending");
    let taken = g.expect_exception()?;
    ensure!(esr_ec(taken.esr) == ec::SERROR, "ESR_EL1 {:#x}: expected EC 0x2f (SError)", taken.esr);
    ensure!(taken.offset == 0x380, "vector offset {:#x}: expected 0x380 (SError, current EL)", taken.offset);
    if caps.serror_esr {
        ensure!(
            taken.esr & 0x1ff_ffff == 0x1234,
            "ESR_EL1 {:#x}: expected the injected ISS 0x1234",
            taken.esr
        );
    }
    ensure!(!g.vcpu.get_events()?.serror_pending, "the SError is still pending after the guest took it");
    let err = g.vcpu.put_events(&VcpuEvents {
        serror_esr: 1 << 25,
        serror_has_esr: true,
        serror_pending: true,
        ..Default::default()
    });
    ensure!(err.is_err(), "a syndrome wider than ESR_EL1.ISS was accepted");
    Ok(())
}

fn external_data_abort_injection(ctx: &Context) -> CaseResult {
    let caps = ctx.accelerator()?.probe().caps;
    // Stopped past the prelude, so that VBAR_EL1 points at the reporting vectors: a synchronous
    // abort is taken at once, whatever PSTATE masks.
    let mut g = stopped_guest(ctx)?;
    let stopped_at = g.core()?.pc;
    let result = g.vcpu.put_events(&VcpuEvents { ext_dabt_pending: true, ..Default::default() });
    if !caps.ext_dabt {
        ensure!(
            result.as_ref().is_err_and(|e| e.kind == ErrorKind::UNSUPPORTED),
            "external abort injection is not offered, yet the put gave {result:?}"
        );
        return Ok(());
    }
    result?;
    let taken = g.expect_exception()?;
    ensure!(esr_ec(taken.esr) == ec::DATA_ABORT_CURRENT, "ESR_EL1 {:#x}: expected EC 0x25", taken.esr);
    ensure!(
        taken.esr & 0x3f == 0x10,
        "ESR_EL1 {:#x}: expected DFSC 0x10 (synchronous external abort)",
        taken.esr
    );
    ensure!(taken.offset == 0x200, "vector offset {:#x}", taken.offset);
    ensure!(taken.elr == stopped_at, "ELR_EL1 {:#x}, expected the stopped PC {stopped_at:#x}", taken.elr);
    Ok(())
}

fn states_round_trip(ctx: &Context) -> CaseResult {
    let mut g = TestGuest::new(&ctx.accelerator()?, &[asm::b(0)])?;
    ensure!(g.vcpu.get_mp_state()? == MpState::RUNNABLE, "vCPU 0 does not start runnable");
    let mut off = g.vm.create_vcpu(&VcpuConfig::new(1, VcpuFeatures::PSCI_0_2 | VcpuFeatures::POWER_OFF))?;
    ensure!(off.get_mp_state()? == MpState::STOPPED, "a vCPU created powered off is not stopped");
    for state in [MpState::STOPPED, MpState::SUSPENDED, MpState::RUNNABLE] {
        g.vcpu.set_mp_state(state)?;
        let now = g.vcpu.get_mp_state()?;
        ensure!(now == state, "set {}, read {}", state.name(), now.name());
    }
    let err = g.vcpu.set_mp_state(MpState(3)).err();
    ensure!(err.is_some_and(|e| e.kind == ErrorKind::INVALID_ARGUMENT), "an unknown MP state was accepted");
    Ok(())
}
