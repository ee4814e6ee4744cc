//! vCPU snapshots: a bit-exact round trip into a fresh VM (SVE included where offered), a guest
//! that carries on after the restore, damaged files refused with a clear error, and snapshots
//! with a bad field refused by restore before any vCPU is created.

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
    crate::case_list![
        snapshot: round_trip_into_a_fresh_vm,
        damaged_files_are_refused,
        a_refused_snapshot_creates_no_vcpu
    ]
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
    let mut restored = loaded.restore(&vm, &ctx.accelerator()?.probe().caps)?;
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

fn a_refused_snapshot_creates_no_vcpu(ctx: &Context) -> CaseResult {
    let (mut g, features) = prepared(ctx)?;
    let saved =
        crate::offered(VcpuSnapshot::save(&mut g.vcpu, features), "every register class a snapshot holds")?;
    drop(g);
    let accel = ctx.accelerator()?;
    let caps = accel.probe().caps;
    let vm = accel.create_vm(&VmConfig::default())?;
    let mut bad: Vec<(&str, VcpuSnapshot)> = Vec::new();
    let mut with = |what, edit: &dyn Fn(&mut VcpuSnapshot)| {
        let mut s = saved.clone();
        edit(&mut s);
        bad.push((what, s));
    };
    with("CONF features", &|s| s.features.0 |= 1 << 40);
    with("MPST MP state", &|s| s.mp_state = accel_api::MpState(0xdead_beef));
    with("REGS holds register", &|s| s.regs.push(s.regs[0]));
    with("EVNT SError ESR", &|s| {
        s.events.serror_pending = true;
        s.events.serror_has_esr = true;
        s.events.serror_esr = u64::MAX;
    });
    with("CONF vCPU index", &|s| s.index = caps.max_vcpus);
    if let Some(missing) = accel_api::VcpuFeatures::NAMED
        .iter()
        .map(|(f, _)| *f)
        .find(|f| !caps.vcpu_features.contains(*f) && *f != VcpuFeatures::SVE)
    {
        with("are not offered by this backend", &|s| s.features |= missing);
    }
    if let Some(vq) = (1..=16u32).find(|vq| caps.sve_vqs & (1 << (vq - 1)) == 0) {
        if saved.sve.is_some() {
            with("SVE vector length", &|s| {
                s.sve_vq = vq;
                let mut sve = SveRegs::zeroed(vq);
                for (n, v) in s.fp.v.iter().enumerate() {
                    sve.z[n * vq as usize * 16..][..16].copy_from_slice(v);
                }
                s.sve = Some(sve);
            });
        }
    }
    for (what, snapshot) in &bad {
        match snapshot.restore(&vm, &caps) {
            Ok(_) => return Err(Failure::Fail(format!("a snapshot with a bad {what} was restored"))),
            Err(e) => {
                ensure!(e.message.contains(what) && !e.message.contains('\n'), "a bad {what} gave {e:?}")
            }
        }
    }
    // None of them created its vCPU: the index is still free.
    let config = VcpuConfig { index: saved.index, features, sve_max_vq: saved.sve_vq };
    match vm.create_vcpu(&config) {
        Ok(_) => Ok(()),
        Err(e) => Err(Failure::Fail(format!(
            "vCPU {} could not be created after {} refused restores: {e}",
            saved.index,
            bad.len()
        ))),
    }
}
