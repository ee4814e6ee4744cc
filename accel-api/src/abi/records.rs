//! The data that crosses the boundary in open form: every kind, flag and option is a number that
//! a later ABI version may add to, and every record can carry values this side does not know.
//!
//! The plain Rust types that backends and hosts use ([`crate::ProbeInfo`], [`crate::VcpuExit`],
//! [`crate::VmConfig`] …) convert to and from these records on each side of the boundary. A
//! value a side does not know arrives as "unknown N" (an exit, a debug event) or is ignored (a
//! probe fact); an option or flag a plugin does not know is refused as `unsupported`, naming it.

use abi_stable::{
    std_types::{RString, RVec},
    StableAbi,
};

use crate::{
    config::{Capabilities, MemoryRegion, ProbeInfo, VcpuConfig, VcpuFeatures, VmConfig},
    debug::{DebugEvent, DebugProgram, WatchKind, Watchpoint},
    error::{AccelError, Result},
    exit::{DebugExit, MmioAccess, SystemEventKind, VcpuExit},
    idregs::IdRegisters,
    irq::GicConfig,
    sysreg::RegValue,
};

/// An option of a configuration record: a numbered setting and its value.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigOption {
    /// Which setting.
    pub id: u32,
    /// Its value.
    pub value: u64,
}

fn refuse_options(what: &str, options: &RVec<ConfigOption>) -> Result<()> {
    match options.first() {
        None => Ok(()),
        Some(o) => Err(AccelError::unsupported(format!(
            "{what} option {} is not known to this plugin (it was built for an earlier accel ABI)",
            o.id
        ))),
    }
}

/// A fact a probe reports: a numbered capability and its value. See [`fact`] for the numbers.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fact {
    /// Which capability.
    pub id: u32,
    /// Its value (a count, a size, a bit set, or 0/1).
    pub value: u64,
}

/// The numbers of probe facts. A host ignores numbers it does not know, and a fact a plugin
/// does not report reads as 0.
pub mod fact {
    /// The largest number of vCPUs in one VM.
    pub const MAX_VCPUS: u32 = 1;
    /// The largest guest physical address size, in bits.
    pub const IPA_BITS: u32 = 2;
    /// Hardware breakpoints usable for guest debug.
    pub const HW_BREAKPOINTS: u32 = 3;
    /// Hardware watchpoints usable for guest debug.
    pub const HW_WATCHPOINTS: u32 = 4;
    /// The vCPU features the backend can enable, as a `VcpuFeatures` bit set.
    pub const VCPU_FEATURES: u32 = 5;
    /// The SVE vector lengths offered: bit `vq - 1` for `vq * 128` bits.
    pub const SVE_VQS: u32 = 6;
    /// Read-only memory regions are supported.
    pub const READONLY_MEMORY: u32 = 7;
    /// An injected SError can carry a syndrome.
    pub const SERROR_ESR: u32 = 8;
    /// External data aborts can be injected.
    pub const EXT_DABT: u32 = 9;
    /// PSCI SYSTEM_SUSPEND reaches the monitor as a suspend event.
    pub const SYSTEM_SUSPEND: u32 = 10;
    /// The VM-wide counter offset can be set.
    pub const COUNTER_OFFSET: u32 = 11;
    /// The backend's own CPU target for vCPUs.
    pub const CPU_TARGET: u32 = 12;
    /// The most VMs one process can hold at once (0: no fixed limit).
    pub const MAX_VMS: u32 = 13;
    /// The granule of guest memory regions, in bytes.
    pub const PAGE_SIZE: u32 = 14;
    /// An in-kernel GICv3 can be created.
    pub const GIC_V3: u32 = 15;
    /// The in-kernel GICv3 can have an ITS (ABI 2.1).
    pub const GIC_ITS: u32 = 16;
    /// PSCI and SMCCC calls can be answered inside the plugin (ABI 2.2).
    pub const USERSPACE_PSCI: u32 = 17;
}

/// A probe's answer as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct ProbeRecord {
    /// True when VMs can be created.
    pub available: bool,
    /// Why not, or a short description of the host.
    pub reason: RString,
    /// The capabilities, by number.
    pub facts: RVec<Fact>,
    /// The host CPU's ID registers by their AArch64 encodings.
    pub id_regs: RVec<RegValue>,
}

