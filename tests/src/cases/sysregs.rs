//! System, timer, firmware and cache-id registers: listing, guest-visible host writes, refused
//! writes, change tracking, and put levels for the counter.

use accel_api::{
    sysreg::{
        CNTVCT_EL0, CNTV_CTL_EL0, CNTV_CVAL_EL0, CONTEXTIDR_EL1, ESR_EL1, FAR_EL1, FW_PSCI_VERSION,
        ID_AA64ISAR0_EL1, ID_AA64PFR0_EL1, MPIDR_EL1, SCTLR_EL1, TPIDRRO_EL0, TPIDR_EL0, TPIDR_EL1, VBAR_EL1,
    },
    ErrorKind, PutLevel, RegClass, RegId, RegValue, VcpuConfig, VcpuFeatures,
};
use rand::Rng;

use crate::{
    asm::{self, Size},
    ensure,
    guest::{TestGuest, MMIO_BASE},
    Case, CaseResult, Context, Failure,
};

pub fn cases() -> Vec<Case> {
    crate::case_list![sysregs: every_class_is_listed, host_writes_reach_the_guest, put_writes_only_what_changed, refused_id_register_write_is_named, unknown_register_is_not_found; timer: counter_is_written_only_at_full_level]
}

fn guest(ctx: &Context, code: &[u32]) -> Result<TestGuest, Failure> {
    TestGuest::new(&ctx.accelerator()?, code)
}

fn has(values: &[RegValue], id: RegId) -> Option<u64> {
    values.iter().find(|v| v.id == id).map(|v| v.value)
}

fn every_class_is_listed(ctx: &Context) -> CaseResult {
    let mut g = guest(ctx, &[asm::b(0)])?;
    let sys = g.vcpu.get_regs(RegClass::SYS)?;
    for id in [MPIDR_EL1, SCTLR_EL1, VBAR_EL1, ESR_EL1, FAR_EL1, TPIDR_EL1, ID_AA64PFR0_EL1] {
        ensure!(has(&sys, id).is_some(), "{id} is missing from the system registers ({} listed)", sys.len());
    }
    let timer = crate::offered(g.vcpu.get_regs(RegClass::TIMER), "the timer register class")?;
    for id in [CNTV_CTL_EL0, CNTV_CVAL_EL0, CNTVCT_EL0] {
        ensure!(has(&timer, id).is_some(), "{id} is missing from the timer registers: {timer:?}");
    }
    let firmware = crate::offered(g.vcpu.get_regs(RegClass::FIRMWARE), "the firmware register class")?;
    let psci = has(&firmware, FW_PSCI_VERSION)
        .ok_or_else(|| Failure::Fail(format!("no PSCI version in {firmware:?}")))?;
    ensure!(psci >= 2, "PSCI version {psci:#x}: 0.2 or later expected with the PSCI 0.2 feature");
    let ccsidr = crate::offered(g.vcpu.get_regs(RegClass::CCSIDR), "the CCSIDR register class")?;
    ensure!(!ccsidr.is_empty(), "no demultiplexed CCSIDR_EL1 values");

    // Two vCPUs of one VM have distinct affinities, with MPIDR_EL1 bit 31 (RES1) set.
    let mut second = g.vm.create_vcpu(&VcpuConfig::new(1, VcpuFeatures::PSCI_0_2))?;
    let (a, b) = (g.vcpu.get_reg(MPIDR_EL1)?, second.get_reg(MPIDR_EL1)?);
    ensure!(a >> 31 & 1 == 1 && b >> 31 & 1 == 1, "MPIDR_EL1 bit 31 clear: {a:#x}, {b:#x}");
    ensure!(a & 0xff_00ff_ffff != b & 0xff_00ff_ffff, "vCPUs 0 and 1 share affinity {a:#x}");
    Ok(())
}

/// Registers the host writes and the guest reads back with MRS, with values valid for each.
fn host_writes_reach_the_guest(ctx: &Context) -> CaseResult {
    let mut rng = rand::rng();
    let writes = [
        (TPIDR_EL1, rng.random::<u64>()),
        (TPIDR_EL0, rng.random::<u64>()),
        (TPIDRRO_EL0, rng.random::<u64>()),
        (CONTEXTIDR_EL1, u64::from(rng.random::<u32>())),
        (FAR_EL1, rng.random::<u64>()),
        // A data abort syndrome: EC 0x25, IL, DFSC 0x10 (synchronous external abort).
        (ESR_EL1, 0x9600_0010),
    ];
    let mut code = asm::mov_imm64(9, MMIO_BASE);
    for (i, (id, _)) in writes.iter().enumerate() {
        code.push(asm::mrs(0, *id));
        code.push(asm::str(Size::X, 0, 9, 8 * i as u32));
    }
    code.push(asm::b(0));
    let mut g = guest(ctx, &code)?;
    let values: Vec<RegValue> = writes.iter().map(|&(id, value)| RegValue { id, value }).collect();
    g.vcpu.get_regs(RegClass::SYS)?;
    g.vcpu.put_regs(&values, PutLevel::RUNTIME)?;
    for (i, (id, want)) in writes.iter().enumerate() {
        let (addr, _, got) = g.expect_mmio_write()?;
        ensure!(addr == MMIO_BASE + 8 * i as u64, "write {i} went to {addr:#x}");
        ensure!(got == *want, "the guest read {id} = {got:#x}; the host wrote {want:#x}");
    }
    Ok(())
}

