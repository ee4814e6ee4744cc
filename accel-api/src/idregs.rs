//! The host CPU's ID registers as a backend reports them, with their fields decoded by the Arm
//! ARM's names, and the AArch32 DBGDIDR synthesized from the AArch64 registers.

use crate::sysreg::{RegId, RegValue};

/// The ID registers a probe reads (zero where the backend cannot read one). They cross the plugin
/// boundary as a list of [`RegValue`]s by encoding ([`IdRegisters::to_values`]); DBGDIDR is
/// synthesized on arrival.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdRegisters {
    /// MIDR_EL1.
    pub midr: u64,
    /// ID_AA64PFR0_EL1.
    pub aa64pfr0: u64,
    /// ID_AA64PFR1_EL1.
    pub aa64pfr1: u64,
    /// ID_AA64DFR0_EL1.
    pub aa64dfr0: u64,
    /// ID_AA64DFR1_EL1.
    pub aa64dfr1: u64,
    /// ID_AA64ISAR0_EL1.
    pub aa64isar0: u64,
    /// ID_AA64ISAR1_EL1.
    pub aa64isar1: u64,
    /// ID_AA64ISAR2_EL1.
    pub aa64isar2: u64,
    /// ID_AA64MMFR0_EL1.
    pub aa64mmfr0: u64,
    /// ID_AA64MMFR1_EL1.
    pub aa64mmfr1: u64,
    /// ID_AA64MMFR2_EL1.
    pub aa64mmfr2: u64,
    /// ID_AA64MMFR3_EL1.
    pub aa64mmfr3: u64,
    /// ID_AA64ZFR0_EL1.
    pub aa64zfr0: u64,
    /// ID_AA64SMFR0_EL1.
    pub aa64smfr0: u64,
    /// The AArch32 ID registers, in encoding order: ID_PFR0, ID_PFR1, ID_DFR0, ID_AFR0,
    /// ID_MMFR0..3, ID_ISAR0..5, ID_MMFR4, ID_ISAR6 (UNKNOWN on hosts without AArch32).
    pub aarch32: [u32; 16],
    /// MVFR0_EL1, MVFR1_EL1, MVFR2_EL1.
    pub mvfr: [u32; 3],
    /// DBGDIDR, synthesized (see [`synthesize_dbgdidr`]); 0 without AArch32 at EL1.
    pub dbgdidr: u32,
}

/// The AArch64 encodings (op0, op1, CRn, CRm, op2) of the 64-bit ID registers, in field order.
const AA64_ENCODINGS: [(u8, u8, u8, u8, u8); 14] = [
    (3, 0, 0, 0, 0), // MIDR_EL1
    (3, 0, 0, 4, 0), // ID_AA64PFR0_EL1
    (3, 0, 0, 4, 1), // ID_AA64PFR1_EL1
    (3, 0, 0, 5, 0), // ID_AA64DFR0_EL1
    (3, 0, 0, 5, 1), // ID_AA64DFR1_EL1
    (3, 0, 0, 6, 0), // ID_AA64ISAR0_EL1
    (3, 0, 0, 6, 1), // ID_AA64ISAR1_EL1
    (3, 0, 0, 6, 2), // ID_AA64ISAR2_EL1
    (3, 0, 0, 7, 0), // ID_AA64MMFR0_EL1
    (3, 0, 0, 7, 1), // ID_AA64MMFR1_EL1
    (3, 0, 0, 7, 2), // ID_AA64MMFR2_EL1
    (3, 0, 0, 7, 3), // ID_AA64MMFR3_EL1
    (3, 0, 0, 4, 4), // ID_AA64ZFR0_EL1
    (3, 0, 0, 4, 5), // ID_AA64SMFR0_EL1
];

/// The AArch32 ID register `n` (0..16, in encoding order) as an AArch64 register: CRm 1 and 2.
fn aarch32_id(n: usize) -> RegId {
    RegId::sys(3, 0, 0, 1 + (n / 8) as u8, (n % 8) as u8)
}

/// MVFRn_EL1.
fn mvfr_id(n: usize) -> RegId {
    RegId::sys(3, 0, 0, 3, n as u8)
}

impl IdRegisters {
    fn aa64_mut(&mut self) -> [&mut u64; 14] {
        [
            &mut self.midr,
            &mut self.aa64pfr0,
            &mut self.aa64pfr1,
            &mut self.aa64dfr0,
            &mut self.aa64dfr1,
            &mut self.aa64isar0,
            &mut self.aa64isar1,
            &mut self.aa64isar2,
            &mut self.aa64mmfr0,
            &mut self.aa64mmfr1,
            &mut self.aa64mmfr2,
            &mut self.aa64mmfr3,
            &mut self.aa64zfr0,
            &mut self.aa64smfr0,
        ]
    }

