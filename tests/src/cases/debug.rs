//! Guest debug: hardware breakpoints, watchpoints (BAS and MASK ranges, at their edges), software
//! breakpoints with use counts, single-step, stepping over a hit, several at once, the limits
//! and errors, the guest's own BRK delivered to it while the host debugs too, and what the pool
//! reports it has programmed (ABI 2.2; a 2.0 or 2.1 plugin answers `unsupported`).

use accel_api::{
    client::{Debug, Vcpu},
    debug::{DebugEvent, WatchKind, Watchpoint},
    DebugExit, ErrorKind, VcpuConfig, VcpuExit, VcpuFeatures,
};

use crate::{
    asm::{self, Size},
    ensure,
    guest::{TestGuest, CODE, DATA, MMIO_BASE},
    Case, CaseResult, Context, Failure,
};

pub fn cases() -> Vec<Case> {
    crate::case_list![debug: hw_breakpoint_stops_at_its_address, every_hw_breakpoint_then_no_resource, single_step_pc_sequence, watchpoint_stops_before_the_store, watchpoint_ranges_at_their_edges, inexact_watchpoints_are_refused, sw_breakpoint_in_a_loop, sw_breakpoint_restore_checks_memory, guest_brk_goes_to_the_guest, several_at_once, later_vcpus_get_the_pool, program_shows_what_is_set, mdccint_el1_while_the_host_debugs]
}

fn debug_of(g: &TestGuest) -> Result<Debug, Failure> {
    crate::extension(g.vm.debug(), "guest debug", false)
}

/// Runs until a debug exit (or fails the case with what came instead).
fn run_to_debug(vcpu: &mut Vcpu) -> Result<DebugExit, Failure> {
    loop {
        match vcpu.run()? {
            VcpuExit::Interrupted => continue,
            VcpuExit::Debug(d) => return Ok(d),
            other => return Err(Failure::Fail(format!("expected a debug exit, got {other:?}"))),
        }
    }
}

fn guest_with_debug(ctx: &Context, code: &[u32]) -> Result<(TestGuest, Debug), Failure> {
    let g = TestGuest::new(&ctx.accelerator()?, code)?;
    let d = debug_of(&g)?;
    Ok((g, d))
}

/// NOPs, then a report of X0 to MMIO_BASE.
fn straight_line(nops: usize) -> Vec<u32> {
    let mut code = vec![asm::NOP; nops];
    code.extend(asm::mov_imm64(9, MMIO_BASE));
    code.extend([asm::str(Size::X, 0, 9, 0), asm::b(0)]);
    code
}

fn hw_breakpoint_stops_at_its_address(ctx: &Context) -> CaseResult {
    let (mut g, d) = guest_with_debug(ctx, &straight_line(8))?;
    let at = CODE + 12;
    d.insert_hw_breakpoint(at)?;
    let exit = run_to_debug(&mut g.vcpu)?;
    ensure!(exit.pc == at, "stopped at {:#x}, expected {at:#x}", exit.pc);
    ensure!(
        d.classify(0, &exit) == DebugEvent::HwBreakpoint { addr: at },
        "classified as {:?}",
        d.classify(0, &exit)
    );
    d.remove_hw_breakpoint(at)?;
    g.expect_mmio_write()?;
    let err = d.remove_hw_breakpoint(at).err();
    ensure!(
        err.is_some_and(|e| e.kind == ErrorKind::NOT_FOUND),
        "removing a removed breakpoint did not fail as not found"
    );
    Ok(())
}

