//! SVE: vector lengths (every offered one, and the gaps a CPU's set may have, such as 384 bits on
//! an A64FX), bit-exact register round trips at the maximum length, the length the guest gets
//! for each ZCR_EL1.LEN, and guest-visible Z registers. On a CPU without SVE each case checks
//! that the backend says so consistently.

use accel_api::{
    sve::{SveReg, SveRegs},
    sysreg::{ID_AA64PFR0_EL1, ZCR_EL1},
    ErrorKind, PutLevel, RegValue, VcpuConfig, VcpuFeatures, VmConfig,
};
use rand::Rng;

use crate::{
    asm::{self, Size},
    ensure,
    guest::{TestGuest, DATA, MMIO_BASE},
    Case, CaseResult, Context, Failure,
};

pub fn cases() -> Vec<Case> {
    crate::case_list![sve: offer_matches_the_id_registers, round_trip_random_at_max_length, vector_length_choice, guest_vector_length_follows_zcr, guest_sees_host_z_registers]
}

fn sve_config(max_vq: u32) -> VcpuConfig {
    VcpuConfig { sve_max_vq: max_vq, ..VcpuConfig::new(0, VcpuFeatures::PSCI_0_2 | VcpuFeatures::SVE) }
}

/// The vector lengths offered, or `None` when SVE is not.
fn offered(ctx: &Context) -> Result<Option<u32>, Failure> {
    let caps = ctx.accelerator()?.probe().caps;
    let sve = caps.vcpu_features.contains(VcpuFeatures::SVE);
    ensure!(sve == (caps.sve_vqs != 0), "SVE offered: {sve}, but vector lengths {:#x}", caps.sve_vqs);
    Ok(sve.then_some(caps.sve_vqs))
}

fn max_vq(vqs: u32) -> u32 {
    32 - vqs.leading_zeros()
}

fn offer_matches_the_id_registers(ctx: &Context) -> CaseResult {
    let accel = ctx.accelerator()?;
    let vqs = offered(ctx)?;
    let vm = accel.create_vm(&VmConfig::default())?;
    let features =
        if vqs.is_some() { VcpuFeatures::PSCI_0_2 | VcpuFeatures::SVE } else { VcpuFeatures::PSCI_0_2 };
    let mut vcpu = vm.create_vcpu(&VcpuConfig::new(0, features))?;
    let field = vcpu.get_reg(ID_AA64PFR0_EL1)? >> 32 & 0xf;
    match vqs {
        Some(_) => ensure!(field >= 1, "SVE is enabled but ID_AA64PFR0_EL1.SVE is {field}"),
        None => {
            ensure!(field == 0, "SVE is not offered but ID_AA64PFR0_EL1.SVE is {field}");
            let err = vcpu.get_sve().err();
            ensure!(
                err.as_ref().is_some_and(|e| e.kind == ErrorKind::UNSUPPORTED),
                "reading SVE registers of a vCPU without SVE: expected unsupported, got {err:?}"
            );
        }
    }
    Ok(())
}

fn random_sve(vq: u32) -> SveRegs {
    let mut regs = SveRegs::zeroed(vq);
    let mut rng = rand::rng();
    rng.fill(&mut regs.z[..]);
    rng.fill(&mut regs.p[..]);
    rng.fill(&mut regs.ffr[..]);
    regs
}

