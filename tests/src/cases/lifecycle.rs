//! VM, vCPU and memory-region lifecycle, including the errors for bad requests.

use accel_api::{ErrorKind, MemoryRegion, VcpuConfig, VcpuFeatures, VmConfig};
use accel_host::vmm::ram::GuestRam;

use crate::{ensure, guest::RAM_BASE, Case, CaseResult, Context, Failure};

pub fn cases() -> Vec<Case> {
    crate::case_list![lifecycle: vms_and_vcpus, every_probed_feature_inits, probed_features_show_in_the_vcpu, unsupported_vcpu_feature, memory_regions, read_only_memory]
}

/// Several vCPUs in a VM, and a second VM at the same time; a backend that holds one VM per
/// process (`max_vms` 1) refuses the second as no resource, saying why, and keeps the first.
fn vms_and_vcpus(ctx: &Context) -> CaseResult {
    let accel = ctx.accelerator()?;
    let caps = accel.probe().caps;
    let vm_a = accel.create_vm(&VmConfig::default())?;
    let vm_b = match accel.create_vm(&VmConfig::default()) {
        Ok(vm) if caps.max_vms == 1 => {
            drop(vm);
            return Err(Failure::Fail(
                "the probe says one VM per process, yet a second VM was created".into(),
            ));
        }
        Ok(vm) => Some(vm),
        Err(e) if caps.max_vms == 1 => {
            ensure!(
                e.kind == ErrorKind::NO_RESOURCE && !e.message.is_empty(),
                "a second VM with max_vms 1: expected a no-resource error saying why, got {e:?}"
            );
            None
        }
        Err(e) => return Err(e.into()),
    };
    let max = caps.max_vcpus.min(4);
    let mut vcpus = Vec::new();
    for index in 0..max {
        let features = if index == 0 {
            VcpuFeatures::PSCI_0_2
        } else {
            VcpuFeatures::PSCI_0_2 | VcpuFeatures::POWER_OFF
        };
        let vcpu = vm_a.create_vcpu(&VcpuConfig::new(index, features))?;
        ensure!(vcpu.index() == index, "vCPU {index} reports index {}", vcpu.index());
        vcpus.push(vcpu);
    }
    if let Some(vm_b) = &vm_b {
        let other = vm_b.create_vcpu(&VcpuConfig::new(0, VcpuFeatures::PSCI_0_2))?;
        ensure!(other.index() == 0, "a second VM's vCPU 0 reports index {}", other.index());
    }
    match vm_a.create_vcpu(&VcpuConfig::new(0, VcpuFeatures::PSCI_0_2)) {
        Ok(_) => Err(Failure::Fail("creating vCPU 0 twice in one VM succeeded".into())),
        Err(e) => {
            ensure!(!e.message.is_empty(), "the duplicate-vCPU error has no message");
            Ok(())
        }
    }
}

/// Each vCPU feature the probe reports can be enabled on its own (pointer authentication as the
/// address/generic pair), each in a fresh VM, and each unreported one is refused as unsupported.
fn every_probed_feature_inits(ctx: &Context) -> CaseResult {
    let accel = ctx.accelerator()?;
    let offered = accel.probe().caps.vcpu_features;
    let ptrauth = VcpuFeatures::PTRAUTH_ADDRESS | VcpuFeatures::PTRAUTH_GENERIC;
    let candidates =
        [VcpuFeatures::POWER_OFF, VcpuFeatures::EL1_32BIT, VcpuFeatures::PMU_V3, VcpuFeatures::SVE, ptrauth];
    let mut tried = Vec::new();
    for feature in candidates {
        let vm = accel.create_vm(&VmConfig::default())?;
        let config = VcpuConfig::new(0, VcpuFeatures::PSCI_0_2 | feature);
        match (offered.contains(feature), vm.create_vcpu(&config)) {
            (true, Ok(_)) => tried.push(feature.names().join("+")),
            (true, Err(e)) => {
                return Err(Failure::Fail(format!("probed feature {:?} failed to init: {e}", feature)))
            }
            (false, Ok(_)) => {
                return Err(Failure::Fail(format!("feature {:?} is not probed but inits", feature)))
            }
            (false, Err(e)) => ensure!(
                e.kind == ErrorKind::UNSUPPORTED
                    && feature.names().iter().all(|n| e.message.contains(n.as_str())),
                "unprobed feature {feature:?}: expected an unsupported error naming it, got {e:?}"
            ),
        }
    }
    // Half of the pointer-authentication pair is refused, by name.
    let vm = accel.create_vm(&VmConfig::default())?;
    let half = VcpuConfig::new(0, VcpuFeatures::PSCI_0_2 | VcpuFeatures::PTRAUTH_ADDRESS);
    match vm.create_vcpu(&half) {
        Ok(_) => Err(Failure::Fail("ptrauth-address without ptrauth-generic was accepted".into())),
        Err(e) => {
            ensure!(e.message.contains("ptrauth"), "the refusal does not name pointer authentication: {e}");
            log::info!("features that init: {}", tried.join(", "));
            Ok(())
        }
    }
}

