//! Probe: the backend says it can run, and reports sane headline capabilities.

use accel_api::{idregs::synthesize_dbgdidr, sysreg, VcpuConfig, VcpuFeatures, VmConfig};

use crate::{ensure, Case, CaseResult, Context, Failure};

pub fn cases() -> Vec<Case> {
    crate::case_list![probe: available_with_capabilities, id_registers_match_a_vcpu, descriptors_are_left_alone]
}

fn available_with_capabilities(ctx: &Context) -> CaseResult {
    let accel = ctx.accelerator()?;
    let info = ctx.plugin.probe();
    let opened = accel.probe();
    ensure!(opened.available, "the opened accelerator reports itself unavailable: {}", opened.reason);
    ensure!(
        opened.caps == info.caps,
        "the plugin probe and the opened accelerator disagree: {:?} vs {:?}",
        info.caps,
        opened.caps
    );
    let caps = info.caps;
    ensure!(caps.max_vcpus >= 1, "max_vcpus is {}", caps.max_vcpus);
    ensure!(
        (32..=52).contains(&caps.ipa_bits),
        "IPA size {} bits is out of the architectural range",
        caps.ipa_bits
    );
    ensure!(
        caps.vcpu_features.contains(VcpuFeatures::PSCI_0_2 | VcpuFeatures::POWER_OFF),
        "PSCI 0.2 and power-off are required, features are {:?}",
        caps.vcpu_features
    );
    ensure!(!info.reason.is_empty(), "the probe gives no description");
    Ok(())
}

/// The probe's ID registers are what a default vCPU reads, and the numbers derived from them
/// agree with the capabilities.
fn id_registers_match_a_vcpu(ctx: &Context) -> CaseResult {
    let accel = ctx.accelerator()?;
    let info = accel.probe();
    let id = info.id;
    let vm = accel.create_vm(&VmConfig::default())?;
    let mut vcpu = vm.create_vcpu(&VcpuConfig::new(0, VcpuFeatures::PSCI_0_2))?;
    for (reg, probed) in [
        (sysreg::MIDR_EL1, id.midr),
        (sysreg::ID_AA64ISAR0_EL1, id.aa64isar0),
        (sysreg::ID_AA64ISAR1_EL1, id.aa64isar1),
        (sysreg::ID_AA64MMFR0_EL1, id.aa64mmfr0),
        (sysreg::ID_AA64DFR0_EL1, id.aa64dfr0),
    ] {
        let read = vcpu.get_reg(reg)?;
        ensure!(read == probed, "{reg}: probed {probed:#x}, a vCPU reads {read:#x}");
    }
    // SVE shows in ID_AA64PFR0_EL1 only on vCPUs created with it; compare the rest.
    let pfr0 = vcpu.get_reg(sysreg::ID_AA64PFR0_EL1)?;
    let sve_field = 0xf << 32;
    ensure!(
        pfr0 & !sve_field == id.aa64pfr0 & !sve_field,
        "ID_AA64PFR0_EL1: probed {:#x}, read {pfr0:#x}",
        id.aa64pfr0
    );
    // Armv8 and later CPUs give MIDR_EL1.Architecture 0xF: features are in the ID registers.
    ensure!(
        id.field("MIDR_EL1", "Architecture") == Some(0xf),
        "MIDR_EL1 {:#x}: Architecture is not 0xF",
        id.midr
    );
    let caps = info.caps;
    // The counts are those usable for guest debug: a backend without it reports none.
    ensure!(
        vm.debug().is_none()
            || (id.breakpoints() == caps.hw_breakpoints && id.watchpoints() == caps.hw_watchpoints),
        "BRPs/WRPs give {}/{} breakpoints/watchpoints, the capabilities {}/{}",
        id.breakpoints(),
        id.watchpoints(),
        caps.hw_breakpoints,
        caps.hw_watchpoints
    );
    let pa =
        id.pa_bits().ok_or_else(|| Failure::Fail(format!("PARange of {:#x} is reserved", id.aa64mmfr0)))?;
    ensure!(caps.ipa_bits <= pa, "IPA size {} exceeds the {pa}-bit physical address range", caps.ipa_bits);
    let aarch32_el1 = id.field("ID_AA64PFR0_EL1", "EL1").is_some_and(|v| v >= 2);
    ensure!(
        aarch32_el1 || !caps.vcpu_features.contains(VcpuFeatures::EL1_32BIT),
        "the EL1 32-bit feature is offered, but ID_AA64PFR0_EL1.EL1 says EL1 has no AArch32"
    );
    ensure!(
        id.dbgdidr == synthesize_dbgdidr(id.aa64pfr0, id.aa64dfr0) && (id.dbgdidr != 0) == aarch32_el1,
        "DBGDIDR {:#x} is not the synthesized value",
        id.dbgdidr
    );
    Ok(())
}

/// This process's open descriptors and what each refers to.
fn descriptors() -> Result<Vec<(String, String)>, Failure> {
    let dir = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| Failure::NotRun(format!("listing /proc/self/fd: {e}")))?;
    let mut fds: Vec<(String, String)> = dir
        .filter_map(|e| e.ok())
        .map(|e| {
            let target = std::fs::read_link(e.path()).map(|t| t.display().to_string()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), target)
        })
        .filter(|(_, target)| !target.is_empty())
        .collect();
    fds.sort();
    Ok(fds)
}

/// Probing, opening, and a VM and vCPU made and dropped, leave the process's descriptors as
/// they were: none closed that the backend does not own (stdin above all), none leaked.
fn descriptors_are_left_alone(ctx: &Context) -> CaseResult {
    let before = descriptors()?;
    {
        let accel = ctx.accelerator()?;
        let _ = accel.probe();
        let _ = ctx.plugin.probe();
        let vm = accel.create_vm(&VmConfig::default())?;
        let _vcpu = vm.create_vcpu(&VcpuConfig::new(0, VcpuFeatures::PSCI_0_2))?;
    }
    let after = descriptors()?;
    let lost: Vec<&(String, String)> = before.iter().filter(|fd| !after.contains(fd)).collect();
    ensure!(lost.is_empty(), "descriptors closed or replaced by the backend: {lost:?}");
    let leaked: Vec<&(String, String)> = after.iter().filter(|fd| !before.contains(fd)).collect();
    ensure!(leaked.is_empty(), "descriptors left open after everything was dropped: {leaked:?}");
    Ok(())
}