fn round_trip_random_at_max_length(ctx: &Context) -> CaseResult {
    let Some(vqs) = offered(ctx)? else {
        let vm = ctx.accelerator()?.create_vm(&VmConfig::default())?;
        let err = vm.create_vcpu(&sve_config(0)).err();
        ensure!(
            err.as_ref().is_some_and(|e| e.kind == ErrorKind::UNSUPPORTED),
            "SVE is not offered, yet an SVE vCPU gave {err:?}"
        );
        return Ok(());
    };
    let vq = max_vq(vqs);
    let mut g = TestGuest::with_vcpu(&ctx.accelerator()?, &[asm::b(0)], &sve_config(0))?;
    let read = g.vcpu.get_sve()?;
    ensure!(
        read.vq == vq,
        "the vCPU's vector length is {} bits, expected the maximum {}",
        read.vq * 128,
        vq * 128
    );
    for round in 0..2 {
        let want = random_sve(vq);
        g.vcpu.put_sve(&want, PutLevel::FULL)?;
        let got = g.vcpu.get_sve()?;
        if let Some(reg) = got.changed_since(&want).next() {
            return Err(Failure::Fail(format!("round {round}: {} differs after a round trip", reg.name())));
        }
        // V registers are the low 128 bits of the Z registers.
        let fp = g.vcpu.get_fp()?;
        for n in 0..32u8 {
            ensure!(
                fp.v[n as usize][..] == want.reg(SveReg::Z(n))[..16],
                "V{n} is not the low 128 bits of Z{n}"
            );
        }
    }
    // An edit through the FP class zeroes the rest of the Z register, as an AdvSIMD write does.
    let mut fp = g.vcpu.get_fp()?;
    fp.set_v_u128(5, 0x1234_5678_9abc_def0_0fed_cba9_8765_4321);
    g.vcpu.put_fp(&fp, PutLevel::RUNTIME)?;
    let z5 = g.vcpu.get_sve()?.reg(SveReg::Z(5)).to_vec();
    ensure!(z5[..16] == fp.v[5] && z5[16..].iter().all(|b| *b == 0), "Z5 after writing V5: {z5:x?}");
    Ok(())
}

/// Without SVE offered, a vCPU with SVE is refused as unsupported, by name.
fn refused_without_offer(ctx: &Context) -> CaseResult {
    let vm = ctx.accelerator()?.create_vm(&VmConfig::default())?;
    let err = vm.create_vcpu(&sve_config(0)).err();
    ensure!(
        err.as_ref().is_some_and(|e| e.kind == ErrorKind::UNSUPPORTED && e.message.contains("sve")),
        "SVE is not offered, but a vCPU with it gave {err:?} instead of an unsupported error naming it"
    );
    Ok(())
}

/// Every offered length up to the maximum can be the vCPU's; a length below the maximum that the
/// CPU lacks (a gap in the set) is refused by name, as is one beyond the architecture's 2048 bits.
fn vector_length_choice(ctx: &Context) -> CaseResult {
    let accel = ctx.accelerator()?;
    let Some(vqs) = offered(ctx)? else { return refused_without_offer(ctx) };
    for want in 1..=max_vq(vqs) {
        let vm = accel.create_vm(&VmConfig::default())?;
        let created = vm.create_vcpu(&sve_config(want));
        let bits = format!("{} bits", want * 128);
        if vqs & 1 << (want - 1) == 0 {
            let err = created.err();
            ensure!(
                err.as_ref().is_some_and(|e| e.kind == ErrorKind::UNSUPPORTED && e.message.contains(&bits)),
                "{bits} is not among the offered lengths {vqs:#x}: expected an unsupported error naming it, got {err:?}"
            );
            continue;
        }
        let vq = created?.get_sve()?.vq;
        ensure!(vq == want, "asked for {bits}, got {}", vq * 128);
    }
    let smallest = vqs.trailing_zeros() + 1;
    let vm = accel.create_vm(&VmConfig::default())?;
    let mut vcpu = vm.create_vcpu(&sve_config(smallest))?;
    let vq = vcpu.get_sve()?.vq;
    let err = accel.create_vm(&VmConfig::default())?.create_vcpu(&sve_config(17)).err();
    ensure!(
        err.as_ref().is_some_and(|e| e.kind == ErrorKind::UNSUPPORTED && e.message.contains("2176 bits")),
        "a 2176-bit vector length: expected an unsupported error naming it, got {err:?}"
    );
    // A put of registers at another vector length is refused.
    let err = vcpu.put_sve(&SveRegs::zeroed(vq + 1), PutLevel::FULL).err();
    ensure!(
        err.as_ref().is_some_and(|e| e.kind == ErrorKind::INVALID_ARGUMENT),
        "SVE registers of the wrong length: expected invalid argument, got {err:?}"
    );
    Ok(())
}

