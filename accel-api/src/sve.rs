//! The SVE register file in the shared model: Z0–Z31, P0–P15 and FFR at the vCPU's vector
//! length, in architectural little-endian byte order on every host (byte 0 of Zn is bits `[7:0]`).

use abi_stable::{std_types::RVec, StableAbi};

/// The largest vector length the architecture allows, in quadwords (2048 bits).
pub const SVE_VQ_MAX: u32 = 16;

/// The SVE registers of one vCPU.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct SveRegs {
    /// The vector length in quadwords (128-bit units), 1..=16.
    pub vq: u32,
    /// Z0–Z31, each `vq * 16` bytes, one after another.
    pub z: RVec<u8>,
    /// P0–P15, each `vq * 2` bytes, one after another.
    pub p: RVec<u8>,
    /// FFR, `vq * 2` bytes.
    pub ffr: RVec<u8>,
}

/// One SVE register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SveReg {
    /// Zn, n in 0..=31.
    Z(u8),
    /// Pn, n in 0..=15.
    P(u8),
    /// The first-fault register.
    Ffr,
}

impl SveReg {
    /// Every SVE register, in order.
    pub fn all() -> impl Iterator<Item = SveReg> {
        (0..32u8).map(SveReg::Z).chain((0..16u8).map(SveReg::P)).chain([SveReg::Ffr])
    }

    /// The Arm ARM name.
    pub fn name(self) -> String {
        match self {
            SveReg::Z(n) => format!("Z{n}"),
            SveReg::P(n) => format!("P{n}"),
            SveReg::Ffr => "FFR".into(),
        }
    }
}

impl SveRegs {
    /// All-zero registers at vector length `vq`.
    pub fn zeroed(vq: u32) -> Self {
        let (zlen, plen) = (vq as usize * 16, vq as usize * 2);
        Self { vq, z: vec![0; 32 * zlen].into(), p: vec![0; 16 * plen].into(), ffr: vec![0; plen].into() }
    }

    /// The size of one Z register in bytes.
    pub fn z_len(&self) -> usize {
        self.vq as usize * 16
    }

    /// The size of one predicate register (and of FFR) in bytes.
    pub fn p_len(&self) -> usize {
        self.vq as usize * 2
    }

    /// True when the buffers have the sizes `vq` implies.
    pub fn is_well_formed(&self) -> bool {
        (1..=SVE_VQ_MAX).contains(&self.vq)
            && self.z.len() == 32 * self.z_len()
            && self.p.len() == 16 * self.p_len()
            && self.ffr.len() == self.p_len()
    }

    /// The bytes of one register; empty if the register file is malformed.
    pub fn reg(&self, reg: SveReg) -> &[u8] {
        let (zl, pl) = (self.z_len(), self.p_len());
        let range = match reg {
            SveReg::Z(n) => (n as usize * zl, zl, &self.z),
            SveReg::P(n) => (n as usize * pl, pl, &self.p),
            SveReg::Ffr => (0, pl, &self.ffr),
        };
        range.2.get(range.0..range.0 + range.1).unwrap_or(&[])
    }

    /// The bytes of one register, for writing; empty if the register file is malformed.
    pub fn reg_mut(&mut self, reg: SveReg) -> &mut [u8] {
        let (zl, pl) = (self.z_len(), self.p_len());
        let (start, len, buf) = match reg {
            SveReg::Z(n) => (n as usize * zl, zl, &mut self.z),
            SveReg::P(n) => (n as usize * pl, pl, &mut self.p),
            SveReg::Ffr => (0, pl, &mut self.ffr),
        };
        buf.get_mut(start..start + len).unwrap_or(&mut [])
    }

    /// The registers whose bytes differ from `base` (all of them if the vector lengths differ).
    pub fn changed_since<'a>(&'a self, base: &'a SveRegs) -> impl Iterator<Item = SveReg> + 'a {
        SveReg::all().filter(move |&r| self.vq != base.vq || self.reg(r) != base.reg(r))
    }
}

/// The vector lengths in a set given as a bit mask (bit `vq - 1` for each length), as bit counts.
pub fn vector_lengths_bits(vqs: u32) -> Vec<u32> {
    (1..=SVE_VQ_MAX).filter(|vq| vqs & (1 << (vq - 1)) != 0).map(|vq| vq * 128).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_change_tracking() {
        let base = SveRegs::zeroed(4);
        assert!(base.is_well_formed());
        assert_eq!(base.reg(SveReg::Z(31)).len(), 64);
        assert_eq!(base.reg(SveReg::P(15)).len(), 8);
        let mut edited = base.clone();
        edited.reg_mut(SveReg::Z(3))[63] = 1;
        edited.reg_mut(SveReg::Ffr)[0] = 0xff;
        let changed: Vec<_> = edited.changed_since(&base).collect();
        assert_eq!(changed, vec![SveReg::Z(3), SveReg::Ffr]);
        assert_eq!(edited.z[3 * 64 + 63], 1, "Z registers are stored one after another");
        assert_eq!(SveRegs::zeroed(2).changed_since(&base).count(), 49);
    }

    #[test]
    fn malformed_files_are_detected() {
        let mut r = SveRegs::zeroed(2);
        r.ffr.push(0);
        assert!(!r.is_well_formed());
        assert!(!SveRegs::zeroed(17).is_well_formed());
        assert_eq!(vector_lengths_bits(0b1000_1011), vec![128, 256, 512, 1024]);
    }
}