    /// Every register as a value by its AArch64 encoding (DBGDIDR, which has none, excepted).
    pub fn to_values(&self) -> Vec<RegValue> {
        let mut copy = *self;
        let aa64 = copy.aa64_mut().map(|v| *v);
        let mut out: Vec<RegValue> = AA64_ENCODINGS
            .iter()
            .zip(aa64)
            .map(|(&(op0, op1, crn, crm, op2), value)| RegValue {
                id: RegId::sys(op0, op1, crn, crm, op2),
                value,
            })
            .collect();
        out.extend(
            self.aarch32
                .iter()
                .enumerate()
                .map(|(n, v)| RegValue { id: aarch32_id(n), value: u64::from(*v) }),
        );
        out.extend(
            self.mvfr.iter().enumerate().map(|(n, v)| RegValue { id: mvfr_id(n), value: u64::from(*v) }),
        );
        out
    }

    /// The registers from values by encoding; missing ones read as 0, unknown ones are ignored,
    /// and DBGDIDR is synthesized.
    pub fn from_values(values: &[RegValue]) -> Self {
        let find = |id: RegId| values.iter().find(|v| v.id == id).map_or(0, |v| v.value);
        let mut id = IdRegisters::default();
        for (slot, &(op0, op1, crn, crm, op2)) in id.aa64_mut().into_iter().zip(AA64_ENCODINGS.iter()) {
            *slot = find(RegId::sys(op0, op1, crn, crm, op2));
        }
        for (n, slot) in id.aarch32.iter_mut().enumerate() {
            *slot = find(aarch32_id(n)) as u32;
        }
        for (n, slot) in id.mvfr.iter_mut().enumerate() {
            *slot = find(mvfr_id(n)) as u32;
        }
        id.dbgdidr = synthesize_dbgdidr(id.aa64pfr0, id.aa64dfr0);
        id
    }
}

/// One ID register field: its register, Arm ARM name, lowest bit and width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldSpec {
    /// The register's name.
    pub reg: &'static str,
    /// The field's name.
    pub name: &'static str,
    /// Its lowest bit.
    pub lsb: u8,
    /// Its width in bits.
    pub width: u8,
}

const fn f(reg: &'static str, name: &'static str, lsb: u8, width: u8) -> FieldSpec {
    FieldSpec { reg, name, lsb, width }
}

