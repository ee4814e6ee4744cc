//! The stage-1 table walk, `mmu::translate`, over random translation registers and random page
//! tables in a memory the fuzzer fills: either sparse (descriptors at chosen addresses of a 16 MiB
//! memory, zero elsewhere, nothing beyond) or dense (a few descriptors repeated through all of
//! physical memory, so that walks go deep).
//!
//! Invariants, for any input:
//! - the walk terminates (at most five descriptor reads, four without TCR_EL1.DS) and never panics;
//! - with SCTLR_EL1.M clear the address is returned as it is, with no read;
//! - a returned address is the one the descriptors walked give, checked against an independent,
//!   table-driven statement of the VMSAv8-64 walk (Arm ARM D8.2): the region (TTBR0 or TTBR1 by
//!   VA bit 63, its input size and granule from TCR_EL1) holds the VA, the first read is at
//!   TTBRn's base indexed by the VA bits of the start level, every read but the last is a valid
//!   table descriptor and the next read lies in the table it names, indexed by the next level's
//!   VA bits; the last is a page at level 3 or a block where the granule allows one, and the
//!   address is its output address with the VA's offset within the page or block;
//! - a failed read of memory is never translated past.
#![no_main]

use std::collections::BTreeMap;

use accel_host::mmu::{translate, TranslationRegs};

use accel_api::AccelError;
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    sctlr: u64,
    tcr: u64,
    ttbr0: u64,
    ttbr1: u64,
    va: u64,
    dense: bool,
    /// Sparse: (address, descriptor) pairs; dense: the descriptors repeated.
    descriptors: Vec<(u32, u64)>,
}

/// The sparse memory's size: reads at or above it fail.
const MEMORY: u64 = 16 << 20;

/// The VA bits each level resolves, `[hi:lo]`, per granule (log2 of its size), from level -1
/// (which only the 4K granule has, with TCR_EL1.DS).
fn level_bits(granule: u32, ds: bool) -> [Option<(u32, u32)>; 5] {
    match granule {
        12 => [ds.then_some((51, 48)), Some((47, 39)), Some((38, 30)), Some((29, 21)), Some((20, 12))],
        14 => [None, Some((51, 47)), Some((46, 36)), Some((35, 25)), Some((24, 14))],
        _ => [None, None, Some((51, 42)), Some((41, 29)), Some((28, 16))],
    }
}

/// The granule TCR_EL1.TG0 or TG1 selects (their encodings differ).
fn granule(tcr: u64, upper: bool) -> u32 {
    if upper {
        match tcr >> 30 & 3 {
            0b01 => 14,
            0b11 => 16,
            _ => 12,
        }
    } else {
        match tcr >> 14 & 3 {
            0b01 => 16,
            0b10 => 14,
            _ => 12,
        }
    }
}

fn field(v: u64, hi: u32, lo: u32) -> u64 {
    v >> lo & ((1u64 << (hi - lo + 1)) - 1)
}

/// Bits `[47:lo]` of `v` in place, and with TCR_EL1.DS bits `[49:48]` from bits `[9:8]`.
fn address_bits(v: u64, lo: u32, ds: bool) -> u64 {
    let high = if ds { (v >> 8 & 3) << 48 } else { 0 };
    v & ((1u64 << 48) - 1) & !((1u64 << lo) - 1) | high
}

