//! What `accel-host list` and `probe` print: a plugin's probe as a table, as JSON, or as one line.

use std::path::Path;

use accel_api::{ProbeInfo, VcpuFeatures};
use serde_json::json;

use crate::loader::Plugin;

/// One line of `accel-host list`.
pub fn list_line(plugin: &Plugin, path: &Path, info: &ProbeInfo) -> String {
    let state = if info.available { "available" } else { "unavailable" };
    format!(
        "{:<8} {:<12} {}  (ABI {}, {})",
        plugin.name(),
        state,
        info.reason,
        plugin.abi_version(),
        path.display()
    )
}

/// The probe as JSON.
pub fn probe_json(plugin: &Plugin, path: &Path, info: &ProbeInfo) -> serde_json::Value {
    let c = &info.caps;
    let mut fields = serde_json::Map::new();
    for (spec, value) in info.id.decoded() {
        let entry = fields.entry(spec.reg).or_insert_with(|| json!({}));
        entry[spec.name] = json!(value);
    }
    let hex = |v: u64| format!("{v:#x}");
    json!({
        "backend": plugin.name(),
        "plugin": path.display().to_string(),
        "abi_version": plugin.abi_version().to_string(),
        "available": info.available,
        "reason": info.reason.as_str(),
        "capabilities": {
            "max_vcpus": c.max_vcpus,
            "max_vms": c.max_vms,
            "ipa_bits": c.ipa_bits,
            "page_size": c.page_size,
            "vcpu_features": c.vcpu_features.names(),
            "psci_0_2": c.vcpu_features.contains(VcpuFeatures::PSCI_0_2),
            "pmu_v3": c.vcpu_features.contains(VcpuFeatures::PMU_V3),
            "el1_32bit": c.vcpu_features.contains(VcpuFeatures::EL1_32BIT),
            "sve": c.vcpu_features.contains(VcpuFeatures::SVE),
            "sve_vector_lengths_bits": accel_api::sve::vector_lengths_bits(c.sve_vqs),
            "ptrauth": c.vcpu_features.contains(VcpuFeatures::PTRAUTH_ADDRESS | VcpuFeatures::PTRAUTH_GENERIC),
            "hw_breakpoints": c.hw_breakpoints,
            "hw_watchpoints": c.hw_watchpoints,
            "serror_esr_injection": c.serror_esr,
            "ext_dabt_injection": c.ext_dabt,
            "readonly_memory": c.readonly_memory,
            "system_suspend": c.system_suspend,
            "counter_offset": c.counter_offset,
            "userspace_psci": c.userspace_psci,
            "gic_v3": c.gic_v3,
            "gic_its": c.gic_its,
            "cpu_target": c.cpu_target,
        },
        "id_registers": {
            "MIDR_EL1": hex(info.id.midr),
            "ID_AA64PFR0_EL1": hex(info.id.aa64pfr0),
            "ID_AA64PFR1_EL1": hex(info.id.aa64pfr1),
            "ID_AA64DFR0_EL1": hex(info.id.aa64dfr0),
            "ID_AA64DFR1_EL1": hex(info.id.aa64dfr1),
            "ID_AA64ISAR0_EL1": hex(info.id.aa64isar0),
            "ID_AA64ISAR1_EL1": hex(info.id.aa64isar1),
            "ID_AA64ISAR2_EL1": hex(info.id.aa64isar2),
            "ID_AA64MMFR0_EL1": hex(info.id.aa64mmfr0),
            "ID_AA64MMFR1_EL1": hex(info.id.aa64mmfr1),
            "ID_AA64MMFR2_EL1": hex(info.id.aa64mmfr2),
            "ID_AA64MMFR3_EL1": hex(info.id.aa64mmfr3),
            "ID_AA64ZFR0_EL1": hex(info.id.aa64zfr0),
            "ID_AA64SMFR0_EL1": hex(info.id.aa64smfr0),
            "aarch32": info.id.aarch32.iter().map(|v| hex(u64::from(*v))).collect::<Vec<_>>(),
            "MVFR": info.id.mvfr.iter().map(|v| hex(u64::from(*v))).collect::<Vec<_>>(),
            "DBGDIDR": hex(u64::from(info.id.dbgdidr)),
        },
        "id_fields": fields,
        "pa_bits": info.id.pa_bits(),
    })
}

/// The probe as a table.
pub fn probe_table(plugin: &Plugin, path: &Path, info: &ProbeInfo) -> String {
    let mut out = Vec::new();
    out.push(format!("backend          {}", plugin.name()));
    out.push(format!("plugin           {}", path.display()));
    out.push(format!("ABI version      {}", plugin.abi_version()));
    out.push(format!("available        {}", if info.available { "yes" } else { "no" }));
    out.push(format!("{:<16} {}", if info.available { "host" } else { "reason" }, info.reason));
    if !info.available {
        return out.join("\n");
    }
    let c = info.caps;
    let yes = |b: bool| if b { "yes" } else { "no" };
    let limit = |n: u32| if n == 0 { "no fixed limit".to_string() } else { n.to_string() };
    out.push(format!("max vCPUs        {}", c.max_vcpus));
    out.push(format!("max VMs          {}", limit(c.max_vms)));
    out.push(format!("IPA bits         {}", c.ipa_bits));
    out.push(format!("page size        {}", c.page_size));
    out.push(format!("vCPU features    {}", c.vcpu_features.names().join(", ")));
    if c.sve_vqs != 0 {
        let bits: Vec<String> =
            accel_api::sve::vector_lengths_bits(c.sve_vqs).iter().map(u32::to_string).collect();
        out.push(format!("SVE lengths      {} bits", bits.join(", ")));
    }
    out.push(format!("in-kernel GICv3  {}", yes(c.gic_v3)));
    out.push(format!("GICv3 ITS        {}", yes(c.gic_its)));
    out.push(format!("HW breakpoints   {}", c.hw_breakpoints));
    out.push(format!("HW watchpoints   {}", c.hw_watchpoints));
    out.push(format!("SError ESR       {}", yes(c.serror_esr)));
    out.push(format!("ext. data abort  {}", yes(c.ext_dabt)));
    out.push(format!("read-only memory {}", yes(c.readonly_memory)));
    out.push(format!("system suspend   {}", yes(c.system_suspend)));
    out.push(format!("counter offset   {}", yes(c.counter_offset)));
    out.push(format!("PSCI in plugin   {}", yes(c.userspace_psci)));
    out.push(format!("CPU target       {}", c.cpu_target));
    out.push(format!("DBGDIDR          {:#010x}", info.id.dbgdidr));
    let mut current = "";
    let mut line = String::new();
    for (spec, value) in info.id.decoded() {
        if spec.reg != current {
            if !line.is_empty() {
                out.push(std::mem::take(&mut line));
            }
            let raw = info.id.reg(spec.reg).unwrap_or(0);
            line = format!("{:<16} {raw:#018x} ", spec.reg);
            current = spec.reg;
        }
        line.push_str(&format!(" {}={value}", spec.name));
    }
    out.push(line);
    out.join("\n")
}