/// The fields decoded, by register (Arm ARM DDI 0487, D19 "AArch64 System Register
/// Descriptions"). Fields are 4 bits wide unless noted.
pub const FIELDS: &[FieldSpec] = &[
    f("MIDR_EL1", "Implementer", 24, 8),
    f("MIDR_EL1", "Variant", 20, 4),
    f("MIDR_EL1", "Architecture", 16, 4),
    f("MIDR_EL1", "PartNum", 4, 12),
    f("MIDR_EL1", "Revision", 0, 4),
    f("ID_AA64PFR0_EL1", "EL0", 0, 4),
    f("ID_AA64PFR0_EL1", "EL1", 4, 4),
    f("ID_AA64PFR0_EL1", "EL2", 8, 4),
    f("ID_AA64PFR0_EL1", "EL3", 12, 4),
    f("ID_AA64PFR0_EL1", "FP", 16, 4),
    f("ID_AA64PFR0_EL1", "AdvSIMD", 20, 4),
    f("ID_AA64PFR0_EL1", "GIC", 24, 4),
    f("ID_AA64PFR0_EL1", "RAS", 28, 4),
    f("ID_AA64PFR0_EL1", "SVE", 32, 4),
    f("ID_AA64PFR0_EL1", "SEL2", 36, 4),
    f("ID_AA64PFR0_EL1", "MPAM", 40, 4),
    f("ID_AA64PFR0_EL1", "AMU", 44, 4),
    f("ID_AA64PFR0_EL1", "DIT", 48, 4),
    f("ID_AA64PFR0_EL1", "CSV2", 56, 4),
    f("ID_AA64PFR0_EL1", "CSV3", 60, 4),
    f("ID_AA64PFR1_EL1", "BT", 0, 4),
    f("ID_AA64PFR1_EL1", "SSBS", 4, 4),
    f("ID_AA64PFR1_EL1", "MTE", 8, 4),
    f("ID_AA64PFR1_EL1", "RAS_frac", 12, 4),
    f("ID_AA64PFR1_EL1", "SME", 24, 4),
    f("ID_AA64DFR0_EL1", "DebugVer", 0, 4),
    f("ID_AA64DFR0_EL1", "TraceVer", 4, 4),
    f("ID_AA64DFR0_EL1", "PMUVer", 8, 4),
    f("ID_AA64DFR0_EL1", "BRPs", 12, 4),
    f("ID_AA64DFR0_EL1", "WRPs", 20, 4),
    f("ID_AA64DFR0_EL1", "CTX_CMPs", 28, 4),
    f("ID_AA64DFR0_EL1", "PMSVer", 32, 4),
    f("ID_AA64DFR0_EL1", "DoubleLock", 36, 4),
    f("ID_AA64ISAR0_EL1", "AES", 4, 4),
    f("ID_AA64ISAR0_EL1", "SHA1", 8, 4),
    f("ID_AA64ISAR0_EL1", "SHA2", 12, 4),
    f("ID_AA64ISAR0_EL1", "CRC32", 16, 4),
    f("ID_AA64ISAR0_EL1", "Atomic", 20, 4),
    f("ID_AA64ISAR0_EL1", "RDM", 28, 4),
    f("ID_AA64ISAR0_EL1", "SHA3", 32, 4),
    f("ID_AA64ISAR0_EL1", "SM3", 36, 4),
    f("ID_AA64ISAR0_EL1", "SM4", 40, 4),
    f("ID_AA64ISAR0_EL1", "DP", 44, 4),
    f("ID_AA64ISAR0_EL1", "FHM", 48, 4),
    f("ID_AA64ISAR0_EL1", "TS", 52, 4),
    f("ID_AA64ISAR0_EL1", "TLB", 56, 4),
    f("ID_AA64ISAR0_EL1", "RNDR", 60, 4),
    f("ID_AA64ISAR1_EL1", "DPB", 0, 4),
    f("ID_AA64ISAR1_EL1", "APA", 4, 4),
    f("ID_AA64ISAR1_EL1", "API", 8, 4),
    f("ID_AA64ISAR1_EL1", "JSCVT", 12, 4),
    f("ID_AA64ISAR1_EL1", "FCMA", 16, 4),
    f("ID_AA64ISAR1_EL1", "LRCPC", 20, 4),
    f("ID_AA64ISAR1_EL1", "GPA", 24, 4),
    f("ID_AA64ISAR1_EL1", "GPI", 28, 4),
    f("ID_AA64ISAR1_EL1", "FRINTTS", 32, 4),
    f("ID_AA64ISAR1_EL1", "SB", 36, 4),
    f("ID_AA64ISAR1_EL1", "SPECRES", 40, 4),
    f("ID_AA64ISAR1_EL1", "BF16", 44, 4),
    f("ID_AA64ISAR1_EL1", "DGH", 48, 4),
    f("ID_AA64ISAR1_EL1", "I8MM", 52, 4),
    f("ID_AA64ISAR2_EL1", "WFxT", 0, 4),
    f("ID_AA64ISAR2_EL1", "RPRES", 4, 4),
    f("ID_AA64ISAR2_EL1", "GPA3", 8, 4),
    f("ID_AA64ISAR2_EL1", "APA3", 12, 4),
    f("ID_AA64ISAR2_EL1", "MOPS", 16, 4),
    f("ID_AA64ISAR2_EL1", "BC", 20, 4),
    f("ID_AA64MMFR0_EL1", "PARange", 0, 4),
    f("ID_AA64MMFR0_EL1", "ASIDBits", 4, 4),
    f("ID_AA64MMFR0_EL1", "BigEnd", 8, 4),
    f("ID_AA64MMFR0_EL1", "SNSMem", 12, 4),
    f("ID_AA64MMFR0_EL1", "BigEndEL0", 16, 4),
    f("ID_AA64MMFR0_EL1", "TGran16", 20, 4),
    f("ID_AA64MMFR0_EL1", "TGran64", 24, 4),
    f("ID_AA64MMFR0_EL1", "TGran4", 28, 4),
    f("ID_AA64MMFR1_EL1", "HAFDBS", 0, 4),
    f("ID_AA64MMFR1_EL1", "VMIDBits", 4, 4),
    f("ID_AA64MMFR1_EL1", "VH", 8, 4),
    f("ID_AA64MMFR1_EL1", "HPDS", 12, 4),
    f("ID_AA64MMFR1_EL1", "LO", 16, 4),
    f("ID_AA64MMFR1_EL1", "PAN", 20, 4),
    f("ID_AA64MMFR1_EL1", "XNX", 28, 4),
    f("ID_AA64MMFR2_EL1", "CnP", 0, 4),
    f("ID_AA64MMFR2_EL1", "UAO", 4, 4),
    f("ID_AA64MMFR2_EL1", "VARange", 16, 4),
    f("ID_AA64MMFR2_EL1", "NV", 24, 4),
    f("ID_AA64MMFR2_EL1", "AT", 32, 4),
    f("ID_AA64MMFR3_EL1", "TCRX", 0, 4),
    f("ID_AA64MMFR3_EL1", "SCTLRX", 4, 4),
    f("ID_AA64ZFR0_EL1", "SVEver", 0, 4),
    f("ID_AA64ZFR0_EL1", "AES", 4, 4),
    f("ID_AA64ZFR0_EL1", "BitPerm", 16, 4),
    f("ID_AA64ZFR0_EL1", "BF16", 20, 4),
    f("ID_AA64ZFR0_EL1", "SHA3", 32, 4),
    f("ID_AA64ZFR0_EL1", "SM4", 40, 4),
    f("ID_AA64ZFR0_EL1", "I8MM", 44, 4),
    f("ID_AA64ZFR0_EL1", "F32MM", 52, 4),
    f("ID_AA64ZFR0_EL1", "F64MM", 56, 4),
    f("ID_AA64SMFR0_EL1", "F32F32", 32, 1),
    f("ID_AA64SMFR0_EL1", "I8I32", 36, 4),
    f("ID_AA64SMFR0_EL1", "SMEver", 56, 4),
    f("ID_AA64SMFR0_EL1", "FA64", 63, 1),
];

