//! System registers in the shared model: typed register ids, names, values, classes and the
//! put level each register needs.
//!
//! An id is the architectural encoding op0/op1/CRn/CRm/op2 (Arm ARM, "System register
//! encodings"), packed as `op0 << 14 | op1 << 11 | CRn << 7 | CRm << 3 | op2`: the low 16 bits of
//! KVM's `ARM64_SYS_REG` and the value of HVF's `hv_sys_reg_t`. Registers that only exist in a
//! hypervisor's interface get ids in spaces of their own: firmware (PSCI/SMCCC) registers, the
//! demultiplexed CCSIDR_EL1 values, and backend-specific registers passed through raw. The core
//! registers have ids too, so that a read by id (ABI 2.3) can name them beside system registers.

use std::borrow::Cow;

use abi_stable::StableAbi;

use crate::regs::{CoreReg, PutLevel, SPSR_BANKS};

/// A register id: an address space in the top byte, the register within it in the rest.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegId(pub u64);

/// The spaces of [`RegId`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegSpace {
    /// An architectural system register, by encoding.
    Sys,
    /// A hypervisor firmware register (KVM: PSCI version, SMCCC workaround and feature registers).
    Firmware,
    /// CCSIDR_EL1 as selected by a CSSELR_EL1 value.
    Ccsidr,
    /// A backend-specific register, by the backend's own id.
    Raw,
    /// A core register (X0–X30, SP_EL0, SP_EL1, PC, PSTATE, ELR_EL1, the SPSR banks), by its
    /// place in [`CoreReg::all`].
    Core,
    /// Unknown space (from a newer API).
    Unknown(u8),
}

const SPACE_SHIFT: u32 = 56;
const SPACE_SYS: u64 = 0;
const SPACE_FIRMWARE: u64 = 1;
const SPACE_CCSIDR: u64 = 2;
const SPACE_CORE: u64 = 3;
const SPACE_RAW: u64 = 0xff;
const INDEX_MASK: u64 = (1 << SPACE_SHIFT) - 1;

