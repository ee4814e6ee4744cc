//! The AArch64 register model shared by every backend: core and FP/SIMD register files, typed
//! register ids, put levels, and the change tracking that makes a put write only what the host
//! edited.

use abi_stable::StableAbi;

/// Number of saved program status registers KVM banks for EL1: SPSR_EL1, SPSR_abt, SPSR_und,
/// SPSR_irq and SPSR_fiq, in that order.
pub const SPSR_BANKS: usize = 5;

/// The general-purpose and special-purpose registers of one vCPU.
///
/// The layout follows the register model of `DESIGN.md`: X0–X30, SP_EL0, SP_EL1, PC, PSTATE,
/// ELR_EL1 and the five SPSR banks in KVM's order (see [`SPSR_BANKS`]).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreRegs {
    /// X0–X30.
    pub x: [u64; 31],
    /// SP_EL0.
    pub sp_el0: u64,
    /// SP_EL1.
    pub sp_el1: u64,
    /// The program counter.
    pub pc: u64,
    /// PSTATE as an SPSR-formatted value (NZCV, DAIF, M`[4:0]`, …).
    pub pstate: u64,
    /// ELR_EL1.
    pub elr_el1: u64,
    /// SPSR_EL1 followed by the AArch32 banks abt, und, irq, fiq.
    pub spsr: [u64; SPSR_BANKS],
}

/// One core register, named as in the Arm ARM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CoreReg {
    /// Xn, n in 0..=30.
    X(u8),
    /// SP_EL0.
    SpEl0,
    /// SP_EL1.
    SpEl1,
    /// PC.
    Pc,
    /// PSTATE.
    Pstate,
    /// ELR_EL1.
    ElrEl1,
    /// SPSR bank n (0 = SPSR_EL1, then abt, und, irq, fiq).
    Spsr(u8),
}

impl CoreReg {
    /// Every core register, in register-file order.
    pub fn all() -> impl Iterator<Item = CoreReg> {
        (0..31u8)
            .map(CoreReg::X)
            .chain([CoreReg::SpEl0, CoreReg::SpEl1, CoreReg::Pc, CoreReg::Pstate, CoreReg::ElrEl1])
            .chain((0..SPSR_BANKS as u8).map(CoreReg::Spsr))
    }

    /// The Arm ARM name, for messages.
    pub fn name(self) -> String {
        const SPSR_NAMES: [&str; SPSR_BANKS] = ["SPSR_EL1", "SPSR_abt", "SPSR_und", "SPSR_irq", "SPSR_fiq"];
        match self {
            CoreReg::X(n) => format!("X{n}"),
            CoreReg::SpEl0 => "SP_EL0".into(),
            CoreReg::SpEl1 => "SP_EL1".into(),
            CoreReg::Pc => "PC".into(),
            CoreReg::Pstate => "PSTATE".into(),
            CoreReg::ElrEl1 => "ELR_EL1".into(),
            CoreReg::Spsr(n) => {
                SPSR_NAMES.get(usize::from(n)).map_or_else(|| format!("SPSR bank {n}"), |s| (*s).to_string())
            }
        }
    }
}

impl CoreRegs {
    /// The value of one register. Out-of-range indices read as 0.
    pub fn get(&self, reg: CoreReg) -> u64 {
        match reg {
            CoreReg::X(n) => self.x.get(usize::from(n)).copied().unwrap_or(0),
            CoreReg::SpEl0 => self.sp_el0,
            CoreReg::SpEl1 => self.sp_el1,
            CoreReg::Pc => self.pc,
            CoreReg::Pstate => self.pstate,
            CoreReg::ElrEl1 => self.elr_el1,
            CoreReg::Spsr(n) => self.spsr.get(usize::from(n)).copied().unwrap_or(0),
        }
    }

    /// Sets one register. Out-of-range indices are ignored.
    pub fn set(&mut self, reg: CoreReg, value: u64) {
        let slot = match reg {
            CoreReg::X(n) => self.x.get_mut(usize::from(n)),
            CoreReg::SpEl0 => Some(&mut self.sp_el0),
            CoreReg::SpEl1 => Some(&mut self.sp_el1),
            CoreReg::Pc => Some(&mut self.pc),
            CoreReg::Pstate => Some(&mut self.pstate),
            CoreReg::ElrEl1 => Some(&mut self.elr_el1),
            CoreReg::Spsr(n) => self.spsr.get_mut(usize::from(n)),
        };
        if let Some(slot) = slot {
            *slot = value;
        }
    }

    /// The registers whose value differs between `self` and `base`.
    pub fn changed_since<'a>(&'a self, base: &'a CoreRegs) -> impl Iterator<Item = CoreReg> + 'a {
        CoreReg::all().filter(move |&r| self.get(r) != base.get(r))
    }
}

/// The FP/SIMD register file: V0–V31, FPSR and FPCR.
///
/// Each V register is held as its 16 bytes in architectural little-endian order (byte 0 is bits
/// `[7:0]`) on every host.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpRegs {
    /// V0–V31.
    pub v: [[u8; 16]; 32],
    /// FPSR.
    pub fpsr: u32,
    /// FPCR.
    pub fpcr: u32,
}

