//! KVM register ids for `KVM_GET_ONE_REG`/`KVM_SET_ONE_REG` on arm64: pure arithmetic, so it is
//! tested on every host.
//!
//! The KVM API document (Documentation/virt/kvm/api.rst, section "KVM_SET_ONE_REG", "ARM64
//! registers") spells an id as `KVM_REG_ARM64 | size | group | index`:
//!
//! - core registers, group `KVM_REG_ARM_CORE` (0x0010): the index is the register's byte offset in
//!   `struct kvm_regs` divided by 4;
//! - system registers, group `KVM_REG_ARM64_SYSREG` (0x0013): the index is op0, op1, CRn, CRm and
//!   op2 packed in 16 bits, the same packing as `accel_api::RegId::sys`, so the id converts both
//!   ways without a table.

use accel_api::{CoreReg, FpReg, RegId};

/// `KVM_REG_ARM64 | KVM_REG_SIZE_U32` (bits 63..48 of an id: architecture and size).
const ARM64_U32: u64 = 0x6020 << 48;
/// `KVM_REG_ARM64 | KVM_REG_SIZE_U64`.
const ARM64_U64: u64 = 0x6030 << 48;
/// `KVM_REG_ARM64 | KVM_REG_SIZE_U128`.
const ARM64_U128: u64 = 0x6040 << 48;
/// `KVM_REG_ARM_CORE`.
const GROUP_CORE: u64 = 0x0010 << 16;
/// `KVM_REG_ARM64_SYSREG`.
const GROUP_SYSREG: u64 = 0x0013 << 16;
/// `KVM_REG_ARM_COPROC_MASK`: the group bits.
const GROUP_MASK: u64 = 0x0fff << 16;

const fn core(arch_size: u64, byte_offset: u64) -> u64 {
    arch_size | GROUP_CORE | (byte_offset / 4)
}

/// The id of a core register. `struct kvm_regs` opens with X0–X30, SP_EL0, PC, PSTATE, SP_EL1,
/// ELR_EL1 and the five SPSRs, 8 bytes each and in that order.
pub fn core_reg(reg: CoreReg) -> u64 {
    let slot = match reg {
        CoreReg::X(n) => u64::from(n),
        CoreReg::SpEl0 => 31,
        CoreReg::Pc => 32,
        CoreReg::Pstate => 33,
        CoreReg::SpEl1 => 34,
        CoreReg::ElrEl1 => 35,
        CoreReg::Spsr(n) => 36 + u64::from(n),
    };
    core(ARM64_U64, 8 * slot)
}

/// The id of an FP/SIMD register. They follow the SPSRs in `struct kvm_regs`, 16-byte aligned
/// at byte 336: V0–V31 (16 bytes each), then FPSR and FPCR (4 bytes each).
pub fn fp_reg(reg: FpReg) -> u64 {
    const VREGS: u64 = 336;
    match reg {
        FpReg::V(n) => core(ARM64_U128, VREGS + 16 * u64::from(n)),
        FpReg::Fpsr => core(ARM64_U32, VREGS + 32 * 16),
        FpReg::Fpcr => core(ARM64_U32, VREGS + 32 * 16 + 4),
    }
}

/// The id of a system register.
pub fn sysreg(id: RegId) -> u64 {
    ARM64_U64 | GROUP_SYSREG | (id.0 & 0xffff)
}

/// The system register a listed id names, if it is a 64-bit system register.
pub fn sysreg_of(kvm_id: u64) -> Option<RegId> {
    let is_sysreg = kvm_id & (0xffff << 48) == ARM64_U64 && kvm_id & GROUP_MASK == GROUP_SYSREG;
    is_sysreg.then(|| RegId::from_encoding(kvm_id as u16))
}

#[cfg(test)]
mod tests {
    use accel_api::sysreg::{MPIDR_EL1, TPIDR_EL1};

    use super::*;

    // Known values, as KVM_GET_REG_LIST lists them on arm64 hosts.
    #[test]
    fn core_and_fp_ids_match_the_kernel() {
        assert_eq!(core_reg(CoreReg::X(0)), 0x6030_0000_0010_0000);
        assert_eq!(core_reg(CoreReg::X(30)), 0x6030_0000_0010_003c);
        assert_eq!(core_reg(CoreReg::Pc), 0x6030_0000_0010_0040);
        assert_eq!(core_reg(CoreReg::SpEl1), 0x6030_0000_0010_0044);
        assert_eq!(core_reg(CoreReg::Spsr(4)), 0x6030_0000_0010_0050);
        assert_eq!(fp_reg(FpReg::V(0)), 0x6040_0000_0010_0054);
        assert_eq!(fp_reg(FpReg::V(31)), 0x6040_0000_0010_00d0);
        assert_eq!(fp_reg(FpReg::Fpsr), 0x6020_0000_0010_00d4);
        assert_eq!(fp_reg(FpReg::Fpcr), 0x6020_0000_0010_00d5);
    }

    #[test]
    fn sysreg_ids_convert_both_ways() {
        assert_eq!(sysreg(MPIDR_EL1), 0x6030_0000_0013_c005);
        assert_eq!(sysreg_of(0x6030_0000_0013_c005), Some(MPIDR_EL1));
        assert_eq!(sysreg_of(sysreg(TPIDR_EL1)), Some(TPIDR_EL1));
        assert_eq!(sysreg_of(0x6030_0000_0010_0040), None, "a core register");
        assert_eq!(sysreg_of(0x6030_0000_0014_0000), None, "a firmware register");
    }
}