impl RegId {
    /// The system register with encoding op0, op1, CRn, CRm, op2.
    pub const fn sys(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> Self {
        Self(
            ((op0 as u64 & 3) << 14)
                | ((op1 as u64 & 7) << 11)
                | ((crn as u64 & 15) << 7)
                | ((crm as u64 & 15) << 3)
                | (op2 as u64 & 7),
        )
    }

    /// A system register from its packed 16-bit encoding.
    pub const fn from_encoding(encoding: u16) -> Self {
        Self(encoding as u64)
    }

    /// Firmware register `index`: for KVM, the group and index bits of its `KVM_REG_ARM_FW` or
    /// `KVM_REG_ARM_FW_FEAT_BMAP` id (for example `0x14_0000`, the PSCI version).
    pub const fn firmware(index: u64) -> Self {
        Self(SPACE_FIRMWARE << SPACE_SHIFT | (index & INDEX_MASK))
    }

    /// CCSIDR_EL1 for the cache selected by CSSELR_EL1 = `csselr`.
    pub const fn ccsidr(csselr: u64) -> Self {
        Self(SPACE_CCSIDR << SPACE_SHIFT | (csselr & INDEX_MASK))
    }

    /// Core register `reg`.
    pub const fn core(reg: CoreReg) -> Self {
        let index = match reg {
            CoreReg::X(n) => n as u64,
            CoreReg::SpEl0 => 31,
            CoreReg::SpEl1 => 32,
            CoreReg::Pc => 33,
            CoreReg::Pstate => 34,
            CoreReg::ElrEl1 => 35,
            CoreReg::Spsr(n) => 36 + n as u64,
        };
        Self(SPACE_CORE << SPACE_SHIFT | index)
    }

    /// The core register this id names, if it names one.
    pub fn core_reg(self) -> Option<CoreReg> {
        if self.space() != RegSpace::Core {
            return None;
        }
        match self.index() {
            n @ 0..=30 => Some(CoreReg::X(n as u8)),
            31 => Some(CoreReg::SpEl0),
            32 => Some(CoreReg::SpEl1),
            33 => Some(CoreReg::Pc),
            34 => Some(CoreReg::Pstate),
            35 => Some(CoreReg::ElrEl1),
            n if n < 36 + SPSR_BANKS as u64 => Some(CoreReg::Spsr((n - 36) as u8)),
            _ => None,
        }
    }

    /// A backend-specific register.
    pub const fn raw(backend_id: u64) -> Self {
        Self(SPACE_RAW << SPACE_SHIFT | (backend_id & INDEX_MASK))
    }

    /// The id's space.
    pub fn space(self) -> RegSpace {
        match self.0 >> SPACE_SHIFT {
            SPACE_SYS => RegSpace::Sys,
            SPACE_FIRMWARE => RegSpace::Firmware,
            SPACE_CCSIDR => RegSpace::Ccsidr,
            SPACE_CORE => RegSpace::Core,
            SPACE_RAW => RegSpace::Raw,
            other => RegSpace::Unknown(other as u8),
        }
    }

    /// The index within the space.
    pub fn index(self) -> u64 {
        self.0 & INDEX_MASK
    }

    /// The packed encoding, for an architectural system register.
    pub fn encoding(self) -> Option<u16> {
        (self.space() == RegSpace::Sys && self.0 <= 0xffff).then_some(self.0 as u16)
    }

    /// op0, op1, CRn, CRm, op2 of an architectural system register.
    pub fn fields(self) -> Option<(u8, u8, u8, u8, u8)> {
        self.encoding().map(|e| {
            (
                ((e >> 14) & 3) as u8,
                ((e >> 11) & 7) as u8,
                ((e >> 7) & 15) as u8,
                ((e >> 3) & 15) as u8,
                (e & 7) as u8,
            )
        })
    }

    /// The register's class.
    pub fn class(self) -> RegClass {
        match self.space() {
            RegSpace::Sys if TIMER_REGS.contains(&self) => RegClass::TIMER,
            RegSpace::Sys => RegClass::SYS,
            RegSpace::Firmware => RegClass::FIRMWARE,
            RegSpace::Ccsidr => RegClass::CCSIDR,
            RegSpace::Core => RegClass::CORE,
            RegSpace::Raw | RegSpace::Unknown(_) => RegClass::RAW,
        }
    }

    /// The lowest put level at which the register is written: the counters only at
    /// [`PutLevel::FULL`], since writing them moves the guest's time.
    pub fn put_level(self) -> PutLevel {
        if self == CNTVCT_EL0 || self == CNTPCT_EL0 {
            PutLevel::FULL
        } else {
            PutLevel::RUNTIME
        }
    }

    /// The names of the numbered register families: `DBGBVR<n>_EL1`, `DBGBCR<n>_EL1`,
    /// `DBGWVR<n>_EL1` and `DBGWCR<n>_EL1` (n = CRm), `PMEVCNTR<n>_EL0` and `PMEVTYPER<n>_EL0`
    /// (n = CRm[1:0]:op2, below 31).
    fn numbered_name(self) -> Option<String> {
        let (op0, op1, crn, crm, op2) = self.fields()?;
        match (op0, op1, crn, crm, op2) {
            (2, 0, 0, n, 4) => Some(format!("DBGBVR{n}_EL1")),
            (2, 0, 0, n, 5) => Some(format!("DBGBCR{n}_EL1")),
            (2, 0, 0, n, 6) => Some(format!("DBGWVR{n}_EL1")),
            (2, 0, 0, n, 7) => Some(format!("DBGWCR{n}_EL1")),
            (3, 3, 14, 8..=11, _) => Some(format!("PMEVCNTR{}_EL0", (crm & 3) * 8 + op2)),
            (3, 3, 14, 12..=15, _) if (crm & 3) * 8 + op2 < 31 => {
                Some(format!("PMEVTYPER{}_EL0", (crm & 3) * 8 + op2))
            }
            _ => None,
        }
    }

    /// The Arm ARM name, or the generic `S<op0>_<op1>_C<n>_C<m>_<op2>` form the assemblers
    /// accept; non-architectural registers get descriptive names.
    pub fn name(self) -> Cow<'static, str> {
        if let Some((_, name)) = NAMES.iter().find(|(id, _)| *id == self) {
            return Cow::Borrowed(name);
        }
        if let Some(name) = self.numbered_name() {
            return Cow::Owned(name);
        }
        match (self.space(), self.fields()) {
            (RegSpace::Sys, Some((op0, op1, crn, crm, op2))) => {
                Cow::Owned(format!("S{op0}_{op1}_C{crn}_C{crm}_{op2}"))
            }
            (RegSpace::Firmware, _) => Cow::Owned(match self.index() {
                0x14_0000 => "firmware PSCI_VERSION".to_string(),
                0x14_0001 => "firmware SMCCC_ARCH_WORKAROUND_1".to_string(),
                0x14_0002 => "firmware SMCCC_ARCH_WORKAROUND_2".to_string(),
                0x14_0003 => "firmware SMCCC_ARCH_WORKAROUND_3".to_string(),
                0x16_0000 => "firmware STD_BMAP".to_string(),
                0x16_0001 => "firmware STD_HYP_BMAP".to_string(),
                0x16_0002 => "firmware VENDOR_HYP_BMAP".to_string(),
                i => format!("firmware register {i:#x}"),
            }),
            (RegSpace::Ccsidr, _) => Cow::Owned(format!("CCSIDR_EL1[CSSELR={:#x}]", self.index())),
            (RegSpace::Raw, _) => Cow::Owned(format!("backend register {:#x}", self.index())),
            (RegSpace::Core, _) => match self.core_reg() {
                Some(reg) => Cow::Owned(reg.name()),
                None => Cow::Owned(format!("core register {:#x}", self.index())),
            },
            _ => Cow::Owned(format!("register {:#x}", self.0)),
        }
    }
}