impl From<&ProbeInfo> for ProbeRecord {
    fn from(info: &ProbeInfo) -> Self {
        let c = &info.caps;
        let facts = [
            (fact::MAX_VCPUS, u64::from(c.max_vcpus)),
            (fact::IPA_BITS, u64::from(c.ipa_bits)),
            (fact::HW_BREAKPOINTS, u64::from(c.hw_breakpoints)),
            (fact::HW_WATCHPOINTS, u64::from(c.hw_watchpoints)),
            (fact::VCPU_FEATURES, c.vcpu_features.0),
            (fact::SVE_VQS, u64::from(c.sve_vqs)),
            (fact::READONLY_MEMORY, u64::from(c.readonly_memory)),
            (fact::SERROR_ESR, u64::from(c.serror_esr)),
            (fact::EXT_DABT, u64::from(c.ext_dabt)),
            (fact::SYSTEM_SUSPEND, u64::from(c.system_suspend)),
            (fact::COUNTER_OFFSET, u64::from(c.counter_offset)),
            (fact::CPU_TARGET, u64::from(c.cpu_target)),
            (fact::MAX_VMS, u64::from(c.max_vms)),
            (fact::PAGE_SIZE, c.page_size),
            (fact::GIC_V3, u64::from(c.gic_v3)),
            (fact::GIC_ITS, u64::from(c.gic_its)),
            (fact::USERSPACE_PSCI, u64::from(c.userspace_psci)),
        ];
        Self {
            available: info.available,
            reason: info.reason.as_str().into(),
            facts: facts.iter().map(|&(id, value)| Fact { id, value }).collect(),
            id_regs: info.id.to_values().into(),
        }
    }
}

impl From<&ProbeRecord> for ProbeInfo {
    fn from(r: &ProbeRecord) -> Self {
        let get = |id: u32| r.facts.iter().find(|f| f.id == id).map_or(0, |f| f.value);
        let small = |id: u32| u32::try_from(get(id)).unwrap_or(u32::MAX);
        let caps = Capabilities {
            max_vcpus: small(fact::MAX_VCPUS),
            ipa_bits: small(fact::IPA_BITS),
            hw_breakpoints: small(fact::HW_BREAKPOINTS),
            hw_watchpoints: small(fact::HW_WATCHPOINTS),
            vcpu_features: VcpuFeatures(get(fact::VCPU_FEATURES)),
            sve_vqs: small(fact::SVE_VQS),
            readonly_memory: get(fact::READONLY_MEMORY) != 0,
            serror_esr: get(fact::SERROR_ESR) != 0,
            ext_dabt: get(fact::EXT_DABT) != 0,
            system_suspend: get(fact::SYSTEM_SUSPEND) != 0,
            counter_offset: get(fact::COUNTER_OFFSET) != 0,
            cpu_target: small(fact::CPU_TARGET),
            max_vms: small(fact::MAX_VMS),
            page_size: get(fact::PAGE_SIZE),
            gic_v3: get(fact::GIC_V3) != 0,
            gic_its: get(fact::GIC_ITS) != 0,
            userspace_psci: get(fact::USERSPACE_PSCI) != 0,
        };
        ProbeInfo {
            available: r.available,
            reason: r.reason.to_string(),
            caps,
            id: IdRegisters::from_values(&r.id_regs),
        }
    }
}

/// How to create a VM, as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct VmConfigRecord {
    /// The guest physical address size in bits, or 0 for the backend's default.
    pub ipa_bits: u32,
    /// Settings added after ABI 2.0.
    pub options: RVec<ConfigOption>,
}

/// The options of a VM configuration.
pub mod vm_option {
    /// PSCI and SMCCC answered inside the plugin, value 1 (ABI 2.2).
    pub const USERSPACE_PSCI: u32 = 1;
}

impl From<&VmConfig> for VmConfigRecord {
    fn from(c: &VmConfig) -> Self {
        let psci = c.userspace_psci.then_some(ConfigOption { id: vm_option::USERSPACE_PSCI, value: 1 });
        Self { ipa_bits: c.ipa_bits, options: psci.into_iter().collect() }
    }
}