/// What each probed feature that can be turned on and off changes in a vCPU, as its guest reads
/// it: PMUv3 gives ID_AA64DFR0_EL1.PMUVer an architected version, pointer authentication an
/// algorithm in ID_AA64ISAR1_EL1 (APA, API, GPA, GPI) or ID_AA64ISAR2_EL1 (APA3, GPA3), and EL1
/// 32-bit a vCPU that starts in AArch32 SVC mode on a CPU whose ID_AA64PFR0_EL1.EL1 says EL1 has
/// AArch32; the same vCPU without the feature shows none of it (and starts in AArch64).
/// A feature the probe does not report is refused by name (`every_probed_feature_inits`).
fn probed_features_show_in_the_vcpu(ctx: &Context) -> CaseResult {
    use accel_api::sysreg::{ID_AA64DFR0_EL1, ID_AA64ISAR1_EL1, ID_AA64ISAR2_EL1, ID_AA64PFR0_EL1};

    let accel = ctx.accelerator()?;
    let offered = accel.probe().caps.vcpu_features;
    // A fresh vCPU of a fresh VM with `extra`: its ID register `reg` and its PSTATE.
    let read = |extra: VcpuFeatures, reg| -> Result<(u64, u64), Failure> {
        let vm = accel.create_vm(&VmConfig::default())?;
        let mut vcpu = vm.create_vcpu(&VcpuConfig::new(0, VcpuFeatures::PSCI_0_2 | extra))?;
        Ok((vcpu.get_reg(reg)?, vcpu.get_core()?.pstate))
    };
    let none = VcpuFeatures(0);
    if offered.contains(VcpuFeatures::PMU_V3) {
        let pmuver = |dfr0: u64| dfr0 >> 8 & 0xf;
        let (with, _) = read(VcpuFeatures::PMU_V3, ID_AA64DFR0_EL1)?;
        ensure!(
            (1..0xf).contains(&pmuver(with)),
            "a vCPU with PMUv3 reads ID_AA64DFR0_EL1 {with:#x}: PMUVer {} is not an architected PMU",
            pmuver(with)
        );
        let (without, _) = read(none, ID_AA64DFR0_EL1)?;
        ensure!(
            pmuver(without) == 0,
            "a vCPU without PMUv3 reads ID_AA64DFR0_EL1 {without:#x}: PMUVer is not 0"
        );
    }
    let ptrauth = VcpuFeatures::PTRAUTH_ADDRESS | VcpuFeatures::PTRAUTH_GENERIC;
    if offered.contains(ptrauth) {
        // APA [7:4], API [11:8], GPA [27:24], GPI [31:28]; APA3 [15:12], GPA3 [11:8].
        let fields = |f: VcpuFeatures| -> Result<u64, Failure> {
            let (isar1, _) = read(f, ID_AA64ISAR1_EL1)?;
            let (isar2, _) = read(f, ID_AA64ISAR2_EL1)?;
            Ok(isar1 & 0xff00_0ff0 | isar2 & 0xff00)
        };
        ensure!(
            fields(ptrauth)? != 0,
            "a vCPU with pointer authentication shows no algorithm in its ID registers"
        );
        let without = fields(none)?;
        ensure!(without == 0, "a vCPU without pointer authentication shows its fields: {without:#x}");
    }
    if offered.contains(VcpuFeatures::EL1_32BIT) {
        let (pfr0, pstate) = read(VcpuFeatures::EL1_32BIT, ID_AA64PFR0_EL1)?;
        ensure!(pfr0 >> 4 & 0xf == 2, "ID_AA64PFR0_EL1 {pfr0:#x}: EL1 is not AArch64 and AArch32");
        // PSTATE.nRW (M[4]) set and M[3:0] = 0b0011: AArch32 Supervisor mode.
        ensure!(
            pstate & 0x1f == 0x13,
            "a vCPU with EL1 32-bit starts with PSTATE {pstate:#x}, not in AArch32 SVC mode"
        );
        let (_, pstate) = read(none, ID_AA64PFR0_EL1)?;
        ensure!(pstate & 0x10 == 0, "a vCPU without EL1 32-bit starts with PSTATE {pstate:#x}, in AArch32");
    }
    Ok(())
}

fn unsupported_vcpu_feature(ctx: &Context) -> CaseResult {
    let accel = ctx.accelerator()?;
    let vm = accel.create_vm(&VmConfig::default())?;
    let bogus = VcpuFeatures(1 << 63);
    match vm.create_vcpu(&VcpuConfig::new(0, VcpuFeatures::PSCI_0_2 | bogus)) {
        Ok(_) => Err(Failure::Fail("a vCPU with an unknown feature bit was created".into())),
        Err(e) => {
            ensure!(e.kind == ErrorKind::UNSUPPORTED, "expected an unsupported error, got {e:?}");
            ensure!(e.message.contains("bit63"), "the error does not name the feature: {e}");
            // The VM is still usable afterwards.
            vm.create_vcpu(&VcpuConfig::new(0, VcpuFeatures::PSCI_0_2))?;
            Ok(())
        }
    }
}