impl std::fmt::Debug for RegId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl std::fmt::Display for RegId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

crate::numbered! {
    /// A class of registers synced together.
    #[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct RegClass(u32) {
        /// Architectural system registers other than the generic timer's.
        SYS = 1 => "sys",
        /// The virtual and physical timer registers, counters included.
        TIMER = 2 => "timer",
        /// Hypervisor firmware registers.
        FIRMWARE = 3 => "firmware",
        /// Demultiplexed CCSIDR_EL1 values.
        CCSIDR = 4 => "ccsidr",
        /// Backend-specific registers.
        RAW = 5 => "raw",
        /// The core registers, named by id in a read by id (ABI 2.3). Not a class that
        /// `get_regs` reads: the core registers come whole from `get_core`.
        CORE = 6 => "core",
    }
}

impl RegClass {
    /// Every class that `get_regs` reads (all above but [`RegClass::CORE`]).
    pub const ALL: [Self; 5] = [Self::SYS, Self::TIMER, Self::FIRMWARE, Self::CCSIDR, Self::RAW];
}

/// One register's value.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegValue {
    /// The register.
    pub id: RegId,
    /// Its value (32-bit registers in the low half).
    pub value: u64,
}

macro_rules! sysregs {
    ($($name:ident = ($op0:literal, $op1:literal, $crn:literal, $crm:literal, $op2:literal);)*) => {
        $(
            #[doc = concat!("`", stringify!($name), "`.")]
            pub const $name: RegId = RegId::sys($op0, $op1, $crn, $crm, $op2);
        )*
        const NAMES: &[(RegId, &str)] = &[$(($name, stringify!($name)),)*];
    };
}

