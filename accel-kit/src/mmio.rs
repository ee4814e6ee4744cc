//! MMIO from data aborts, for backends that see the trap itself (Hypervisor.framework): the
//! ESR_ELx ISS of a data abort (Arm ARM D17.2.40, "ISS encoding for an exception from a Data
//! Abort"), and how a read's value reaches its destination register.
//!
//! With ISS.ISV = 1 the syndrome names the access: its size (SAS), whether a load sign-extends
//! (SSE), the register (SRT, where 31 is XZR), whether that register is 64-bit (SF) and the
//! direction (WnR). With ISV = 0 it does not, and the access is reported as a no-syndrome exit.

/// ESR_ELx.ISS.ISV: the syndrome describes the access.
const ISV: u64 = 1 << 24;
/// ESR_ELx.ISS.SSE: a load sign-extends.
const SSE: u64 = 1 << 21;
/// ESR_ELx.ISS.SF: the register is 64 bits wide.
const SF: u64 = 1 << 15;
/// ESR_ELx.ISS.CM: a cache maintenance instruction or address translation caused the abort.
const CM: u64 = 1 << 8;
/// ESR_ELx.ISS.S1PTW: the abort happened on a stage-1 translation table walk.
const S1PTW: u64 = 1 << 7;
/// ESR_ELx.ISS.WnR: a write.
const WNR: u64 = 1 << 6;

/// The ISS (bits `[24:0]`) of a syndrome.
pub fn iss(esr: u64) -> u64 {
    esr & 0x1ff_ffff
}

/// ESR_ELx.ISS.DFSC of a data abort.
pub fn dfsc(esr: u64) -> u8 {
    (esr & 0x3f) as u8
}

/// A translation fault (DFSC 0b0001xx, levels 0 to 3): nothing is mapped at the address.
pub fn is_translation_fault(esr: u64) -> bool {
    dfsc(esr) & 0b11_1100 == 0b00_0100
}

/// A permission fault (DFSC 0b0011xx): memory is mapped without the access's permission.
pub fn is_permission_fault(esr: u64) -> bool {
    dfsc(esr) & 0b11_1100 == 0b00_1100
}

/// A data abort decoded from its syndrome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataAbort {
    /// ISV = 1: a single load or store the hypervisor can complete.
    Access(MmioInstruction),
    /// A cache maintenance instruction (DC on the address): nothing to complete; the
    /// instruction is skipped, as KVM does.
    Maintenance {
        /// The ISS.
        iss: u64,
    },
    /// The guest's stage-1 translation table walk touched the address: no access to complete;
    /// the abort goes back to the guest as an external abort, as KVM does.
    TableWalk {
        /// The ISS.
        iss: u64,
    },
    /// ISV = 0: the syndrome does not describe the access (a load pair, a load with writeback).
    NoSyndrome {
        /// The ISS.
        iss: u64,
    },
}

impl DataAbort {
    /// Decodes the syndrome of a data abort (EC 0x24 or 0x25).
    pub fn decode(esr: u64) -> Self {
        let iss = iss(esr);
        if iss & S1PTW != 0 {
            return Self::TableWalk { iss };
        }
        if iss & CM != 0 {
            return Self::Maintenance { iss };
        }
        if iss & ISV == 0 {
            return Self::NoSyndrome { iss };
        }
        Self::Access(MmioInstruction {
            len: 1 << ((iss >> 22) & 3),
            sign_extend: iss & SSE != 0,
            srt: ((iss >> 16) & 31) as u8,
            sixty_four: iss & SF != 0,
            write: iss & WNR != 0,
        })
    }
}

/// A load or store described by a data abort's ISS with ISV = 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioInstruction {
    /// The access size in bytes (from SAS): 1, 2, 4 or 8.
    pub len: u32,
    /// SSE: a load sign-extends its value.
    pub sign_extend: bool,
    /// SRT: the transfer register; 31 is XZR.
    pub srt: u8,
    /// SF: the transfer register is Xt (64 bits), not Wt.
    pub sixty_four: bool,
    /// WnR: a store.
    pub write: bool,
}

impl MmioInstruction {
    /// The general-purpose register the access transfers, or `None` for XZR (reads as zero,
    /// writes are discarded).
    pub fn register(&self) -> Option<u8> {
        (self.srt < 31).then_some(self.srt)
    }

