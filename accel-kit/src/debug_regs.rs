//! The debug-register encodings, as the Arm ARM gives them (D2.8 breakpoints, D2.9 watchpoints;
//! `DBGBCR<n>_EL1`, `DBGBVR<n>_EL1`, `DBGWCR<n>_EL1`, `DBGWVR<n>_EL1`), programmed as QEMU's
//! `kvm64.c` does: breakpoints unlinked with PMC = 0b11 and BAS = 0b1111, watchpoints with
//! PAC = 0b11 and LSC by kind.

use accel_api::{
    debug::{WatchKind, MAX_DEBUG_REGS},
    AccelError, Result,
};

/// Sign-extends a virtual address from bit 52, as DBGBVR/DBGWVR hold it.
pub fn sign_extend_va(addr: u64) -> u64 {
    (((addr << 11) as i64) >> 11) as u64
}

/// `DBGBCR<n>_EL1` for an unlinked address breakpoint matching at EL0 and EL1: E = 1, PMC = 0b11,
/// BAS = 0b1111.
pub const fn breakpoint_control() -> u64 {
    1 | (0b11 << 1) | (0b1111 << 5)
}

/// `DBGBVR<n>_EL1` for a breakpoint at `addr`, which must be word-aligned.
pub fn breakpoint_value(addr: u64) -> Result<u64> {
    if addr & 3 != 0 {
        return Err(AccelError::invalid(format!(
            "a breakpoint address must be 4-byte aligned; {addr:#x} is not"
        )));
    }
    Ok(sign_extend_va(addr))
}

/// `DBGWCR<n>_EL1` and `DBGWVR<n>_EL1` for a watchpoint of `len` bytes at `addr`.
///
/// - Up to 8 bytes inside one doubleword: BAS selects the bytes (MASK = 0).
/// - A power-of-two range of 16 bytes to 2 GiB whose base is aligned to its size: MASK gives the
///   size and BAS = 0xff.
///
/// Anything else is refused: the watch would be wider or narrower than asked.
pub fn watchpoint_registers(addr: u64, len: u64, kind: WatchKind) -> Result<(u64, u64)> {
    if !(1..=3).contains(&kind.0) {
        return Err(AccelError::invalid(format!("watchpoint kind {} is not read, write or access", kind.0)));
    }
    let base = 1 | (0b11 << 1) | (u64::from(kind.0) << 3);
    let offset = addr & 7;
    if (1..=8).contains(&len) && offset + len <= 8 {
        let bas = ((1u64 << len) - 1) << offset;
        return Ok((base | bas << 5, sign_extend_va(addr & !7)));
    }
    if len.is_power_of_two() && (16..=1 << 31).contains(&len) && addr % len == 0 {
        let mask = u64::from(len.trailing_zeros());
        return Ok((base | 0xff << 5 | mask << 24, sign_extend_va(addr)));
    }
    Err(AccelError::invalid(format!(
        "a {len}-byte watchpoint at {addr:#x} cannot be exact: a watchpoint covers 1 to 8 bytes within one \
         aligned doubleword, or a power-of-two range of 16 bytes or more aligned to its size"
    )))
}

