//! Running guests: computed values read back, MMIO exits of every size with resumed reads, and
//! PSCI system events.

use accel_api::{ErrorKind, PutLevel, SystemEventKind, VcpuExit};

use crate::{
    asm::{self, Size},
    ensure,
    guest::{Psci, TestGuest, CODE, MMIO_BASE, PSCI_SYSTEM_OFF, PSCI_SYSTEM_RESET},
    Case, CaseResult, Context, Failure,
};

pub fn cases() -> Vec<Case> {
    crate::case_list![run: guest_computes_known_values, mmio_writes_of_every_size, mmio_read_resumes_with_host_value, mmio_read_data_without_a_read, mmio_abort_without_syndrome, guest_exception_reaches_its_vectors, pc_after_mmio_exit, fresh_code_in_reused_memory, psci_system_off, psci_system_reset, psci_system_off_in_plugin, psci_system_reset_in_plugin]
}

fn guest_computes_known_values(ctx: &Context) -> CaseResult {
    let mut code = vec![
        asm::movz(0, 7, 0),
        asm::movz(1, 6, 0),
        asm::mul(2, 0, 1),        // x2 = 42
        asm::add_imm(3, 2, 100),  // x3 = 142
        asm::eor(4, 3, 0),        // x4 = 142 ^ 7 = 137
        asm::scvtf_d(1, 2),       // d1 = 42.0
        asm::fadd_d(2, 1, 1),     // d2 = 84.0
        asm::fmov_d_from_x(0, 3), // v0.d[0] = 142
        asm::ins_d1_from_x(0, 4), // v0.d[1] = 137
    ];
    code.extend(asm::mov_imm64(9, MMIO_BASE));
    code.push(asm::str(Size::X, 2, 9, 0));
    code.push(asm::b(0));
    let mut g = TestGuest::new(&ctx.accelerator()?, &code)?;
    let (addr, len, value) = g.expect_mmio_write()?;
    ensure!((addr, len, value) == (MMIO_BASE, 8, 42), "done write: ({addr:#x}, {len}, {value})");
    let core = g.core()?;
    ensure!(core.x[2..5] == [42, 142, 137], "X2..X4 = {:?}, expected [42, 142, 137]", &core.x[2..5]);
    let fp = g.vcpu.get_fp()?;
    ensure!(fp.v_u128(1) as u64 == 42f64.to_bits(), "D1 = {:#x}, expected 42.0", fp.v_u128(1) as u64);
    ensure!(fp.v_u128(2) as u64 == 84f64.to_bits(), "D2 = {:#x}, expected 84.0", fp.v_u128(2) as u64);
    ensure!(
        fp.v_u128(0) == (137u128 << 64) | 142,
        "V0 = {:#x}, expected 137:142 in its doublewords",
        fp.v_u128(0)
    );
    Ok(())
}

fn mmio_writes_of_every_size(ctx: &Context) -> CaseResult {
    const VALUE: u64 = 0x1122_3344_5566_7788;
    let mut code = asm::mov_imm64(1, MMIO_BASE);
    code.extend(asm::mov_imm64(2, VALUE));
    code.extend([
        asm::str(Size::B, 2, 1, 1),
        asm::str(Size::H, 2, 1, 2),
        asm::str(Size::W, 2, 1, 4),
        asm::str(Size::X, 2, 1, 8),
        asm::b(0),
    ]);
    let mut g = TestGuest::new(&ctx.accelerator()?, &code)?;
    for (offset, len, want) in [(1, 1, 0x88), (2, 2, 0x7788), (4, 4, 0x5566_7788), (8, 8, VALUE)] {
        let got = g.expect_mmio_write()?;
        ensure!(
            got == (MMIO_BASE + offset, len, want),
            "expected a {len}-byte write of {want:#x} at {:#x}, got {got:x?}",
            MMIO_BASE + offset
        );
    }
    Ok(())
}

