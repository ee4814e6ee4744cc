//! A tiny A64 assembler for the guest programs of conformance cases: just the instructions the
//! cases use, each encoded as in the Arm ARM's A64 instruction chapter and checked against
//! binutils' output in the tests below.
//!
//! Cases build their guest code inline, so the suite needs no cross toolchain and a reader sees
//! each case's guest next to its checks.

use accel_api::RegId;

/// A general-purpose register number, 0–30; 31 is XZR or SP depending on the instruction.
pub type Reg = u32;

fn rd(r: Reg) -> u32 {
    r & 31
}

fn rn(r: Reg) -> u32 {
    (r & 31) << 5
}

fn rm(r: Reg) -> u32 {
    (r & 31) << 16
}

/// `MOVZ Xd, #imm16, LSL #(16*hw)`.
pub fn movz(d: Reg, imm16: u16, hw: u32) -> u32 {
    0xd280_0000 | (hw & 3) << 21 | u32::from(imm16) << 5 | rd(d)
}

/// `MOVK Xd, #imm16, LSL #(16*hw)`.
pub fn movk(d: Reg, imm16: u16, hw: u32) -> u32 {
    0xf280_0000 | (hw & 3) << 21 | u32::from(imm16) << 5 | rd(d)
}

/// Loads a 64-bit constant into Xd with MOVZ and up to three MOVKs.
pub fn mov_imm64(d: Reg, value: u64) -> Vec<u32> {
    let mut out = vec![movz(d, value as u16, 0)];
    for hw in 1..4 {
        let part = (value >> (16 * hw)) as u16;
        if part != 0 {
            out.push(movk(d, part, hw));
        }
    }
    out
}

/// `ADD Xd, Xn, #imm12`.
pub fn add_imm(d: Reg, n: Reg, imm12: u32) -> u32 {
    0x9100_0000 | (imm12 & 0xfff) << 10 | rn(n) | rd(d)
}

/// `ADD Xd, Xn, Xm`.
pub fn add(d: Reg, n: Reg, m: Reg) -> u32 {
    0x8b00_0000 | rm(m) | rn(n) | rd(d)
}

/// `MUL Xd, Xn, Xm` (MADD with XZR).
pub fn mul(d: Reg, n: Reg, m: Reg) -> u32 {
    0x9b00_7c00 | rm(m) | rn(n) | rd(d)
}

/// `EOR Xd, Xn, Xm`.
pub fn eor(d: Reg, n: Reg, m: Reg) -> u32 {
    0xca00_0000 | rm(m) | rn(n) | rd(d)
}

/// Access sizes of loads and stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// 8 bits (`STRB`/`LDRB`).
    B,
    /// 16 bits (`STRH`/`LDRH`).
    H,
    /// 32 bits (`STR Wt`/`LDR Wt`).
    W,
    /// 64 bits (`STR Xt`/`LDR Xt`).
    X,
}

impl Size {
    /// The access size in bytes.
    pub fn bytes(self) -> u32 {
        match self {
            Size::B => 1,
            Size::H => 2,
            Size::W => 4,
            Size::X => 8,
        }
    }

    fn base(self) -> u32 {
        match self {
            Size::B => 0x3900_0000,
            Size::H => 0x7900_0000,
            Size::W => 0xb900_0000,
            Size::X => 0xf900_0000,
        }
    }
}

/// `STR{B,H,} Rt, [Xn, #offset]` (unsigned offset, a multiple of the size).
pub fn str(size: Size, t: Reg, n: Reg, offset: u32) -> u32 {
    size.base() | ((offset / size.bytes()) & 0xfff) << 10 | rn(n) | rd(t)
}

/// `LDR{B,H,} Rt, [Xn, #offset]` (unsigned offset, a multiple of the size).
pub fn ldr(size: Size, t: Reg, n: Reg, offset: u32) -> u32 {
    str(size, t, n, offset) | 0x0040_0000
}

/// `LDR Xt, [Xn], #imm9` (post-index): a load with writeback, for which a data abort carries no
/// instruction syndrome (ESR_ELx.ISV = 0).
pub fn ldr_x_post(t: Reg, n: Reg, imm9: i32) -> u32 {
    0xf840_0400 | ((imm9 as u32) & 0x1ff) << 12 | rn(n) | rd(t)
}

/// `HVC #imm16`.
pub fn hvc(imm16: u16) -> u32 {
    0xd400_0002 | u32::from(imm16) << 5
}

/// `BRK #imm16`.
pub fn brk(imm16: u16) -> u32 {
    0xd420_0000 | u32::from(imm16) << 5
}

/// `B` by `offset` bytes from this instruction (a multiple of 4).
pub fn b(offset: i32) -> u32 {
    0x1400_0000 | ((offset >> 2) as u32 & 0x03ff_ffff)
}

