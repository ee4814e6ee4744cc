//! Hypervisor.framework's register numbering as plain integers: where each register of the
//! shared model lives in `hv_reg_t`, `hv_simd_fp_reg_t`, `hv_sys_reg_t` and `hv_feature_reg_t`
//! (Apple's `Hypervisor/hv_vcpu_types.h`, macOS 15.0, without EL2).
//!
//! Kept here, as data, so that it is checked on every host: the tests compare each number with
//! the value in Apple's headers as the `applevisor-sys` crate exposes them. The HVF backend's
//! macOS-only layer only matches these numbers onto that crate's enums.
//!
//! An `hv_sys_reg_t` value is the architectural encoding, the same packing as
//! [`accel_api::RegId`]: op0 << 14 | op1 << 11 | CRn << 7 | CRm << 3 | op2.

use accel_api::{
    regs::{CoreReg, FpReg},
    sysreg::{self, RegId},
};

/// `hv_reg_t` of X0; Xn is `REG_X0 + n`.
pub const REG_X0: u32 = 0;
/// `hv_reg_t` of the PC.
pub const REG_PC: u32 = 31;
/// `hv_reg_t` of FPCR.
pub const REG_FPCR: u32 = 32;
/// `hv_reg_t` of FPSR.
pub const REG_FPSR: u32 = 33;
/// `hv_reg_t` of CPSR, HVF's name for PSTATE in SPSR format.
pub const REG_CPSR: u32 = 34;

/// SP_EL1, which only an EL2 register view names: op0 3, op1 4, CRn 4, CRm 1, op2 0.
pub const SP_EL1: RegId = RegId::sys(3, 4, 4, 1, 0);

/// The INTID of the EL1 virtual timer's PPI (`hv_gic_intid_t`'s `EL1_VIRTUAL_TIMER`).
pub const VTIMER_INTID: u32 = 27;

/// The redistributor's GICR_ISPENDR0 (SGI frame), as `hv_gic_redistributor_reg_t` numbers it.
pub const GICR_ISPENDR0: u32 = 0x1_0200;
/// The redistributor's GICR_ICPENDR0 (SGI frame).
pub const GICR_ICPENDR0: u32 = 0x1_0280;

/// The MPIDR_EL1 the backend gives vCPU `index`, as KVM assigns it: Aff0 from bits `[3:0]` of
/// the index, Aff1 from bits `[11:4]`, Aff2 from bits `[19:12]`, and bit 31 (RES1). HVF leaves
/// MPIDR_EL1 to the VMM, and the GIC's redistributors follow it.
pub fn mpidr(index: u32) -> u64 {
    let index = u64::from(index);
    1 << 31 | (index & 0xf) | ((index >> 4) & 0xff) << 8 | ((index >> 12) & 0xff) << 16
}

/// Where a core register of the shared model lives on HVF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoreLocation {
    /// A general register (`hv_reg_t`).
    Reg(u32),
    /// A system register (`hv_sys_reg_t`): SP_EL0, SP_EL1, ELR_EL1, SPSR_EL1.
    Sys(RegId),
    /// An AArch32 SPSR bank (abt, und, irq, fiq): HVF has none, since EL1 has no AArch32. It
    /// reads as zero; a put that would change it is refused.
    Absent,
}

/// Where `reg` lives on HVF.
pub fn core_location(reg: CoreReg) -> CoreLocation {
    match reg {
        CoreReg::X(n) if n < 31 => CoreLocation::Reg(REG_X0 + u32::from(n)),
        CoreReg::X(_) => CoreLocation::Absent,
        CoreReg::Pc => CoreLocation::Reg(REG_PC),
        CoreReg::Pstate => CoreLocation::Reg(REG_CPSR),
        CoreReg::SpEl0 => CoreLocation::Sys(sysreg::SP_EL0),
        CoreReg::SpEl1 => CoreLocation::Sys(SP_EL1),
        CoreReg::ElrEl1 => CoreLocation::Sys(sysreg::ELR_EL1),
        CoreReg::Spsr(0) => CoreLocation::Sys(sysreg::SPSR_EL1),
        CoreReg::Spsr(_) => CoreLocation::Absent,
    }
}

/// Where an FP/SIMD register of the shared model lives on HVF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FpLocation {
    /// Qn (`hv_simd_fp_reg_t`), 128 bits.
    Simd(u32),
    /// A general register (`hv_reg_t`): FPSR, FPCR.
    Reg(u32),
}

/// Where `reg` lives on HVF.
pub fn fp_location(reg: FpReg) -> FpLocation {
    match reg {
        FpReg::V(n) => FpLocation::Simd(u32::from(n)),
        FpReg::Fpsr => FpLocation::Reg(REG_FPSR),
        FpReg::Fpcr => FpLocation::Reg(REG_FPCR),
    }
}

