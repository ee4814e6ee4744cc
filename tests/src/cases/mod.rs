//! The conformance cases, by area.

mod debug;
mod exceptions;
mod lifecycle;
mod loader;
mod memory_errors;
mod probe;
mod psci;
mod races;
mod regs;
mod run;
mod snapshot;
mod stress;
mod sve;
mod sysregs;
mod vm;

use crate::Case;

/// Every case, in run order.
pub fn all() -> Vec<Case> {
    let mut cases = Vec::new();
    cases.extend(probe::cases());
    cases.extend(lifecycle::cases());
    cases.extend(regs::cases());
    cases.extend(run::cases());
    cases.extend(sysregs::cases());
    cases.extend(sve::cases());
    cases.extend(exceptions::cases());
    cases.extend(vm::cases());
    cases.extend(psci::cases());
    cases.extend(snapshot::cases());
    cases.extend(memory_errors::cases());
    cases.extend(debug::cases());
    cases.extend(races::cases());
    cases.extend(loader::cases());
    cases.extend(stress::cases());
    cases
}

#[cfg(test)]
mod tests {
    #[test]
    fn case_names_are_unique() {
        let cases = super::all();
        let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), cases.len());
    }
}
