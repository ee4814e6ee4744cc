//! "A put writes only what changed", written once for every backend: the record of a vCPU's
//! last get ([`LastGet`] for a register file, [`LastValues`] for listed registers), which says
//! what a put at a level has to write, and which a failed put leaves so that the next put writes
//! whatever may not have reached the vCPU.
//!
//! A put runs in three steps: ask the record what to write (`to_write`), write it, and tell the
//! record what the vCPU now holds. A register file's record is forgotten when it is asked, so a
//! put that fails part way makes the next put write the whole file.

use std::collections::HashMap;

use accel_api::{
    regs::{CoreReg, CoreRegs, FpReg, FpRegs, PutLevel},
    sve::{SveReg, SveRegs},
    sysreg::{RegId, RegValue},
};

/// A register file that a put can write in part: it names its registers and says which differ
/// from an earlier copy.
pub trait RegisterFile: Clone {
    /// A register of the file.
    type Reg: Copy;

    /// Every register of the file, in order.
    fn all_regs() -> Vec<Self::Reg>;

    /// The registers whose value differs from `base`.
    fn changed(&self, base: &Self) -> Vec<Self::Reg>;
}

/// `RegisterFile` for a file whose registers `Reg::all()` lists and whose `changed_since` compares.
macro_rules! register_file {
    ($($file:ty => $reg:ty),* $(,)?) => {$(
        impl RegisterFile for $file {
            type Reg = $reg;

            fn all_regs() -> Vec<$reg> {
                <$reg>::all().collect()
            }

            fn changed(&self, base: &Self) -> Vec<$reg> {
                self.changed_since(base).collect()
            }
        }
    )*};
}

register_file!(CoreRegs => CoreReg, FpRegs => FpReg, SveRegs => SveReg);

/// The values of a register file as the vCPU last reported or took them, against which a put
/// finds what the host changed.
#[derive(Clone, Debug)]
pub struct LastGet<F> {
    last: Option<F>,
}

impl<F> Default for LastGet<F> {
    fn default() -> Self {
        Self { last: None }
    }
}

impl<F: RegisterFile> LastGet<F> {
    /// Records that the vCPU holds `regs`: after a get, or after a put wrote every register
    /// [`LastGet::to_write`] named.
    pub fn got(&mut self, regs: &F) {
        self.last = Some(regs.clone());
    }

    /// Forgets the record, when something other than a put changed the vCPU's values (a reset,
    /// a write through another class): the next put writes everything.
    pub fn forget(&mut self) {
        self.last = None;
    }

    /// The registers a put of `new` at `level` has to write: those that differ from the record,
    /// or all of them at [`PutLevel::FULL`] or with no record. Forgets the record, since what
    /// reaches the vCPU is unknown until the put calls [`LastGet::got`] after its last write.
    pub fn to_write(&mut self, level: PutLevel, new: &F) -> Vec<F::Reg> {
        regs_to_put(level, self.last.take().as_ref(), new)
    }
}

/// The values of listed registers (system, timer, firmware …) as the vCPU last reported or
/// took them, by register.
#[derive(Clone, Debug, Default)]
pub struct LastValues {
    last: HashMap<RegId, u64>,
}

impl LastValues {
    /// Records values the vCPU reported in a get.
    pub fn got(&mut self, values: &[RegValue]) {
        self.last.extend(values.iter().map(|v| (v.id, v.value)));
    }

    /// Records one value a put wrote.
    pub fn wrote(&mut self, value: RegValue) {
        self.last.insert(value.id, value.value);
    }

    /// Forgets every value, when something other than a put changed them (a reset).
    pub fn forget(&mut self) {
        self.last.clear();
    }

    /// The values of `new` a put at `level` has to write, in order: those whose register may be
    /// written at that level and whose value differs from the record (every one at
    /// [`PutLevel::FULL`]); a register with no record counts as changed. A value whose write
    /// fails keeps its old record, so the next put tries it again if it still differs.
    pub fn to_write(&self, level: PutLevel, new: &[RegValue]) -> Vec<RegValue> {
        new.iter()
            .copied()
            .filter(|v| v.id.put_level() <= level)
            .filter(|v| level >= PutLevel::FULL || self.last.get(&v.id) != Some(&v.value))
            .collect()
    }
}

/// The registers a put at `level` has to write, given the values of the last get (`None` when
/// there was none, or when a failed put left the vCPU's values unknown).
///
/// A [`PutLevel::FULL`] put, or one with nothing to compare against, writes the whole file; any
/// other writes only what the host changed, so values the host never touched are never written
/// back.
fn regs_to_put<F: RegisterFile>(level: PutLevel, last_get: Option<&F>, new: &F) -> Vec<F::Reg> {
    match last_get {
        Some(last) if level < PutLevel::FULL => new.changed(last),
        _ => F::all_regs(),
    }
}

#[cfg(test)]
mod tests {
    use accel_api::{
        sysreg::{CNTVCT_EL0, ESR_EL1, TPIDR_EL1},
        AccelError, Result,
    };