/// `hv_feature_reg_t` values (an enumeration from 0) and the ID register each reads: what
/// `hv_vcpu_config_get_feature_reg` answers without a VM.
pub const FEATURE_REGS: [(u32, RegId); 12] = [
    (0, sysreg::ID_AA64DFR0_EL1),
    (1, sysreg::ID_AA64DFR1_EL1),
    (2, sysreg::ID_AA64ISAR0_EL1),
    (3, sysreg::ID_AA64ISAR1_EL1),
    (4, sysreg::ID_AA64MMFR0_EL1),
    (5, sysreg::ID_AA64MMFR1_EL1),
    (6, sysreg::ID_AA64MMFR2_EL1),
    (7, sysreg::ID_AA64PFR0_EL1),
    (8, sysreg::ID_AA64PFR1_EL1),
    (9, sysreg::CTR_EL0),
    (10, sysreg::CLIDR_EL1),
    (11, sysreg::DCZID_EL0),
];

/// The EL1 and EL0 system registers HVF exposes (macOS 15.0) that the shared model syncs in
/// [`RegClass::SYS`](accel_api::RegClass::SYS), in a stable order. Those the core registers hold
/// (SP_EL0, SP_EL1, ELR_EL1, SPSR_EL1), the timer's, and the debug registers are elsewhere.
pub const SYS_REGS: [RegId; 38] = [
    sysreg::MIDR_EL1,
    sysreg::MPIDR_EL1,
    sysreg::ID_AA64PFR0_EL1,
    sysreg::ID_AA64PFR1_EL1,
    sysreg::ID_AA64DFR0_EL1,
    sysreg::ID_AA64DFR1_EL1,
    sysreg::ID_AA64ISAR0_EL1,
    sysreg::ID_AA64ISAR1_EL1,
    sysreg::ID_AA64MMFR0_EL1,
    sysreg::ID_AA64MMFR1_EL1,
    sysreg::ID_AA64MMFR2_EL1,
    sysreg::SCTLR_EL1,
    sysreg::ACTLR_EL1,
    sysreg::CPACR_EL1,
    sysreg::TTBR0_EL1,
    sysreg::TTBR1_EL1,
    sysreg::TCR_EL1,
    sysreg::APIAKEYLO_EL1,
    sysreg::APIAKEYHI_EL1,
    sysreg::APIBKEYLO_EL1,
    sysreg::APIBKEYHI_EL1,
    sysreg::APDAKEYLO_EL1,
    sysreg::APDAKEYHI_EL1,
    sysreg::APDBKEYLO_EL1,
    sysreg::APDBKEYHI_EL1,
    sysreg::APGAKEYLO_EL1,
    sysreg::APGAKEYHI_EL1,
    sysreg::AFSR0_EL1,
    sysreg::AFSR1_EL1,
    sysreg::ESR_EL1,
    sysreg::FAR_EL1,
    sysreg::PAR_EL1,
    sysreg::MAIR_EL1,
    sysreg::AMAIR_EL1,
    sysreg::VBAR_EL1,
    sysreg::CONTEXTIDR_EL1,
    sysreg::TPIDR_EL1,
    sysreg::CNTKCTL_EL1,
];

/// The EL0 thread registers and CSSELR_EL1, also in [`RegClass::SYS`](accel_api::RegClass::SYS).
pub const SYS_REGS_EL0: [RegId; 3] = [sysreg::CSSELR_EL1, sysreg::TPIDR_EL0, sysreg::TPIDRRO_EL0];

/// The virtual timer's registers HVF exposes; CNTVCT_EL0 is the host counter less the vCPU's
/// vtimer offset. (The EL1 physical timer's registers are left out: HVF hands a guest's accesses
/// to them to the VMM, and macOS 15 names them with the EL2 registers of nested guests.)
pub const TIMER_REGS: [RegId; 2] = [sysreg::CNTV_CTL_EL0, sysreg::CNTV_CVAL_EL0];

/// The debug control registers HVF exposes besides the breakpoint and watchpoint registers.
pub const DEBUG_CONTROL_REGS: [RegId; 2] = [sysreg::MDCCINT_EL1, sysreg::MDSCR_EL1];

/// The debug registers of `breakpoints` breakpoints and `watchpoints` watchpoints:
/// `DBGBVR<n>_EL1`, `DBGBCR<n>_EL1`, then `DBGWVR<n>_EL1`, `DBGWCR<n>_EL1`.
pub fn debug_regs(breakpoints: u32, watchpoints: u32) -> Vec<RegId> {
    let b = (0..breakpoints.min(16) as u8).flat_map(|n| [sysreg::dbgbvr(n), sysreg::dbgbcr(n)]);
    let w = (0..watchpoints.min(16) as u8).flat_map(|n| [sysreg::dbgwvr(n), sysreg::dbgwcr(n)]);
    b.chain(w).collect()
}