impl IdRegisters {
    /// The value of the register named `reg` (AArch64 ones and MIDR_EL1; DBGDIDR).
    pub fn reg(&self, reg: &str) -> Option<u64> {
        Some(match reg {
            "MIDR_EL1" => self.midr,
            "ID_AA64PFR0_EL1" => self.aa64pfr0,
            "ID_AA64PFR1_EL1" => self.aa64pfr1,
            "ID_AA64DFR0_EL1" => self.aa64dfr0,
            "ID_AA64DFR1_EL1" => self.aa64dfr1,
            "ID_AA64ISAR0_EL1" => self.aa64isar0,
            "ID_AA64ISAR1_EL1" => self.aa64isar1,
            "ID_AA64ISAR2_EL1" => self.aa64isar2,
            "ID_AA64MMFR0_EL1" => self.aa64mmfr0,
            "ID_AA64MMFR1_EL1" => self.aa64mmfr1,
            "ID_AA64MMFR2_EL1" => self.aa64mmfr2,
            "ID_AA64MMFR3_EL1" => self.aa64mmfr3,
            "ID_AA64ZFR0_EL1" => self.aa64zfr0,
            "ID_AA64SMFR0_EL1" => self.aa64smfr0,
            "DBGDIDR" => u64::from(self.dbgdidr),
            _ => return None,
        })
    }

    /// The value of field `name` of register `reg`.
    pub fn field(&self, reg: &str, name: &str) -> Option<u64> {
        let spec = FIELDS.iter().find(|s| s.reg == reg && s.name == name)?;
        let value = self.reg(reg)?;
        Some((value >> spec.lsb) & ((1u64 << spec.width) - 1))
    }

    /// Every field of [`FIELDS`] with its value.
    pub fn decoded(&self) -> Vec<(FieldSpec, u64)> {
        FIELDS.iter().filter_map(|s| self.field(s.reg, s.name).map(|v| (*s, v))).collect()
    }

    /// The number of hardware breakpoints: ID_AA64DFR0_EL1.BRPs + 1.
    pub fn breakpoints(&self) -> u32 {
        self.field("ID_AA64DFR0_EL1", "BRPs").map_or(0, |v| v as u32 + 1)
    }

    /// The number of hardware watchpoints: ID_AA64DFR0_EL1.WRPs + 1.
    pub fn watchpoints(&self) -> u32 {
        self.field("ID_AA64DFR0_EL1", "WRPs").map_or(0, |v| v as u32 + 1)
    }

    /// The physical address size in bits from ID_AA64MMFR0_EL1.PARange.
    pub fn pa_bits(&self) -> Option<u32> {
        match self.field("ID_AA64MMFR0_EL1", "PARange")? {
            0 => Some(32),
            1 => Some(36),
            2 => Some(40),
            3 => Some(42),
            4 => Some(44),
            5 => Some(48),
            6 => Some(52),
            7 => Some(56),
            _ => None,
        }
    }
}

