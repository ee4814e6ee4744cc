//! Stage-1 address translation of the guest's EL1&0 regime, as a debugger needs it to read and
//! write memory by virtual address: the VMSAv8-64 table walk (Arm ARM D8.2) for the 4K, 16K and
//! 64K granules, with the TTBR0_EL1/TTBR1_EL1 split set by TCR_EL1.T0SZ/T1SZ, table, block and
//! page descriptors. With SCTLR_EL1.M clear, addresses are physical.

use accel_api::error::{AccelError, Result};

/// The registers that control stage-1 translation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TranslationRegs {
    /// SCTLR_EL1 (only M, bit 0, is used).
    pub sctlr: u64,
    /// TCR_EL1.
    pub tcr: u64,
    /// TTBR0_EL1.
    pub ttbr0: u64,
    /// TTBR1_EL1.
    pub ttbr1: u64,
}

fn fault(va: u64, why: impl std::fmt::Display) -> AccelError {
    AccelError::invalid(format!("virtual address {va:#x} does not translate: {why}"))
}

/// Bits [hi:lo] of `v` in place (the others cleared).
fn bits(v: u64, hi: u32, lo: u32) -> u64 {
    (v >> lo & ((1u64 << (hi - lo + 1)) - 1)) << lo
}

/// Translates `va` to a guest physical address, reading descriptors with `read_phys`.
pub fn translate(
    va: u64,
    regs: &TranslationRegs,
    mut read_phys: impl FnMut(u64) -> Result<u64>,
) -> Result<u64> {
    if regs.sctlr & 1 == 0 {
        return Ok(va);
    }
    let tcr = regs.tcr;
    let upper = va >> 63 == 1;
    let (tsz, disabled, granule, ttbr) = if upper {
        let granule = match (tcr >> 30) & 3 {
            0b01 => 14,
            0b11 => 16,
            _ => 12,
        };
        ((tcr >> 16) & 0x3f, tcr >> 23 & 1 == 1, granule, regs.ttbr1)
    } else {
        let granule = match (tcr >> 14) & 3 {
            0b01 => 16,
            0b10 => 14,
            _ => 12,
        };
        (tcr & 0x3f, tcr >> 7 & 1 == 1, granule, regs.ttbr0)
    };
    if disabled {
        return Err(fault(va, format!("walks through TTBR{} are disabled (TCR_EL1.EPD)", u8::from(upper))));
    }
    let input_bits = 64 - tsz as u32;
    // TCR_EL1.DS (FEAT_LPA2): 52-bit regions and output addresses with the 4K and 16K granules.
    let ds = tcr >> 59 & 1 == 1 && granule != 16;
    // The input sizes whose walk starts at a level the granule has: the 4K granule's levels 0 to
    // 3 resolve VA bits up to 47, and with DS its level -1 bits 51:48; the 16K and 64K granules'
    // up to 51; a 64K region needs more than the 16 bits of its page offset.
    let supported = match granule {
        12 if ds => 16..=52,
        12 => 16..=48,
        14 => 16..=52,
        _ => 17..=52,
    };
    if !supported.contains(&input_bits) {
        return Err(fault(
            va,
            format!(
                "TCR_EL1 gives an input size of {input_bits} bits, which the {} KiB granule does not walk{}",
                1 << (granule - 10),
                if granule == 12 { " without TCR_EL1.DS" } else { "" }
            ),
        ));
    }
    // The address must lie in the region: top bits all zero (TTBR0) or all one (TTBR1).
    let top = va >> input_bits;
    let expected = if upper { (1u64 << (64 - input_bits)) - 1 } else { 0 };
    if top != expected {
        return Err(fault(va, format!("outside both translation regions ({input_bits}-bit input size)")));
    }
    let stride = granule - 3;
    let levels = (input_bits - granule).div_ceil(stride) as i32;
    let start = 4 - levels;
    // An output address: bits 47 down to `lo` in place, and with DS bits 49:48 from bits 9:8.
    let output = |desc: u64, lo: u32| bits(desc, 47, lo) | if ds { (desc >> 8 & 3) << 48 } else { 0 };
    // TTBRn_EL1.BADDR (bit 0 is CnP; with DS, bits 5:2 hold BADDR[51:48]).
    let mut table = if ds { bits(ttbr, 47, 6) | (ttbr >> 2 & 0xf) << 48 } else { bits(ttbr, 47, 1) };
    let mut level = start;
    loop {
        let shift = granule + stride * (3 - level) as u32;
        let index_bits = if level == start { input_bits - shift } else { stride };
        let index = (va >> shift) & ((1u64 << index_bits) - 1);
        let desc_addr = table + 8 * index;
        let desc = read_phys(desc_addr)?;
        if desc & 1 == 0 {
            return Err(fault(va, format!("invalid descriptor {desc:#x} at level {level} ({desc_addr:#x})")));
        }
        let is_table = desc & 2 == 2;
        if level == 3 {
            if !is_table {
                return Err(fault(va, format!("reserved level-3 descriptor {desc:#x}")));
            }
            return Ok(output(desc, granule) | (va & ((1u64 << granule) - 1)));
        }
        if !is_table {
            // A block: level 1 or 2 for 4K (level 0 too with DS), level 2 for 16K (level 1 too
            // with DS) and 64K; never at level -1.
            let lowest = match granule {
                12 => 1 - i32::from(ds),
                14 => 2 - i32::from(ds),
                _ => 2,
            };
            if level < lowest.max(0) {
                return Err(fault(va, format!("block descriptor {desc:#x} not allowed at level {level}")));
            }
            return Ok(output(desc, shift) | (va & ((1u64 << shift) - 1)));
        }
        table = output(desc, granule);
        level += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Mem(HashMap<u64, u64>);

    impl Mem {
        fn read(&self, pa: u64) -> Result<u64> {
            Ok(*self.0.get(&pa).unwrap_or(&0))
        }
    }

    // TCR_EL1 with T0SZ = T1SZ = 16 (48-bit regions) and the given granules.
    fn tcr(tg0: u64, tg1: u64) -> u64 {
        16 | tg0 << 14 | 16 << 16 | tg1 << 30
    }

    #[test]
    fn mmu_off_is_identity() {
        let regs = TranslationRegs::default();
        assert_eq!(translate(0x1234, &regs, |_| panic!("no walk")), Ok(0x1234));
    }

    #[test]
    fn four_k_pages_and_blocks() {
        // L0 at 0x1000, L1 at 0x2000, L2 at 0x3000, L3 at 0x4000.
        let va = 0x0000_0080_4020_1123u64; // L0 1, L1 1, L2 1, L3 1
        let mut m = HashMap::new();
        m.insert(0x1000 + 8, 0x2000 | 3);
        m.insert(0x2000 + 8, 0x3000 | 3);
        m.insert(0x3000 + 8, 0x4000 | 3);
        m.insert(0x4000 + 8, 0x8765_4000 | 3);
        // A 2 MiB block at L2 index 2.
        m.insert(0x3000 + 16, 0x4000_0000 | 1);
        let mem = Mem(m);
        let regs = TranslationRegs { sctlr: 1, tcr: tcr(0b00, 0b10), ttbr0: 0x1000, ttbr1: 0 };
        assert_eq!(translate(va, &regs, |pa| mem.read(pa)), Ok(0x8765_4123));
        let block_va = 0x0000_0080_4040_5678;
        assert_eq!(translate(block_va, &regs, |pa| mem.read(pa)), Ok(0x4000_5678 | (block_va & 0x1f_ffff)));
        let e = translate(0x0000_0080_4060_0000, &regs, |pa| mem.read(pa)).unwrap_err();
        assert!(e.message.contains("invalid descriptor"), "{e}");
        let e = translate(0x0001_0000_0000_0000, &regs, |pa| mem.read(pa)).unwrap_err();
        assert!(e.message.contains("outside both translation regions"), "{e}");
    }

    #[test]
    fn sixty_four_k_granule_via_ttbr1() {
        // 64K granule, 48-bit: three levels (L1..L3), 13-bit index (L1 6 bits).
        let va = 0xffff_0000_0001_2345u64;
        let l1 = 0x10_0000u64;
        let l2 = 0x20_0000u64;
        let l3 = 0x30_0000u64;
        let i1 = (va >> 42) & 0x3f;
        let i2 = (va >> 29) & 0x1fff;
        let i3 = (va >> 16) & 0x1fff;
        let mut m = HashMap::new();
        m.insert(l1 + 8 * i1, l2 | 3);
        m.insert(l2 + 8 * i2, l3 | 3);
        m.insert(l3 + 8 * i3, 0x5555_0000 | 3);
        let mem = Mem(m);
        let regs = TranslationRegs { sctlr: 1, tcr: tcr(0b00, 0b11), ttbr0: 0, ttbr1: l1 };
        assert_eq!(translate(va, &regs, |pa| mem.read(pa)), Ok(0x5555_2345));
    }

    #[test]
    fn input_sizes_beyond_the_granules_levels_are_refused() {
        let mem = Mem(HashMap::new());
        // 4K with T0SZ = 12: a 52-bit region needs a level -1.
        let regs = TranslationRegs { sctlr: 1, tcr: 12, ttbr0: 0x1000, ttbr1: 0 };
        let e = translate(0x1000, &regs, |pa| mem.read(pa)).unwrap_err();
        assert!(e.message.contains("input size of 52 bits, which the 4 KiB granule does not walk"), "{e}");
        // 64K with T0SZ = 48: a 16-bit region is all page offset.
        let regs = TranslationRegs { sctlr: 1, tcr: 48 | 0b01 << 14, ttbr0: 0x1000, ttbr1: 0 };
        let e = translate(0x1000, &regs, |pa| mem.read(pa)).unwrap_err();
        assert!(e.message.contains("input size of 16 bits, which the 64 KiB granule does not walk"), "{e}");
        // 64K with T0SZ = 47 has one level, level 3.
        let mut m = HashMap::new();
        m.insert(0x1_0000, 0x5555_0000 | 3);
        let regs = TranslationRegs { sctlr: 1, tcr: 47 | 0b01 << 14, ttbr0: 0x1_0000, ttbr1: 0 };
        assert_eq!(translate(0x1234, &regs, |pa| Mem(m.clone()).read(pa)), Ok(0x5555_1234));
    }

    #[test]
    fn four_k_granule_52_bit_region_walks_from_level_minus_one() {
        // TCR_EL1.DS = 1, T1SZ = 12, TG1 = 4K: five levels, as Linux with 52-bit VAs and LPA2.
        let tcr = 1u64 << 59 | 12 << 16 | 0b10 << 30;
        let va = 0xfff0_8000_8123_4567u64;
        let mut m = HashMap::new();
        let idx = |shift: u32, bits: u32| (va >> shift) & ((1 << bits) - 1);
        m.insert(0x1000 + 8 * idx(48, 4), 0x2000 | 3);
        m.insert(0x2000 + 8 * idx(39, 9), 0x3000 | 3);
        m.insert(0x3000 + 8 * idx(30, 9), 0x4000 | 3);
        m.insert(0x4000 + 8 * idx(21, 9), 0x5000 | 3);
        // The page's output address has bits 49:48 in descriptor bits 9:8.
        m.insert(0x5000 + 8 * idx(12, 9), 0x7777_0000 | 1 << 8 | 3);
        let regs = TranslationRegs { sctlr: 1, tcr, ttbr0: 0, ttbr1: 0x1000 };
        assert_eq!(translate(va, &regs, |pa| Mem(m.clone()).read(pa)), Ok(1 << 48 | 0x7777_0567));
        // Without DS the same size is refused.
        let regs = TranslationRegs { tcr: tcr & !(1 << 59), ..regs };
        let e = translate(va, &regs, |pa| Mem(m.clone()).read(pa)).unwrap_err();
        assert!(e.message.contains("does not walk without TCR_EL1.DS"), "{e}");
    }

    #[test]
    fn sixteen_k_granule() {
        // 16K granule, 48-bit: four levels; L0 has 1 index bit.
        let va = 0x0000_0000_0400_4321u64;
        let (l0, l1, l2, l3) = (0x10_0000u64, 0x11_0000u64, 0x12_0000u64, 0x13_0000u64);
        let mut m = HashMap::new();
        m.insert(l0 + 8 * ((va >> 47) & 1), l1 | 3);
        m.insert(l1 + 8 * ((va >> 36) & 0x7ff), l2 | 3);
        m.insert(l2 + 8 * ((va >> 25) & 0x7ff), l3 | 3);
        m.insert(l3 + 8 * ((va >> 14) & 0x7ff), 0x7777_c000 | 3);
        let mem = Mem(m);
        let regs = TranslationRegs { sctlr: 1, tcr: tcr(0b10, 0b10), ttbr0: l0, ttbr1: 0 };
        assert_eq!(translate(va, &regs, |pa| mem.read(pa)), Ok(0x7777_c000 | (va & 0x3fff)));
        let disabled = TranslationRegs { tcr: regs.tcr | 1 << 7, ..regs };
        assert!(translate(va, &disabled, |pa| mem.read(pa)).unwrap_err().message.contains("disabled"));
    }
}