impl VmConfigRecord {
    /// The configuration, or `unsupported` for an option this side does not know.
    pub fn to_config(&self) -> Result<VmConfig> {
        let (psci, unknown): (Vec<ConfigOption>, Vec<ConfigOption>) =
            self.options.iter().partition(|o| o.id == vm_option::USERSPACE_PSCI);
        refuse_options("VM", &unknown.into())?;
        Ok(VmConfig { ipa_bits: self.ipa_bits, userspace_psci: psci.last().is_some_and(|o| o.value != 0) })
    }
}

/// How to create a vCPU, as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct VcpuConfigRecord {
    /// The vCPU's index in the VM, from 0.
    pub index: u32,
    /// Features to enable at init (an open bit set).
    pub features: VcpuFeatures,
    /// With SVE: the largest vector length in quadwords; 0 for the largest offered.
    pub sve_max_vq: u32,
    /// Settings added after ABI 2.0.
    pub options: RVec<ConfigOption>,
}

impl From<&VcpuConfig> for VcpuConfigRecord {
    fn from(c: &VcpuConfig) -> Self {
        Self { index: c.index, features: c.features, sve_max_vq: c.sve_max_vq, options: RVec::new() }
    }
}

impl VcpuConfigRecord {
    /// The configuration, or `unsupported` for an option this side does not know.
    pub fn to_config(&self) -> Result<VcpuConfig> {
        refuse_options("vCPU", &self.options)?;
        Ok(VcpuConfig { index: self.index, features: self.features, sve_max_vq: self.sve_max_vq })
    }
}

/// The flags of a memory region.
pub mod region_flags {
    /// Guest writes fault to the monitor as MMIO writes.
    pub const READ_ONLY: u32 = 1;
    /// Every flag ABI 2.0 knows.
    pub const KNOWN: u32 = READ_ONLY;
}

/// A memory region as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegionRecord {
    /// The guest physical address of the first byte.
    pub guest_addr: u64,
    /// The size in bytes.
    pub size: u64,
    /// The host virtual address of the first byte.
    pub host_addr: u64,
    /// [`region_flags`].
    pub flags: u32,
}

impl From<&MemoryRegion> for MemoryRegionRecord {
    fn from(r: &MemoryRegion) -> Self {
        let flags = if r.read_only { region_flags::READ_ONLY } else { 0 };
        Self { guest_addr: r.guest_addr, size: r.size, host_addr: r.host_addr, flags }
    }
}

impl MemoryRegionRecord {
    /// The region, or `unsupported` for a flag this side does not know.
    pub fn to_region(&self) -> Result<MemoryRegion> {
        let unknown = self.flags & !region_flags::KNOWN;
        if unknown != 0 {
            return Err(AccelError::unsupported(format!(
                "memory region flags {unknown:#x} are not known to this plugin"
            )));
        }
        Ok(MemoryRegion {
            guest_addr: self.guest_addr,
            size: self.size,
            host_addr: self.host_addr,
            read_only: self.flags & region_flags::READ_ONLY != 0,
        })
    }
}

/// A GIC configuration as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct GicConfigRecord {
    /// The distributor base.
    pub dist_base: u64,
    /// The redistributor base.
    pub redist_base: u64,
    /// The number of SPIs.
    pub spis: u32,
    /// Settings added after ABI 2.0.
    pub options: RVec<ConfigOption>,
}

/// The options of a GIC configuration.
pub mod gic_option {
    /// The base of the Interrupt Translation Service (ABI 2.1).
    pub const ITS_BASE: u32 = 1;
}

impl From<&GicConfig> for GicConfigRecord {
    fn from(c: &GicConfig) -> Self {
        let its = c.its_base.map(|base| ConfigOption { id: gic_option::ITS_BASE, value: base });
        Self {
            dist_base: c.dist_base,
            redist_base: c.redist_base,
            spis: c.spis,
            options: its.into_iter().collect(),
        }
    }
}

