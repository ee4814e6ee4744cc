//! What a caller asks of a backend (VM and vCPU configuration, memory regions) and what a probe
//! tells about it.

use abi_stable::StableAbi;

use crate::idregs::IdRegisters;

/// A probe's answer: whether the backend can run here, and its headline capabilities. It crosses
/// the boundary as a [`ProbeRecord`](crate::abi::ProbeRecord).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeInfo {
    /// True when VMs can be created.
    pub available: bool,
    /// Why not, when `available` is false; otherwise a short description of the host.
    pub reason: String,
    /// The backend's headline capabilities. All zero when unavailable.
    pub caps: Capabilities,
    /// The host CPU's ID registers as guests see them by default. All zero when unavailable.
    pub id: IdRegisters,
}

impl ProbeInfo {
    /// The answer of a backend that cannot run here, and why.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self { available: false, reason: reason.into(), caps: Default::default(), id: Default::default() }
    }
}

/// The capabilities a backend reports on probe: facts about what this host can do. Operations a
/// backend may lack are not flags here but extensions that it offers or not (`Vm::debug`,
/// `Vcpu::sve` …).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The largest number of vCPUs in one VM.
    pub max_vcpus: u32,
    /// The most VMs one process can hold at once; 0 when there is no fixed limit.
    pub max_vms: u32,
    /// The largest guest physical address size, in bits.
    pub ipa_bits: u32,
    /// The granule of guest memory regions, in bytes.
    pub page_size: u64,
    /// The number of hardware breakpoints usable for guest debug.
    pub hw_breakpoints: u32,
    /// The number of hardware watchpoints usable for guest debug.
    pub hw_watchpoints: u32,
    /// vCPU features the backend can enable.
    pub vcpu_features: VcpuFeatures,
    /// The SVE vector lengths the backend offers: bit `vq - 1` for a length of `vq * 128` bits.
    pub sve_vqs: u32,
    /// Read-only memory regions are supported.
    pub readonly_memory: bool,
    /// An injected SError can carry a syndrome (`VcpuEvents::serror_has_esr`).
    pub serror_esr: bool,
    /// External data aborts can be injected (`VcpuEvents::ext_dabt_pending`).
    pub ext_dabt: bool,
    /// PSCI SYSTEM_SUSPEND reaches the monitor as a suspend event.
    pub system_suspend: bool,
    /// The VM-wide counter offset can be set.
    pub counter_offset: bool,
    /// An in-kernel GICv3 can be created.
    pub gic_v3: bool,
    /// The in-kernel GICv3 can have an ITS (ABI 2.1).
    pub gic_its: bool,
    /// PSCI and SMCCC calls can be answered inside the plugin rather than by the hypervisor
    /// ([`VmConfig::userspace_psci`], ABI 2.2).
    pub userspace_psci: bool,
    /// The backend's own CPU target for vCPUs (KVM's preferred target; 0 where there is none).
    pub cpu_target: u32,
}

crate::numbered! {
    /// A set of vCPU features to enable at init, as a bit set.
    ///
    /// A newtype over `u64` so that later API versions can add features without breaking plugins.
    #[derive(StableAbi, Clone, Copy, Default, PartialEq, Eq, Hash)]
    pub struct VcpuFeatures(u64) {
        /// Start in the powered-off state (secondary CPUs waiting for PSCI CPU_ON).
        POWER_OFF = 1 << 0 => "power-off",
        /// AArch32 at EL1.
        EL1_32BIT = 1 << 1 => "el1-32bit",
        /// PSCI 0.2 or later, handled by the backend.
        PSCI_0_2 = 1 << 2 => "psci-0.2",
        /// The PMUv3 performance monitors.
        PMU_V3 = 1 << 3 => "pmu-v3",
        /// The Scalable Vector Extension.
        SVE = 1 << 4 => "sve",
        /// Pointer authentication, address keys.
        PTRAUTH_ADDRESS = 1 << 5 => "ptrauth-address",
        /// Pointer authentication, generic key.
        PTRAUTH_GENERIC = 1 << 6 => "ptrauth-generic",
    }
}

impl VcpuFeatures {
    /// No features.
    pub const NONE: Self = Self(0);

    /// True when every feature of `other` is in `self`.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The features of `self` not in `other`.
    pub fn difference(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// True when the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The names of the features in the set; unknown bits print as `bitN`.
    pub fn names(self) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = self.0;
        for &(f, name) in Self::NAMED {
            if self.contains(f) {
                out.push(name.to_string());
                rest &= !f.0;
            }
        }
        out.extend((0..64).filter(|b| rest & (1 << b) != 0).map(|b| format!("bit{b}")));
        out
    }

    /// Parses one feature name as printed by [`names`](Self::names).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMED.iter().find(|(_, n)| *n == name).map(|(f, _)| *f)
    }
}

impl std::ops::BitOr for VcpuFeatures {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for VcpuFeatures {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl std::fmt::Debug for VcpuFeatures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VcpuFeatures({})", self.names().join("|"))
    }
}

/// How to create a VM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmConfig {
    /// The guest physical address size in bits, or 0 for the backend's default.
    pub ipa_bits: u32,
    /// Answer the guest's PSCI and SMCCC calls inside the plugin, with the shared
    /// PSCI code of the backend kit (`accel_kit::psci`), instead of leaving them to the hypervisor (ABI 2.2). The exits and
    /// behaviour the host sees are the same either way. A backend that cannot is asked through
    /// [`Capabilities::userspace_psci`], and refuses the option as unsupported, by name.
    pub userspace_psci: bool,
}

/// How to create a vCPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuConfig {
    /// The vCPU's index in the VM, from 0.
    pub index: u32,
    /// Features to enable at init.
    pub features: VcpuFeatures,
    /// With SVE: the largest vector length, in quadwords (128 bits); every offered length up to
    /// it is enabled. 0 picks the largest offered.
    pub sve_max_vq: u32,
}

impl VcpuConfig {
    /// vCPU `index` with `features`, and the largest offered SVE vector length if SVE is one.
    pub fn new(index: u32, features: VcpuFeatures) -> Self {
        Self { index, features, sve_max_vq: 0 }
    }
}

/// A range of host memory mapped into the guest's physical address space.
///
/// The host owns the memory. It must stay mapped, at `host_addr`, until the region is removed or
/// the VM is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// The guest physical address of the first byte.
    pub guest_addr: u64,
    /// The size in bytes; a multiple of the host page size.
    pub size: u64,
    /// The host virtual address of the first byte.
    pub host_addr: u64,
    /// Guest writes fault to the monitor as MMIO writes instead of changing memory.
    pub read_only: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_names_round_trip() {
        let set = VcpuFeatures::PSCI_0_2 | VcpuFeatures::SVE | VcpuFeatures(1 << 40);
        assert_eq!(set.names(), vec!["psci-0.2", "sve", "bit40"]);
        assert_eq!(VcpuFeatures::from_name("pmu-v3"), Some(VcpuFeatures::PMU_V3));
        assert_eq!(VcpuFeatures::from_name("avx"), None);
    }

    #[test]
    fn feature_set_algebra() {
        let want = VcpuFeatures::PSCI_0_2 | VcpuFeatures::SVE;
        let have = VcpuFeatures::PSCI_0_2 | VcpuFeatures::POWER_OFF;
        assert!(!have.contains(want));
        assert_eq!(want.difference(have), VcpuFeatures::SVE);
        assert!(want.difference(want).is_empty());
    }
}