sysregs! {
    MIDR_EL1 = (3, 0, 0, 0, 0);
    MPIDR_EL1 = (3, 0, 0, 0, 5);
    REVIDR_EL1 = (3, 0, 0, 0, 6);
    ID_PFR0_EL1 = (3, 0, 0, 1, 0);
    ID_PFR1_EL1 = (3, 0, 0, 1, 1);
    ID_DFR0_EL1 = (3, 0, 0, 1, 2);
    ID_AFR0_EL1 = (3, 0, 0, 1, 3);
    ID_MMFR0_EL1 = (3, 0, 0, 1, 4);
    ID_MMFR1_EL1 = (3, 0, 0, 1, 5);
    ID_MMFR2_EL1 = (3, 0, 0, 1, 6);
    ID_MMFR3_EL1 = (3, 0, 0, 1, 7);
    ID_ISAR0_EL1 = (3, 0, 0, 2, 0);
    ID_ISAR1_EL1 = (3, 0, 0, 2, 1);
    ID_ISAR2_EL1 = (3, 0, 0, 2, 2);
    ID_ISAR3_EL1 = (3, 0, 0, 2, 3);
    ID_ISAR4_EL1 = (3, 0, 0, 2, 4);
    ID_ISAR5_EL1 = (3, 0, 0, 2, 5);
    ID_MMFR4_EL1 = (3, 0, 0, 2, 6);
    ID_ISAR6_EL1 = (3, 0, 0, 2, 7);
    MVFR0_EL1 = (3, 0, 0, 3, 0);
    MVFR1_EL1 = (3, 0, 0, 3, 1);
    MVFR2_EL1 = (3, 0, 0, 3, 2);
    ID_PFR2_EL1 = (3, 0, 0, 3, 4);
    ID_DFR1_EL1 = (3, 0, 0, 3, 5);
    ID_MMFR5_EL1 = (3, 0, 0, 3, 6);
    ID_AA64PFR0_EL1 = (3, 0, 0, 4, 0);
    ID_AA64PFR1_EL1 = (3, 0, 0, 4, 1);
    ID_AA64PFR2_EL1 = (3, 0, 0, 4, 2);
    ID_AA64ZFR0_EL1 = (3, 0, 0, 4, 4);
    ID_AA64SMFR0_EL1 = (3, 0, 0, 4, 5);
    ID_AA64DFR0_EL1 = (3, 0, 0, 5, 0);
    ID_AA64DFR1_EL1 = (3, 0, 0, 5, 1);
    ID_AA64AFR0_EL1 = (3, 0, 0, 5, 4);
    ID_AA64AFR1_EL1 = (3, 0, 0, 5, 5);
    ID_AA64ISAR0_EL1 = (3, 0, 0, 6, 0);
    ID_AA64ISAR1_EL1 = (3, 0, 0, 6, 1);
    ID_AA64ISAR2_EL1 = (3, 0, 0, 6, 2);
    ID_AA64MMFR0_EL1 = (3, 0, 0, 7, 0);
    ID_AA64MMFR1_EL1 = (3, 0, 0, 7, 1);
    ID_AA64MMFR2_EL1 = (3, 0, 0, 7, 2);
    ID_AA64MMFR3_EL1 = (3, 0, 0, 7, 3);
    ID_AA64MMFR4_EL1 = (3, 0, 0, 7, 4);
    SCTLR_EL1 = (3, 0, 1, 0, 0);
    ACTLR_EL1 = (3, 0, 1, 0, 1);
    CPACR_EL1 = (3, 0, 1, 0, 2);
    ZCR_EL1 = (3, 0, 1, 2, 0);
    TTBR0_EL1 = (3, 0, 2, 0, 0);
    TTBR1_EL1 = (3, 0, 2, 0, 1);
    TCR_EL1 = (3, 0, 2, 0, 2);
    APIAKEYLO_EL1 = (3, 0, 2, 1, 0);
    APIAKEYHI_EL1 = (3, 0, 2, 1, 1);
    APIBKEYLO_EL1 = (3, 0, 2, 1, 2);
    APIBKEYHI_EL1 = (3, 0, 2, 1, 3);
    APDAKEYLO_EL1 = (3, 0, 2, 2, 0);
    APDAKEYHI_EL1 = (3, 0, 2, 2, 1);
    APDBKEYLO_EL1 = (3, 0, 2, 2, 2);
    APDBKEYHI_EL1 = (3, 0, 2, 2, 3);
    APGAKEYLO_EL1 = (3, 0, 2, 3, 0);
    APGAKEYHI_EL1 = (3, 0, 2, 3, 1);
    SPSR_EL1 = (3, 0, 4, 0, 0);
    ELR_EL1 = (3, 0, 4, 0, 1);
    SP_EL0 = (3, 0, 4, 1, 0);
    AFSR0_EL1 = (3, 0, 5, 1, 0);
    AFSR1_EL1 = (3, 0, 5, 1, 1);
    ESR_EL1 = (3, 0, 5, 2, 0);
    FAR_EL1 = (3, 0, 6, 0, 0);
    PAR_EL1 = (3, 0, 7, 4, 0);
    MAIR_EL1 = (3, 0, 10, 2, 0);
    AMAIR_EL1 = (3, 0, 10, 3, 0);
    VBAR_EL1 = (3, 0, 12, 0, 0);
    CONTEXTIDR_EL1 = (3, 0, 13, 0, 1);
    TPIDR_EL1 = (3, 0, 13, 0, 4);
    CNTKCTL_EL1 = (3, 0, 14, 1, 0);
    CCSIDR_EL1 = (3, 1, 0, 0, 0);
    CLIDR_EL1 = (3, 1, 0, 0, 1);
    CSSELR_EL1 = (3, 2, 0, 0, 0);
    CTR_EL0 = (3, 3, 0, 0, 1);
    DCZID_EL0 = (3, 3, 0, 0, 7);
    FPCR = (3, 3, 4, 4, 0);
    FPSR = (3, 3, 4, 4, 1);
    TPIDR_EL0 = (3, 3, 13, 0, 2);
    TPIDRRO_EL0 = (3, 3, 13, 0, 3);
    CNTFRQ_EL0 = (3, 3, 14, 0, 0);
    CNTPCT_EL0 = (3, 3, 14, 0, 1);
    CNTVCT_EL0 = (3, 3, 14, 0, 2);
    CNTP_TVAL_EL0 = (3, 3, 14, 2, 0);
    CNTP_CTL_EL0 = (3, 3, 14, 2, 1);
    CNTP_CVAL_EL0 = (3, 3, 14, 2, 2);
    CNTV_TVAL_EL0 = (3, 3, 14, 3, 0);
    CNTV_CTL_EL0 = (3, 3, 14, 3, 1);
    CNTV_CVAL_EL0 = (3, 3, 14, 3, 2);
    PMCR_EL0 = (3, 3, 9, 12, 0);
    PMCNTENSET_EL0 = (3, 3, 9, 12, 1);
    PMCCNTR_EL0 = (3, 3, 9, 13, 0);
    PMUSERENR_EL0 = (3, 3, 9, 14, 0);
    PMCCFILTR_EL0 = (3, 3, 14, 15, 7);
    AIDR_EL1 = (3, 1, 0, 0, 7);
    ID_AA64FPFR0_EL1 = (3, 0, 0, 4, 7);
    ID_AA64DFR2_EL1 = (3, 0, 0, 5, 2);
    ID_AA64ISAR3_EL1 = (3, 0, 0, 6, 3);
    TCR2_EL1 = (3, 0, 2, 0, 3);
    PIRE0_EL1 = (3, 0, 10, 2, 2);
    PIR_EL1 = (3, 0, 10, 2, 3);
    DISR_EL1 = (3, 0, 12, 1, 1);
    PMCNTENCLR_EL0 = (3, 3, 9, 12, 2);
    PMOVSCLR_EL0 = (3, 3, 9, 12, 3);
    PMSWINC_EL0 = (3, 3, 9, 12, 4);
    PMSELR_EL0 = (3, 3, 9, 12, 5);
    PMCEID0_EL0 = (3, 3, 9, 12, 6);
    PMCEID1_EL0 = (3, 3, 9, 12, 7);
    PMXEVTYPER_EL0 = (3, 3, 9, 13, 1);
    PMXEVCNTR_EL0 = (3, 3, 9, 13, 2);
    PMOVSSET_EL0 = (3, 3, 9, 14, 3);
    PMINTENSET_EL1 = (3, 0, 9, 14, 1);
    PMINTENCLR_EL1 = (3, 0, 9, 14, 2);
    PMMIR_EL1 = (3, 0, 9, 14, 6);
    DACR32_EL2 = (3, 4, 3, 0, 0);
    IFSR32_EL2 = (3, 4, 5, 0, 1);
    FPEXC32_EL2 = (3, 4, 5, 3, 0);
    MDSCR_EL1 = (2, 0, 0, 2, 2);
    MDRAR_EL1 = (2, 0, 1, 0, 0);
    MDCCINT_EL1 = (2, 0, 0, 2, 0);
    OSLAR_EL1 = (2, 0, 1, 0, 4);
    OSLSR_EL1 = (2, 0, 1, 1, 4);
    OSDLR_EL1 = (2, 0, 1, 3, 4);
    DBGPRCR_EL1 = (2, 0, 1, 4, 4);
    DBGCLAIMSET_EL1 = (2, 0, 7, 8, 6);
    DBGCLAIMCLR_EL1 = (2, 0, 7, 9, 6);
    DBGAUTHSTATUS_EL1 = (2, 0, 7, 14, 6);
    MDCCSR_EL0 = (2, 3, 0, 1, 0);
    DBGDTR_EL0 = (2, 3, 0, 4, 0);
    DBGDTRRX_EL0 = (2, 3, 0, 5, 0);
    DBGVCR32_EL2 = (2, 4, 0, 7, 0);
}