fn mmio_read_resumes_with_host_value(ctx: &Context) -> CaseResult {
    let mut code = asm::mov_imm64(1, MMIO_BASE);
    code.extend([
        asm::ldr(Size::W, 3, 1, 8),
        asm::add_imm(4, 3, 1),
        asm::str(Size::X, 4, 1, 16),
        asm::ldr(Size::X, 5, 1, 24),
        asm::str(Size::X, 5, 1, 32),
        asm::ldr(Size::B, 6, 1, 40),
        asm::str(Size::X, 6, 1, 48),
        asm::b(0),
    ]);
    let mut g = TestGuest::new(&ctx.accelerator()?, &code)?;
    for (read_offset, len, supplied, write_offset, echoed) in [
        (8, 4, 0x1234_5678u64, 16, 0x1234_5679u64),
        (24, 8, 0xdead_beef_cafe_f00d, 32, 0xdead_beef_cafe_f00d),
        // Only the access's byte reaches the register: LDRB zero-extends.
        (40, 1, 0xffff_ffff_ffff_ffab, 48, 0xab),
    ] {
        match g.run()? {
            VcpuExit::MmioRead(a) if a.addr == MMIO_BASE + read_offset && a.len == len => {}
            other => {
                return Err(Failure::Fail(format!(
                    "expected a {len}-byte MMIO read at {:#x}, got {other:?}",
                    MMIO_BASE + read_offset
                )))
            }
        }
        g.vcpu.set_mmio_read_data(supplied)?;
        let got = g.expect_mmio_write()?;
        ensure!(
            got == (MMIO_BASE + write_offset, 8, echoed),
            "after supplying {supplied:#x} to a {len}-byte read the guest wrote {got:x?}, expected {echoed:#x}"
        );
    }
    Ok(())
}

fn mmio_read_data_without_a_read(ctx: &Context) -> CaseResult {
    let mut g = TestGuest::new(&ctx.accelerator()?, &[asm::b(0)])?;
    let err = g.vcpu.set_mmio_read_data(1).err();
    ensure!(
        err.as_ref().is_some_and(|e| e.kind == ErrorKind::BAD_STATE),
        "supplying MMIO read data with no read pending: expected a bad-state error, got {err:?}"
    );
    Ok(())
}

/// A load with writeback from MMIO gives the hypervisor no instruction syndrome; it must come
/// back as an exit naming the faulting address, not as a failed `run`.
fn mmio_abort_without_syndrome(ctx: &Context) -> CaseResult {
    let target = MMIO_BASE + 0x100;
    let mut code = asm::mov_imm64(1, target);
    code.extend([asm::ldr_x_post(0, 1, 8), asm::b(0)]);
    let mut g = TestGuest::new(&ctx.accelerator()?, &code)?;
    match g.run()? {
        VcpuExit::ArmNisv { fault_ipa, .. } => {
            ensure!(fault_ipa == target, "fault IPA {fault_ipa:#x}, expected {target:#x}");
            Ok(())
        }
        other => Err(Failure::Fail(format!("expected a no-syndrome abort exit, got {other:?}"))),
    }
}

/// With no debugger attached, a guest's own `BRK` is the guest's business: it must be taken by
/// the guest's vector table at EL1 with ESR_EL1.EC = 0x3c and the immediate in the ISS.
fn guest_exception_reaches_its_vectors(ctx: &Context) -> CaseResult {
    let mut g = TestGuest::new(&ctx.accelerator()?, &[asm::NOP, asm::brk(0x7), asm::b(0)])?;
    let taken = g.expect_exception()?;
    ensure!(
        taken.esr >> 26 == 0x3c && taken.esr & 0xffff == 7,
        "ESR_EL1 {:#x}: expected EC 0x3c (BRK) with comment 7",
        taken.esr
    );
    ensure!(taken.elr == CODE + 4, "ELR_EL1 {:#x}: expected the BRK at {:#x}", taken.elr, CODE + 4);
    ensure!(taken.offset == 0x200, "vector offset {:#x}: expected 0x200 (current EL, SP_ELx)", taken.offset);
    Ok(())
}

/// After an MMIO exit the PC reads as the next instruction, and a PC the host sets there is where
/// the guest resumes, exactly.
fn pc_after_mmio_exit(ctx: &Context) -> CaseResult {
    let mut code = asm::mov_imm64(9, MMIO_BASE);
    let store_at = CODE + 4 * code.len() as u64;
    code.extend([asm::str(Size::X, 9, 9, 0), asm::b(0)]);
    let other = code.len() as u64;
    code.extend([asm::movz(1, 0x77, 0), asm::str(Size::X, 1, 9, 8), asm::b(0)]);
    let mut g = TestGuest::new(&ctx.accelerator()?, &code)?;
    let (addr, _, _) = g.expect_mmio_write()?;
    ensure!(addr == MMIO_BASE, "first write at {addr:#x}");
    let mut core = g.core()?;
    ensure!(
        core.pc == store_at + 4,
        "PC after the MMIO exit is {:#x}, expected {:#x}",
        core.pc,
        store_at + 4
    );
    core.pc = CODE + 4 * other;
    g.vcpu.put_core(&core, PutLevel::RUNTIME)?;
    let got = g.expect_mmio_write()?;
    ensure!(got == (MMIO_BASE + 8, 8, 0x77), "after moving the PC the guest wrote {got:x?}");
    Ok(())
}

