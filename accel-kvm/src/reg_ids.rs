//! KVM register ids for `KVM_GET_ONE_REG`/`KVM_SET_ONE_REG` on arm64, computed from the register
//! model's typed ids. Pure arithmetic, tested on every host.
//!
//! A core register id is `KVM_REG_ARM64 | size | KVM_REG_ARM_CORE | offset`, where the offset is
//! the register's byte offset in `struct kvm_regs` divided by 4 (KVM API document, section
//! "KVM_SET_ONE_REG", arm64 core registers).

use accel_api::{
    sysreg::{RegSpace, CNTVCT_EL0, CNTV_CVAL_EL0},
    CoreReg, FpReg, RegId,
};

/// `KVM_REG_ARM64`.
pub const KVM_REG_ARM64: u64 = 0x6000_0000_0000_0000;
/// `KVM_REG_SIZE_U32`.
pub const KVM_REG_SIZE_U32: u64 = 0x0020_0000_0000_0000;
/// `KVM_REG_SIZE_U64`.
pub const KVM_REG_SIZE_U64: u64 = 0x0030_0000_0000_0000;
/// `KVM_REG_SIZE_U128`.
pub const KVM_REG_SIZE_U128: u64 = 0x0040_0000_0000_0000;
/// `KVM_REG_SIZE_MASK`.
pub const KVM_REG_SIZE_MASK: u64 = 0x00f0_0000_0000_0000;
/// `KVM_REG_SIZE_SHIFT`.
pub const KVM_REG_SIZE_SHIFT: u32 = 52;
/// `KVM_REG_ARM_COPROC_MASK`.
pub const KVM_REG_ARM_COPROC_MASK: u64 = 0x0fff_0000;
/// `KVM_REG_ARM_CORE`: the coprocessor field value of the core register group.
pub const KVM_REG_ARM_CORE: u64 = 0x0010 << 16;
/// `KVM_REG_ARM_DEMUX`: demultiplexed registers (CCSIDR_EL1 by CSSELR_EL1).
pub const KVM_REG_ARM_DEMUX: u64 = 0x0011 << 16;
/// `KVM_REG_ARM_DEMUX_ID_CCSIDR`.
pub const KVM_REG_ARM_DEMUX_ID_CCSIDR: u64 = 0x00 << 8;
/// `KVM_REG_ARM64_SYSREG`.
pub const KVM_REG_ARM64_SYSREG: u64 = 0x0013 << 16;
/// `KVM_REG_ARM_FW`: firmware (PSCI/SMCCC) registers.
pub const KVM_REG_ARM_FW: u64 = 0x0014 << 16;
/// `KVM_REG_ARM64_SVE`.
pub const KVM_REG_ARM64_SVE: u64 = 0x0015 << 16;
/// `KVM_REG_ARM_FW_FEAT_BMAP`: firmware feature bitmaps.
pub const KVM_REG_ARM_FW_FEAT_BMAP: u64 = 0x0016 << 16;

/// KVM's `KVM_REG_ARM_TIMER_CNT` (the virtual counter, CNTVCT_EL0) carries the encoding of
/// CNTV_CVAL_EL0, and `KVM_REG_ARM_TIMER_CVAL` that of CNTVCT_EL0: an ABI accident the kernel
/// keeps. These are the encodings as KVM spells them.
const KVM_TIMER_CNT_ENCODING: u16 = 0xdf1a; // S3_3_C14_C3_2
const KVM_TIMER_CVAL_ENCODING: u16 = 0xdf02; // S3_3_C14_C0_2

/// `KVM_REG_SIZE_U256`.
pub const KVM_REG_SIZE_U256: u64 = 0x0050_0000_0000_0000;
/// `KVM_REG_SIZE_U512`.
pub const KVM_REG_SIZE_U512: u64 = 0x0060_0000_0000_0000;
/// `KVM_REG_SIZE_U2048`.
pub const KVM_REG_SIZE_U2048: u64 = 0x0080_0000_0000_0000;
/// `KVM_REG_ARM64_SVE_VLS`: the vCPU's set of SVE vector lengths, 512 bits.
pub const KVM_REG_ARM64_SVE_VLS: u64 = KVM_REG_ARM64 | KVM_REG_ARM64_SVE | KVM_REG_SIZE_U512 | 0xffff;
/// The bytes in one KVM slice of a Z register (`KVM_REG_SIZE_U2048`).
pub const SVE_ZREG_SLICE_BYTES: usize = 256;
/// The bytes in one KVM slice of a predicate register or FFR (`KVM_REG_SIZE_U256`).
pub const SVE_PREG_SLICE_BYTES: usize = 32;

/// `KVM_REG_ARM64_SVE_ZREG(n, slice)`.
pub fn sve_zreg_id(n: u8, slice: u8) -> u64 {
    KVM_REG_ARM64 | KVM_REG_ARM64_SVE | KVM_REG_SIZE_U2048 | (u64::from(n & 31) << 5) | u64::from(slice & 31)
}

/// `KVM_REG_ARM64_SVE_PREG(n, slice)`.
pub fn sve_preg_id(n: u8, slice: u8) -> u64 {
    KVM_REG_ARM64
        | KVM_REG_ARM64_SVE
        | KVM_REG_SIZE_U256
        | 0x400
        | (u64::from(n & 15) << 5)
        | u64::from(slice & 31)
}

/// `KVM_REG_ARM64_SVE_FFR(slice)`.
pub fn sve_ffr_id(slice: u8) -> u64 {
    KVM_REG_ARM64 | KVM_REG_ARM64_SVE | KVM_REG_SIZE_U256 | 0x600 | u64::from(slice & 31)
}