fn every_hw_breakpoint_then_no_resource(ctx: &Context) -> CaseResult {
    let (mut g, d) = guest_with_debug(ctx, &straight_line(20))?;
    let n = d.capacity().breakpoints;
    ensure!(n >= 2, "only {n} hardware breakpoints");
    let addrs: Vec<u64> = (0..u64::from(n)).map(|i| CODE + 4 * (i + 1)).collect();
    for a in &addrs {
        d.insert_hw_breakpoint(*a)?;
    }
    let err = d.insert_hw_breakpoint(CODE + 0x40).err();
    ensure!(
        err.is_some_and(|e| e.kind == ErrorKind::NO_RESOURCE),
        "breakpoint {} of {n} was accepted",
        n + 1
    );
    for a in &addrs {
        let exit = run_to_debug(&mut g.vcpu)?;
        ensure!(exit.pc == *a, "stopped at {:#x}, expected the breakpoint at {a:#x}", exit.pc);
        d.remove_hw_breakpoint(*a)?;
    }
    g.expect_mmio_write()?;
    Ok(())
}

fn single_step_pc_sequence(ctx: &Context) -> CaseResult {
    // NOP, ADD, NOP, then a branch back to the second NOP: the ADD runs once.
    let code = [asm::NOP, asm::add_imm(1, 1, 1), asm::NOP, asm::b(-4), asm::b(0)];
    let (mut g, d) = guest_with_debug(ctx, &code)?;
    // Run the prelude to the first instruction of the case's code.
    d.insert_hw_breakpoint(CODE)?;
    run_to_debug(&mut g.vcpu)?;
    d.remove_hw_breakpoint(CODE)?;
    d.set_single_step(0, true)?;
    let want = [CODE + 4, CODE + 8, CODE + 12, CODE + 8, CODE + 12, CODE + 8];
    for (i, pc) in want.iter().enumerate() {
        let exit = run_to_debug(&mut g.vcpu)?;
        ensure!(
            d.classify(0, &exit) == DebugEvent::Step,
            "step {i} classified as {:?}",
            d.classify(0, &exit)
        );
        ensure!(exit.pc == *pc, "step {i}: PC {:#x}, expected {pc:#x}", exit.pc);
    }
    d.set_single_step(0, false)?;
    ensure!(g.core()?.x[1] == 1, "X1 = {} after stepping over the ADD once", g.core()?.x[1]);
    Ok(())
}

/// A guest that stores X1 to X10 + offset, then reports.
fn store_then_report(addr_reg_value: u64, size: Size, offset: u32) -> Vec<u32> {
    let mut code = asm::mov_imm64(10, addr_reg_value);
    code.extend(asm::mov_imm64(1, 0x1122_3344_5566_7788));
    code.push(asm::str(size, 1, 10, offset));
    code.extend(asm::mov_imm64(9, MMIO_BASE));
    code.extend([asm::str(Size::X, 1, 9, 0), asm::b(0)]);
    code
}

/// Steps over the instruction a watchpoint stopped: remove it, step one instruction, put it back.
fn step_over_watchpoint(g: &mut TestGuest, d: &Debug, w: &Watchpoint) -> CaseResult {
    d.remove_watchpoint(w)?;
    d.set_single_step(0, true)?;
    let exit = run_to_debug(&mut g.vcpu)?;
    ensure!(
        d.classify(0, &exit) == DebugEvent::Step,
        "stepping over the access gave {:?}",
        d.classify(0, &exit)
    );
    d.set_single_step(0, false)?;
    d.insert_watchpoint(w)?;
    Ok(())
}

fn watchpoint_stops_before_the_store(ctx: &Context) -> CaseResult {
    let (mut g, d) = guest_with_debug(ctx, &store_then_report(DATA, Size::X, 0))?;
    let w = Watchpoint { addr: DATA + 4, len: 2, kind: WatchKind::WRITE };
    d.insert_watchpoint(&w)?;
    let exit = run_to_debug(&mut g.vcpu)?;
    match d.classify(0, &exit) {
        DebugEvent::Watchpoint { watch, accessed } => {
            ensure!(watch == w, "the hit names {watch:?}, expected {w:?}");
            ensure!((DATA..DATA + 8).contains(&accessed), "accessed address {accessed:#x}");
        }
        other => return Err(Failure::Fail(format!("classified as {other:?}"))),
    }
    let mut before = [0u8; 8];
    g.ram.read(DATA, &mut before)?;
    ensure!(before == [0; 8], "memory was written before the watchpoint stop: {before:x?}");
    step_over_watchpoint(&mut g, &d, &w)?;
    let mut after = [0u8; 8];
    g.ram.read(DATA, &mut after)?;
    ensure!(
        u64::from_le_bytes(after) == 0x1122_3344_5566_7788,
        "after stepping over, memory holds {after:x?}"
    );
    d.remove_watchpoint(&w)?;
    g.expect_mmio_write()?;
    Ok(())
}

