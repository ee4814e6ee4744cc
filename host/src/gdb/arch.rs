//! The AArch64 register view the gdb stub serves: gdb's `org.gnu.gdb.aarch64.core` and `fpu`
//! features, or `sve` when the vCPU has SVE, plus the vCPU's system registers under their Arm
//! ARM names, in a target description built for the actual vCPU.

use std::fmt::Write;

use accel_api::RegValue;

/// The registers of a `g` packet, in gdb's numbering: X0–X30 (0–30), SP (31), PC (32), CPSR (33),
/// then either V0–V31 (34–65) or Z0–Z31 (34–65 with SVE), FPSR (66), FPCR (67), and with SVE
/// P0–P15 (68–83), FFR (84) and VG (85).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GdbRegs {
    /// X0–X30.
    pub x: [u64; 31],
    /// SP (the stack pointer of the current EL).
    pub sp: u64,
    /// PC.
    pub pc: u64,
    /// CPSR (PSTATE).
    pub cpsr: u32,
    /// V0–V31, as little-endian bytes (without SVE).
    pub v: [[u8; 16]; 32],
    /// FPSR.
    pub fpsr: u32,
    /// FPCR.
    pub fpcr: u32,
    /// With SVE: the vector length in quadwords, and Z, P and FFR bytes.
    pub sve: Option<SveView>,
}

/// The SVE part of [`GdbRegs`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SveView {
    /// Vector length in quadwords.
    pub vq: u32,
    /// Z0–Z31, `vq * 16` bytes each.
    pub z: Vec<u8>,
    /// P0–P15, `vq * 2` bytes each.
    pub p: Vec<u8>,
    /// FFR, `vq * 2` bytes.
    pub ffr: Vec<u8>,
}

impl GdbRegs {
    /// The registers as a `g` packet's bytes.
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put = |bytes: &[u8]| out.extend_from_slice(bytes);
        for x in &self.x {
            put(&x.to_le_bytes());
        }
        put(&self.sp.to_le_bytes());
        put(&self.pc.to_le_bytes());
        put(&self.cpsr.to_le_bytes());
        match &self.sve {
            None => {
                for v in &self.v {
                    put(v);
                }
                put(&self.fpsr.to_le_bytes());
                put(&self.fpcr.to_le_bytes());
            }
            Some(s) => {
                put(&s.z);
                put(&self.fpsr.to_le_bytes());
                put(&self.fpcr.to_le_bytes());
                put(&s.p);
                put(&s.ffr);
                put(&(u64::from(s.vq) * 2).to_le_bytes());
            }
        }
        out
    }

    /// Takes the registers from a `G` packet's bytes, in the shape these have (with or without
    /// SVE, and at its vector length); `Err` when the bytes do not fit it.
    pub fn deserialize(&mut self, bytes: &[u8]) -> accel_api::Result<()> {
        let misfit =
            || accel_api::AccelError::invalid(format!("{} bytes of registers do not fit", bytes.len()));
        let mut at = 0usize;
        let mut take = |n: usize| -> accel_api::Result<&[u8]> {
            let s = bytes.get(at..at + n).ok_or_else(misfit)?;
            at += n;
            Ok(s)
        };
        let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
        let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or_default());
        for i in 0..31 {
            self.x[i] = u64_of(take(8)?);
        }
        self.sp = u64_of(take(8)?);
        self.pc = u64_of(take(8)?);
        self.cpsr = u32_of(take(4)?);
        match self.sve.as_mut() {
            None => {
                for i in 0..32 {
                    self.v[i].copy_from_slice(take(16)?);
                }
                self.fpsr = u32_of(take(4)?);
                self.fpcr = u32_of(take(4)?);
            }
            Some(s) => {
                let (zl, pl, fl) = (s.z.len(), s.p.len(), s.ffr.len());
                s.z.copy_from_slice(take(zl)?);
                self.fpsr = u32_of(take(4)?);
                self.fpcr = u32_of(take(4)?);
                s.p.copy_from_slice(take(pl)?);
                s.ffr.copy_from_slice(take(fl)?);
            }
        }
        Ok(())
    }
}

