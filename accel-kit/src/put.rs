//! "A put writes only what changed", written once for every backend: the registers a put at a
//! level has to write given the values of the last get, and the record of that last get, which a
//! failed put forgets so that the next put writes everything.

use accel_api::{
    regs::{CoreReg, CoreRegs, FpReg, FpRegs, PutLevel},
    sysreg::{RegId, RegValue},
};

/// A register file that a put can write in part: it names its registers and says which differ
/// from an earlier copy.
pub trait RegisterFile: Copy {
    /// A register of the file.
    type Reg: Copy;

    /// Every register of the file, in order.
    fn all_regs() -> Vec<Self::Reg>;

    /// The registers whose value differs from `base`.
    fn changed(&self, base: &Self) -> Vec<Self::Reg>;
}

impl RegisterFile for CoreRegs {
    type Reg = CoreReg;

    fn all_regs() -> Vec<CoreReg> {
        CoreReg::all().collect()
    }

    fn changed(&self, base: &Self) -> Vec<CoreReg> {
        self.changed_since(base).collect()
    }
}

impl RegisterFile for FpRegs {
    type Reg = FpReg;

    fn all_regs() -> Vec<FpReg> {
        FpReg::all().collect()
    }

    fn changed(&self, base: &Self) -> Vec<FpReg> {
        self.changed_since(base).collect()
    }
}

/// The registers a put at `level` has to write, given the values of the last get (`None` when
/// there was none, or when a failed put left the vCPU's values unknown).
///
/// A [`PutLevel::FULL`] put, or one with nothing to compare against, writes the whole file; any
/// other writes only what the host changed, so values the host never touched are never written
/// back.
pub fn regs_to_put<F: RegisterFile>(level: PutLevel, last_get: Option<&F>, new: &F) -> Vec<F::Reg> {
    match last_get {
        Some(last) if level < PutLevel::FULL => new.changed(last),
        _ => F::all_regs(),
    }
}

/// The values a put at `level` has to write: those of `new` whose register may be written at
/// that level and that differ from the last get (`last_get`), or all of them at
/// [`PutLevel::FULL`]. A register with no value in the last get counts as changed.
pub fn values_to_put<'a>(
    level: PutLevel,
    last_get: impl Fn(RegId) -> Option<u64> + 'a,
    new: &'a [RegValue],
) -> impl Iterator<Item = RegValue> + 'a {
    new.iter()
        .copied()
        .filter(move |v| v.id.put_level() <= level)
        .filter(move |v| level >= PutLevel::FULL || last_get(v.id) != Some(v.value))
}

#[cfg(test)]
mod tests {
    use accel_api::sysreg::{CNTVCT_EL0, ESR_EL1, TPIDR_EL1};

    use super::*;

    #[test]
    fn counters_are_written_only_at_full_level() {
        let last = |id: RegId| match id {
            x if x == CNTVCT_EL0 => Some(5),
            x if x == TPIDR_EL1 => Some(7),
            _ => None,
        };
        let new = [
            RegValue { id: CNTVCT_EL0, value: 6 },
            RegValue { id: TPIDR_EL1, value: 7 },
            RegValue { id: ESR_EL1, value: 1 },
        ];
        let runtime: Vec<RegId> = values_to_put(PutLevel::RUNTIME, last, &new).map(|v| v.id).collect();
        assert_eq!(
            runtime,
            vec![ESR_EL1],
            "the counter waits for a full put; unchanged TPIDR_EL1 is skipped"
        );
        let full: Vec<RegId> = values_to_put(PutLevel::FULL, last, &new).map(|v| v.id).collect();
        assert_eq!(full, vec![CNTVCT_EL0, TPIDR_EL1, ESR_EL1]);
    }

    #[test]
    fn puts_write_changes_only_unless_full_or_unknown() {
        let last = CoreRegs::default();
        let mut new = last;
        new.x[1] = 5;
        assert_eq!(regs_to_put(PutLevel::RUNTIME, Some(&last), &new), vec![CoreReg::X(1)]);
        assert_eq!(regs_to_put(PutLevel::RESET, Some(&last), &last), vec![]);
        assert_eq!(regs_to_put(PutLevel::FULL, Some(&last), &last).len(), CoreReg::all().count());
        assert_eq!(regs_to_put::<CoreRegs>(PutLevel::RUNTIME, None, &new).len(), CoreReg::all().count());
        let fp = FpRegs::default();
        assert_eq!(regs_to_put(PutLevel::RUNTIME, Some(&fp), &fp), vec![]);
    }
}