fn watchpoint_ranges_at_their_edges(ctx: &Context) -> CaseResult {
    // A 256-byte MASK range: stores just outside at both ends do not hit, at both ends inside do.
    let base = DATA + 0x100;
    let w = Watchpoint { addr: base, len: 256, kind: WatchKind::ACCESS };
    for (offset, hits) in [(-8i64, false), (0, true), (248, true), (256, false)] {
        let target = (base as i64 + offset) as u64;
        let (mut g, d) = guest_with_debug(ctx, &store_then_report(target, Size::X, 0))?;
        d.insert_watchpoint(&w)?;
        let exit = loop {
            match g.vcpu.run()? {
                VcpuExit::Interrupted => continue,
                other => break other,
            }
        };
        match (hits, exit) {
            (true, VcpuExit::Debug(e)) => ensure!(
                matches!(d.classify(0, &e), DebugEvent::Watchpoint { .. }),
                "offset {offset}: classified as {:?}",
                d.classify(0, &e)
            ),
            (false, VcpuExit::MmioWrite(a)) if a.addr == MMIO_BASE => {}
            (_, other) => {
                return Err(Failure::Fail(format!(
                    "store at offset {offset}: expected hit {hits}, got {other:?}"
                )))
            }
        }
    }
    // A BAS watch of the last byte of a doubleword: a byte store there hits, one before does not.
    for (offset, hits) in [(7u32, true), (6, false)] {
        let (mut g, d) = guest_with_debug(ctx, &store_then_report(DATA, Size::B, offset))?;
        d.insert_watchpoint(&Watchpoint { addr: DATA + 7, len: 1, kind: WatchKind::WRITE })?;
        let hit = matches!(g.vcpu.run()?, VcpuExit::Debug(_));
        ensure!(hit == hits, "byte store at +{offset}: hit {hit}, expected {hits}");
    }
    Ok(())
}

fn inexact_watchpoints_are_refused(ctx: &Context) -> CaseResult {
    let (g, d) = guest_with_debug(ctx, &[asm::b(0)])?;
    drop(g);
    for (addr, len) in [(DATA + 6, 4u64), (DATA, 24), (DATA + 0x10, 32), (DATA, 0)] {
        let err = d.insert_watchpoint(&Watchpoint { addr, len, kind: WatchKind::WRITE }).err();
        ensure!(
            err.as_ref().is_some_and(|e| e.kind == ErrorKind::INVALID_ARGUMENT),
            "a {len}-byte watchpoint at {addr:#x}: expected invalid argument, got {err:?}"
        );
    }
    let cap = d.capacity().watchpoints;
    for i in 0..u64::from(cap) {
        d.insert_watchpoint(&Watchpoint { addr: DATA + 8 * i, len: 8, kind: WatchKind::READ })?;
    }
    let err = d.insert_watchpoint(&Watchpoint { addr: DATA + 0x800, len: 8, kind: WatchKind::READ }).err();
    ensure!(
        err.is_some_and(|e| e.kind == ErrorKind::NO_RESOURCE),
        "watchpoint {} of {cap} was accepted",
        cap + 1
    );
    let err = d.remove_watchpoint(&Watchpoint { addr: DATA + 0x800, len: 8, kind: WatchKind::READ }).err();
    ensure!(
        err.is_some_and(|e| e.kind == ErrorKind::NOT_FOUND),
        "removing an absent watchpoint did not fail"
    );
    d.remove_all()?;
    Ok(())
}