impl GicConfigRecord {
    /// The configuration, or `unsupported` for an option this side does not know.
    pub fn to_config(&self) -> Result<GicConfig> {
        let (its, unknown): (Vec<ConfigOption>, Vec<ConfigOption>) =
            self.options.iter().partition(|o| o.id == gic_option::ITS_BASE);
        refuse_options("GIC", &unknown.into())?;
        Ok(GicConfig {
            dist_base: self.dist_base,
            redist_base: self.redist_base,
            spis: self.spis,
            its_base: its.last().map(|o| o.value),
        })
    }
}

/// The kinds of exits, numbered.
pub mod exit_kind {
    /// An MMIO read: `[addr, len]`.
    pub const MMIO_READ: u32 = 1;
    /// An MMIO write: `[addr, len, data]`.
    pub const MMIO_WRITE: u32 = 2;
    /// A system event: `[kind]`, with its data.
    pub const SYSTEM_EVENT: u32 = 3;
    /// A debug exception: `[esr, far, pc]`.
    pub const DEBUG: u32 = 4;
    /// An internal error: `[suberror]`, with its data.
    pub const INTERNAL_ERROR: u32 = 5;
    /// A failed entry: `[reason, cpu]`.
    pub const FAIL_ENTRY: u32 = 6;
    /// A data abort without syndrome: `[esr_iss, fault_ipa]`.
    pub const ARM_NISV: u32 = 7;
    /// Interrupted by a kick or a signal.
    pub const INTERRUPTED: u32 = 8;
    /// An exit the backend could not classify: `[its own code]`.
    pub const BACKEND_SPECIFIC: u32 = 9;
}

/// Why `run` returned, as it crosses the boundary: a kind and its arguments.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct ExitRecord {
    /// [`exit_kind`].
    pub kind: u32,
    /// The kind's arguments; unused ones are 0.
    pub args: [u64; 6],
    /// Variable-length data (system events, internal errors).
    pub data: RVec<u64>,
}

impl ExitRecord {
    fn new(kind: u32, head: &[u64], data: RVec<u64>) -> Self {
        let mut args = [0; 6];
        args[..head.len()].copy_from_slice(head);
        Self { kind, args, data }
    }
}

impl From<VcpuExit> for ExitRecord {
    fn from(exit: VcpuExit) -> Self {
        use exit_kind::*;
        let none = RVec::new;
        match exit {
            VcpuExit::MmioRead(a) => Self::new(MMIO_READ, &[a.addr, u64::from(a.len)], none()),
            VcpuExit::MmioWrite(a) => Self::new(MMIO_WRITE, &[a.addr, u64::from(a.len), a.value()], none()),
            VcpuExit::SystemEvent { kind, data } => {
                Self::new(SYSTEM_EVENT, &[u64::from(kind.0)], data.into())
            }
            VcpuExit::Debug(d) => Self::new(DEBUG, &[d.esr, d.far, d.pc], none()),
            VcpuExit::InternalError { suberror, data } => {
                Self::new(INTERNAL_ERROR, &[u64::from(suberror)], data.into())
            }
            VcpuExit::FailEntry { reason, cpu } => Self::new(FAIL_ENTRY, &[reason, u64::from(cpu)], none()),
            VcpuExit::ArmNisv { esr_iss, fault_ipa } => Self::new(ARM_NISV, &[esr_iss, fault_ipa], none()),
            VcpuExit::Interrupted => Self::new(INTERRUPTED, &[], none()),
            VcpuExit::BackendSpecific { reason } => Self::new(BACKEND_SPECIFIC, &[u64::from(reason)], none()),
            VcpuExit::Unknown { kind, args } => Self::new(kind, &args, none()),
        }
    }
}

