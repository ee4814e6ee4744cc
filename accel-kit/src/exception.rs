//! Architectural exception entry to EL1, for backends and hosts that deliver an exception to the
//! guest themselves (a re-injected debug exception, an injected abort).
//!
//! This follows the Arm ARM's AArch64 exception entry (D1.10, "Exception entry"): the syndrome
//! goes to ESR_EL1, the faulting address (when there is one) to FAR_EL1, the preferred return
//! address to ELR_EL1 and PSTATE to SPSR_EL1; PSTATE becomes EL1h with D, A, I and F masked; and
//! the PC moves to VBAR_EL1 plus the vector offset for where the exception was taken from and
//! its type.

use accel_api::{
    regs::CoreRegs,
    sysreg::{ESR_EL1, FAR_EL1},
    RegValue,
};

/// The type of an exception, choosing the entry within a vector group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionType {
    /// Synchronous (offset 0x000).
    Synchronous,
    /// IRQ (offset 0x080).
    Irq,
    /// FIQ (offset 0x100).
    Fiq,
    /// SError (offset 0x180).
    SError,
}

/// An exception to deliver to EL1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    /// Its type.
    pub kind: ExceptionType,
    /// The syndrome for ESR_EL1.
    pub esr: u64,
    /// The faulting virtual address for FAR_EL1, if the exception has one.
    pub far: Option<u64>,
    /// The preferred return address for ELR_EL1: the faulting instruction for most synchronous
    /// exceptions, the next instruction for SVC and completed steps.
    pub return_address: u64,
}

/// PSTATE.M values.
const M_MASK: u64 = 0b1_1111;
const M_EL0T: u64 = 0b0_0000;
const M_EL1T: u64 = 0b0_0100;
const M_EL1H: u64 = 0b0_0101;
/// PSTATE.nRW: the interrupted state was AArch32.
const PSTATE_NRW: u64 = 1 << 4;
/// PSTATE.{D,A,I,F}.
const DAIF: u64 = 0b1111 << 6;
/// PSTATE.SS: software step.
const PSTATE_SS: u64 = 1 << 21;
/// PSTATE.IL: illegal execution state.
const PSTATE_IL: u64 = 1 << 20;

/// The offset in the vector table for an exception of type `kind` taken from the state in
/// `pstate` to EL1.
pub fn vector_offset(pstate: u64, kind: ExceptionType) -> u64 {
    let group = if pstate & PSTATE_NRW != 0 {
        0x600 // lower EL, AArch32
    } else {
        match pstate & M_MASK {
            M_EL0T => 0x400, // lower EL, AArch64
            M_EL1T => 0x000, // current EL, SP_EL0
            _ => 0x200,      // current EL, SP_ELx
        }
    };
    group
        + match kind {
            ExceptionType::Synchronous => 0x000,
            ExceptionType::Irq => 0x080,
            ExceptionType::Fiq => 0x100,
            ExceptionType::SError => 0x180,
        }
}

/// Enters `exception` at EL1 on `core`, given the guest's VBAR_EL1. Returns the system register
/// values to put with it (ESR_EL1, and FAR_EL1 when the exception has an address).
pub fn enter_el1(core: &mut CoreRegs, vbar_el1: u64, exception: &Exception) -> Vec<RegValue> {
    let offset = vector_offset(core.pstate, exception.kind);
    core.spsr[0] = core.pstate;
    core.elr_el1 = exception.return_address;
    core.pstate = (core.pstate & !(M_MASK | PSTATE_NRW | PSTATE_SS | PSTATE_IL)) | M_EL1H | DAIF;
    core.pc = (vbar_el1 & !0x7ff) + offset;
    let mut sys = vec![RegValue { id: ESR_EL1, value: exception.esr }];
    if let Some(far) = exception.far {
        sys.push(RegValue { id: FAR_EL1, value: far });
    }
    sys
}

/// ESR_ELx.IL: the trapped instruction was 32 bits wide.
pub const ESR_IL: u64 = 1 << 25;

/// ESR_ELx.ISS.DFSC for a synchronous external abort, not on a translation table walk.
pub const DFSC_EXTERNAL_ABORT: u64 = 0x10;

/// True when `pstate` is AArch64 EL1 (EL1t or EL1h): an exception to EL1 is then taken from the
/// current EL.
fn at_el1(pstate: u64) -> bool {
    pstate & PSTATE_NRW == 0 && pstate & 0b1100 == 0b0100
}

/// The syndrome of an UNDEFINED instruction: EC 0x00 ("unknown reason") with IL.
pub const fn undefined_syndrome() -> u64 {
    ESR_IL
}

/// Enters the exception that an UNDEFINED instruction at `core.pc` takes (a system register
/// access the hypervisor does not emulate, for example). Returns the system registers to put.
pub fn enter_undefined(core: &mut CoreRegs, vbar_el1: u64) -> Vec<RegValue> {
    let exception = Exception {
        kind: ExceptionType::Synchronous,
        esr: undefined_syndrome(),
        far: None,
        return_address: core.pc,
    };
    enter_el1(core, vbar_el1, &exception)
}

