//! Host probing, once per process: `kern.hv_support`, the ID registers the framework gives
//! without a VM (`hv_vcpu_config_get_feature_reg`), MIDR_EL1 from a scratch vCPU, the IPA size,
//! the GIC, the cache geometry, and everything HVF lacks, stated as capabilities.

use std::{ffi::CStr, sync::OnceLock};

use accel_kit::hvf_regs::FEATURE_REGS;

use accel_api::{
    idregs::synthesize_dbgdidr,
    sysreg::{self, RegId},
    AccelError, Capabilities, ErrorKind, IdRegisters, ProbeInfo, RegValue, Result, VcpuFeatures,
};
use applevisor::prelude::{GicConfig, SysReg, Vcpu, VcpuConfig, VirtualMachineConfig};
use applevisor_sys::{
    hv_cache_type_t, hv_vcpu_config_create, hv_vcpu_config_get_ccsidr_el1_sys_reg_values, os_release,
};

use super::{
    error::{hv_check, hv_error},
    regs::feature_reg,
    slot::VmSlot,
};

/// The granule of guest memory: Apple silicon's 16 KiB pages.
pub const PAGE_SIZE: u64 = 16 * 1024;

/// What probing found.
pub struct Probed {
    /// The capabilities.
    pub caps: Capabilities,
    /// The ID registers.
    pub id: IdRegisters,
    /// CCSIDR_EL1 by CSSELR_EL1 value, for the caches CLIDR_EL1 lists.
    pub ccsidr: Vec<RegValue>,
    /// The counter's frequency in Hz (the host timebase).
    pub counter_hz: u64,
}

impl Probed {
    /// The probe's answer.
    pub fn info(&self) -> ProbeInfo {
        ProbeInfo {
            available: true,
            reason: "Hypervisor.framework (kern.hv_support = 1)".to_string(),
            caps: self.caps,
            id: self.id,
        }
    }
}

/// The process's probe result, computed on first use.
pub fn probed() -> Result<&'static Probed> {
    static PROBED: OnceLock<Result<Probed>> = OnceLock::new();
    PROBED.get_or_init(probe_host).as_ref().map_err(Clone::clone)
}

fn unavailable(message: impl Into<String>) -> AccelError {
    AccelError::new(ErrorKind::UNAVAILABLE, message)
}

