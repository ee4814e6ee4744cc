//! KVM register ids for `KVM_GET_ONE_REG`/`KVM_SET_ONE_REG` on arm64, computed from the register
//! model's typed ids. Pure arithmetic, tested on every host.
//!
//! A core register id is `KVM_REG_ARM64 | size | KVM_REG_ARM_CORE | offset`, where the offset is
//! the register's byte offset in `struct kvm_regs` divided by 4 (KVM API document, section
//! "KVM_SET_ONE_REG", arm64 core registers).

use accel_api::{CoreReg, FpReg};

/// `KVM_REG_ARM64`.
pub const KVM_REG_ARM64: u64 = 0x6000_0000_0000_0000;
/// `KVM_REG_SIZE_U32`.
pub const KVM_REG_SIZE_U32: u64 = 0x0020_0000_0000_0000;
/// `KVM_REG_SIZE_U64`.
pub const KVM_REG_SIZE_U64: u64 = 0x0030_0000_0000_0000;
/// `KVM_REG_SIZE_U128`.
pub const KVM_REG_SIZE_U128: u64 = 0x0040_0000_0000_0000;
/// `KVM_REG_ARM_CORE`: the coprocessor field value of the core register group.
pub const KVM_REG_ARM_CORE: u64 = 0x0010 << 16;

/// Byte offsets inside `struct kvm_regs` (arch/arm64/include/uapi/asm/kvm.h).
pub mod offsets {
    /// `regs.regs[0]` (X0); Xn is at `8 * n`.
    pub const X0: u64 = 0;
    /// `regs.sp` (SP_EL0).
    pub const SP: u64 = 248;
    /// `regs.pc`.
    pub const PC: u64 = 256;
    /// `regs.pstate`.
    pub const PSTATE: u64 = 264;
    /// `sp_el1`.
    pub const SP_EL1: u64 = 272;
    /// `elr_el1`.
    pub const ELR_EL1: u64 = 280;
    /// `spsr[0]`.
    pub const SPSR: u64 = 288;
    /// `fp_regs.vregs[0]`; 16-byte aligned after the five SPSRs.
    pub const VREGS: u64 = 336;
    /// `fp_regs.fpsr`.
    pub const FPSR: u64 = VREGS + 32 * 16;
    /// `fp_regs.fpcr`.
    pub const FPCR: u64 = FPSR + 4;
}

const fn core_id(size: u64, byte_offset: u64) -> u64 {
    KVM_REG_ARM64 | size | KVM_REG_ARM_CORE | (byte_offset / 4)
}

/// The KVM id of a core register.
pub fn core_reg_id(reg: CoreReg) -> u64 {
    let offset = match reg {
        CoreReg::X(n) => offsets::X0 + 8 * u64::from(n),
        CoreReg::SpEl0 => offsets::SP,
        CoreReg::Pc => offsets::PC,
        CoreReg::Pstate => offsets::PSTATE,
        CoreReg::SpEl1 => offsets::SP_EL1,
        CoreReg::ElrEl1 => offsets::ELR_EL1,
        CoreReg::Spsr(n) => offsets::SPSR + 8 * u64::from(n),
    };
    core_id(KVM_REG_SIZE_U64, offset)
}

/// The KVM id of an FP/SIMD register.
pub fn fp_reg_id(reg: FpReg) -> u64 {
    match reg {
        FpReg::V(n) => core_id(KVM_REG_SIZE_U128, offsets::VREGS + 16 * u64::from(n)),
        FpReg::Fpsr => core_id(KVM_REG_SIZE_U32, offsets::FPSR),
        FpReg::Fpcr => core_id(KVM_REG_SIZE_U32, offsets::FPCR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known values, as listed by KVM_GET_REG_LIST on arm64 hosts.
    #[test]
    fn core_ids_match_the_kernel() {
        assert_eq!(core_reg_id(CoreReg::X(0)), 0x6030_0000_0010_0000);
        assert_eq!(core_reg_id(CoreReg::X(30)), 0x6030_0000_0010_003c);
        assert_eq!(core_reg_id(CoreReg::SpEl0), 0x6030_0000_0010_003e);
        assert_eq!(core_reg_id(CoreReg::Pc), 0x6030_0000_0010_0040);
        assert_eq!(core_reg_id(CoreReg::Pstate), 0x6030_0000_0010_0042);
        assert_eq!(core_reg_id(CoreReg::SpEl1), 0x6030_0000_0010_0044);
        assert_eq!(core_reg_id(CoreReg::ElrEl1), 0x6030_0000_0010_0046);
        assert_eq!(core_reg_id(CoreReg::Spsr(0)), 0x6030_0000_0010_0048);
        assert_eq!(core_reg_id(CoreReg::Spsr(4)), 0x6030_0000_0010_0050);
    }

    #[test]
    fn fp_ids_match_the_kernel() {
        assert_eq!(fp_reg_id(FpReg::V(0)), 0x6040_0000_0010_0054);
        assert_eq!(fp_reg_id(FpReg::V(31)), 0x6040_0000_0010_00d0);
        assert_eq!(fp_reg_id(FpReg::Fpsr), 0x6020_0000_0010_00d4);
        assert_eq!(fp_reg_id(FpReg::Fpcr), 0x6020_0000_0010_00d5);
    }
}