/// Splits `len` bytes at `addr` into ranges that one watchpoint register each watches exactly
/// (see [`watchpoint_registers`]), in address order and as few as a greedy cover gives: the
/// largest aligned power-of-two range of 16 bytes or more that fits, else the bytes up to the end
/// of the doubleword. `None` for an empty or wrapping range, or one that needs more than
/// [`MAX_DEBUG_REGS`] registers. A 12-byte range at an odd address, say, becomes two: the rest of
/// its first doubleword and the start of the next.
pub fn watch_pieces(addr: u64, len: u64) -> Option<Vec<(u64, u64)>> {
    let end = addr.checked_add(len).filter(|_| len > 0)?;
    let mut pieces = Vec::new();
    let mut at = addr;
    while at < end {
        let left = end - at;
        let masked = (4..=31).rev().map(|bits| 1u64 << bits).find(|size| *size <= left && at % size == 0);
        let size = masked.unwrap_or_else(|| (8 - (at & 7)).min(left));
        pieces.push((at, size));
        if pieces.len() > MAX_DEBUG_REGS {
            return None;
        }
        at += size;
    }
    Some(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breakpoint_encodings() {
        assert_eq!(breakpoint_control(), 0x1e7);
        assert_eq!(breakpoint_value(0x4000_1000), Ok(0x4000_1000));
        assert_eq!(breakpoint_value(0x0010_0000_0000_0000), Ok(0xfff0_0000_0000_0000), "bit 52 sign-extends");
        assert!(breakpoint_value(0x4000_1002).is_err());
    }

    #[test]
    fn watchpoints_inside_a_doubleword_use_bas() {
        let (wcr, wvr) = watchpoint_registers(0x4000_0003, 4, WatchKind::WRITE).unwrap();
        assert_eq!(wvr, 0x4000_0000);
        assert_eq!((wcr >> 5) & 0xff, 0b0111_1000, "bytes 3..7");
        assert_eq!((wcr >> 3) & 3, 2, "LSC store");
        assert_eq!(wcr & 7, 0b111, "E and PAC");
        assert_eq!((wcr >> 24) & 0x1f, 0);
        let (wcr, _) = watchpoint_registers(0x4000_0000, 8, WatchKind::ACCESS).unwrap();
        assert_eq!((wcr >> 5) & 0xff, 0xff);
        assert!(watchpoint_registers(0x4000_0006, 4, WatchKind::READ).is_err(), "crosses a doubleword");
        assert!(watchpoint_registers(0x4000_0000, 0, WatchKind::READ).is_err());
    }

    #[test]
    fn larger_watchpoints_need_aligned_powers_of_two() {
        let (wcr, wvr) = watchpoint_registers(0x4000_0100, 256, WatchKind::READ).unwrap();
        assert_eq!(wvr, 0x4000_0100);
        assert_eq!((wcr >> 24) & 0x1f, 8, "MASK = log2(256)");
        assert_eq!((wcr >> 5) & 0xff, 0xff);
        assert!(watchpoint_registers(0x4000_0080, 256, WatchKind::READ).is_err(), "unaligned base");
        assert!(watchpoint_registers(0x4000_0000, 24, WatchKind::READ).is_err(), "not a power of two");
        assert!(watchpoint_registers(0x4000_0000, 16, WatchKind(0)).is_err(), "no kind");
    }

    #[test]
    fn watch_pieces_cover_exactly_and_each_fits_one_register() {
        assert_eq!(watch_pieces(0x1003, 12), Some(vec![(0x1003, 5), (0x1008, 7)]));
        assert_eq!(watch_pieces(0x1000, 8), Some(vec![(0x1000, 8)]));
        assert_eq!(watch_pieces(0x1000, 24), Some(vec![(0x1000, 16), (0x1010, 8)]));
        assert_eq!(
            watch_pieces(0x1004, 64),
            Some(vec![(0x1004, 4), (0x1008, 8), (0x1010, 16), (0x1020, 32), (0x1040, 4)])
        );
        assert_eq!(watch_pieces(0x1000, 0), None);
        assert_eq!(watch_pieces(u64::MAX, 2), None);
        assert_eq!(watch_pieces(0x1001, 16 * 8 + 7).map(|p| p.len()), Some(6));
        assert_eq!(watch_pieces(0, 1 << 36), None, "32 pieces of 2 GiB: more than there are registers");
        for (addr, len) in [(0x4000_0001u64, 3u64), (0x77, 100), (0x1000, 0x1000), (0xfff9, 30)] {
            let pieces = watch_pieces(addr, len).unwrap();
            let mut at = addr;
            for (a, l) in &pieces {
                assert_eq!(*a, at, "contiguous");
                assert!(
                    watchpoint_registers(*a, *l, WatchKind::WRITE).is_ok(),
                    "{a:#x}+{l} fits one register"
                );
                at += l;
            }
            assert_eq!(at, addr + len, "covers exactly");
        }
    }
}
