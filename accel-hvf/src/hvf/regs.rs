//! The thin match from the register numbers of [`accel_kit::hvf_regs`] (checked against Apple's
//! headers on every host) onto `applevisor`'s enums.

use accel_api::RegId;
use applevisor::prelude::{FeatureReg, GicRedistributorReg, Reg, SimdFpReg, SysReg};

/// Builds `fn $name(u32) -> Option<$ty>` over the listed variants of a C enum.
macro_rules! by_number {
    ($(#[$doc:meta])* $name:ident -> $ty:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        pub fn $name(number: u32) -> Option<$ty> {
            [$($ty::$variant),+].into_iter().find(|v| *v as u32 == number)
        }
    };
}

by_number! {
    /// The `hv_reg_t` numbered `number`.
    reg -> Reg {
        X0, X1, X2, X3, X4, X5, X6, X7, X8, X9, X10, X11, X12, X13, X14, X15, X16, X17, X18, X19,
        X20, X21, X22, X23, X24, X25, X26, X27, X28, X29, X30, PC, FPCR, FPSR, CPSR,
    }
}

by_number! {
    /// The `hv_simd_fp_reg_t` numbered `number`.
    simd_fp_reg -> SimdFpReg {
        Q0, Q1, Q2, Q3, Q4, Q5, Q6, Q7, Q8, Q9, Q10, Q11, Q12, Q13, Q14, Q15, Q16, Q17, Q18, Q19,
        Q20, Q21, Q22, Q23, Q24, Q25, Q26, Q27, Q28, Q29, Q30, Q31,
    }
}

by_number! {
    /// The `hv_feature_reg_t` numbered `number`.
    feature_reg -> FeatureReg {
        ID_AA64DFR0_EL1, ID_AA64DFR1_EL1, ID_AA64ISAR0_EL1, ID_AA64ISAR1_EL1, ID_AA64MMFR0_EL1,
        ID_AA64MMFR1_EL1, ID_AA64MMFR2_EL1, ID_AA64PFR0_EL1, ID_AA64PFR1_EL1, CTR_EL0, CLIDR_EL1,
        DCZID_EL0,
    }
}

by_number! {
    /// The EL1 and EL0 `hv_sys_reg_t` numbered `number` (its encoding).
    sys_reg_by_encoding -> SysReg {
        DBGBVR0_EL1, DBGBCR0_EL1, DBGWVR0_EL1, DBGWCR0_EL1, DBGBVR1_EL1, DBGBCR1_EL1, DBGWVR1_EL1,
        DBGWCR1_EL1, MDCCINT_EL1, MDSCR_EL1, DBGBVR2_EL1, DBGBCR2_EL1, DBGWVR2_EL1, DBGWCR2_EL1,
        DBGBVR3_EL1, DBGBCR3_EL1, DBGWVR3_EL1, DBGWCR3_EL1, DBGBVR4_EL1, DBGBCR4_EL1, DBGWVR4_EL1,
        DBGWCR4_EL1, DBGBVR5_EL1, DBGBCR5_EL1, DBGWVR5_EL1, DBGWCR5_EL1, DBGBVR6_EL1, DBGBCR6_EL1,
        DBGWVR6_EL1, DBGWCR6_EL1, DBGBVR7_EL1, DBGBCR7_EL1, DBGWVR7_EL1, DBGWCR7_EL1, DBGBVR8_EL1,
        DBGBCR8_EL1, DBGWVR8_EL1, DBGWCR8_EL1, DBGBVR9_EL1, DBGBCR9_EL1, DBGWVR9_EL1, DBGWCR9_EL1,
        DBGBVR10_EL1, DBGBCR10_EL1, DBGWVR10_EL1, DBGWCR10_EL1, DBGBVR11_EL1, DBGBCR11_EL1,
        DBGWVR11_EL1, DBGWCR11_EL1, DBGBVR12_EL1, DBGBCR12_EL1, DBGWVR12_EL1, DBGWCR12_EL1,
        DBGBVR13_EL1, DBGBCR13_EL1, DBGWVR13_EL1, DBGWCR13_EL1, DBGBVR14_EL1, DBGBCR14_EL1,
        DBGWVR14_EL1, DBGWCR14_EL1, DBGBVR15_EL1, DBGBCR15_EL1, DBGWVR15_EL1, DBGWCR15_EL1,
        MIDR_EL1, MPIDR_EL1, ID_AA64PFR0_EL1, ID_AA64PFR1_EL1, ID_AA64DFR0_EL1, ID_AA64DFR1_EL1,
        ID_AA64ISAR0_EL1, ID_AA64ISAR1_EL1, ID_AA64MMFR0_EL1, ID_AA64MMFR1_EL1, ID_AA64MMFR2_EL1,
        SCTLR_EL1, CPACR_EL1, ACTLR_EL1, TTBR0_EL1, TTBR1_EL1, TCR_EL1, APIAKEYLO_EL1,
        APIAKEYHI_EL1, APIBKEYLO_EL1, APIBKEYHI_EL1, APDAKEYLO_EL1, APDAKEYHI_EL1, APDBKEYLO_EL1,
        APDBKEYHI_EL1, APGAKEYLO_EL1, APGAKEYHI_EL1, SPSR_EL1, ELR_EL1, SP_EL0, AFSR0_EL1,
        AFSR1_EL1, ESR_EL1, FAR_EL1, PAR_EL1, MAIR_EL1, AMAIR_EL1, VBAR_EL1, CONTEXTIDR_EL1,
        TPIDR_EL1, CNTKCTL_EL1, CSSELR_EL1, TPIDR_EL0, TPIDRRO_EL0, CNTV_CTL_EL0, CNTV_CVAL_EL0,
        SP_EL1,
    }
}

by_number! {
    /// The `hv_gic_redistributor_reg_t` numbered `number` (of those the backend writes).
    redistributor_reg -> GicRedistributorReg { ISPENDR0, ICPENDR0 }
}

/// The `hv_sys_reg_t` of a system register id.
pub fn sys_reg(id: RegId) -> Option<SysReg> {
    id.encoding().and_then(|e| sys_reg_by_encoding(u32::from(e)))
}