impl From<ExitRecord> for VcpuExit {
    fn from(r: ExitRecord) -> Self {
        use exit_kind::*;
        let a = r.args;
        let small = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        // Only the first `len` bytes of a write are data: the rest of the argument is not the
        // access's, and an access that carried it would differ from the same access re-encoded.
        let access = |with_data: bool| {
            let len = small(a[1]).min(8);
            let mut data = [0; 8];
            if with_data {
                data[..len as usize].copy_from_slice(&a[2].to_le_bytes()[..len as usize]);
            }
            MmioAccess { addr: a[0], len, data }
        };
        match r.kind {
            MMIO_READ => VcpuExit::MmioRead(access(false)),
            MMIO_WRITE => VcpuExit::MmioWrite(access(true)),
            SYSTEM_EVENT => {
                VcpuExit::SystemEvent { kind: SystemEventKind(small(a[0])), data: r.data.into_vec() }
            }
            DEBUG => VcpuExit::Debug(DebugExit { esr: a[0], far: a[1], pc: a[2] }),
            INTERNAL_ERROR => VcpuExit::InternalError { suberror: small(a[0]), data: r.data.into_vec() },
            FAIL_ENTRY => VcpuExit::FailEntry { reason: a[0], cpu: small(a[1]) },
            ARM_NISV => VcpuExit::ArmNisv { esr_iss: a[0], fault_ipa: a[1] },
            INTERRUPTED => VcpuExit::Interrupted,
            BACKEND_SPECIFIC => VcpuExit::BackendSpecific { reason: small(a[0]) },
            kind => VcpuExit::Unknown { kind, args: a },
        }
    }
}

/// The kinds of debug events, numbered.
pub mod debug_event_kind {
    /// A host hardware breakpoint: `[addr]`.
    pub const HW_BREAKPOINT: u32 = 1;
    /// A host software breakpoint: `[addr]`.
    pub const SW_BREAKPOINT: u32 = 2;
    /// A host watchpoint: `[watch addr, watch len, watch kind, accessed]`.
    pub const WATCHPOINT: u32 = 3;
    /// A requested single step completed.
    pub const STEP: u32 = 4;
    /// The guest's own debug exception.
    pub const GUEST: u32 = 5;
}

/// What a debug exit means, as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugEventRecord {
    /// [`debug_event_kind`].
    pub kind: u32,
    /// The kind's arguments.
    pub args: [u64; 4],
}

impl From<DebugEvent> for DebugEventRecord {
    fn from(e: DebugEvent) -> Self {
        use debug_event_kind::*;
        let (kind, args) = match e {
            DebugEvent::HwBreakpoint { addr } => (HW_BREAKPOINT, [addr, 0, 0, 0]),
            DebugEvent::SwBreakpoint { addr } => (SW_BREAKPOINT, [addr, 0, 0, 0]),
            DebugEvent::Watchpoint { watch, accessed } => {
                (WATCHPOINT, [watch.addr, watch.len, u64::from(watch.kind.0), accessed])
            }
            DebugEvent::Step => (STEP, [0; 4]),
            DebugEvent::Guest => (GUEST, [0; 4]),
            DebugEvent::Unknown { kind, args } => (kind, args),
        };
        Self { kind, args }
    }
}

impl From<DebugEventRecord> for DebugEvent {
    fn from(r: DebugEventRecord) -> Self {
        use debug_event_kind::*;
        let a = r.args;
        match r.kind {
            HW_BREAKPOINT => DebugEvent::HwBreakpoint { addr: a[0] },
            SW_BREAKPOINT => DebugEvent::SwBreakpoint { addr: a[0] },
            WATCHPOINT => DebugEvent::Watchpoint {
                watch: Watchpoint {
                    addr: a[0],
                    len: a[1],
                    kind: WatchKind(u32::try_from(a[2]).unwrap_or(0)),
                },
                accessed: a[3],
            },
            STEP => DebugEvent::Step,
            GUEST => DebugEvent::Guest,
            kind => DebugEvent::Unknown { kind, args: a },
        }
    }
}

/// The flags of a [`DebugProgramRecord`].
pub mod debug_program_flags {
    /// BRK instructions trap to the host (software breakpoints are in use).
    pub const SW_BREAKPOINTS: u32 = 1;
    /// The hardware breakpoint and watchpoint registers are in use.
    pub const HARDWARE: u32 = 2;
    /// The vCPU single-steps.
    pub const SINGLE_STEP: u32 = 4;
}

/// What a debug pool has programmed for one vCPU, as it crosses the boundary (ABI 2.2).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct DebugProgramRecord {
    /// [`debug_program_flags`].
    pub flags: u32,
    /// The debug registers in use, by their ids.
    pub registers: RVec<RegValue>,
    /// The software breakpoints' addresses.
    pub sw_breakpoints: RVec<u64>,
}