/// `CMP Xn, #imm12` (`SUBS XZR, Xn, #imm12`).
pub fn cmp_imm(n: Reg, imm12: u32) -> u32 {
    0xf100_001f | (imm12 & 0xfff) << 10 | rn(n)
}

/// `CMP Xn, Xm` (`SUBS XZR, Xn, Xm`).
pub fn cmp(n: Reg, m: Reg) -> u32 {
    0xeb00_001f | rm(m) | rn(n)
}

/// `B.NE` by `offset` bytes from this instruction (a multiple of 4, within ±1 MiB).
pub fn b_ne(offset: i64) -> u32 {
    0x5400_0001 | ((offset >> 2) as u32 & 0x7_ffff) << 5
}

/// `NOP`.
pub const NOP: u32 = 0xd503_201f;

/// `WFI`.
pub const WFI: u32 = 0xd503_207f;

/// `ERET`: return from an exception to ELR_EL1 with PSTATE from SPSR_EL1.
pub const ERET: u32 = 0xd69f_03e0;

/// ICC_IAR1_EL1.
pub const ICC_IAR1_EL1: RegId = RegId::sys(3, 0, 12, 12, 0);
/// ICC_EOIR1_EL1.
pub const ICC_EOIR1_EL1: RegId = RegId::sys(3, 0, 12, 12, 1);
/// ICC_PMR_EL1.
pub const ICC_PMR_EL1: RegId = RegId::sys(3, 0, 4, 6, 0);
/// ICC_IGRPEN1_EL1.
pub const ICC_IGRPEN1_EL1: RegId = RegId::sys(3, 0, 12, 12, 7);
/// CNTV_TVAL_EL0.
pub const CNTV_TVAL_EL0: RegId = RegId::sys(3, 3, 14, 3, 0);

/// `MRS Xt, <sysreg>`: the register's packed encoding sits in bits `[20:5]`.
pub fn mrs(t: Reg, reg: RegId) -> u32 {
    0xd520_0000 | u32::from(reg.encoding().unwrap_or(0)) << 5 | rd(t)
}

/// `MSR <sysreg>, Xt`.
pub fn msr(reg: RegId, t: Reg) -> u32 {
    0xd500_0000 | u32::from(reg.encoding().unwrap_or(0)) << 5 | rd(t)
}

/// `STR Zt, [Xn]` (SVE, whole vector at the current vector length).
pub fn str_z(t: Reg, n: Reg) -> u32 {
    0xe580_4000 | rn(n) | rd(t)
}

/// `LDR Zt, [Xn]` (SVE, whole vector at the current vector length).
pub fn ldr_z(t: Reg, n: Reg) -> u32 {
    0x8580_4000 | rn(n) | rd(t)
}

/// `RDVL Xd, #imm6`: Xd = the current SVE vector length in bytes times `imm6` (-32..=31).
pub fn rdvl(d: Reg, imm6: i32) -> u32 {
    0x04bf_5000 | ((imm6 as u32) & 0x3f) << 5 | rd(d)
}

/// `MSR DAIFClr, #imm4`: unmasks D (8), A (4), I (2), F (1).
pub fn msr_daifclr(imm4: u32) -> u32 {
    0xd503_40ff | (imm4 & 15) << 8
}

/// `ISB`.
pub const ISB: u32 = 0xd503_3fdf;

/// `FMOV Dd, Xn`.
pub fn fmov_d_from_x(d: Reg, n: Reg) -> u32 {
    0x9e67_0000 | rn(n) | rd(d)
}

/// `INS Vd.D[1], Xn` (`MOV Vd.D[1], Xn`).
pub fn ins_d1_from_x(d: Reg, n: Reg) -> u32 {
    0x4e18_1c00 | rn(n) | rd(d)
}

/// `SCVTF Dd, Xn`.
pub fn scvtf_d(d: Reg, n: Reg) -> u32 {
    0x9e62_0000 | rn(n) | rd(d)
}

/// `FADD Dd, Dn, Dm`.
pub fn fadd_d(d: Reg, n: Reg, m: Reg) -> u32 {
    0x1e60_2800 | rm(m) | rn(n) | rd(d)
}

#[cfg(test)]
mod tests {
    use accel_api::sysreg::{CPACR_EL1, ELR_EL1, ESR_EL1, FAR_EL1, VBAR_EL1, ZCR_EL1};

    use super::*;

