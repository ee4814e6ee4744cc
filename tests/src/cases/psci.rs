//! PSCI answered alike by the hypervisor and by the plugin: versions, features, migration info,
//! affinity, unknown calls and CPU_OFF, each case run in both modes, and the option that asks for
//! PSCI in the plugin offered or refused as the probe says. Where the probe does not offer it
//! (KVM before Linux 6.4), each case in the plugin mode checks the refusal instead.

use std::{sync::mpsc, thread, time::Duration};

use accel_kit::psci::{self, function};

use accel_api::{sysreg::MPIDR_EL1, MpState, VcpuConfig, VcpuExit, VcpuFeatures, VmConfig};

use crate::{
    asm::{self, Size},
    ensure,
    guest::{userspace_psci_refused, Psci, CODE, DATA, MMIO_BASE},
    Case, CaseResult, Context, Failure,
};

pub fn cases() -> Vec<Case> {
    crate::case_list![psci: queries, queries_in_plugin, cpu_off_stops_the_caller, cpu_off_stops_the_caller_in_plugin, system_off_stops_every_vcpu, system_off_stops_every_vcpu_in_plugin, userspace_option_follows_the_probe]
}

/// Guest code: X0 = `function`, X1..X3 = `args`, HVC, then a store of X0 to MMIO_BASE + `slot`.
fn call_and_report(function: u32, args: &[u64], slot: u32) -> Vec<u32> {
    let mut code = asm::mov_imm64(0, u64::from(function));
    for (n, arg) in (1..).zip(args) {
        code.extend(asm::mov_imm64(n, *arg));
    }
    code.extend(asm::mov_imm64(9, MMIO_BASE));
    code.extend([asm::hvc(0), asm::str(Size::X, 0, 9, slot)]);
    code
}

fn queries(ctx: &Context) -> CaseResult {
    answer_queries(ctx, Psci::Default)
}

fn queries_in_plugin(ctx: &Context) -> CaseResult {
    answer_queries(ctx, Psci::InPlugin)
}

/// PSCI_VERSION, PSCI_FEATURES, MIGRATE_INFO_TYPE, AFFINITY_INFO of a core that is on and one
/// that is off, an unknown PSCI call and SMCCC_VERSION, each reported by the guest.
fn answer_queries(ctx: &Context, psci: Psci) -> CaseResult {
    use function::*;
    const UNKNOWN: u32 = 0x8400_001f;
    let accel = ctx.accelerator()?;
    // The affinities are known once the vCPUs exist: build the guest with a placeholder first.
    // None: PSCI in the plugin is not offered, and its refusal was checked instead.
    let Some(mut g) = psci.guest(ctx, &accel, &[asm::b(0)])? else { return Ok(()) };
    let mut second =
        g.vm.create_vcpu(&VcpuConfig::new(1, VcpuFeatures::PSCI_0_2 | VcpuFeatures::POWER_OFF))?;
    let affinity = psci::MPIDR_AFFINITY_MASK;
    let (first_aff, second_aff) =
        (g.vcpu.get_reg(MPIDR_EL1)? & affinity, second.get_reg(MPIDR_EL1)? & affinity);
    let calls: [(u32, Vec<u64>); 8] = [
        (PSCI_VERSION, vec![]),
        (PSCI_FEATURES, vec![u64::from(smc64(CPU_ON))]),
        (PSCI_FEATURES, vec![u64::from(UNKNOWN)]),
        (MIGRATE_INFO_TYPE, vec![]),
        (smc64(AFFINITY_INFO), vec![first_aff, 0]),
        (smc64(AFFINITY_INFO), vec![second_aff, 0]),
        (UNKNOWN, vec![]),
        (SMCCC_VERSION, vec![]),
    ];
    let mut code = Vec::new();
    for (slot, (f, args)) in (0u32..).zip(&calls) {
        code.extend(call_and_report(*f, args, 8 * slot));
    }
    code.push(asm::b(0));
    g.ram.write_code(CODE, &code)?;
    let mut answers = Vec::new();
    for slot in 0..calls.len() as u64 {
        let (addr, _, value) = g.expect_mmio_write()?;
        ensure!(addr == MMIO_BASE + 8 * slot, "answer {slot} was written at {addr:#x}");
        answers.push(value);
    }
    let minus_one = u64::MAX;
    ensure!(answers[0] >= 0x1_0000, "PSCI_VERSION {:#x}: 1.0 or later expected", answers[0]);
    ensure!(answers[1] == 0, "PSCI_FEATURES(CPU_ON) = {:#x}, expected 0 (supported)", answers[1]);
    ensure!(answers[2] == minus_one, "PSCI_FEATURES(unknown) = {:#x}, expected NOT_SUPPORTED", answers[2]);
    ensure!(answers[3] == 2, "MIGRATE_INFO_TYPE = {:#x}, expected 2 (no Trusted OS to migrate)", answers[3]);
    ensure!(answers[4] == 0, "AFFINITY_INFO of the running vCPU 0 = {:#x}, expected ON (0)", answers[4]);
    ensure!(answers[5] == 1, "AFFINITY_INFO of vCPU 1, powered off = {:#x}, expected OFF (1)", answers[5]);
    ensure!(
        answers[6] == minus_one,
        "an unknown PSCI call returned {:#x}, expected NOT_SUPPORTED",
        answers[6]
    );
    ensure!(answers[7] >= 0x1_0001, "SMCCC_VERSION = {:#x}, 1.1 or later expected", answers[7]);
    Ok(())
}