/// The PSCI version the firmware implements, as KVM's firmware register.
pub const FW_PSCI_VERSION: RegId = RegId::firmware(0x14_0000);

/// The generic timer's registers, in [`RegClass::TIMER`].
pub const TIMER_REGS: [RegId; 6] =
    [CNTV_CTL_EL0, CNTV_CVAL_EL0, CNTVCT_EL0, CNTP_CTL_EL0, CNTP_CVAL_EL0, CNTPCT_EL0];

/// `DBGBVR<n>_EL1`.
pub const fn dbgbvr(n: u8) -> RegId {
    RegId::sys(2, 0, 0, n & 15, 4)
}

/// `DBGBCR<n>_EL1`.
pub const fn dbgbcr(n: u8) -> RegId {
    RegId::sys(2, 0, 0, n & 15, 5)
}

/// `DBGWVR<n>_EL1`.
pub const fn dbgwvr(n: u8) -> RegId {
    RegId::sys(2, 0, 0, n & 15, 6)
}

/// `DBGWCR<n>_EL1`.
pub const fn dbgwcr(n: u8) -> RegId {
    RegId::sys(2, 0, 0, n & 15, 7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_families_and_unallocated_encodings_are_named() {
        assert_eq!(RegId::sys(2, 0, 0, 0, 4).name(), "DBGBVR0_EL1");
        assert_eq!(RegId::sys(2, 0, 0, 15, 7).name(), "DBGWCR15_EL1");
        assert_eq!(RegId::sys(3, 3, 14, 8, 0).name(), "PMEVCNTR0_EL0");
        assert_eq!(RegId::sys(3, 3, 14, 11, 6).name(), "PMEVCNTR30_EL0");
        assert_eq!(RegId::sys(3, 3, 14, 13, 2).name(), "PMEVTYPER10_EL0");
        assert_eq!(RegId::sys(3, 3, 14, 15, 7).name(), "PMCCFILTR_EL0");
        assert_eq!(AIDR_EL1.name(), "AIDR_EL1");
        assert_eq!(
            RegId::sys(3, 0, 0, 3, 3).name(),
            "S3_0_C0_C3_3",
            "unallocated ID space keeps its encoding"
        );
    }

    #[test]
    fn encodings_match_kvm_and_hvf() {
        // hv_sys_reg_t values from Hypervisor.framework's headers.
        assert_eq!(dbgbvr(0).encoding(), Some(0x8004));
        assert_eq!(SCTLR_EL1.encoding(), Some(0xc080));
        assert_eq!(TPIDR_EL0.encoding(), Some(0xde82));
        assert_eq!(MIDR_EL1.encoding(), Some(0xc000));
        assert_eq!(VBAR_EL1.encoding(), Some(0xc600));
        assert_eq!(ESR_EL1.fields(), Some((3, 0, 5, 2, 0)));
    }

    #[test]
    fn names_classes_and_spaces() {
        assert_eq!(ID_AA64PFR0_EL1.name(), "ID_AA64PFR0_EL1");
        assert_eq!(RegId::sys(3, 0, 15, 2, 7).name(), "S3_0_C15_C2_7");
        assert_eq!(dbgwcr(3).name(), "DBGWCR3_EL1");
        assert_eq!(FW_PSCI_VERSION.name(), "firmware PSCI_VERSION");
        assert_eq!(RegId::ccsidr(2).name(), "CCSIDR_EL1[CSSELR=0x2]");
        assert_eq!(RegId::ccsidr(2).space(), RegSpace::Ccsidr);
        assert_eq!(RegId::ccsidr(2).encoding(), None);
        assert_eq!(CNTVCT_EL0.class(), RegClass::TIMER);
        assert_eq!(SCTLR_EL1.class(), RegClass::SYS);
        assert_eq!(RegId::firmware(1).class(), RegClass::FIRMWARE);
        assert_eq!(RegId::raw(0x6030_0000_0016_0000).space(), RegSpace::Raw);
    }
}