/// Steps over a software breakpoint: restore the instruction, step it, plant the BRK again.
fn step_over_sw(g: &mut TestGuest, d: &Debug, at: u64) -> CaseResult {
    d.remove_sw_breakpoint(at)?;
    d.set_single_step(0, true)?;
    let exit = run_to_debug(&mut g.vcpu)?;
    ensure!(exit.pc == at + 4, "stepping over the breakpoint stopped at {:#x}", exit.pc);
    d.set_single_step(0, false)?;
    d.insert_sw_breakpoint(at, at)?;
    Ok(())
}

fn sw_breakpoint_in_a_loop(ctx: &Context) -> CaseResult {
    // X1 counts three rounds of a loop whose ADD carries the breakpoint.
    let mut code = vec![asm::movz(1, 0, 0), asm::movz(2, 3, 0)];
    let body = CODE + 4 * code.len() as u64;
    code.extend([
        asm::add_imm(1, 1, 1),
        0xeb02_003f, // cmp x1, x2
        0x54ff_ffc1, // b.ne body (-8)
    ]);
    code.extend(asm::mov_imm64(9, MMIO_BASE));
    code.extend([asm::str(Size::X, 1, 9, 0), asm::b(0)]);
    let (mut g, d) = guest_with_debug(ctx, &code)?;
    d.insert_sw_breakpoint(body, body)?;
    let mut word = [0u8; 4];
    g.ram.read(body, &mut word)?;
    ensure!(
        u32::from_le_bytes(word) == accel_api::debug::BRK_INSN,
        "memory at the breakpoint holds {word:x?}"
    );
    for round in 0..3u64 {
        let exit = run_to_debug(&mut g.vcpu)?;
        ensure!(
            d.classify(0, &exit) == DebugEvent::SwBreakpoint { addr: body },
            "round {round}: {:?}",
            d.classify(0, &exit)
        );
        ensure!(g.core()?.x[1] == round, "round {round}: X1 = {}", g.core()?.x[1]);
        step_over_sw(&mut g, &d, body)?;
    }
    d.remove_sw_breakpoint(body)?;
    let (_, _, count) = g.expect_mmio_write()?;
    ensure!(count == 3, "the loop ran {count} times, not 3");
    g.ram.read(body, &mut word)?;
    ensure!(u32::from_le_bytes(word) == asm::add_imm(1, 1, 1), "the ADD was not restored: {word:x?}");
    Ok(())
}

fn sw_breakpoint_restore_checks_memory(ctx: &Context) -> CaseResult {
    let (g, d) = guest_with_debug(ctx, &straight_line(4))?;
    let at = CODE + 4;
    d.insert_sw_breakpoint(at, at)?;
    d.insert_sw_breakpoint(at, at)?; // a second use
    d.remove_sw_breakpoint(at)?;
    let mut word = [0u8; 4];
    g.ram.read(at, &mut word)?;
    ensure!(u32::from_le_bytes(word) == accel_api::debug::BRK_INSN, "one use left, yet the BRK is gone");
    // Something else overwrites the BRK: the last remove refuses to restore over it.
    g.ram.write_code(at, &[asm::movz(7, 7, 0)])?;
    let err = d.remove_sw_breakpoint(at).err();
    ensure!(
        err.as_ref().is_some_and(|e| e.kind == ErrorKind::BAD_STATE),
        "restoring over changed memory: {err:?}"
    );
    g.ram.read(at, &mut word)?;
    ensure!(u32::from_le_bytes(word) == asm::movz(7, 7, 0), "the refused restore changed memory");
    let err = d.remove_sw_breakpoint(CODE + 0x100).err();
    ensure!(
        err.is_some_and(|e| e.kind == ErrorKind::NOT_FOUND),
        "removing an absent breakpoint did not fail"
    );
    Ok(())
}