    // Every expected word below is what GNU as 2.40 assembles for the instruction named.
    #[test]
    fn encodings_match_binutils() {
        let cases: [(u32, u32, &str); 48] = [
            (cmp_imm(0, 1), 0xf100041f, "cmp x0, #0x1"),
            (cmp(1, 2), 0xeb02003f, "cmp x1, x2"),
            (cmp(26, 25), 0xeb19035f, "cmp x26, x25"),
            (ERET, 0xd69f03e0, "eret"),
            (b_ne(-20), 0x54ffff61, "b.ne .-20"),
            (b_ne(8), 0x54000041, "b.ne .+8"),
            (mrs(0, ESR_EL1), 0xd5385200, "mrs x0, esr_el1"),
            (mrs(1, ELR_EL1), 0xd5384021, "mrs x1, elr_el1"),
            (mrs(2, FAR_EL1), 0xd5386002, "mrs x2, far_el1"),
            (msr(VBAR_EL1, 0), 0xd518c000, "msr vbar_el1, x0"),
            (msr(CPACR_EL1, 0), 0xd5181040, "msr cpacr_el1, x0"),
            (ISB, 0xd5033fdf, "isb"),
            (ldr_x_post(0, 1, 8), 0xf8408420, "ldr x0, [x1], #8"),
            (str_z(0, 9), 0xe5804120, "str z0, [x9]"),
            (msr_daifclr(4), 0xd50344ff, "msr daifclr, #4"),
            (msr(ICC_PMR_EL1, 19), 0xd5184613, "msr icc_pmr_el1, x19"),
            (mrs(0, ICC_IAR1_EL1), 0xd538cc00, "mrs x0, icc_iar1_el1"),
            (msr(ICC_IGRPEN1_EL1, 19), 0xd518ccf3, "msr icc_igrpen1_el1, x19"),
            (str(Size::W, 31, 21, 0x14), 0xb90016bf, "str wzr, [x21, #20]"),
            (ldr_z(1, 9), 0x85804121, "ldr z1, [x9]"),
            (rdvl(0, 1), 0x04bf5020, "rdvl x0, #1"),
            (msr(ZCR_EL1, 1), 0xd5181201, "msr zcr_el1, x1"),
            (movz(0, 0x1234, 0), 0xd2824680, "mov x0, #0x1234"),
            (movz(3, 0xbeef, 1), 0xd2b7dde3, "mov x3, #0xbeef0000"),
            (movk(1, 0xcafe, 3), 0xf2f95fc1, "movk x1, #0xcafe, lsl #48"),
            (add_imm(1, 0, 0x123), 0x91048c01, "add x1, x0, #0x123"),
            (add(2, 0, 1), 0x8b010002, "add x2, x0, x1"),
            (mul(3, 1, 2), 0x9b027c23, "mul x3, x1, x2"),
            (eor(4, 3, 0), 0xca000064, "eor x4, x3, x0"),
            (str(Size::X, 2, 1, 16), 0xf9000822, "str x2, [x1, #16]"),
            (str(Size::W, 2, 1, 8), 0xb9000822, "str w2, [x1, #8]"),
            (str(Size::H, 2, 1, 2), 0x79000422, "strh w2, [x1, #2]"),
            (str(Size::B, 2, 1, 1), 0x39000422, "strb w2, [x1, #1]"),
            (ldr(Size::X, 3, 1, 24), 0xf9400c23, "ldr x3, [x1, #24]"),
            (ldr(Size::W, 3, 1, 8), 0xb9400823, "ldr w3, [x1, #8]"),
            (ldr(Size::H, 3, 1, 2), 0x79400423, "ldrh w3, [x1, #2]"),
            (ldr(Size::B, 3, 1, 1), 0x39400423, "ldrb w3, [x1, #1]"),
            (hvc(0), 0xd4000002, "hvc #0"),
            (brk(0), 0xd4200000, "brk #0"),
            (b(-8), 0x17fffffe, "b .-8"),
            (b(12), 0x14000003, "b .+12"),
            (NOP, 0xd503201f, "nop"),
            (fmov_d_from_x(0, 1), 0x9e670020, "fmov d0, x1"),
            (ins_d1_from_x(0, 2), 0x4e181c40, "mov v0.d[1], x2"),
            (scvtf_d(1, 0), 0x9e620001, "scvtf d1, x0"),
            (fadd_d(2, 1, 1), 0x1e612822, "fadd d2, d1, d1"),
            (WFI, 0xd503207f, "wfi"),
            (movz(2, 0x55, 0) & !0x8000_0000, 0x52800aa2, "mov w2, #0x55"),
        ];
        for (got, want, text) in cases {
            assert_eq!(got, want, "{text}: got {got:#010x}, want {want:#010x}");
        }
    }

    #[test]
    fn mov_imm64_skips_zero_halves() {
        assert_eq!(mov_imm64(1, 0x0900_0000), vec![movz(1, 0, 0), movk(1, 0x0900, 1)]);
        assert_eq!(mov_imm64(0, 0x8400_0008), vec![movz(0, 8, 0), movk(0, 0x8400, 1)]);
        assert_eq!(mov_imm64(5, 0xffff_0000_0000_0001).len(), 2);
    }
}