/// DBGDIDR as an AArch32 guest would read it, synthesized from the AArch64 ID registers the way
/// the kernel's `trap_dbgidr()` does: WRPs, BRPs and CTX_CMPs from ID_AA64DFR0_EL1, version 6
/// (Armv8 debug), NSUHD_imp and SE_imp when EL3 exists, and the RES1 bit 15. Zero when EL1 has
/// no AArch32 (ID_AA64PFR0_EL1.EL1 < 2).
pub fn synthesize_dbgdidr(aa64pfr0: u64, aa64dfr0: u64) -> u32 {
    let field = |v: u64, lsb: u32| ((v >> lsb) & 0xf) as u32;
    if field(aa64pfr0, 4) < 2 {
        return 0;
    }
    let has_el3 = u32::from(field(aa64pfr0, 12) != 0);
    field(aa64dfr0, 20) << 28
        | field(aa64dfr0, 12) << 24
        | field(aa64dfr0, 28) << 20
        | 6 << 16
        | 1 << 15
        | has_el3 << 14
        | has_el3 << 12
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_decode_by_name() {
        let id = IdRegisters {
            // Cortex-A72 r0p3: Arm (0x41), part 0xd08.
            midr: 0x410f_d083,
            aa64dfr0: 0x1030_5106, // WRPs 3, BRPs 5, CTX_CMPs 1, PMUVer 1, DebugVer 6
            aa64mmfr0: 0x1122,     // PARange 2 (40 bits)
            aa64isar0: 0x0011_1120,
            ..Default::default()
        };
        assert_eq!(id.field("MIDR_EL1", "Implementer"), Some(0x41));
        assert_eq!(id.field("MIDR_EL1", "PartNum"), Some(0xd08));
        assert_eq!(id.breakpoints(), 6);
        assert_eq!(id.watchpoints(), 4);
        assert_eq!(id.pa_bits(), Some(40));
        assert_eq!(id.field("ID_AA64ISAR0_EL1", "AES"), Some(2));
        assert_eq!(id.field("ID_AA64ISAR0_EL1", "Atomic"), Some(1));
        assert_eq!(id.field("ID_AA64ISAR0_EL1", "Nonsense"), None);
        assert!(id.decoded().len() == FIELDS.len());
    }

    #[test]
    fn fields_stay_inside_their_registers() {
        for s in FIELDS {
            assert!(u32::from(s.lsb) + u32::from(s.width) <= 64, "{}.{}", s.reg, s.name);
            assert!(IdRegisters::default().reg(s.reg).is_some(), "{} is not readable", s.reg);
        }
    }

    #[test]
    fn values_by_encoding_round_trip() {
        let mut id = IdRegisters {
            midr: 0x410f_d083,
            aa64pfr0: 0x1122,
            aa64dfr0: 0x1030_5106,
            aa64smfr0: 7,
            ..Default::default()
        };
        id.aarch32[0] = 0x131;
        id.aarch32[15] = 0x11;
        id.mvfr[2] = 0x43;
        id.dbgdidr = synthesize_dbgdidr(id.aa64pfr0, id.aa64dfr0);
        let values = id.to_values();
        assert_eq!(values.len(), 14 + 16 + 3);
        assert!(values.contains(&RegValue { id: crate::sysreg::MIDR_EL1, value: 0x410f_d083 }));
        assert!(values.contains(&RegValue { id: RegId::sys(3, 0, 0, 2, 7), value: 0x11 }), "ID_ISAR6_EL1");
        assert_eq!(IdRegisters::from_values(&values), id);
    }

    #[test]
    fn dbgdidr_follows_the_kernel() {
        // EL1 AArch32 capable (EL1 = 2), EL3 present.
        let pfr0 = 0x1122;
        let dfr0 = 0x1030_5106;
        let d = synthesize_dbgdidr(pfr0, dfr0);
        assert_eq!(d >> 28, 3, "WRPs");
        assert_eq!((d >> 24) & 0xf, 5, "BRPs");
        assert_eq!((d >> 20) & 0xf, 1, "CTX_CMPs");
        assert_eq!((d >> 16) & 0xf, 6, "version");
        assert_eq!(d & (1 << 15), 1 << 15, "RES1");
        assert_eq!(d & (1 << 14 | 1 << 12), 1 << 14 | 1 << 12, "NSUHD_imp and SE_imp with EL3");
        assert_eq!(synthesize_dbgdidr(0x0011, dfr0), 0, "no AArch32 at EL1");
        assert_eq!(synthesize_dbgdidr(0x0022, dfr0) & (1 << 14 | 1 << 12), 0, "no EL3");
    }
}