fn memory_regions(ctx: &Context) -> CaseResult {
    let accel = ctx.accelerator()?;
    let vm = accel.create_vm(&VmConfig::default())?;
    let ram = GuestRam::new(RAM_BASE, 1 << 20)?;
    let second = GuestRam::new(RAM_BASE + (1 << 20), 1 << 20)?;
    // SAFETY: this VM never gets a vCPU, and both blocks live until the end of the case.
    let (first_slot, second_slot) = unsafe { (ram.map_into(&vm)?, second.map_into(&vm)?) };
    ensure!(first_slot != second_slot, "two regions share slot {first_slot}");

    // An overlapping region, backed by real memory, is refused.
    let scratch = vec![0u8; 3 << 12];
    let page = (scratch.as_ptr() as u64 + 0xfff) & !0xfff;
    let overlapping =
        MemoryRegion { guest_addr: RAM_BASE + 0x1000, size: 0x1000, host_addr: page, read_only: false };
    // SAFETY: `scratch` outlives the call, and the region is refused (checked below) so it is
    // never mapped into the guest.
    let err = match unsafe { vm.add_memory(&overlapping) } {
        Ok(slot) => {
            let _ = vm.remove_memory(slot);
            return Err(Failure::Fail("an overlapping memory region was accepted".into()));
        }
        Err(e) => e,
    };
    ensure!(err.kind == ErrorKind::INVALID_ARGUMENT, "overlap: expected invalid argument, got {err:?}");

    let misaligned = MemoryRegion { guest_addr: 0x8000_0800, ..overlapping };
    // SAFETY: as above; misaligned regions are refused.
    let err = unsafe { vm.add_memory(&misaligned) }.err();
    ensure!(
        err.as_ref().is_some_and(|e| e.kind == ErrorKind::INVALID_ARGUMENT),
        "misaligned: expected invalid argument, got {err:?}"
    );

    let err = vm.remove_memory(999).err();
    ensure!(
        err.as_ref().is_some_and(|e| e.kind == ErrorKind::NOT_FOUND),
        "removing an unknown slot: expected not found, got {err:?}"
    );
    // A removed region frees its range for a new one.
    vm.remove_memory(second_slot)?;
    // SAFETY: as above.
    let again = unsafe { second.map_into(&vm) }?;
    ensure!(again == second_slot, "the freed slot {second_slot} was not reused (got {again})");
    Ok(())
}

/// A read-only region reads as memory and turns guest writes into MMIO exits, leaving the
/// memory unchanged; a backend without read-only memory refuses the region.
fn read_only_memory(ctx: &Context) -> CaseResult {
    use accel_api::VcpuExit;

    use crate::{
        asm::{self, Size},
        guest::{TestGuest, MMIO_BASE},
    };
    const ROM: u64 = 0x6000_0000;
    let accel = ctx.accelerator()?;
    let caps = accel.probe().caps;
    let mut code = asm::mov_imm64(10, ROM);
    code.extend(asm::mov_imm64(9, MMIO_BASE));
    code.extend([
        asm::ldr(Size::X, 1, 10, 0),
        asm::str(Size::X, 1, 9, 0), // report what the ROM holds
        asm::movz(2, 0x99, 0),
        asm::str(Size::X, 2, 10, 8), // a write to the ROM
        asm::ldr(Size::X, 3, 10, 8),
        asm::str(Size::X, 3, 9, 8), // report what is there after it
        asm::b(0),
    ]);
    let g = TestGuest::new(&accel, &code)?;
    let rom = GuestRam::new(ROM, 1 << 16)?;
    rom.write(ROM, &0x1122_3344_5566_7788u64.to_le_bytes())?;
    let region =
        MemoryRegion { guest_addr: ROM, size: 1 << 16, host_addr: rom.host_addr()?, read_only: true };
    // SAFETY: `rom` lives until the end of the case, after the guest's last run.
    let added = unsafe { g.vm.add_memory(&region) };
    if !caps.readonly_memory {
        ensure!(
            added.is_err_and(|e| e.kind == ErrorKind::UNSUPPORTED),
            "read-only memory is not offered but was added"
        );
        return Ok(());
    }
    added?;
    let mut g = g;
    let first = g.expect_mmio_write()?;
    ensure!(first == (MMIO_BASE, 8, 0x1122_3344_5566_7788), "the guest read {first:x?} from the ROM");
    match g.run()? {
        VcpuExit::MmioWrite(a) if a.addr == ROM + 8 && a.value() == 0x99 => {}
        other => return Err(Failure::Fail(format!("a write to read-only memory gave {other:?}"))),
    }
    let after = g.expect_mmio_write()?;
    ensure!(after == (MMIO_BASE + 8, 8, 0), "after the refused write the ROM holds {after:x?}");
    Ok(())
}