fn cpu_off_stops_the_caller(ctx: &Context) -> CaseResult {
    cpu_off(ctx, Psci::Default)
}

fn cpu_off_stops_the_caller_in_plugin(ctx: &Context) -> CaseResult {
    cpu_off(ctx, Psci::InPlugin)
}

/// vCPU 0 turns vCPU 1 on; vCPU 1 reports and calls CPU_OFF; vCPU 0 polls AFFINITY_INFO until
/// vCPU 1 is off and reports. vCPU 1's `run` does not return after CPU_OFF: a kick ends it, and
/// its MP state reads stopped.
fn cpu_off(ctx: &Context, psci: Psci) -> CaseResult {
    use function::*;
    let accel = ctx.accelerator()?;
    // None: PSCI in the plugin is not offered, and its refusal was checked instead.
    let Some(mut g) = psci.guest(ctx, &accel, &[asm::b(0)])? else { return Ok(()) };
    let mut second =
        g.vm.create_vcpu(&VcpuConfig::new(1, VcpuFeatures::PSCI_0_2 | VcpuFeatures::POWER_OFF))?;
    let affinity = second.get_reg(MPIDR_EL1)? & psci::MPIDR_AFFINITY_MASK;
    let secondary_at = CODE + 0x800;
    let mut code = call_and_report(smc64(CPU_ON), &[affinity, secondary_at, 0], 0x30);
    let poll = CODE + 4 * code.len() as u64;
    code.extend(asm::mov_imm64(0, u64::from(smc64(AFFINITY_INFO))));
    code.extend(asm::mov_imm64(1, affinity));
    code.extend([asm::movz(2, 0, 0), asm::hvc(0), asm::cmp_imm(0, 1)]);
    let here = CODE + 4 * code.len() as u64;
    code.push(asm::b_ne(poll as i64 - here as i64));
    code.extend([asm::str(Size::X, 0, 9, 0x38), asm::b(0)]);
    let mut secondary = asm::mov_imm64(9, MMIO_BASE);
    secondary.push(asm::str(Size::X, 9, 9, 0x40));
    secondary.extend(asm::mov_imm64(0, u64::from(CPU_OFF)));
    // What CPU_OFF returns, if it ever does, is reported at 0x48: a failure of the case.
    secondary.extend([asm::hvc(0), asm::str(Size::X, 0, 9, 0x48), asm::b(0)]);
    g.ram.write_code(CODE, &code)?;
    g.ram.write_code(secondary_at, &secondary)?;

    let kicker = second.kicker();
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let mut exits = Vec::new();
        let result = loop {
            match second.run() {
                Ok(VcpuExit::Interrupted) => break Ok(exits),
                Ok(other) => exits.push(other),
                Err(e) => break Err(e.to_string()),
            }
            if exits.len() > 4 {
                break Ok(exits);
            }
        };
        let state = second.get_mp_state();
        let _ = tx.send((result, state));
    });
    let (addr, _, status) = g.expect_mmio_write()?;
    ensure!(addr == MMIO_BASE + 0x30 && status == 0, "CPU_ON returned {status:#x} (at {addr:#x})");
    let (addr, _, off) = g.expect_mmio_write()?;
    ensure!(addr == MMIO_BASE + 0x38 && off == 1, "vCPU 0 reported {off:#x} at {addr:#x}, expected OFF (1)");
    // vCPU 1 is off and waiting: only a kick ends its run.
    thread::sleep(Duration::from_millis(100));
    kicker.kick();
    let outcome = rx.recv_timeout(ctx.pace().answer());
    if outcome.is_err() {
        kicker.kick();
    }
    let _ = worker.join();
    let (result, state) = outcome.map_err(|_| Failure::Fail("vCPU 1's run did not end on a kick".into()))?;
    let exits = result.map_err(Failure::Fail)?;
    match exits.as_slice() {
        [VcpuExit::MmioWrite(a)] if a.addr == MMIO_BASE + 0x40 => {}
        other => return Err(Failure::Fail(format!("vCPU 1 exited with {other:?}; expected its one report"))),
    }
    let state = state.map_err(Failure::from)?;
    ensure!(state == MpState::STOPPED, "vCPU 1 after CPU_OFF is {}, not stopped", state.name());
    Ok(())
}