/// The syndrome of a synchronous external abort on a data access taken from `pstate`: EC 0x25
/// from EL1, 0x24 from EL0, with IL and DFSC 0x10.
pub fn external_data_abort_syndrome(pstate: u64) -> u64 {
    let ec = if at_el1(pstate) { ec::DATA_ABORT_CURRENT } else { ec::DATA_ABORT_LOWER };
    u64::from(ec) << 26 | ESR_IL | DFSC_EXTERNAL_ABORT
}

/// Enters a synchronous external data abort at `far` for the instruction at `core.pc`, as
/// KVM's `KVM_SET_VCPU_EVENTS` with `ext_dabt_pending` does. Returns the system registers to
/// put.
pub fn enter_external_data_abort(core: &mut CoreRegs, vbar_el1: u64, far: u64) -> Vec<RegValue> {
    let exception = Exception {
        kind: ExceptionType::Synchronous,
        esr: external_data_abort_syndrome(core.pstate),
        far: Some(far),
        return_address: core.pc,
    };
    enter_el1(core, vbar_el1, &exception)
}

/// ESR_ELx.EC values (Arm ARM D17.2.37) the framework names.
pub mod ec {
    /// Breakpoint from a lower EL.
    pub const BREAKPOINT_LOWER: u8 = 0x30;
    /// Breakpoint from the current EL.
    pub const BREAKPOINT_CURRENT: u8 = 0x31;
    /// Software step from a lower EL.
    pub const SOFTWARE_STEP_LOWER: u8 = 0x32;
    /// Software step from the current EL.
    pub const SOFTWARE_STEP_CURRENT: u8 = 0x33;
    /// Watchpoint from a lower EL.
    pub const WATCHPOINT_LOWER: u8 = 0x34;
    /// Watchpoint from the current EL.
    pub const WATCHPOINT_CURRENT: u8 = 0x35;
    /// BRK instruction (AArch64).
    pub const BRK: u8 = 0x3c;
    /// Data abort from a lower EL.
    pub const DATA_ABORT_LOWER: u8 = 0x24;
    /// Data abort from the current EL.
    pub const DATA_ABORT_CURRENT: u8 = 0x25;
    /// SError interrupt.
    pub const SERROR: u8 = 0x2f;
    /// Trapped WFI or WFE.
    pub const WFX: u8 = 0x01;
    /// HVC from AArch64.
    pub const HVC64: u8 = 0x16;
    /// SMC from AArch64.
    pub const SMC64: u8 = 0x17;
    /// Trapped MSR, MRS or system instruction (AArch64).
    pub const SYS64: u8 = 0x18;
}

/// ESR_ELx.EC of a syndrome.
pub fn esr_ec(esr: u64) -> u8 {
    ((esr >> 26) & 0x3f) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core_at(pstate: u64) -> CoreRegs {
        CoreRegs { pc: 0x4000_1000, pstate, ..Default::default() }
    }

    #[test]
    fn vector_offsets_follow_the_arm_arm() {
        assert_eq!(vector_offset(0x3c5, ExceptionType::Synchronous), 0x200);
        assert_eq!(vector_offset(0x3c4, ExceptionType::Irq), 0x080);
        assert_eq!(vector_offset(0x000, ExceptionType::SError), 0x580);
        assert_eq!(vector_offset(0x010, ExceptionType::Fiq), 0x700);
        assert_eq!(
            vector_offset(0x1d3, ExceptionType::Synchronous),
            0x600,
            "AArch32 SVC mode is lower EL AArch32"
        );
    }

    #[test]
    fn entry_saves_state_and_masks_interrupts() {
        let mut core = core_at(0x6000_0000 | M_EL0T | PSTATE_SS);
        let ex = Exception {
            kind: ExceptionType::Synchronous,
            esr: 0xf200_0000,
            far: Some(0xdead),
            return_address: 0x4000_1000,
        };
        let sys = enter_el1(&mut core, 0x4000_0800, &ex);
        assert_eq!(core.spsr[0], 0x6000_0000 | PSTATE_SS);
        assert_eq!(core.elr_el1, 0x4000_1000);
        assert_eq!(core.pstate, 0x6000_0000 | 0x3c5, "EL1h, DAIF masked, SS cleared, flags kept");
        assert_eq!(core.pc, 0x4000_0800 + 0x400);
        assert_eq!(
            sys,
            vec![RegValue { id: ESR_EL1, value: 0xf200_0000 }, RegValue { id: FAR_EL1, value: 0xdead }]
        );
        assert_eq!(esr_ec(0xf200_0000), ec::BRK);
    }

    #[test]
    fn undefined_and_external_aborts_enter_with_their_syndromes() {
        let mut core = core_at(0x3c5);
        let sys = enter_undefined(&mut core, 0x4000_0800);
        assert_eq!(sys, vec![RegValue { id: ESR_EL1, value: 0x0200_0000 }]);
        assert_eq!((core.elr_el1, core.pc), (0x4000_1000, 0x4000_0a00));
        let mut core = core_at(0x3c5);
        let sys = enter_external_data_abort(&mut core, 0x4000_0800, 0xdead_0000);
        assert_eq!(
            sys,
            vec![RegValue { id: ESR_EL1, value: 0x9600_0010 }, RegValue { id: FAR_EL1, value: 0xdead_0000 }]
        );
        assert_eq!(external_data_abort_syndrome(0x0) >> 26, 0x24, "from EL0: the lower-EL class");
    }
}