/// One FP/SIMD register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FpReg {
    /// Vn, n in 0..=31.
    V(u8),
    /// FPSR.
    Fpsr,
    /// FPCR.
    Fpcr,
}

impl FpReg {
    /// Every FP/SIMD register, in register-file order.
    pub fn all() -> impl Iterator<Item = FpReg> {
        (0..32u8).map(FpReg::V).chain([FpReg::Fpsr, FpReg::Fpcr])
    }

    /// The Arm ARM name, for messages.
    pub fn name(self) -> String {
        match self {
            FpReg::V(n) => format!("V{n}"),
            FpReg::Fpsr => "FPSR".into(),
            FpReg::Fpcr => "FPCR".into(),
        }
    }
}

impl FpRegs {
    /// Vn as a 128-bit integer.
    pub fn v_u128(&self, n: usize) -> u128 {
        self.v.get(n).map_or(0, |b| u128::from_le_bytes(*b))
    }

    /// Sets Vn from a 128-bit integer. Out-of-range indices are ignored.
    pub fn set_v_u128(&mut self, n: usize, value: u128) {
        if let Some(slot) = self.v.get_mut(n) {
            *slot = value.to_le_bytes();
        }
    }

    /// The registers whose value differs between `self` and `base`.
    pub fn changed_since<'a>(&'a self, base: &'a FpRegs) -> impl Iterator<Item = FpReg> + 'a {
        FpReg::all().filter(move |&r| match r {
            FpReg::V(n) => self.v[usize::from(n)] != base.v[usize::from(n)],
            FpReg::Fpsr => self.fpsr != base.fpsr,
            FpReg::Fpcr => self.fpcr != base.fpcr,
        })
    }
}

/// What a vCPU has asked of its accelerator so far: register accesses (one `KVM_GET_ONE_REG` or
/// `KVM_SET_ONE_REG`, one `hv_vcpu_get_*`/`set_*` call) and guest entries. For measuring sync
/// costs; backends count what they do, not what the host asked.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounters {
    /// Register reads.
    pub reg_reads: u64,
    /// Register writes.
    pub reg_writes: u64,
    /// Guest entries (`KVM_RUN`, `hv_vcpu_run`).
    pub runs: u64,
}

crate::numbered! {
    /// How much state a put may write, as in QEMU's `KVM_PUT_*_STATE` levels.
    ///
    /// - `Runtime`: state that changes while the guest runs (registers a debugger edits).
    /// - `Reset`: also state that only changes on reset.
    /// - `Full`: everything, including the virtual counter; used on restore from a snapshot.
    ///
    /// A number rather than an enum, so that the set can grow without breaking plugins; a level a
    /// backend does not know is treated as [`PutLevel::FULL`].
    #[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub struct PutLevel(u32) {
        /// Registers that change while the guest runs.
        RUNTIME = 1 => "runtime",
        /// Also registers that change only on reset.
        RESET = 2 => "reset",
        /// Everything, including the virtual counter.
        FULL = 3 => "full",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_reg_enumeration_covers_the_file_once() {
        let all: Vec<_> = CoreReg::all().collect();
        assert_eq!(all.len(), 31 + 5 + SPSR_BANKS);
        let mut regs = CoreRegs::default();
        for (i, r) in all.iter().enumerate() {
            regs.set(*r, i as u64 + 1);
        }
        for (i, r) in all.iter().enumerate() {
            assert_eq!(regs.get(*r), i as u64 + 1, "{}", r.name());
        }
        assert_eq!(regs.x[30], 31);
        assert_eq!(regs.spsr[4], all.len() as u64);
    }

    #[test]
    fn changed_since_lists_exactly_the_edited_registers() {
        let base = CoreRegs::default();
        let mut edited = base;
        edited.x[7] = 1;
        edited.pc = 0x4000_0000;
        edited.spsr[0] = 0x3c5;
        let changed: Vec<_> = edited.changed_since(&base).collect();
        assert_eq!(changed, vec![CoreReg::X(7), CoreReg::Pc, CoreReg::Spsr(0)]);
        assert_eq!(base.changed_since(&base).count(), 0);
    }

    #[test]
    fn fp_changes_and_byte_order() {
        let base = FpRegs::default();
        let mut edited = base;
        edited.set_v_u128(3, 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
        edited.fpcr = 1 << 24;
        assert_eq!(edited.v[3][0], 0x10, "V registers are little-endian bytes");
        assert_eq!(edited.v_u128(3), 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
        let changed: Vec<_> = edited.changed_since(&base).collect();
        assert_eq!(changed, vec![FpReg::V(3), FpReg::Fpcr]);
    }

    #[test]
    fn names_follow_the_arm_arm() {
        assert_eq!(CoreReg::Spsr(0).name(), "SPSR_EL1");
        assert_eq!(CoreReg::Spsr(4).name(), "SPSR_fiq");
        assert_eq!(CoreReg::X(30).name(), "X30");
        assert_eq!(FpReg::Fpsr.name(), "FPSR");
    }
}