/// `sysctl kern.hv_support`.
fn hv_support() -> Result<bool> {
    const NAME: &CStr = c"kern.hv_support";
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>();
    // SAFETY: a NUL-terminated name, an output buffer of `len` bytes that lives across the call,
    // and no new value.
    let rc = unsafe {
        libc::sysctlbyname(
            NAME.as_ptr(),
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        return Err(unavailable(format!("sysctl kern.hv_support: {}", std::io::Error::last_os_error())));
    }
    Ok(value != 0)
}

/// The counter frequency from the Mach timebase: `mach_absolute_time` counts the counter's
/// ticks, each `numer / denom` nanoseconds. (The `libc` crate marks the Mach calls deprecated in
/// favour of another crate; they are the system's own and stay.)
#[allow(deprecated)]
fn counter_hz() -> u64 {
    let mut info = libc::mach_timebase_info { numer: 0, denom: 0 };
    // SAFETY: `info` is a valid, writable mach_timebase_info.
    let rc = unsafe { libc::mach_timebase_info(&mut info) };
    if rc != 0 || info.numer == 0 {
        return 24_000_000;
    }
    1_000_000_000 * u64::from(info.denom) / u64::from(info.numer)
}

/// CCSIDR_EL1 of every cache CLIDR_EL1 lists, read from a vCPU configuration. Apple's call
/// fills eight values (one per level), so it is made with an array of eight.
fn ccsidr_values(clidr: u64) -> Result<Vec<RegValue>> {
    // SAFETY: creates a configuration object, released below.
    let config = unsafe { hv_vcpu_config_create() };
    let read = |kind: hv_cache_type_t| {
        let mut values = [0u64; 8];
        // SAFETY: `config` is a live configuration and `values` has room for the eight values
        // the framework writes.
        let rc = unsafe { hv_vcpu_config_get_ccsidr_el1_sys_reg_values(config, kind, values.as_mut_ptr()) };
        hv_check(format!("hv_vcpu_config_get_ccsidr_el1_sys_reg_values({kind:?})"), rc).map(|()| values)
    };
    let result = read(hv_cache_type_t::DATA).and_then(|data| Ok((data, read(hv_cache_type_t::INSTRUCTION)?)));
    // SAFETY: `config` came from hv_vcpu_config_create and is not used after this.
    unsafe { os_release(config) };
    let (data, instruction) = result?;
    let mut out = Vec::new();
    for level in 0..7u64 {
        // CLIDR_EL1.Ctype<n>: 1 instruction, 2 data, 3 separate, 4 unified.
        let ctype = (clidr >> (3 * level)) & 7;
        if matches!(ctype, 2..=4) {
            out.push(RegValue { id: RegId::ccsidr(level << 1), value: data[level as usize] });
        }
        if matches!(ctype, 1 | 3) {
            out.push(RegValue { id: RegId::ccsidr(level << 1 | 1), value: instruction[level as usize] });
        }
    }
    Ok(out)
}

/// MIDR_EL1, which no configuration call gives: read from a scratch VM's vCPU on a thread of
/// its own (a vCPU is bound to the thread that creates it).
fn scratch_midr(ipa_bits: u32) -> Result<u64> {
    let slot = VmSlot::claim()?;
    let worker = std::thread::spawn(move || -> Result<u64> {
        let mut config = VirtualMachineConfig::new();
        config.set_ipa_size(ipa_bits).map_err(|e| hv_error("hv_vm_config_set_ipa_size", e))?;
        let vm = applevisor::vm::VirtualMachine::with_config(config)
            .map_err(|e| hv_error("hv_vm_create of a scratch VM", e))?;
        let vcpu: Vcpu = vm.vcpu_create().map_err(|e| hv_error("hv_vcpu_create of a scratch vCPU", e))?;
        let midr = vcpu.get_sys_reg(SysReg::MIDR_EL1).map_err(|e| hv_error("reading MIDR_EL1", e));
        drop(vcpu);
        drop(vm);
        midr
    });
    let midr = worker.join().map_err(|_| AccelError::bad_state("the scratch vCPU's thread panicked"))?;
    drop(slot);
    midr
}

fn probe_host() -> Result<Probed> {
    if !hv_support()? {
        return Err(unavailable(
            "kern.hv_support is 0: this Mac offers no Hypervisor.framework (inside a VM, or without \
             the hardware)",
        ));
    }
    let config = VcpuConfig::new();
    let mut values = Vec::new();
    for (number, id) in FEATURE_REGS {
        let reg = feature_reg(number)
            .ok_or_else(|| AccelError::invalid(format!("no hv_feature_reg_t {number}")))?;
        let value = config.get_feature_reg(reg).map_err(|e| hv_error(format!("reading {id}"), e))?;
        values.push(RegValue { id, value });
    }
    let clidr = values.iter().find(|v| v.id == sysreg::CLIDR_EL1).map_or(0, |v| v.value);
    let ipa_bits =
        VirtualMachineConfig::get_max_ipa_size().map_err(|e| hv_error("hv_vm_config_get_max_ipa_size", e))?;
    values.push(RegValue { id: sysreg::MIDR_EL1, value: scratch_midr(ipa_bits)? });
    let mut id = IdRegisters::from_values(&values);
    id.dbgdidr = synthesize_dbgdidr(id.aa64pfr0, id.aa64dfr0);
    let ccsidr = ccsidr_values(clidr)?;
    let max_vcpus = Vcpu::get_max_count().map_err(|e| hv_error("hv_vm_get_max_vcpu_count", e))?;
    let caps = Capabilities {
        max_vcpus,
        max_vms: 1,
        ipa_bits,
        page_size: PAGE_SIZE,
        hw_breakpoints: id.breakpoints(),
        hw_watchpoints: id.watchpoints(),
        // No EL1 32-bit, no PMU, no SVE; pointer authentication is whatever the ID registers
        // say and cannot be switched per vCPU, so it is not offered as a feature either.
        vcpu_features: VcpuFeatures::POWER_OFF | VcpuFeatures::PSCI_0_2,
        sve_vqs: 0,
        readonly_memory: true,
        // No virtual SError injection at all; external data aborts are entered by the plugin.
        serror_esr: false,
        ext_dabt: true,
        system_suspend: true,
        counter_offset: false,
        gic_v3: GicConfig::get_distributor_size().is_ok(),
        gic_its: false,
        userspace_psci: true,
        cpu_target: 0,
    };
    Ok(Probed { caps, id, ccsidr, counter_hz: counter_hz() })
}
