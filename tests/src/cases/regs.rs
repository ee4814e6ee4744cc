//! Register sync: bit-exact round trips of random state, host edits reaching the vCPU, a refused
//! write named in its error, and registers read by id (ABI 2.3) as their classes report them.

use accel_api::{CoreReg, CoreRegs, ErrorKind, FpRegs, PutLevel, VcpuFeatures};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::{asm, ensure, guest::TestGuest, Case, CaseResult, Context, Failure};

pub fn cases() -> Vec<Case> {
    crate::case_list![regs: core_round_trip_random, fp_round_trip_random, host_edits_reach_the_vcpu, refused_write_is_named, named_reads_match_the_classes]
}

/// PSTATE values every AArch64 vCPU accepts: random NZCV and DAIF, mode EL0t, EL1t or EL1h.
fn random_pstate(rng: &mut StdRng) -> u64 {
    let nzcv = rng.random::<u64>() & 0xf000_0000;
    let daif = rng.random::<u64>() & 0x3c0;
    let mode = [0b0000, 0b0100, 0b0101][rng.random_range(0..3)];
    nzcv | daif | mode
}

/// Random core registers. The AArch32 SPSR banks (abt, und, irq, fiq) stay zero unless EL1 has
/// AArch32 (`aarch32`): without it a backend may have none (HVF), and refuses to set them.
fn random_core(rng: &mut StdRng, aarch32: bool) -> CoreRegs {
    let mut regs = CoreRegs::default();
    for x in &mut regs.x {
        *x = rng.random();
    }
    regs.sp_el0 = rng.random();
    regs.sp_el1 = rng.random();
    regs.pc = rng.random::<u64>() & !3;
    regs.pstate = random_pstate(rng);
    regs.elr_el1 = rng.random();
    let banks = if aarch32 { &mut regs.spsr[..] } else { &mut regs.spsr[..1] };
    for s in banks {
        *s = rng.random();
    }
    regs
}

fn random_fp(rng: &mut StdRng) -> FpRegs {
    let mut regs = FpRegs::default();
    for v in &mut regs.v {
        rng.fill(&mut v[..]);
    }
    regs.fpsr = rng.random();
    regs.fpcr = rng.random();
    regs
}

fn seeded() -> (u64, StdRng) {
    let seed: u64 = rand::random();
    (seed, StdRng::seed_from_u64(seed))
}

fn guest(ctx: &Context) -> Result<TestGuest, Failure> {
    TestGuest::new(&ctx.accelerator()?, &[asm::b(0)])
}

fn core_round_trip_random(ctx: &Context) -> CaseResult {
    let accel = ctx.accelerator()?;
    let aarch32 = accel.probe().caps.vcpu_features.contains(VcpuFeatures::EL1_32BIT);
    let mut g = TestGuest::new(&accel, &[asm::b(0)])?;
    let (seed, mut rng) = seeded();
    for round in 0..4 {
        let want = random_core(&mut rng, aarch32);
        g.vcpu.put_core(&want, PutLevel::FULL)?;
        let got = g.vcpu.get_core()?;
        let first_difference = got.changed_since(&want).next();
        if let Some(reg) = first_difference {
            return Err(Failure::Fail(format!(
                "seed {seed:#x} round {round}: {} wrote {:#x}, read {:#x}",
                reg.name(),
                want.get(reg),
                got.get(reg)
            )));
        }
    }
    if !aarch32 {
        // Without AArch32 at EL1 a bank either holds what is written or is refused by name.
        let mut banked = g.vcpu.get_core()?;
        banked.spsr[2] = 0x1d3;
        match g.vcpu.put_core(&banked, PutLevel::RUNTIME) {
            Ok(()) => {
                let got = g.vcpu.get_core()?.spsr[2];
                ensure!(got == 0x1d3, "SPSR_und was accepted but reads {got:#x}");
            }
            Err(e) => ensure!(
                e.kind == ErrorKind::UNSUPPORTED && e.message.contains(&CoreReg::Spsr(2).name()),
                "an SPSR_und write refused without naming it as unsupported: {e:?}"
            ),
        }
    }
    Ok(())
}

fn fp_round_trip_random(ctx: &Context) -> CaseResult {
    let mut g = guest(ctx)?;
    let (seed, mut rng) = seeded();
    for round in 0..4 {
        let want = random_fp(&mut rng);
        g.vcpu.put_fp(&want, PutLevel::FULL)?;
        let got = g.vcpu.get_fp()?;
        let first_difference = got.changed_since(&want).next();
        if let Some(reg) = first_difference {
            return Err(Failure::Fail(format!(
                "seed {seed:#x} round {round}: {} differs after a round trip (wrote {want:?}, read {got:?})",
                reg.name()
            )));
        }
    }
    Ok(())
}