fn guest_brk_goes_to_the_guest(ctx: &Context) -> CaseResult {
    let mut code = vec![asm::NOP, asm::brk(5)];
    code.extend(straight_line(2));
    let (mut g, d) = guest_with_debug(ctx, &code)?;
    // The host's own breakpoint elsewhere makes KVM trap every BRK.
    d.insert_sw_breakpoint(CODE + 0x20, CODE + 0x20)?;
    let exit = run_to_debug(&mut g.vcpu)?;
    ensure!(exit.pc == CODE + 4, "stopped at {:#x}", exit.pc);
    ensure!(
        d.classify(0, &exit) == DebugEvent::Guest,
        "the guest's BRK #5 classified as {:?}",
        d.classify(0, &exit)
    );
    accel_host::vmm::guest_debug::deliver_to_guest(&mut g.vcpu, &exit)?;
    let taken = g.expect_exception()?;
    ensure!(
        taken.esr == 0xf200_0005,
        "the guest's handler saw ESR_EL1 {:#x}, expected 0xf2000005",
        taken.esr
    );
    ensure!(taken.elr == CODE + 4, "ELR_EL1 {:#x}", taken.elr);
    ensure!(taken.offset == 0x200, "vector offset {:#x}", taken.offset);
    Ok(())
}

fn several_at_once(ctx: &Context) -> CaseResult {
    // A hardware breakpoint, then a software one, then a watched store.
    let mut code = vec![asm::NOP, asm::NOP, asm::NOP];
    code.extend(store_then_report(DATA, Size::X, 0));
    let (mut g, d) = guest_with_debug(ctx, &code)?;
    let w = Watchpoint { addr: DATA, len: 8, kind: WatchKind::WRITE };
    d.insert_hw_breakpoint(CODE + 4)?;
    d.insert_sw_breakpoint(CODE + 8, CODE + 8)?;
    d.insert_watchpoint(&w)?;
    let e1 = run_to_debug(&mut g.vcpu)?;
    ensure!(
        d.classify(0, &e1) == DebugEvent::HwBreakpoint { addr: CODE + 4 },
        "first stop {:?}",
        d.classify(0, &e1)
    );
    d.remove_hw_breakpoint(CODE + 4)?;
    let e2 = run_to_debug(&mut g.vcpu)?;
    ensure!(
        d.classify(0, &e2) == DebugEvent::SwBreakpoint { addr: CODE + 8 },
        "second stop {:?}",
        d.classify(0, &e2)
    );
    d.remove_sw_breakpoint(CODE + 8)?;
    let e3 = run_to_debug(&mut g.vcpu)?;
    ensure!(
        matches!(d.classify(0, &e3), DebugEvent::Watchpoint { .. }),
        "third stop {:?}",
        d.classify(0, &e3)
    );
    d.remove_all()?;
    g.expect_mmio_write()?;
    Ok(())
}

fn later_vcpus_get_the_pool(ctx: &Context) -> CaseResult {
    let (g, d) = guest_with_debug(ctx, &straight_line(4))?;
    d.insert_hw_breakpoint(CODE + 8)?;
    // A vCPU created after the breakpoint, started at the case's code.
    let mut late = g.vm.create_vcpu(&VcpuConfig::new(1, VcpuFeatures::PSCI_0_2))?;
    let mut core = late.get_core()?;
    core.pc = CODE;
    core.pstate = accel_host::vmm::PSTATE_EL1H_DAIF;
    late.put_core(&core, accel_api::PutLevel::RESET)?;
    let exit = run_to_debug(&mut late)?;
    ensure!(exit.pc == CODE + 8, "the later vCPU stopped at {:#x}", exit.pc);
    ensure!(
        d.classify(1, &exit) == DebugEvent::HwBreakpoint { addr: CODE + 8 },
        "classified as {:?}",
        d.classify(1, &exit)
    );
    Ok(())
}