fn system_off_stops_every_vcpu(ctx: &Context) -> CaseResult {
    system_off_with_two(ctx, Psci::Default)
}

fn system_off_stops_every_vcpu_in_plugin(ctx: &Context) -> CaseResult {
    system_off_with_two(ctx, Psci::InPlugin)
}

/// vCPU 0 turns vCPU 1 on and waits until it runs (a flag in RAM), then calls SYSTEM_OFF while
/// vCPU 1 spins in the guest. The shutdown exit comes from vCPU 0; vCPU 1 is stopped with it:
/// its `run` ends only on a kick, and its MP state reads stopped.
fn system_off_with_two(ctx: &Context, psci: Psci) -> CaseResult {
    use function::*;
    let accel = ctx.accelerator()?;
    // None: PSCI in the plugin is not offered, and its refusal was checked instead.
    let Some(mut g) = psci.guest(ctx, &accel, &[asm::b(0)])? else { return Ok(()) };
    let mut second =
        g.vm.create_vcpu(&VcpuConfig::new(1, VcpuFeatures::PSCI_0_2 | VcpuFeatures::POWER_OFF))?;
    let affinity = second.get_reg(MPIDR_EL1)? & psci::MPIDR_AFFINITY_MASK;
    let secondary_at = CODE + 0x800;
    let mut code = call_and_report(smc64(CPU_ON), &[affinity, secondary_at, 0], 0x30);
    code.extend(asm::mov_imm64(10, DATA));
    let wait = CODE + 4 * code.len() as u64;
    code.extend([asm::ldr(Size::X, 5, 10, 0), asm::cmp_imm(5, 1)]);
    let here = CODE + 4 * code.len() as u64;
    code.push(asm::b_ne(wait as i64 - here as i64));
    code.extend(asm::mov_imm64(0, u64::from(SYSTEM_OFF)));
    code.extend([asm::hvc(0), asm::b(0)]);
    let mut secondary = asm::mov_imm64(10, DATA);
    secondary.extend([asm::movz(1, 1, 0), asm::str(Size::X, 1, 10, 0), asm::b(0)]);
    g.ram.write_code(CODE, &code)?;
    g.ram.write_code(secondary_at, &secondary)?;

    let kicker = second.kicker();
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let result = second.run().map_err(|e| e.to_string());
        let state = second.get_mp_state();
        let _ = tx.send((result, state));
    });
    let (addr, _, status) = g.expect_mmio_write()?;
    ensure!(addr == MMIO_BASE + 0x30 && status == 0, "CPU_ON returned {status:#x} (at {addr:#x})");
    match g.run()? {
        VcpuExit::SystemEvent { kind, .. } if kind == accel_api::SystemEventKind::SHUTDOWN => {}
        other => return Err(Failure::Fail(format!("expected vCPU 0's shutdown event, got {other:?}"))),
    }
    thread::sleep(Duration::from_millis(100));
    let early = rx.try_recv().ok();
    let returned_early = early.is_some();
    kicker.kick();
    let outcome = match early {
        Some(outcome) => Ok(outcome),
        None => rx.recv_timeout(ctx.pace().answer()),
    };
    if outcome.is_err() {
        kicker.kick();
    }
    let _ = worker.join();
    let (result, state) = outcome.map_err(|_| Failure::Fail("vCPU 1's run did not end on a kick".into()))?;
    ensure!(!returned_early, "vCPU 1's run returned after the shutdown without a kick: {result:?}");
    ensure!(result == Ok(VcpuExit::Interrupted), "vCPU 1's run ended with {result:?}, expected interrupted");
    let state = state.map_err(Failure::from)?;
    ensure!(state == MpState::STOPPED, "vCPU 1 after SYSTEM_OFF is {}, not stopped", state.name());
    Ok(())
}

/// A backend whose probe offers PSCI in the plugin creates such a VM; one that does not refuses
/// the option as unsupported, naming it (a plugin older than ABI 2.2 names it by its number).
/// Each `*_in_plugin` case makes the same check where the option is not offered.
fn userspace_option_follows_the_probe(ctx: &Context) -> CaseResult {
    let accel = ctx.accelerator()?;
    if !accel.probe().caps.userspace_psci {
        return userspace_psci_refused(ctx, &accel);
    }
    let config = VmConfig { userspace_psci: true, ..VmConfig::default() };
    match accel.create_vm(&config) {
        Ok(vm) => {
            vm.create_vcpu(&VcpuConfig::new(0, VcpuFeatures::PSCI_0_2))?;
            Ok(())
        }
        Err(e) => Err(Failure::Fail(format!("the probe offers PSCI in the plugin, but: {e}"))),
    }
}