fn check(regs: &TranslationRegs, va: u64, reads: &[(u64, Option<u64>)], result: &Result<u64, AccelError>) {
    assert!(reads.len() <= 5, "a walk reads at most five descriptors: {reads:x?}");
    if regs.sctlr & 1 == 0 {
        assert!(reads.is_empty() && *result == Ok(va), "the MMU is off: the address is physical");
        return;
    }
    if reads.last().is_some_and(|(_, d)| d.is_none()) {
        assert!(result.is_err(), "a failed read ends the walk with an error");
    }
    let Ok(pa) = *result else { return };
    let upper = va >> 63 == 1;
    let (tsz, epd, ttbr) = if upper {
        (regs.tcr >> 16 & 0x3f, regs.tcr >> 23 & 1, regs.ttbr1)
    } else {
        (regs.tcr & 0x3f, regs.tcr >> 7 & 1, regs.ttbr0)
    };
    assert_eq!(epd, 0, "a walk through a disabled region translated");
    let input_bits = 64 - tsz as u32;
    let top = if input_bits == 64 { 0 } else { va >> input_bits };
    let region_top = if upper { (1u64 << (64 - input_bits)) - 1 } else { 0 };
    assert_eq!(top, region_top, "the VA lies outside its region of {input_bits} bits");
    let g = granule(regs.tcr, upper);
    let ds = regs.tcr >> 59 & 1 == 1 && g != 16;
    let levels = level_bits(g, ds);
    // Indices into `levels`: level + 1.
    let start = (0..5)
        .find(|&l| levels[l].is_some_and(|(hi, lo)| lo < input_bits && input_bits - 1 <= hi))
        .unwrap_or_else(|| {
            panic!("no level of the {g}-bit granule starts a {input_bits}-bit region: {pa:#x}")
        });
    assert!(start + reads.len() <= 5, "the walk went past level 3");
    let mut table = if ds {
        ttbr & ((1u64 << 48) - 1) & !0x3f | (ttbr >> 2 & 0xf) << 48
    } else {
        ttbr & ((1u64 << 48) - 1) & !1
    };
    for (i, &(addr, desc)) in reads.iter().enumerate() {
        let (hi, lo) = levels[start + i].expect("a level of the granule");
        let level = (start + i) as i32 - 1;
        let hi = if i == 0 { input_bits - 1 } else { hi };
        assert_eq!(
            addr,
            table + 8 * field(va, hi, lo),
            "level {level} read at the VA's index into its table"
        );
        let desc = desc.expect("a translated walk read every descriptor");
        assert_eq!(desc & 1, 1, "an invalid descriptor was walked through");
        let last = i + 1 == reads.len();
        if !last {
            assert_eq!(desc & 2, 2, "only a table descriptor leads to another read");
            table = address_bits(desc, g, ds);
            continue;
        }
        let page = level == 3;
        if page {
            assert_eq!(desc & 2, 2, "a level-3 descriptor is a page");
        } else {
            assert_eq!(desc & 2, 0, "a walk ending above level 3 ends at a block");
            let allowed = match g {
                12 => level == 1 || level == 2 || (ds && level == 0),
                14 => level == 2 || (ds && level == 1),
                _ => level == 2,
            };
            assert!(allowed, "a block at level {level} with the {g}-bit granule");
        }
        let offset_bits = lo;
        assert_eq!(
            pa & ((1u64 << offset_bits) - 1),
            va & ((1u64 << offset_bits) - 1),
            "the offset within the block"
        );
        assert_eq!(
            pa & !((1u64 << offset_bits) - 1),
            address_bits(desc, offset_bits, ds),
            "the output address"
        );
    }
}

fuzz_target!(|input: Input| {
    let regs = TranslationRegs { sctlr: input.sctlr, tcr: input.tcr, ttbr0: input.ttbr0, ttbr1: input.ttbr1 };
    let sparse: BTreeMap<u64, u64> =
        input.descriptors.iter().map(|&(addr, desc)| (u64::from(addr) & !7 & (MEMORY - 1), desc)).collect();
    let dense: Vec<u64> = input.descriptors.iter().map(|&(_, desc)| desc).collect();
    let mut reads = Vec::new();
    let result = translate(input.va, &regs, |pa| {
        let value = if input.dense {
            (!dense.is_empty()).then(|| dense[(pa / 8) as usize % dense.len()])
        } else if pa < MEMORY {
            Some(sparse.get(&pa).copied().unwrap_or(0))
        } else {
            None
        };
        reads.push((pa, value));
        assert!(reads.len() <= 8, "the walk does not end: {reads:x?}");
        value.ok_or_else(|| AccelError::invalid(format!("{pa:#x} is outside memory")))
    });
    check(&regs, input.va, &reads, &result);
});
