//! vCPU snapshots: a bit-exact round trip into a fresh VM (SVE included where offered), a guest
//! that carries on after the restore, and damaged files refused with a clear error.

use accel_host::snapshot::VcpuSnapshot;

use accel_api::{
    sve::SveRegs,
    sysreg::{CNTPCT_EL0, CNTVCT_EL0, TPIDR_EL0, TPIDR_EL1},
    ErrorKind, PutLevel, RegClass, RegValue, VcpuConfig, VcpuFeatures, VmConfig,
};
use accel_host::vmm::ram::GuestRam;
use rand::Rng;

use crate::{
    asm::{self, Size},
    ensure,
    guest::{TestGuest, MMIO_BASE, RAM_BASE, RAM_SIZE},
    Case, CaseResult, Context, Failure,
};

pub fn cases() -> Vec<Case> {
    crate::case_list![snapshot: round_trip_into_a_fresh_vm, damaged_files_are_refused]
}

/// A guest stopped at its first MMIO write, with random state, and the features it has.
fn prepared(ctx: &Context) -> Result<(TestGuest, VcpuFeatures), Failure> {
    let accel = ctx.accelerator()?;
    let caps = accel.probe().caps;
    let mut features = VcpuFeatures::PSCI_0_2;
    if caps.vcpu_features.contains(VcpuFeatures::SVE) {
        features |= VcpuFeatures::SVE;
    }
    let mut code = asm::mov_imm64(9, MMIO_BASE);
    code.extend([asm::str(Size::X, 9, 9, 0), asm::str(Size::X, 5, 9, 8), asm::b(0)]);
    let mut g = TestGuest::build(&accel, &code, &VcpuConfig::new(0, features), None)?;
    g.expect_mmio_write()?;
    let mut rng = rand::rng();
    let mut core = g.core()?;
    for x in &mut core.x[..9] {
        *x = rng.random();
    }
    core.sp_el0 = rng.random();
    g.vcpu.put_core(&core, PutLevel::RUNTIME)?;
    if features.contains(VcpuFeatures::SVE) {
        let mut sve = g.vcpu.get_sve()?;
        rng.fill(&mut sve.z[..]);
        rng.fill(&mut sve.p[..]);
        g.vcpu.put_sve(&sve, PutLevel::RUNTIME)?;
    } else {
        let mut fp = g.vcpu.get_fp()?;
        for v in &mut fp.v {
            rng.fill(&mut v[..]);
        }
        g.vcpu.put_fp(&fp, PutLevel::RUNTIME)?;
    }
    g.vcpu.get_regs(RegClass::SYS)?;
    let sys =
        [RegValue { id: TPIDR_EL1, value: rng.random() }, RegValue { id: TPIDR_EL0, value: rng.random() }];
    g.vcpu.put_regs(&sys, PutLevel::RUNTIME)?;
    Ok((g, features))
}

fn round_trip_into_a_fresh_vm(ctx: &Context) -> CaseResult {
    let (mut g, features) = prepared(ctx)?;
    let saved =
        crate::offered(VcpuSnapshot::save(&mut g.vcpu, features), "every register class a snapshot holds")?;
    let bytes = saved.to_bytes();
    let loaded = VcpuSnapshot::from_bytes(&bytes)?;
    ensure!(loaded == saved, "the snapshot changed through its file encoding");

    let mut image = vec![0u8; RAM_SIZE as usize];
    g.ram.read(RAM_BASE, &mut image)?;
    // The first VM goes before the fresh one comes: a backend may hold one VM per process.
    drop(g);
    let vm = ctx.accelerator()?.create_vm(&VmConfig::default())?;
    let ram = GuestRam::new(RAM_BASE, RAM_SIZE)?;
    ram.write(RAM_BASE, &image)?;
    // SAFETY: `ram` outlives the restored vCPU's runs in this case.
    unsafe { ram.map_into(&vm) }?;
    let mut restored = loaded.restore(&vm)?;
    let again = VcpuSnapshot::save(&mut restored, features)?;

    ensure!(again.core == saved.core, "core registers differ after restore");
    ensure!(again.fp == saved.fp, "FP/SIMD registers differ after restore");
    ensure!(again.sve == saved.sve, "SVE registers differ after restore");
    if let Some(sve) = &again.sve {
        ensure!(
            sve.vq == saved.sve_vq && *sve != SveRegs::zeroed(sve.vq),
            "SVE state at {} quadwords is empty",
            sve.vq
        );
    }
    let mut differing = Vec::new();
    for v in &saved.regs {
        let now = again.regs.iter().find(|w| w.id == v.id).map(|w| w.value);
        let same = match now {
            // The counters run on: they may only have moved forward, and not far.
            Some(n) if v.id == CNTVCT_EL0 || v.id == CNTPCT_EL0 => n.wrapping_sub(v.value) < 1 << 40,
            Some(n) => n == v.value,
            None => false,
        };
        if !same {
            differing.push(format!("{} {:#x} -> {:?}", v.id, v.value, now));
        }
    }
    ensure!(
        differing.is_empty(),
        "{} of {} registers differ: {}",
        differing.len(),
        saved.regs.len(),
        differing.join(", ")
    );
    ensure!(again.mp_state == saved.mp_state, "MP state {:?} -> {:?}", saved.mp_state, again.mp_state);

    // The restored guest carries on where it stopped: it reports X5.
    let exit = loop {
        match restored.run()? {
            accel_api::VcpuExit::Interrupted => continue,
            other => break other,
        }
    };
    match exit {
        accel_api::VcpuExit::MmioWrite(a) if a.addr == MMIO_BASE + 8 && a.value() == saved.core.x[5] => {
            Ok(())
        }
        other => Err(Failure::Fail(format!(
            "the restored guest gave {other:?}, expected X5 = {:#x}",
            saved.core.x[5]
        ))),
    }
}

fn damaged_files_are_refused(ctx: &Context) -> CaseResult {
    let (mut g, features) = prepared(ctx)?;
    let bytes =
        crate::offered(VcpuSnapshot::save(&mut g.vcpu, features), "every register class a snapshot holds")?
            .to_bytes();
    for (what, damaged) in [
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("one bit flipped", {
            let mut b = bytes.clone();
            b[bytes.len() / 3] ^= 0x10;
            b
        }),
    ] {
        match VcpuSnapshot::from_bytes(&damaged) {
            Ok(_) => return Err(Failure::Fail(format!("a {what} snapshot was accepted"))),
            Err(e) => ensure!(
                e.kind == ErrorKind::INVALID_ARGUMENT && e.message.contains("corrupt vCPU snapshot"),
                "a {what} snapshot gave {e:?}"
            ),
        }
    }
    Ok(())
}
