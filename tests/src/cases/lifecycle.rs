//! VM, vCPU and memory-region lifecycle, including the errors for bad requests.

use accel_api::{ErrorKind, MemoryRegion, VcpuConfig, VcpuFeatures, VmConfig};
use accel_host::vmm::ram::GuestRam;

use crate::{ensure, guest::RAM_BASE, Case, CaseResult, Context, Failure};

pub fn cases() -> Vec<Case> {
    crate::cases![lifecycle: vms_and_vcpus, every_probed_feature_inits, unsupported_vcpu_feature, memory_regions, read_only_memory]
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