/// A register by gdb number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GdbRegId {
    /// Xn.
    X(u8),
    /// SP.
    Sp,
    /// PC.
    Pc,
    /// CPSR.
    Cpsr,
    /// Vn, or Zn with SVE.
    Vector(u8),
    /// FPSR.
    Fpsr,
    /// FPCR.
    Fpcr,
    /// Pn (SVE).
    Pred(u8),
    /// FFR (SVE).
    Ffr,
    /// VG (SVE): the vector length in doublewords.
    Vg,
    /// A system register by its 16-bit encoding (its gdb number).
    Sys(u16),
}

impl GdbRegId {
    /// The register of gdb number `n`.
    pub fn from_number(n: u64) -> Option<Self> {
        Some(match n {
            0..=30 => GdbRegId::X(n as u8),
            31 => GdbRegId::Sp,
            32 => GdbRegId::Pc,
            33 => GdbRegId::Cpsr,
            34..=65 => GdbRegId::Vector((n - 34) as u8),
            66 => GdbRegId::Fpsr,
            67 => GdbRegId::Fpcr,
            68..=83 => GdbRegId::Pred((n - 68) as u8),
            84 => GdbRegId::Ffr,
            85 => GdbRegId::Vg,
            0x8000..=0xffff => GdbRegId::Sys(n as u16),
            _ => return None,
        })
    }

    /// The register's size in bytes on a vCPU with SVE at `sve_vq` quadwords (or without);
    /// `None` for an SVE register on a vCPU without SVE.
    pub fn size(self, sve_vq: Option<u32>) -> Option<usize> {
        let vq = sve_vq.map(|vq| vq as usize);
        Some(match self {
            GdbRegId::X(_) | GdbRegId::Sp | GdbRegId::Pc | GdbRegId::Sys(_) => 8,
            GdbRegId::Cpsr | GdbRegId::Fpsr | GdbRegId::Fpcr => 4,
            GdbRegId::Vector(_) => vq.map_or(16, |vq| vq * 16),
            GdbRegId::Pred(_) | GdbRegId::Ffr => vq? * 2,
            GdbRegId::Vg => {
                vq?;
                8
            }
        })
    }
}

/// The types of gdb's own `org.gnu.gdb.aarch64.fpu` feature, as gdbserver describes them, so
/// that `p $v0.d.u` and the like work as against any other stub.
const FPU_TYPES: &str = concat!(
    "  <vector id=\"v8bf16\" type=\"bfloat16\" count=\"8\"/>\n",
    "  <vector id=\"v2d\" type=\"ieee_double\" count=\"2\"/>\n",
    "  <vector id=\"v2u\" type=\"uint64\" count=\"2\"/>\n",
    "  <vector id=\"v2i\" type=\"int64\" count=\"2\"/>\n",
    "  <vector id=\"v4f\" type=\"ieee_single\" count=\"4\"/>\n",
    "  <vector id=\"v4u\" type=\"uint32\" count=\"4\"/>\n",
    "  <vector id=\"v4i\" type=\"int32\" count=\"4\"/>\n",
    "  <vector id=\"v8f\" type=\"ieee_half\" count=\"8\"/>\n",
    "  <vector id=\"v8u\" type=\"uint16\" count=\"8\"/>\n",
    "  <vector id=\"v8i\" type=\"int16\" count=\"8\"/>\n",
    "  <vector id=\"v16u\" type=\"uint8\" count=\"16\"/>\n",
    "  <vector id=\"v16i\" type=\"int8\" count=\"16\"/>\n",
    "  <vector id=\"v1u\" type=\"uint128\" count=\"1\"/>\n",
    "  <vector id=\"v1i\" type=\"int128\" count=\"1\"/>\n",
    "  <union id=\"vnd\"><field name=\"f\" type=\"v2d\"/><field name=\"u\" type=\"v2u\"/><field name=\"s\" type=\"v2i\"/></union>\n",
    "  <union id=\"vns\"><field name=\"f\" type=\"v4f\"/><field name=\"u\" type=\"v4u\"/><field name=\"s\" type=\"v4i\"/></union>\n",
    "  <union id=\"vnh\"><field name=\"bf\" type=\"v8bf16\"/><field name=\"f\" type=\"v8f\"/><field name=\"u\" type=\"v8u\"/><field name=\"s\" type=\"v8i\"/></union>\n",
    "  <union id=\"vnb\"><field name=\"u\" type=\"v16u\"/><field name=\"s\" type=\"v16i\"/></union>\n",
    "  <union id=\"vnq\"><field name=\"u\" type=\"v1u\"/><field name=\"s\" type=\"v1i\"/></union>\n",
    "  <union id=\"aarch64v\"><field name=\"d\" type=\"vnd\"/><field name=\"s\" type=\"vns\"/>",
    "<field name=\"h\" type=\"vnh\"/><field name=\"b\" type=\"vnb\"/><field name=\"q\" type=\"vnq\"/></union>\n",
);