/// How the KVM backend syncs a register from `KVM_GET_REG_LIST`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvmReg {
    /// A core or FP/SIMD register: synced by the core and FP classes.
    Core,
    /// An SVE register: synced by the SVE class.
    Sve,
    /// A register of the shared model, `size` bytes wide.
    Listed {
        /// The id in the shared model.
        id: RegId,
        /// Size in bytes.
        size: usize,
    },
}

/// The size in bytes encoded in a KVM register id.
pub fn kvm_reg_size(kvm_id: u64) -> usize {
    1 << ((kvm_id & KVM_REG_SIZE_MASK) >> KVM_REG_SIZE_SHIFT)
}

/// Classifies a KVM register id and maps it into the shared model.
pub fn classify(kvm_id: u64) -> KvmReg {
    let size = kvm_reg_size(kvm_id);
    let low = kvm_id & 0xffff;
    let id = match kvm_id & KVM_REG_ARM_COPROC_MASK {
        KVM_REG_ARM_CORE => return KvmReg::Core,
        KVM_REG_ARM64_SVE => return KvmReg::Sve,
        KVM_REG_ARM64_SYSREG => match low as u16 {
            KVM_TIMER_CNT_ENCODING => CNTVCT_EL0,
            KVM_TIMER_CVAL_ENCODING => CNTV_CVAL_EL0,
            encoding => RegId::from_encoding(encoding),
        },
        group @ (KVM_REG_ARM_FW | KVM_REG_ARM_FW_FEAT_BMAP) => RegId::firmware(group | low),
        KVM_REG_ARM_DEMUX if low & 0xff00 == KVM_REG_ARM_DEMUX_ID_CCSIDR => RegId::ccsidr(low & 0xff),
        _ => RegId::raw(kvm_id),
    };
    KvmReg::Listed { id, size }
}

/// The KVM id of a register of the shared model that is `size` bytes wide; `None` for ids KVM
/// cannot name.
pub fn kvm_id_of(id: RegId, size: usize) -> Option<u64> {
    let size_bits = (size.trailing_zeros() as u64) << KVM_REG_SIZE_SHIFT;
    let base = KVM_REG_ARM64 | size_bits;
    match id.space() {
        RegSpace::Sys => {
            let encoding = match id {
                i if i == CNTVCT_EL0 => KVM_TIMER_CNT_ENCODING,
                i if i == CNTV_CVAL_EL0 => KVM_TIMER_CVAL_ENCODING,
                i => i.encoding()?,
            };
            Some(base | KVM_REG_ARM64_SYSREG | u64::from(encoding))
        }
        RegSpace::Firmware => Some(base | (id.index() & 0x0fff_ffff)),
        RegSpace::Ccsidr => {
            Some(base | KVM_REG_ARM_DEMUX | KVM_REG_ARM_DEMUX_ID_CCSIDR | (id.index() & 0xff))
        }
        RegSpace::Raw => Some(KVM_REG_ARM64 | id.index()),
        // The core registers' KVM ids are offsets into `struct kvm_regs` (see `core_reg_id`).
        RegSpace::Core | RegSpace::Unknown(_) => None,
    }
}

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
    fn listed_ids_map_both_ways() {
        use accel_api::sysreg::{CNTV_CTL_EL0, FW_PSCI_VERSION, MPIDR_EL1};
        // (KVM id as listed by KVM_GET_REG_LIST on 6.12, id in the shared model, size)
        let known = [
            (0x6030_0000_0013_c005, MPIDR_EL1, 8),
            (0x6030_0000_0013_df1a, CNTVCT_EL0, 8),
            (0x6030_0000_0013_df02, CNTV_CVAL_EL0, 8),
            (0x6030_0000_0013_df19, CNTV_CTL_EL0, 8),
            (0x6030_0000_0014_0000, FW_PSCI_VERSION, 8),
            (0x6030_0000_0016_0001, RegId::firmware(0x16_0001), 8),
            (0x6020_0000_0011_0002, RegId::ccsidr(2), 4),
        ];
        for (kvm, id, size) in known {
            assert_eq!(classify(kvm), KvmReg::Listed { id, size }, "{kvm:#x}");
            assert_eq!(kvm_id_of(id, size), Some(kvm), "{id}");
        }
        assert_eq!(classify(0x6030_0000_0010_0040), KvmReg::Core);
        assert_eq!(classify(0x6080_0000_0015_0000), KvmReg::Sve);
        let odd = 0x6030_0000_0017_0001;
        let KvmReg::Listed { id, size } = classify(odd) else { panic!("not listed") };
        assert_eq!(kvm_id_of(id, size), Some(odd), "raw ids pass through");
    }

    #[test]
    fn sve_ids_match_the_kernel() {
        assert_eq!(KVM_REG_ARM64_SVE_VLS, 0x6060_0000_0015_ffff);
        assert_eq!(sve_zreg_id(0, 0), 0x6080_0000_0015_0000);
        assert_eq!(sve_zreg_id(31, 0), 0x6080_0000_0015_03e0);
        assert_eq!(sve_preg_id(15, 0), 0x6050_0000_0015_05e0);
        assert_eq!(sve_ffr_id(0), 0x6050_0000_0015_0600);
    }

    #[test]
    fn fp_ids_match_the_kernel() {
        assert_eq!(fp_reg_id(FpReg::V(0)), 0x6040_0000_0010_0054);
        assert_eq!(fp_reg_id(FpReg::V(31)), 0x6040_0000_0010_00d0);
        assert_eq!(fp_reg_id(FpReg::Fpsr), 0x6020_0000_0010_00d4);
        assert_eq!(fp_reg_id(FpReg::Fpcr), 0x6020_0000_0010_00d5);
    }
}