#[cfg(test)]
mod tests {
    use applevisor_sys::{hv_feature_reg_t as F, hv_reg_t as R, hv_simd_fp_reg_t as Q, hv_sys_reg_t as S};

    use super::*;

    #[test]
    fn general_registers_match_hv_reg_t() {
        let x = [
            R::X0,
            R::X1,
            R::X2,
            R::X3,
            R::X4,
            R::X5,
            R::X6,
            R::X7,
            R::X8,
            R::X9,
            R::X10,
            R::X11,
            R::X12,
            R::X13,
            R::X14,
            R::X15,
            R::X16,
            R::X17,
            R::X18,
            R::X19,
            R::X20,
            R::X21,
            R::X22,
            R::X23,
            R::X24,
            R::X25,
            R::X26,
            R::X27,
            R::X28,
            R::X29,
            R::X30,
        ];
        for (n, reg) in x.iter().enumerate() {
            assert_eq!(core_location(CoreReg::X(n as u8)), CoreLocation::Reg(*reg as u32), "X{n}");
        }
        assert_eq!(core_location(CoreReg::Pc), CoreLocation::Reg(R::PC as u32));
        assert_eq!(core_location(CoreReg::Pstate), CoreLocation::Reg(R::CPSR as u32));
        assert_eq!(fp_location(FpReg::Fpcr), FpLocation::Reg(R::FPCR as u32));
        assert_eq!(fp_location(FpReg::Fpsr), FpLocation::Reg(R::FPSR as u32));
    }

    #[test]
    fn simd_registers_match_hv_simd_fp_reg_t() {
        let q = [
            Q::Q0,
            Q::Q1,
            Q::Q2,
            Q::Q3,
            Q::Q4,
            Q::Q5,
            Q::Q6,
            Q::Q7,
            Q::Q8,
            Q::Q9,
            Q::Q10,
            Q::Q11,
            Q::Q12,
            Q::Q13,
            Q::Q14,
            Q::Q15,
            Q::Q16,
            Q::Q17,
            Q::Q18,
            Q::Q19,
            Q::Q20,
            Q::Q21,
            Q::Q22,
            Q::Q23,
            Q::Q24,
            Q::Q25,
            Q::Q26,
            Q::Q27,
            Q::Q28,
            Q::Q29,
            Q::Q30,
            Q::Q31,
        ];
        for (n, reg) in q.iter().enumerate() {
            assert_eq!(fp_location(FpReg::V(n as u8)), FpLocation::Simd(*reg as u32), "V{n}");
        }
    }

    #[test]
    fn core_system_registers_match_hv_sys_reg_t() {
        assert_eq!(core_location(CoreReg::SpEl0), CoreLocation::Sys(RegId(S::SP_EL0 as u64)));
        assert_eq!(core_location(CoreReg::SpEl1), CoreLocation::Sys(RegId(S::SP_EL1 as u64)));
        assert_eq!(core_location(CoreReg::ElrEl1), CoreLocation::Sys(RegId(S::ELR_EL1 as u64)));
        assert_eq!(core_location(CoreReg::Spsr(0)), CoreLocation::Sys(RegId(S::SPSR_EL1 as u64)));
        for bank in 1..5 {
            assert_eq!(core_location(CoreReg::Spsr(bank)), CoreLocation::Absent);
        }
    }

    #[test]
    fn feature_registers_match_hv_feature_reg_t() {
        let apple = [
            (F::ID_AA64DFR0_EL1, S::ID_AA64DFR0_EL1),
            (F::ID_AA64DFR1_EL1, S::ID_AA64DFR1_EL1),
            (F::ID_AA64ISAR0_EL1, S::ID_AA64ISAR0_EL1),
            (F::ID_AA64ISAR1_EL1, S::ID_AA64ISAR1_EL1),
            (F::ID_AA64MMFR0_EL1, S::ID_AA64MMFR0_EL1),
            (F::ID_AA64MMFR1_EL1, S::ID_AA64MMFR1_EL1),
            (F::ID_AA64MMFR2_EL1, S::ID_AA64MMFR2_EL1),
            (F::ID_AA64PFR0_EL1, S::ID_AA64PFR0_EL1),
            (F::ID_AA64PFR1_EL1, S::ID_AA64PFR1_EL1),
        ];
        for ((feature, id), (f, s)) in FEATURE_REGS.iter().zip(apple) {
            assert_eq!((*feature, *id), (f as u32, RegId(s as u64)), "{id}");
        }
        assert_eq!(FEATURE_REGS[9], (F::CTR_EL0 as u32, sysreg::CTR_EL0));
        assert_eq!(FEATURE_REGS[10], (F::CLIDR_EL1 as u32, sysreg::CLIDR_EL1));
        assert_eq!(FEATURE_REGS[11], (F::DCZID_EL0 as u32, sysreg::DCZID_EL0));
    }