impl From<&DebugProgram> for DebugProgramRecord {
    fn from(p: &DebugProgram) -> Self {
        use debug_program_flags::*;
        let flags = [
            (p.setup.sw_breakpoints, SW_BREAKPOINTS),
            (p.setup.hardware, HARDWARE),
            (p.setup.single_step, SINGLE_STEP),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |flags, (_, bit)| flags | bit);
        Self { flags, registers: p.registers().into(), sw_breakpoints: p.sw_breakpoints.clone().into() }
    }
}

impl From<&DebugProgramRecord> for DebugProgram {
    fn from(r: &DebugProgramRecord) -> Self {
        use crate::sysreg::{dbgbcr, dbgbvr, dbgwcr, dbgwvr};
        use debug_program_flags::*;
        let mut setup = crate::debug::DebugSetup {
            sw_breakpoints: r.flags & SW_BREAKPOINTS != 0,
            hardware: r.flags & HARDWARE != 0,
            single_step: r.flags & SINGLE_STEP != 0,
            ..Default::default()
        };
        for v in r.registers.iter() {
            for n in 0..crate::debug::MAX_DEBUG_REGS {
                let i = n as u8;
                let slot = if v.id == dbgbcr(i) {
                    &mut setup.bcr[n]
                } else if v.id == dbgbvr(i) {
                    &mut setup.bvr[n]
                } else if v.id == dbgwcr(i) {
                    &mut setup.wcr[n]
                } else if v.id == dbgwvr(i) {
                    &mut setup.wvr[n]
                } else {
                    continue;
                };
                *slot = v.value;
            }
        }
        DebugProgram { setup, sw_breakpoints: r.sw_breakpoints.to_vec() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_round_trip_and_unknown_kinds_stay_numbered() {
        let exits = [
            VcpuExit::MmioRead(MmioAccess { addr: 0x900_0000, len: 4, data: [0; 8] }),
            VcpuExit::MmioWrite(MmioAccess { addr: 0x900_0000, len: 2, data: [1, 2, 0, 0, 0, 0, 0, 0] }),
            VcpuExit::SystemEvent { kind: SystemEventKind::RESET, data: vec![1, 2] },
            VcpuExit::Debug(DebugExit { esr: 0xf200_0000, far: 0, pc: 0x4000_0000 }),
            VcpuExit::InternalError { suberror: 1, data: vec![7] },
            VcpuExit::FailEntry { reason: 3, cpu: 1 },
            VcpuExit::ArmNisv { esr_iss: 0x40, fault_ipa: 0x1000 },
            VcpuExit::Interrupted,
            VcpuExit::BackendSpecific { reason: 77 },
            VcpuExit::Unknown { kind: 4242, args: [1, 2, 3, 4, 5, 6] },
        ];
        for exit in exits {
            assert_eq!(VcpuExit::from(ExitRecord::from(exit.clone())), exit);
        }
        let newer = ExitRecord { kind: 99, args: [5; 6], data: RVec::new() };
        assert_eq!(VcpuExit::from(newer), VcpuExit::Unknown { kind: 99, args: [5; 6] });
    }

    #[test]
    fn an_mmio_write_keeps_only_its_len_bytes() {
        let record = ExitRecord::new(exit_kind::MMIO_WRITE, &[0x900_0000, 2, 0x1122_3344], RVec::new());
        let exit = VcpuExit::from(record);
        assert_eq!(
            exit,
            VcpuExit::MmioWrite(MmioAccess {
                addr: 0x900_0000,
                len: 2,
                data: [0x44, 0x33, 0, 0, 0, 0, 0, 0]
            })
        );
        assert_eq!(VcpuExit::from(ExitRecord::from(exit.clone())), exit, "the same exit after a round trip");
        let read = ExitRecord::new(exit_kind::MMIO_READ, &[0x900_0000, 4, 0xffff], RVec::new());
        assert_eq!(
            VcpuExit::from(read),
            VcpuExit::MmioRead(MmioAccess { addr: 0x900_0000, len: 4, data: [0; 8] })
        );
    }

    #[test]
    fn debug_events_round_trip() {
        let watch = Watchpoint { addr: 0x1000, len: 8, kind: WatchKind::WRITE };
        for e in [
            DebugEvent::HwBreakpoint { addr: 4 },
            DebugEvent::SwBreakpoint { addr: 8 },
            DebugEvent::Watchpoint { watch, accessed: 0x1004 },
            DebugEvent::Step,
            DebugEvent::Guest,
            DebugEvent::Unknown { kind: 50, args: [1, 2, 3, 4] },
        ] {
            assert_eq!(DebugEvent::from(DebugEventRecord::from(e)), e);
        }
    }

    #[test]
    fn probe_facts_round_trip_and_unknown_facts_are_ignored() {
        let mut info = ProbeInfo::unavailable("x");
        info.available = true;
        info.caps.max_vcpus = 512;
        info.caps.ipa_bits = 48;
        info.caps.vcpu_features = VcpuFeatures::SVE | VcpuFeatures::PSCI_0_2;
        info.caps.readonly_memory = true;
        info.caps.page_size = 4096;
        info.id.aa64dfr0 = 0x1030_5106;
        let mut record = ProbeRecord::from(&info);
        record.facts.push(Fact { id: 9999, value: 1 });
        assert_eq!(ProbeInfo::from(&record), info);
        // A fact an older plugin does not report reads as 0.
        record.facts.retain(|f| f.id != fact::PAGE_SIZE);
        assert_eq!(ProbeInfo::from(&record).caps.page_size, 0);
    }

    #[test]
    fn a_gic_with_its_round_trips_and_is_an_option_older_plugins_refuse() {
        let gic = GicConfig::virt_with_its(64);
        let record = GicConfigRecord::from(&gic);
        assert_eq!(
            record.options.as_slice(),
            &[ConfigOption { id: gic_option::ITS_BASE, value: 0x0808_0000 }]
        );
        assert_eq!(record.to_config(), Ok(gic));
        assert!(GicConfigRecord::from(&GicConfig::virt(32)).options.is_empty(), "no ITS, no option");
    }

    #[test]
    fn debug_programs_round_trip() {
        let mut setup = crate::debug::DebugSetup {
            sw_breakpoints: true,
            hardware: true,
            single_step: true,
            ..Default::default()
        };
        setup.bcr[0] = 0x1e7;
        setup.bvr[0] = 0x4000_1000;
        setup.wcr[0] = 0x1f7 | 0xff << 5;
        setup.wvr[0] = 0x4001_0000;
        let program = DebugProgram { setup, sw_breakpoints: vec![0x4000_2000] };
        let record = DebugProgramRecord::from(&program);
        assert_eq!(record.flags, 7);
        assert_eq!(record.registers.len(), 4);
        assert_eq!(DebugProgram::from(&record), program);
    }

    #[test]
    fn userspace_psci_is_an_option_older_plugins_refuse() {
        let config = VmConfig { ipa_bits: 0, userspace_psci: true };
        let record = VmConfigRecord::from(&config);
        assert_eq!(record.options.as_slice(), &[ConfigOption { id: vm_option::USERSPACE_PSCI, value: 1 }]);
        assert_eq!(record.to_config(), Ok(config));
        assert!(VmConfigRecord::from(&VmConfig::default()).options.is_empty(), "off: no option");
        let mut info = ProbeInfo::unavailable("x");
        info.caps.userspace_psci = true;
        assert!(ProbeInfo::from(&ProbeRecord::from(&info)).caps.userspace_psci);
    }

    #[test]
    fn unknown_options_and_flags_are_refused_by_name() {
        let forty = VmConfig { ipa_bits: 40, ..VmConfig::default() };
        let mut vm = VmConfigRecord::from(&forty);
        assert_eq!(vm.to_config(), Ok(forty));
        vm.options.push(ConfigOption { id: 17, value: 1 });
        let e = vm.to_config().unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::UNSUPPORTED);
        assert!(e.message.contains("VM option 17"), "{e}");
        let mut region = MemoryRegionRecord::from(&MemoryRegion {
            guest_addr: 0x4000_0000,
            size: 0x1000,
            host_addr: 0x7000_0000,
            read_only: true,
        });
        assert!(region.to_region().is_ok_and(|r| r.read_only));
        region.flags |= 0x80;
        assert!(region.to_region().unwrap_err().message.contains("0x80"));
    }
}
