//! The registers a stop reply carries (gdb's "expedited" registers): PC, SP, X29, X30 and CPSR,
//! and VG with SVE, what gdb needs to show and unwind the frame it stopped in without asking for
//! every register. The vCPU's thread reads them by id as it stops, four register reads beside
//! the PC of the debug exit, and the session answers `p` packets for them from the same values
//! until the vCPU runs again.

use std::sync::{Arc, Mutex};

use accel_api::{client::Vcpu, CoreReg, RegId, Result};

use super::arch::GdbRegId;

/// PSTATE.M[0], SPSel at EL1: the stack pointer is SP_EL1 (EL1h) rather than SP_EL0.
const PSTATE_SP: u64 = 1;

/// The expedited registers of one stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expedited {
    /// PC.
    pub pc: u64,
    /// The stack pointer in use (SP_EL1 at EL1h, otherwise SP_EL0).
    pub sp: u64,
    /// X29, the frame pointer.
    pub x29: u64,
    /// X30, the link register.
    pub x30: u64,
    /// PSTATE, as gdb's 32-bit CPSR.
    pub cpsr: u32,
}

impl Expedited {
    /// Reads them from a vCPU stopped by a debug exit at `pc`: four register reads, the PC
    /// being the exit's.
    pub fn read(vcpu: &mut Vcpu, pc: u64) -> Result<Self> {
        let ids = [CoreReg::Pstate, CoreReg::X(29), CoreReg::X(30)].map(RegId::core);
        let v = vcpu.read_named(&ids)?;
        let pstate = v[0].value;
        let sp_reg = if pstate & PSTATE_SP != 0 { CoreReg::SpEl1 } else { CoreReg::SpEl0 };
        let sp = vcpu.read_named(&[RegId::core(sp_reg)])?[0].value;
        Ok(Self { pc, sp, x29: v[1].value, x30: v[2].value, cpsr: pstate as u32 })
    }

    /// The value of `reg` in gdb's byte order (little-endian, gdb's size), if it is one of them.
    pub fn value(&self, reg: GdbRegId) -> Option<Vec<u8>> {
        Some(match reg {
            GdbRegId::Pc => self.pc.to_le_bytes().to_vec(),
            GdbRegId::Sp => self.sp.to_le_bytes().to_vec(),
            GdbRegId::X(29) => self.x29.to_le_bytes().to_vec(),
            GdbRegId::X(30) => self.x30.to_le_bytes().to_vec(),
            GdbRegId::Cpsr => self.cpsr.to_le_bytes().to_vec(),
            _ => return None,
        })
    }

    /// The stop reply's `n:r;` fields: gdb's register number in hex, the value in hex bytes.
    pub fn fields(&self) -> String {
        let field = |n: u32, bytes: &[u8]| {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("{n:x}:{hex};")
        };
        [
            field(29, &self.x29.to_le_bytes()),
            field(30, &self.x30.to_le_bytes()),
            field(31, &self.sp.to_le_bytes()),
            field(32, &self.pc.to_le_bytes()),
            field(33, &self.cpsr.to_le_bytes()),
        ]
        .concat()
    }
}

/// VG's stop-reply field for a vector length of `vq` quadwords: gdb's register 85, the length in
/// doublewords.
pub fn vg_field(vq: u32) -> String {
    let hex: String = (u64::from(vq) * 2).to_le_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("55:{hex};")
}

/// Where a vCPU's thread leaves the expedited registers of its last stop for the session:
/// written before the stop is reported, cleared when the vCPU is resumed.
pub type ExpeditedSlot = Arc<Mutex<Option<Expedited>>>;

#[cfg(test)]
mod tests {
    use super::{vg_field, Expedited, GdbRegId};

    #[test]
    fn stop_reply_fields_are_gdb_numbers_and_little_endian_values() {
        let e = Expedited { pc: 0x4000_1000, sp: 0x10, x29: 0x1122, x30: 3, cpsr: 0x3c5 };
        assert_eq!(
            e.fields(),
            "1d:2211000000000000;1e:0300000000000000;1f:1000000000000000;20:0010004000000000;21:c5030000;"
        );
        assert_eq!(e.value(GdbRegId::Cpsr), Some(vec![0xc5, 3, 0, 0]));
        assert_eq!(e.value(GdbRegId::X(0)), None);
        assert_eq!(vg_field(4), "55:0800000000000000;");
    }
}