    #[test]
    fn system_registers_match_hv_sys_reg_t() {
        let apple = [
            S::MIDR_EL1,
            S::MPIDR_EL1,
            S::ID_AA64PFR0_EL1,
            S::ID_AA64PFR1_EL1,
            S::ID_AA64DFR0_EL1,
            S::ID_AA64DFR1_EL1,
            S::ID_AA64ISAR0_EL1,
            S::ID_AA64ISAR1_EL1,
            S::ID_AA64MMFR0_EL1,
            S::ID_AA64MMFR1_EL1,
            S::ID_AA64MMFR2_EL1,
            S::SCTLR_EL1,
            S::ACTLR_EL1,
            S::CPACR_EL1,
            S::TTBR0_EL1,
            S::TTBR1_EL1,
            S::TCR_EL1,
            S::APIAKEYLO_EL1,
            S::APIAKEYHI_EL1,
            S::APIBKEYLO_EL1,
            S::APIBKEYHI_EL1,
            S::APDAKEYLO_EL1,
            S::APDAKEYHI_EL1,
            S::APDBKEYLO_EL1,
            S::APDBKEYHI_EL1,
            S::APGAKEYLO_EL1,
            S::APGAKEYHI_EL1,
            S::AFSR0_EL1,
            S::AFSR1_EL1,
            S::ESR_EL1,
            S::FAR_EL1,
            S::PAR_EL1,
            S::MAIR_EL1,
            S::AMAIR_EL1,
            S::VBAR_EL1,
            S::CONTEXTIDR_EL1,
            S::TPIDR_EL1,
            S::CNTKCTL_EL1,
        ];
        for (ours, theirs) in SYS_REGS.iter().zip(apple) {
            assert_eq!(ours.0, theirs as u64, "{ours} is {theirs:?}");
        }
        let el0 = [S::CSSELR_EL1, S::TPIDR_EL0, S::TPIDRRO_EL0];
        for (ours, theirs) in SYS_REGS_EL0.iter().zip(el0) {
            assert_eq!(ours.0, theirs as u64, "{ours} is {theirs:?}");
        }
        let timer = [S::CNTV_CTL_EL0, S::CNTV_CVAL_EL0];
        for (ours, theirs) in TIMER_REGS.iter().zip(timer) {
            assert_eq!(ours.0, theirs as u64, "{ours} is {theirs:?}");
        }
        assert_eq!(DEBUG_CONTROL_REGS.map(|r| r.0), [S::MDCCINT_EL1 as u64, S::MDSCR_EL1 as u64]);
    }

    #[test]
    fn debug_registers_match_hv_sys_reg_t() {
        let regs = debug_regs(16, 16);
        assert_eq!(regs.len(), 64);
        let apple = [
            (S::DBGBVR0_EL1, S::DBGBCR0_EL1, S::DBGWVR0_EL1, S::DBGWCR0_EL1),
            (S::DBGBVR1_EL1, S::DBGBCR1_EL1, S::DBGWVR1_EL1, S::DBGWCR1_EL1),
            (S::DBGBVR5_EL1, S::DBGBCR5_EL1, S::DBGWVR5_EL1, S::DBGWCR5_EL1),
            (S::DBGBVR15_EL1, S::DBGBCR15_EL1, S::DBGWVR15_EL1, S::DBGWCR15_EL1),
        ];
        for (n, (bvr, bcr, wvr, wcr)) in [0usize, 1, 5, 15].into_iter().zip(apple) {
            assert_eq!(regs[2 * n].0, bvr as u64);
            assert_eq!(regs[2 * n + 1].0, bcr as u64);
            assert_eq!(regs[32 + 2 * n].0, wvr as u64);
            assert_eq!(regs[32 + 2 * n + 1].0, wcr as u64);
        }
        assert_eq!(debug_regs(6, 4).len(), 20);
    }

    #[test]
    fn affinities_follow_kvm() {
        assert_eq!(mpidr(0), 0x8000_0000);
        assert_eq!(mpidr(1), 0x8000_0001);
        assert_eq!(mpidr(16), 0x8000_0100);
        assert_eq!(mpidr(0x1234), 0x8001_2304);
    }

    #[test]
    fn gic_numbers_match_the_headers() {
        use applevisor_sys::{hv_gic_intid_t, hv_gic_redistributor_reg_t as G};
        assert_eq!(VTIMER_INTID, hv_gic_intid_t::EL1_VIRTUAL_TIMER as u32);
        assert_eq!(GICR_ISPENDR0, G::ISPENDR0 as u32);
        assert_eq!(GICR_ICPENDR0, G::ICPENDR0 as u32);
    }
}