/// The types of gdb's own `org.gnu.gdb.aarch64.sve` feature at `vq` quadwords, as gdbserver and
/// QEMU describe them: `{q,d,s,h,b}` views of a Z register, each with `{u,s}` and the float
/// views `f` (so `p $z0.d.u` works), and predicates as bytes.
fn sve_types(vq: u32) -> String {
    let (q, d, s, h, b) = (vq, vq * 2, vq * 4, vq * 8, vq * 16);
    let mut t = String::new();
    for (id, ty, count) in [
        ("svevqu", "uint128", q),
        ("svevqs", "int128", q),
        ("svevdf", "ieee_double", d),
        ("svevdu", "uint64", d),
        ("svevds", "int64", d),
        ("svevsf", "ieee_single", s),
        ("svevsu", "uint32", s),
        ("svevss", "int32", s),
        ("svevhf", "ieee_half", h),
        ("svevhu", "uint16", h),
        ("svevhs", "int16", h),
        ("svevbu", "uint8", b),
        ("svevbs", "int8", b),
    ] {
        let _ = writeln!(t, r#"  <vector id="{id}" type="{ty}" count="{count}"/>"#);
    }
    for (id, fields) in [
        ("svevnq", &[("u", "svevqu"), ("s", "svevqs")][..]),
        ("svevnd", &[("f", "svevdf"), ("u", "svevdu"), ("s", "svevds")][..]),
        ("svevns", &[("f", "svevsf"), ("u", "svevsu"), ("s", "svevss")][..]),
        ("svevnh", &[("f", "svevhf"), ("u", "svevhu"), ("s", "svevhs")][..]),
        ("svevnb", &[("u", "svevbu"), ("s", "svevbs")][..]),
        ("svev", &[("q", "svevnq"), ("d", "svevnd"), ("s", "svevns"), ("h", "svevnh"), ("b", "svevnb")][..]),
    ] {
        let _ = write!(t, r#"  <union id="{id}">"#);
        for (name, ty) in fields {
            let _ = write!(t, r#"<field name="{name}" type="{ty}"/>"#);
        }
        t.push_str("</union>\n");
    }
    let _ = writeln!(t, r#"  <vector id="svep" type="uint8" count="{}"/>"#, vq * 2);
    t
}

/// System registers that KVM keeps with the core registers, served from them under their
/// system-register encodings: SP_EL0, SP_EL1, ELR_EL1 and SPSR_EL1.
pub const CORE_SYSREGS: [(u16, &str); 4] =
    [(0xc208, "SP_EL0"), (0xe208, "SP_EL1"), (0xc201, "ELR_EL1"), (0xc200, "SPSR_EL1")];

fn reg(xml: &mut String, name: &str, bits: u64, regnum: u64, kind: &str, group: Option<&str>) {
    let group = group.map(|g| format!(r#" group="{g}""#)).unwrap_or_default();
    let _ =
        writeln!(xml, r#"  <reg name="{name}" bitsize="{bits}" regnum="{regnum}" type="{kind}"{group}/>"#);
}

/// The target description for a vCPU: core, FP/SIMD or SVE at `sve_vq`, and `sysregs`.
pub fn target_xml(sve_vq: Option<u32>, sysregs: &[RegValue]) -> String {
    let mut x = String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE target SYSTEM \"gdb-target.dtd\">\n<target version=\"1.0\">\n<architecture>aarch64</architecture>\n");
    x.push_str("<feature name=\"org.gnu.gdb.aarch64.core\">\n");
    x.push_str(concat!(
        "  <flags id=\"cpsr_flags\" size=\"4\">\n",
        "    <field name=\"SP\" start=\"0\" end=\"0\"/><field name=\"EL\" start=\"2\" end=\"3\"/>\n",
        "    <field name=\"nRW\" start=\"4\" end=\"4\"/><field name=\"F\" start=\"6\" end=\"6\"/>\n",
        "    <field name=\"I\" start=\"7\" end=\"7\"/><field name=\"A\" start=\"8\" end=\"8\"/>\n",
        "    <field name=\"D\" start=\"9\" end=\"9\"/><field name=\"SS\" start=\"21\" end=\"21\"/>\n",
        "    <field name=\"V\" start=\"28\" end=\"28\"/><field name=\"C\" start=\"29\" end=\"29\"/>\n",
        "    <field name=\"Z\" start=\"30\" end=\"30\"/><field name=\"N\" start=\"31\" end=\"31\"/>\n",
        "  </flags>\n"
    ));
    for i in 0..31 {
        reg(&mut x, &format!("x{i}"), 64, i, "uint64", None);
    }
    reg(&mut x, "sp", 64, 31, "data_ptr", None);
    reg(&mut x, "pc", 64, 32, "code_ptr", None);
    reg(&mut x, "cpsr", 32, 33, "cpsr_flags", None);
    x.push_str("</feature>\n");
    match sve_vq {
        None => {
            x.push_str("<feature name=\"org.gnu.gdb.aarch64.fpu\">\n");
            x.push_str(FPU_TYPES);
            for i in 0..32 {
                reg(&mut x, &format!("v{i}"), 128, 34 + i, "aarch64v", Some("vector"));
            }
        }
        Some(vq) => {
            x.push_str("<feature name=\"org.gnu.gdb.aarch64.sve\">\n");
            x.push_str(&sve_types(vq));
            for i in 0..32 {
                reg(&mut x, &format!("z{i}"), u64::from(vq) * 128, 34 + i, "svev", Some("vector"));
            }
        }
    }
    reg(&mut x, "fpsr", 32, 66, "int", Some("float"));
    reg(&mut x, "fpcr", 32, 67, "int", Some("float"));
    if let Some(vq) = sve_vq {
        for i in 0..16 {
            reg(&mut x, &format!("p{i}"), u64::from(vq) * 16, 68 + i, "svep", Some("vector"));
        }
        reg(&mut x, "ffr", u64::from(vq) * 16, 84, "svep", Some("vector"));
        reg(&mut x, "vg", 64, 85, "int", Some("vector"));
    }
    x.push_str("</feature>\n");
    x.push_str("<feature name=\"org.accel.aarch64.sysregs\">\n");
    for (encoding, name) in CORE_SYSREGS {
        reg(&mut x, name, 64, u64::from(encoding), "uint64", Some("system"));
    }
    for v in
        sysregs.iter().filter(|v| v.id.encoding().is_none_or(|e| CORE_SYSREGS.iter().all(|(c, _)| *c != e)))
    {
        if let Some(encoding) = v.id.encoding() {
            reg(&mut x, &v.id.name(), 64, u64::from(encoding), "uint64", Some("system"));
        }
    }
    x.push_str("</feature>\n</target>\n");
    x
}

#[cfg(test)]
mod tests {
    use accel_api::sysreg::{SCTLR_EL1, TPIDR_EL1};

    use super::*;

    #[test]
    fn registers_round_trip_through_g_packets() {
        let mut regs = GdbRegs { pc: 0x4000_1000, cpsr: 0x3c5, fpcr: 7, ..Default::default() };
        regs.x[30] = 0xdead;
        regs.v[31][15] = 0xaa;
        let bytes = regs.serialize();
        assert_eq!(bytes.len(), 31 * 8 + 8 + 8 + 4 + 32 * 16 + 4 + 4);
        let mut back = GdbRegs::default();
        back.deserialize(&bytes).unwrap();
        assert_eq!(back, regs);
        assert!(back.deserialize(&bytes[..100]).is_err());

        let sve = SveView { vq: 2, z: vec![1; 32 * 32], p: vec![2; 16 * 4], ffr: vec![3; 4] };
        let regs = GdbRegs { sve: Some(sve), ..Default::default() };
        let bytes = regs.serialize();
        assert_eq!(bytes.len(), 31 * 8 + 20 + 32 * 32 + 8 + 16 * 4 + 4 + 8);
        assert_eq!(&bytes[bytes.len() - 8..], &4u64.to_le_bytes(), "VG in doublewords");
        let mut back = GdbRegs {
            sve: Some(SveView { vq: 2, z: vec![0; 1024], p: vec![0; 64], ffr: vec![0; 4] }),
            ..Default::default()
        };
        back.deserialize(&bytes).unwrap();
        assert_eq!(back, regs);
    }

    #[test]
    fn register_numbers() {
        assert_eq!(GdbRegId::from_number(33), Some(GdbRegId::Cpsr));
        assert_eq!(GdbRegId::from_number(65), Some(GdbRegId::Vector(31)));
        assert_eq!(GdbRegId::from_number(0xc080), Some(GdbRegId::Sys(0xc080)));
        assert!(GdbRegId::from_number(90).is_none());
        assert_eq!(GdbRegId::Vector(0).size(Some(16)), Some(256));
        assert_eq!(GdbRegId::Vector(0).size(None), Some(16));
        assert_eq!(GdbRegId::Ffr.size(None), None);
        assert_eq!(GdbRegId::Cpsr.size(None), Some(4));
    }

    #[test]
    fn descriptions_name_the_features() {
        let sys = [RegValue { id: SCTLR_EL1, value: 0 }, RegValue { id: TPIDR_EL1, value: 0 }];
        let plain = target_xml(None, &sys);
        assert!(plain.contains("org.gnu.gdb.aarch64.fpu") && plain.contains(r#"name="v31""#));
        assert!(plain.contains(r#"name="SCTLR_EL1" bitsize="64" regnum="49280""#), "{plain}");
        let sve = target_xml(Some(4), &sys);
        assert!(sve.contains("org.gnu.gdb.aarch64.sve") && sve.contains(r#"name="z31" bitsize="512""#));
        assert!(sve.contains(r#"name="vg""#) && !sve.contains(r#"name="v0""#));
        assert!(sve.contains(
            r#"<union id="svevnd"><field name="f" type="svevdf"/><field name="u" type="svevdu"/>"#
        ));
        assert!(
            sve.contains(r#"<vector id="svevdu" type="uint64" count="8"/>"#),
            "4 quadwords are 8 doublewords"
        );
        assert!(plain.contains(
            r#"<union id="vnd"><field name="f" type="v2d"/><field name="u" type="v2u"/><field name="s""#
        ));
        for name in ["SP_EL0", "SP_EL1", "ELR_EL1", "SPSR_EL1"] {
            assert!(plain.contains(&format!(r#"name="{name}""#)), "{name} is described");
        }
    }
}