    fn width_mask(&self) -> u64 {
        if self.len >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * self.len)) - 1
        }
    }

    /// The bytes a store writes, as a little-endian integer: the low `len` bytes of the register
    /// (`xt`, 0 for XZR).
    pub fn store_value(&self, xt: u64) -> u64 {
        if self.register().is_none() {
            0
        } else {
            xt & self.width_mask()
        }
    }

    /// The value a load leaves in its register, given the `len` bytes read (little-endian, the
    /// rest of `data` ignored): sign-extended from the access size when SSE, then limited to 32
    /// bits for a Wt register (the upper half of Xt is zeroed).
    pub fn load_value(&self, data: u64) -> u64 {
        let raw = data & self.width_mask();
        let extended = if self.sign_extend && self.len < 8 {
            let shift = 64 - 8 * self.len;
            (((raw << shift) as i64) >> shift) as u64
        } else {
            raw
        };
        if self.sixty_four {
            extended
        } else {
            extended & 0xffff_ffff
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data-abort syndrome from a lower EL with ISV and the given fields (DFSC: translation
    /// fault, level 3).
    fn esr(sas: u64, sse: bool, srt: u64, sf: bool, wnr: bool) -> u64 {
        0x24 << 26
            | 1 << 25
            | ISV
            | sas << 22
            | u64::from(sse) << 21
            | srt << 16
            | u64::from(sf) << 15
            | u64::from(wnr) << 6
            | 0b00_0111
    }

    fn access(esr: u64) -> MmioInstruction {
        match DataAbort::decode(esr) {
            DataAbort::Access(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fields_decode_from_the_iss() {
        // STR X2, [X1]: 8 bytes, X2, 64-bit, a write.
        let a = access(esr(3, false, 2, true, true));
        assert_eq!(a, MmioInstruction { len: 8, sign_extend: false, srt: 2, sixty_four: true, write: true });
        // LDRSH W5, [X1]: 2 bytes, sign-extended into a 32-bit register.
        let a = access(esr(1, true, 5, false, false));
        assert_eq!(
            (a.len, a.sign_extend, a.register(), a.sixty_four, a.write),
            (2, true, Some(5), false, false)
        );
        assert!(is_translation_fault(esr(0, false, 0, false, false)));
        assert!(!is_permission_fault(esr(0, false, 0, false, false)));
        assert!(is_permission_fault(0x24 << 26 | 0b00_1111));
    }

    #[test]
    fn xzr_reads_as_zero_and_discards_loads() {
        let a = access(esr(2, false, 31, false, true));
        assert_eq!(a.register(), None);
        assert_eq!(a.store_value(0xdead_beef), 0, "STR WZR stores zero");
    }

    #[test]
    fn stores_keep_the_access_width() {
        let x = 0x1122_3344_5566_7788;
        for (sas, want) in [(0, 0x88), (1, 0x7788), (2, 0x5566_7788), (3, x)] {
            assert_eq!(access(esr(sas, false, 1, true, true)).store_value(x), want, "SAS {sas}");
        }
    }

    #[test]
    fn loads_extend_by_sse_and_sf() {
        // LDRB W: zero-extended, only the accessed byte.
        assert_eq!(access(esr(0, false, 3, false, false)).load_value(0xffff_ffab), 0xab);
        // LDRSB X: sign-extended to 64 bits.
        assert_eq!(access(esr(0, true, 3, true, false)).load_value(0x80), 0xffff_ffff_ffff_ff80);
        // LDRSB W: sign-extended to 32 bits, upper half zero.
        assert_eq!(access(esr(0, true, 3, false, false)).load_value(0x80), 0xffff_ff80);
        // LDRSH X of a positive value stays positive.
        assert_eq!(access(esr(1, true, 3, true, false)).load_value(0x7fff), 0x7fff);
        // LDRSW X.
        assert_eq!(access(esr(2, true, 3, true, false)).load_value(0x8000_0000), 0xffff_ffff_8000_0000);
        // LDR W ignores bytes beyond the access.
        assert_eq!(access(esr(2, false, 3, false, false)).load_value(u64::MAX), 0xffff_ffff);
        // LDR X.
        assert_eq!(access(esr(3, false, 3, true, false)).load_value(u64::MAX), u64::MAX);
    }

    #[test]
    fn no_syndrome_and_maintenance_are_told_apart() {
        let nisv = 0x24 << 26 | 1 << 25 | 0b00_0111;
        assert_eq!(DataAbort::decode(nisv), DataAbort::NoSyndrome { iss: 0b00_0111 });
        let dc = 0x24 << 26 | 1 << 25 | CM | WNR | 0b00_0111;
        assert!(matches!(DataAbort::decode(dc), DataAbort::Maintenance { .. }));
        let walk = 0x24 << 26 | S1PTW | 0b00_0111;
        assert!(matches!(DataAbort::decode(walk), DataAbort::TableWalk { .. }));
    }
}
