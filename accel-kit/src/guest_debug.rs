//! A debug exception the host does not own, given to the guest as it would have taken it.

use accel_api::{CoreRegs, DebugExit, RegValue};

use crate::exception::{ec, enter_el1, esr_ec, Exception, ExceptionType};

/// The syndrome to give the guest for its own debug exception, taken from `pstate`: KVM reports
/// the exception as taken from a lower EL (to EL2); to EL1 from EL1 it is the current-EL class.
pub fn guest_syndrome(esr: u64, pstate: u64) -> u64 {
    let from_el1 = pstate & 0b1_1111 != 0 && pstate & (1 << 4) == 0;
    let ec = esr_ec(esr);
    let ec = match ec {
        ec::BREAKPOINT_LOWER | ec::SOFTWARE_STEP_LOWER | ec::WATCHPOINT_LOWER if from_el1 => ec + 1,
        other => other,
    };
    (esr & !(0x3f << 26)) | u64::from(ec) << 26
}

/// Enters the guest's EL1 vector for a debug exception the host does not own (the guest's own
/// BRK, or a debug event the host did not set up), as the guest would have taken it: ESR_EL1 with
/// the class for the EL it came from, FAR_EL1 for a watchpoint, ELR_EL1 = the PC of the exit, and
/// the PC at the vector. Updates `core` and returns the system registers to write.
pub fn guest_debug_entry(core: &mut CoreRegs, vbar: u64, exit: &DebugExit) -> Vec<RegValue> {
    let esr = guest_syndrome(exit.esr, core.pstate);
    let is_watchpoint = matches!(esr_ec(esr), ec::WATCHPOINT_LOWER | ec::WATCHPOINT_CURRENT);
    let exception = Exception {
        kind: ExceptionType::Synchronous,
        esr,
        far: is_watchpoint.then_some(exit.far),
        return_address: exit.pc,
    };
    enter_el1(core, vbar, &exception)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_syndromes_name_the_current_el() {
        assert_eq!(guest_syndrome(0x30 << 26 | 1 << 25, 0x3c5) >> 26, 0x31);
        assert_eq!(guest_syndrome(0x30 << 26, 0x0) >> 26, 0x30, "from EL0 stays lower-EL");
        assert_eq!(guest_syndrome(0x3c << 26 | 5, 0x3c5), 0x3c << 26 | 5, "BRK has one class");
    }
}