fn put_writes_only_what_changed(ctx: &Context) -> CaseResult {
    let mut g = guest(ctx, &[asm::b(0)])?;
    let mut sys = g.vcpu.get_regs(RegClass::SYS)?;
    let before = g.vcpu.counters();
    g.vcpu.put_regs(&sys, PutLevel::RUNTIME)?;
    let unchanged = g.vcpu.counters().reg_writes - before.reg_writes;
    ensure!(unchanged == 0, "putting back {} unchanged registers made {unchanged} writes", sys.len());

    let tpidr =
        sys.iter_mut().find(|v| v.id == TPIDR_EL1).ok_or_else(|| Failure::Fail("no TPIDR_EL1".into()))?;
    tpidr.value ^= 0x5a5a;
    let want = tpidr.value;
    let before = g.vcpu.counters();
    g.vcpu.put_regs(&sys, PutLevel::RUNTIME)?;
    let one = g.vcpu.counters().reg_writes - before.reg_writes;
    ensure!(one == 1, "one edited register among {} took {one} writes", sys.len());
    ensure!(g.vcpu.get_reg(TPIDR_EL1)? == want, "the edit did not reach the vCPU");

    let before = g.vcpu.counters();
    g.vcpu.put_regs(&sys, PutLevel::FULL)?;
    let full = g.vcpu.counters().reg_writes - before.reg_writes;
    ensure!(full == sys.len() as u64, "a full put of {} registers made {full} writes", sys.len());
    Ok(())
}

fn refused_id_register_write_is_named(ctx: &Context) -> CaseResult {
    let mut g = guest(ctx, &[asm::b(0)])?;
    let original = g.vcpu.get_reg(ID_AA64ISAR0_EL1)?;
    // Every field at 0xF claims features no CPU has; KVM accepts ID register values only up to
    // what the host supports.
    let err = match g.vcpu.put_regs(&[RegValue { id: ID_AA64ISAR0_EL1, value: u64::MAX }], PutLevel::RUNTIME)
    {
        Ok(()) => return Err(Failure::Fail("an all-ones ID_AA64ISAR0_EL1 was accepted".into())),
        Err(e) => e,
    };
    ensure!(err.message.contains("ID_AA64ISAR0_EL1"), "the error does not name the register: {err}");
    ensure!(
        err.kind == ErrorKind::OS && err.errno().is_some(),
        "expected an OS error with errno, got {err:?}"
    );
    let now = g.vcpu.get_reg(ID_AA64ISAR0_EL1)?;
    ensure!(now == original, "the refused write changed ID_AA64ISAR0_EL1 from {original:#x} to {now:#x}");
    Ok(())
}

fn unknown_register_is_not_found(ctx: &Context) -> CaseResult {
    let mut g = guest(ctx, &[asm::b(0)])?;
    // An IMPLEMENTATION DEFINED encoding no hypervisor exposes.
    let bogus = RegId::sys(3, 7, 15, 15, 7);
    let err = g.vcpu.put_regs(&[RegValue { id: bogus, value: 1 }], PutLevel::RUNTIME).err();
    ensure!(
        err.as_ref().is_some_and(|e| e.kind == ErrorKind::NOT_FOUND && e.message.contains("S3_7_C15_C15_7")),
        "expected a not-found error naming S3_7_C15_C15_7, got {err:?}"
    );
    let err = g.vcpu.get_reg(bogus).err();
    ensure!(err.is_some_and(|e| e.kind == ErrorKind::NOT_FOUND), "reading it did not fail as not found");
    Ok(())
}

fn counter_is_written_only_at_full_level(ctx: &Context) -> CaseResult {
    let mut g = guest(ctx, &[asm::b(0)])?;
    let now = crate::offered(g.vcpu.get_reg(CNTVCT_EL0), "the timer register class")?;
    let target = now.wrapping_add(1 << 50);
    let edit = [RegValue { id: CNTVCT_EL0, value: target }];
    g.vcpu.put_regs(&edit, PutLevel::RUNTIME)?;
    g.vcpu.put_regs(&edit, PutLevel::RESET)?;
    let after_runtime = g.vcpu.get_reg(CNTVCT_EL0)?;
    ensure!(
        after_runtime.wrapping_sub(now) < 1 << 40,
        "runtime and reset puts moved the counter from {now:#x} to {after_runtime:#x}"
    );
    g.vcpu.put_regs(&edit, PutLevel::FULL)?;
    let after_full = g.vcpu.get_reg(CNTVCT_EL0)?;
    ensure!(
        after_full.wrapping_sub(target) < 1 << 40,
        "a full put did not set the counter: wrote {target:#x}, read {after_full:#x}"
    );
    Ok(())
}