/// How often [`fresh_code_in_reused_memory`] repeats its pattern.
const REUSE_ROUNDS: u32 = 40;

/// New code in guest RAM runs, not what a previous VM left at the same address.
///
/// QEMU 7.2's TCG, emulating the host of a nested KVM on a CPU with SVE, sometimes ran a stale
/// translation of a page the host kernel had freed and handed to the next VM: that VM executed
/// the previous one's instruction although its RAM held new code. This repeats the pattern that
/// exposed it: a VM leaves a load at the address where the next VM's PC is set by the host, after
/// an MMIO exit. A guest that executes the stale load reads MMIO at address 0.
fn fresh_code_in_reused_memory(ctx: &Context) -> CaseResult {
    let accel = ctx.accelerator()?;
    let mut fresh = asm::mov_imm64(9, MMIO_BASE);
    fresh.extend([asm::str(Size::X, 9, 9, 0), asm::b(0)]);
    let target = fresh.len();
    fresh.extend([asm::movz(1, 0x77, 0), asm::str(Size::X, 1, 9, 8), asm::b(0)]);
    let mut stale = vec![asm::NOP; target];
    stale.extend([asm::ldr(Size::X, 1, 10, 0), asm::b(0)]);
    for round in 0..REUSE_ROUNDS {
        let mut old = TestGuest::new(&accel, &stale)?;
        let mut regs = old.core()?;
        regs.pc = CODE + 4 * target as u64;
        regs.x[10] = MMIO_BASE;
        old.vcpu.put_core(&regs, PutLevel::RUNTIME)?;
        match old.run()? {
            VcpuExit::MmioRead(a) if a.addr == MMIO_BASE => old.vcpu.set_mmio_read_data(0xdead)?,
            other => return Err(Failure::Fail(format!("round {round}: the first VM's load gave {other:?}"))),
        }
        drop(old);
        let mut new = TestGuest::new(&accel, &fresh)?;
        new.expect_mmio_write()?;
        let mut core = new.core()?;
        core.pc = CODE + 4 * target as u64;
        new.vcpu.put_core(&core, PutLevel::RUNTIME)?;
        let got = new.run()?;
        match &got {
            VcpuExit::MmioWrite(a) if a.addr == MMIO_BASE + 8 && a.value() == 0x77 => {}
            other => {
                return Err(Failure::Fail(format!(
                    "round {round}: the new VM ran something other than its own code: {other:?}"
                )))
            }
        }
    }
    Ok(())
}

/// The call exits as the system event `want`, with KVM's data (its flags word, 0), and the vCPU
/// is stopped afterwards, whoever answers PSCI.
fn psci_event(ctx: &Context, psci: Psci, function: u64, want: SystemEventKind) -> CaseResult {
    let mut code = asm::mov_imm64(0, function);
    code.extend([asm::hvc(0), asm::b(0)]);
    let accel = ctx.accelerator()?;
    // None: PSCI in the plugin is not offered, and its refusal was checked instead.
    let Some(mut g) = psci.guest(ctx, &accel, &code)? else { return Ok(()) };
    match g.run()? {
        VcpuExit::SystemEvent { kind, data } if kind == want => {
            ensure!(data == [0], "the {} event carries {data:?}, expected [0]", want.name());
        }
        other => {
            return Err(Failure::Fail(format!("expected a {} system event, got {other:?}", want.name())))
        }
    }
    let state = g.vcpu.get_mp_state()?;
    ensure!(
        state == accel_api::MpState::STOPPED,
        "after the event the vCPU is {}, not stopped",
        state.name()
    );
    Ok(())
}

fn psci_system_off(ctx: &Context) -> CaseResult {
    psci_event(ctx, Psci::Default, PSCI_SYSTEM_OFF, SystemEventKind::SHUTDOWN)
}

fn psci_system_reset(ctx: &Context) -> CaseResult {
    psci_event(ctx, Psci::Default, PSCI_SYSTEM_RESET, SystemEventKind::RESET)
}

fn psci_system_off_in_plugin(ctx: &Context) -> CaseResult {
    psci_event(ctx, Psci::InPlugin, PSCI_SYSTEM_OFF, SystemEventKind::SHUTDOWN)
}

fn psci_system_reset_in_plugin(ctx: &Context) -> CaseResult {
    psci_event(ctx, Psci::InPlugin, PSCI_SYSTEM_RESET, SystemEventKind::RESET)
}