fn program_shows_what_is_set(ctx: &Context) -> CaseResult {
    let (mut g, d) = guest_with_debug(ctx, &straight_line(4))?;
    d.insert_hw_breakpoint(CODE + 4)?;
    d.insert_sw_breakpoint(CODE + 8, CODE + 8)?;
    d.insert_watchpoint(&Watchpoint { addr: DATA, len: 8, kind: WatchKind::WRITE })?;
    let program = d.program(0);
    if ctx.plugin.abi_version().minor < 2 {
        // The trailing method the plugin's table lacks: a clean refusal, and the pool works on.
        ensure!(
            program
                .as_ref()
                .is_err_and(|e| e.kind == ErrorKind::UNSUPPORTED && e.message.contains("ABI 2.2")),
            "a plugin of ABI {} answered {program:?}",
            ctx.plugin.abi_version()
        );
        let exit = run_to_debug(&mut g.vcpu)?;
        ensure!(exit.pc == CODE + 4, "then stopped at {:#x}", exit.pc);
        return Ok(());
    }
    let program = program?;
    let regs = program.registers();
    let value = |id| regs.iter().find(|r| r.id == id).map(|r| r.value);
    let (bvr, wvr) = (0..16).fold((None, None), |(b, w), n| {
        (b.or(value(accel_api::sysreg::dbgbvr(n))), w.or(value(accel_api::sysreg::dbgwvr(n))))
    });
    ensure!(bvr == Some(CODE + 4), "the breakpoint value register reads {bvr:x?}");
    ensure!(wvr == Some(DATA), "the watchpoint value register reads {wvr:x?}");
    ensure!(program.setup.sw_breakpoints && program.setup.hardware, "setup {:?}", program.setup);
    ensure!(program.sw_breakpoints == [CODE + 8], "software breakpoints {:x?}", program.sw_breakpoints);
    d.remove_all()?;
    let after = d.program(0)?;
    ensure!(!after.setup.active() && after.registers().is_empty(), "after remove_all: {after:?}");
    Ok(())
}

/// What MDCCINT_EL1 reads before, while and after the host debugs with hardware breakpoints,
/// on the debugged vCPU and on one that is not run. The guest never writes it, so it reads 0.
///
/// While the host debugs a vCPU with the debug registers, KVM switches the debug state on each
/// entry and exit, and saves the hardware's MDCCINT_EL1 as the guest's. On an emulated host whose
/// MRS from MDCCINT_EL1 leaves its destination register unchanged (QEMU's TCG before 10.0, which
/// modelled the register as a no-op: QEMU issue 2708), what KVM saves is whatever that register
/// held, a host kernel pointer, and the guest's MDCCINT_EL1 then reads it back. The backend
/// reports what KVM holds; this case is how such a host shows itself.
fn mdccint_el1_while_the_host_debugs(ctx: &Context) -> CaseResult {
    use accel_api::sysreg::MDCCINT_EL1;
    let (mut g, d) = guest_with_debug(ctx, &straight_line(8))?;
    let mut idle = g.vm.create_vcpu(&VcpuConfig::new(1, VcpuFeatures::PSCI_0_2))?;
    let before = g.vcpu.get_reg(MDCCINT_EL1)?;
    d.insert_hw_breakpoint(CODE + 12)?;
    run_to_debug(&mut g.vcpu)?;
    let during = g.vcpu.get_reg(MDCCINT_EL1)?;
    let idle_during = idle.get_reg(MDCCINT_EL1)?;
    d.remove_all()?;
    g.expect_mmio_write()?;
    let after = g.vcpu.get_reg(MDCCINT_EL1)?;
    println!("MDCCINT_EL1: before {before:#x}, at the breakpoint {during:#x}, idle vCPU {idle_during:#x}, after {after:#x}");
    ensure!(
        before == 0 && during == 0 && idle_during == 0 && after == 0,
        "MDCCINT_EL1 changed without a guest write"
    );
    Ok(())
}