    use super::*;

    /// A put as a backend makes it, writing through `write`; returns what it wrote.
    fn put(
        last: &mut LastGet<CoreRegs>,
        level: PutLevel,
        new: &CoreRegs,
        mut write: impl FnMut(CoreReg) -> Result<()>,
    ) -> (Result<()>, Vec<CoreReg>) {
        let mut written = Vec::new();
        for reg in last.to_write(level, new) {
            if let Err(e) = write(reg) {
                return (Err(e), written);
            }
            written.push(reg);
        }
        last.got(new);
        (Ok(()), written)
    }

    fn all_core() -> usize {
        CoreReg::all().count()
    }

    #[test]
    fn a_put_after_a_get_writes_only_what_changed() {
        let mut last = LastGet::default();
        let got = CoreRegs::default();
        last.got(&got);
        let mut new = got;
        new.x[1] = 5;
        new.pc = 0x4000_0000;
        assert_eq!(put(&mut last, PutLevel::RUNTIME, &new, |_| Ok(())).1, vec![CoreReg::X(1), CoreReg::Pc]);
        assert_eq!(put(&mut last, PutLevel::RESET, &new, |_| Ok(())).1, vec![], "the put is the new record");
        let fp = FpRegs::default();
        let mut last_fp = LastGet::default();
        last_fp.got(&fp);
        assert_eq!(last_fp.to_write(PutLevel::RUNTIME, &fp), vec![]);
    }

    #[test]
    fn full_level_or_no_record_writes_everything() {
        let regs = CoreRegs::default();
        let mut last = LastGet::default();
        assert_eq!(put(&mut last, PutLevel::RUNTIME, &regs, |_| Ok(())).1.len(), all_core(), "no get yet");
        last.got(&regs);
        assert_eq!(put(&mut last, PutLevel::FULL, &regs, |_| Ok(())).1.len(), all_core());
        last.forget();
        assert_eq!(last.to_write(PutLevel::RUNTIME, &regs).len(), all_core(), "forgotten");
    }

    #[test]
    fn a_failed_write_makes_the_next_put_write_everything() {
        let mut last = LastGet::default();
        let got = CoreRegs::default();
        last.got(&got);
        let mut new = got;
        new.x[2] = 1;
        new.sp_el1 = 2;
        let refused = |reg| match reg {
            CoreReg::SpEl1 => Err(AccelError::invalid("SP_EL1 refused")),
            _ => Ok(()),
        };
        let (result, written) = put(&mut last, PutLevel::RUNTIME, &new, refused);
        assert!(result.is_err());
        assert_eq!(written, vec![CoreReg::X(2)]);
        assert_eq!(put(&mut last, PutLevel::RUNTIME, &new, |_| Ok(())).1.len(), all_core());
        assert_eq!(put(&mut last, PutLevel::RUNTIME, &new, |_| Ok(())).1, vec![], "recorded again");
    }

    #[test]
    fn sve_registers_are_a_register_file() {
        let base = SveRegs::zeroed(2);
        let mut last = LastGet::default();
        last.got(&base);
        let mut new = base.clone();
        new.reg_mut(SveReg::P(3))[0] = 1;
        assert_eq!(last.to_write(PutLevel::RUNTIME, &new), vec![SveReg::P(3)]);
        assert_eq!(
            last.to_write(PutLevel::RUNTIME, &new).len(),
            SveReg::all().count(),
            "asked, so forgotten"
        );
    }

    #[test]
    fn listed_values_are_written_when_changed_and_allowed() {
        let mut last = LastValues::default();
        last.got(&[RegValue { id: CNTVCT_EL0, value: 5 }, RegValue { id: TPIDR_EL1, value: 7 }]);
        let new = [
            RegValue { id: CNTVCT_EL0, value: 6 },
            RegValue { id: TPIDR_EL1, value: 7 },
            RegValue { id: ESR_EL1, value: 1 },
        ];
        let ids = |values: Vec<RegValue>| values.into_iter().map(|v| v.id).collect::<Vec<_>>();
        assert_eq!(
            ids(last.to_write(PutLevel::RUNTIME, &new)),
            vec![ESR_EL1],
            "the counter waits for a full put; unchanged TPIDR_EL1 is skipped; unknown ESR_EL1 is written"
        );
        assert_eq!(ids(last.to_write(PutLevel::FULL, &new)), vec![CNTVCT_EL0, TPIDR_EL1, ESR_EL1]);
        last.wrote(new[2]);
        assert_eq!(ids(last.to_write(PutLevel::RUNTIME, &new)), vec![], "written, so recorded");
        let edited = [RegValue { id: TPIDR_EL1, value: 8 }];
        assert_eq!(
            ids(last.to_write(PutLevel::RUNTIME, &edited)),
            vec![TPIDR_EL1],
            "a failed write is tried again"
        );
        last.forget();
        assert_eq!(ids(last.to_write(PutLevel::RUNTIME, &new[1..2])), vec![TPIDR_EL1]);
    }
}