/// The guest sets each ZCR_EL1.LEN from 0 to the maximum's and reads its vector length with RDVL:
/// it gets the largest offered length that LEN allows (Arm ARM, "Configurable vector length"), so
/// a length missing from the set (384 bits on an A64FX) gives the next smaller one.
fn guest_vector_length_follows_zcr(ctx: &Context) -> CaseResult {
    let Some(vqs) = offered(ctx)? else { return refused_without_offer(ctx) };
    let max = max_vq(vqs);
    let mut code = asm::mov_imm64(9, MMIO_BASE);
    code.push(asm::movz(1, 0, 0));
    let top = code.len();
    code.extend([
        asm::msr(ZCR_EL1, 1),
        asm::ISB,
        asm::rdvl(0, 1),
        asm::str(Size::X, 0, 9, 0),
        asm::add_imm(1, 1, 1),
        asm::cmp_imm(1, max),
    ]);
    code.push(asm::b_ne(4 * (top as i64 - code.len() as i64)));
    code.extend([asm::str(Size::X, 1, 9, 8), asm::b(0)]);
    let mut g = TestGuest::with_vcpu(&ctx.accelerator()?, &code, &sve_config(0))?;
    for len in 0..max {
        let (addr, _, bytes) = g.expect_mmio_write()?;
        ensure!(addr == MMIO_BASE, "the report for ZCR_EL1.LEN {len} went to {addr:#x}");
        let want = (1..=len + 1).rev().find(|vq| vqs & 1 << (vq - 1) != 0).unwrap_or(0);
        ensure!(
            u64::from(want) * 16 == bytes,
            "with ZCR_EL1.LEN {len} the guest's vector length is {} bits; of the offered {vqs:#x}, expected {}",
            bytes * 8,
            want * 128
        );
    }
    let (addr, _, _) = g.expect_mmio_write()?;
    ensure!(addr == MMIO_BASE + 8, "the guest did not end its loop: a write at {addr:#x}");
    Ok(())
}

/// The host writes Z0, the guest stores it to RAM with `STR Z0`; the guest loads Z1 from RAM the
/// host filled, and the host reads Z1 back.
fn guest_sees_host_z_registers(ctx: &Context) -> CaseResult {
    let Some(vqs) = offered(ctx)? else {
        // Without SVE, the guest's SVE store is an undefined instruction (ESR_EL1.EC 0).
        let mut g = TestGuest::new(&ctx.accelerator()?, &[asm::str_z(0, 9), asm::b(0)])?;
        let taken = g.expect_exception()?;
        ensure!(taken.esr >> 26 == 0, "an SVE store without SVE gave ESR_EL1 {:#x}, not EC 0", taken.esr);
        return Ok(());
    };
    let vq = max_vq(vqs);
    let mut code = asm::mov_imm64(9, DATA);
    code.extend(asm::mov_imm64(10, DATA + 0x1000));
    code.extend(asm::mov_imm64(11, MMIO_BASE));
    code.extend([asm::str_z(0, 9), asm::ldr_z(1, 10), asm::str(Size::X, 0, 11, 0), asm::b(0)]);
    let mut g = TestGuest::with_vcpu(&ctx.accelerator()?, &code, &sve_config(0))?;
    g.vcpu.get_regs(ZCR_EL1.class())?;
    g.vcpu.put_regs(&[RegValue { id: ZCR_EL1, value: u64::from(vq - 1) }], PutLevel::RUNTIME)?;
    let mut regs = g.vcpu.get_sve()?;
    let z0: Vec<u8> = (0..regs.z_len()).map(|i| (i * 7 + 3) as u8).collect();
    regs.reg_mut(SveReg::Z(0)).copy_from_slice(&z0);
    g.vcpu.put_sve(&regs, PutLevel::RUNTIME)?;
    let z1: Vec<u8> = (0..regs.z_len()).map(|i| (255 - i) as u8).collect();
    g.ram.write(DATA + 0x1000, &z1)?;
    g.expect_mmio_write()?;
    let mut stored = vec![0u8; regs.z_len()];
    g.ram.read(DATA, &mut stored)?;
    ensure!(stored == z0, "the guest stored Z0 as {stored:x?}, the host wrote {z0:x?}");
    let loaded = g.vcpu.get_sve()?;
    ensure!(
        loaded.reg(SveReg::Z(1)) == &z1[..],
        "Z1 after the guest's load: {:x?}",
        loaded.reg(SveReg::Z(1))
    );
    Ok(())
}