fn host_edits_reach_the_vcpu(ctx: &Context) -> CaseResult {
    let mut g = guest(ctx)?;
    let (seed, mut rng) = seeded();
    let before = g.vcpu.get_core()?;
    let fp_before = g.vcpu.get_fp()?;

    let mut edited = before;
    edited.x[5] = rng.random();
    edited.elr_el1 = rng.random();
    edited.spsr[0] = rng.random();
    g.vcpu.put_core(&edited, PutLevel::RUNTIME)?;
    let mut fp_edited = fp_before;
    fp_edited.set_v_u128(7, rng.random());
    fp_edited.fpcr = rng.random::<u32>() & 0x07c0_0000;
    g.vcpu.put_fp(&fp_edited, PutLevel::RUNTIME)?;

    let after = g.vcpu.get_core()?;
    let fp_after = g.vcpu.get_fp()?;
    ensure!(
        after == edited,
        "seed {seed:#x}: core registers after a runtime put: {after:?}, expected {edited:?}"
    );
    ensure!(fp_after == fp_edited, "seed {seed:#x}: FP registers after a runtime put differ");

    // A put with nothing changed succeeds and changes nothing.
    g.vcpu.put_core(&after, PutLevel::RUNTIME)?;
    ensure!(g.vcpu.get_core()? == edited, "an unchanged put altered the registers");
    Ok(())
}

fn refused_write_is_named(ctx: &Context) -> CaseResult {
    let mut g = guest(ctx)?;
    let mut regs = g.vcpu.get_core()?;
    let good = regs;
    // M[4:0] = 0b11111 is AArch32 System mode: not valid for an AArch64 EL1 vCPU.
    regs.pstate = 0x1f;
    let err = match g.vcpu.put_core(&regs, PutLevel::RUNTIME) {
        Ok(()) => {
            return Err(Failure::Fail("PSTATE with an AArch32 mode was accepted by an AArch64 vCPU".into()))
        }
        Err(e) => e,
    };
    ensure!(err.message.contains("PSTATE"), "the error does not name the register: {err}");
    ensure!(
        err.kind == ErrorKind::OS && err.errno().is_some(),
        "expected an OS error with errno, got {err:?}"
    );
    // The vCPU keeps its state, and the next put still works.
    ensure!(g.vcpu.get_core()?.pstate == good.pstate, "the refused PSTATE changed the vCPU");
    g.vcpu.put_core(&good, PutLevel::RUNTIME)?;
    Ok(())
}

/// Every listed register, every core register, FPSR and FPCR read by id, in an order of their
/// own, equal what their class's read, `get_core` or `get_fp` reports; an id the vCPU lacks is `NOT_FOUND`. A backend without the read by id (a plugin
/// before ABI 2.3, or one that does not offer it) refuses it as `unsupported`, and the client's
/// read falls back to the classes with the same values.
fn named_reads_match_the_classes(ctx: &Context) -> CaseResult {
    use accel_api::{
        sysreg::{self, RegId},
        RegClass,
    };
    let mut g = guest(ctx)?;
    let mut by_class = Vec::new();
    for class in [RegClass::SYS, RegClass::TIMER, RegClass::FIRMWARE] {
        match g.vcpu.get_regs(class) {
            Ok(values) => by_class.extend(values),
            // A class the backend does not sync (the example backend's timer) is left out.
            Err(e) if e.kind == ErrorKind::UNSUPPORTED => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The counters move between any two reads.
    by_class.retain(|v| ![sysreg::CNTVCT_EL0, sysreg::CNTPCT_EL0].contains(&v.id));
    ensure!(!by_class.is_empty(), "the vCPU lists no registers");
    let core = g.vcpu.get_core()?;
    // The core registers between the listed ones, as a read by id may name them.
    let at = by_class.len() / 2;
    let core_values =
        CoreReg::all().map(|reg| accel_api::RegValue { id: RegId::core(reg), value: core.get(reg) });
    by_class.splice(at..at, core_values);
    let fp = g.vcpu.get_fp()?;
    by_class.push(accel_api::RegValue { id: accel_api::sysreg::FPSR, value: fp.fpsr.into() });
    by_class.insert(1, accel_api::RegValue { id: accel_api::sysreg::FPCR, value: fp.fpcr.into() });
    // Reversed, and with the class order mixed, so that an answer in list order is caught.
    let ids: Vec<RegId> = by_class.iter().rev().map(|v| v.id).collect();
    let expected: Vec<_> = by_class.iter().rev().copied().collect();
    let fallback = g.vcpu.read_named(&ids)?;
    ensure!(fallback == expected, "the client's read by id differs from the classes' read");
    let missing = RegId::from_encoding(0x7fff);
    ensure!(!ids.contains(&missing), "the test's missing register is listed");
    match g.vcpu.get_named(&ids) {
        Err(e) if e.kind == ErrorKind::UNSUPPORTED => {
            if ctx.plugin.abi_version().minor < 3 {
                ensure!(
                    e.message.contains("ABI 2.3"),
                    "a plugin of ABI {} answered {e}",
                    ctx.plugin.abi_version()
                );
            }
            Ok(())
        }
        Err(e) => Err(Failure::Fail(format!("reading {} registers by id: {e}", ids.len()))),
        Ok(named) => {
            ensure!(named == expected, "the read by id differs from the classes' read");
            let refused = g.vcpu.get_named(&[ids[0], missing]);
            ensure!(
                refused.as_ref().is_err_and(|e| e.kind == ErrorKind::NOT_FOUND),
                "an unlisted register read as {refused:?}"
            );
            Ok(())
        }
    }
}
