//! Trapped system register accesses (ESR_ELx.EC 0x18), emulated for backends whose hypervisor
//! hands them to user space (Hypervisor.framework): the ISS decode (Arm ARM D17.2.38, "ISS
//! encoding for an exception from MSR, MRS, or System instruction execution in AArch64 state"),
//! and the answers for the registers a guest may touch that the hypervisor does not implement.
//!
//! - The OS lock registers: OSLAR_EL1 sets OSLSR_EL1.OSLK, OSDLR_EL1 holds DLK.
//! - CNTPCT_EL0 reads the counter the backend gives.
//! - The PMU registers: a PMU with no counters (PMCR_EL0.N = 0, the rest read as zero and
//!   ignore writes), or UNDEFINED when the vCPU has no PMU at all.
//! - The debug registers while the host debugs (the hypervisor then traps them): the guest's
//!   values live in a shadow copy, so that the host's breakpoints stay in the hardware.
//! - Everything else is UNDEFINED: the backend enters the exception with
//!   [`crate::exception::enter_undefined`].

use std::collections::BTreeMap;

use accel_api::sysreg::{
    RegId, CNTPCT_EL0, DBGAUTHSTATUS_EL1, DBGCLAIMCLR_EL1, DBGCLAIMSET_EL1, DBGPRCR_EL1, MDCCINT_EL1,
    MDCCSR_EL0, MDSCR_EL1, OSDLR_EL1, OSLAR_EL1, OSLSR_EL1,
};

/// A trapped MRS or MSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegAccess {
    /// The register, by encoding.
    pub reg: RegId,
    /// Rt: the general-purpose register transferred; 31 is XZR.
    pub rt: u8,
    /// An MRS (read); otherwise an MSR (write).
    pub read: bool,
}

impl SysRegAccess {
    /// Decodes the ISS of a trapped MSR/MRS: Op0 `[21:20]`, Op2 `[19:17]`, Op1 `[16:14]`,
    /// CRn `[13:10]`, Rt `[9:5]`, CRm `[4:1]`, Direction `[0]` (1 for a read).
    pub fn decode(esr: u64) -> Self {
        let field = |lsb: u32, width: u32| ((esr >> lsb) & ((1 << width) - 1)) as u8;
        Self {
            reg: RegId::sys(field(20, 2), field(14, 3), field(10, 4), field(1, 4), field(17, 3)),
            rt: field(5, 5),
            read: esr & 1 == 1,
        }
    }

    /// The value an MSR writes, given Xt (`xt`); XZR writes zero.
    pub fn written(&self, xt: u64) -> u64 {
        if self.rt == 31 {
            0
        } else {
            xt
        }
    }
}

/// What the backend does with a trapped access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapOutcome {
    /// An MRS: write the value to Rt (unless XZR) and step past the instruction.
    Read(u64),
    /// An MSR that took effect (or is ignored): step past the instruction.
    Written,
    /// UNDEFINED: enter the guest's undefined-instruction exception at the instruction.
    Undefined,
}

/// How a vCPU without a real PMU answers the PMU registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PmuAnswer {
    /// A PMU with no event counters: PMCR_EL0.N = 0, everything else RAZ/WI.
    NoCounters,
    /// No PMU: every PMU register is UNDEFINED (ID_AA64DFR0_EL1.PMUVer = 0).
    Undefined,
}

/// Whether `reg` is one of the PMUv3 registers: op0 3, op1 3, CRn 9 with CRm 12–14, the event
/// counters and types at CRn 14 with CRm 8–15, and PMINTENSET/CLR_EL1 (op1 0, CRn 9, CRm 14).
fn is_pmu(reg: RegId) -> bool {
    matches!(reg.fields(), Some((3, 3, 9, 12..=14, _) | (3, 3, 14, 8..=15, _) | (3, 0, 9, 14, 1 | 2)))
}

/// Whether `reg` is DBGBVR/DBGBCR/DBGWVR/DBGWCR<n>_EL1 (op0 2, op1 0, CRn 0, op2 4–7).
fn is_breakpoint_or_watchpoint(reg: RegId) -> bool {
    matches!(reg.fields(), Some((2, 0, 0, _, 4..=7)))
}

/// The trap-emulation state of one vCPU.
#[derive(Clone, Debug)]
pub struct SysRegTraps {
    /// OSLSR_EL1.OSLK: the OS lock is set (out of reset it is, Arm ARM D2.5).
    os_lock: bool,
    /// OSDLR_EL1.DLK.
    double_lock: bool,
    /// The guest's view of the debug registers while the host debugs.
    shadow: BTreeMap<RegId, u64>,
    pmu: PmuAnswer,
}

impl SysRegTraps {
    /// The state out of reset, answering the PMU registers as `pmu` says.
    pub fn new(pmu: PmuAnswer) -> Self {
        Self { os_lock: true, double_lock: false, shadow: BTreeMap::new(), pmu }
    }

    /// The guest's own value of a debug register while the host debugs (0 until it writes one).
    pub fn shadow(&self, reg: RegId) -> u64 {
        self.shadow.get(&reg).copied().unwrap_or(0)
    }

    /// Takes the guest's values of the debug registers into the shadow, when the host starts
    /// debugging (`values` as read from the vCPU just before).
    pub fn save_guest_debug(&mut self, values: impl IntoIterator<Item = (RegId, u64)>) {
        self.shadow.extend(values);
    }

    /// The guest's debug register values to put back when the host stops debugging.
    pub fn guest_debug(&self) -> impl Iterator<Item = (RegId, u64)> + '_ {
        self.shadow.iter().map(|(r, v)| (*r, *v))
    }

    /// Answers `access`, given Xt for an MSR (`xt`) and the virtual counter for CNTPCT_EL0
    /// (`counter`).
    pub fn emulate(&mut self, access: &SysRegAccess, xt: u64, counter: u64) -> TrapOutcome {
        let reg = access.reg;
        let value = access.written(xt);
        match (reg, access.read) {
            (r, false) if r == OSLAR_EL1 => {
                self.os_lock = value & 1 == 1;
                TrapOutcome::Written
            }
            // OSLM = 0b10 (bit 3): the OS lock is implemented; OSLK in bit 1.
            (r, true) if r == OSLSR_EL1 => TrapOutcome::Read(1 << 3 | u64::from(self.os_lock) << 1),
            (r, true) if r == OSDLR_EL1 => TrapOutcome::Read(u64::from(self.double_lock)),
            (r, false) if r == OSDLR_EL1 => {
                self.double_lock = value & 1 == 1;
                TrapOutcome::Written
            }
            (r, true) if r == CNTPCT_EL0 => TrapOutcome::Read(counter),
            (r, _) if is_pmu(r) => match (self.pmu, access.read) {
                (PmuAnswer::Undefined, _) => TrapOutcome::Undefined,
                (PmuAnswer::NoCounters, true) => TrapOutcome::Read(0),
                (PmuAnswer::NoCounters, false) => TrapOutcome::Written,
            },
            (r, read) if is_breakpoint_or_watchpoint(r) || r == MDSCR_EL1 => {
                if read {
                    TrapOutcome::Read(self.shadow(r))
                } else {
                    self.shadow.insert(r, value);
                    TrapOutcome::Written
                }
            }
            // The debug communication channel and claim tags: RAZ/WI.
            (r, true) if [MDCCINT_EL1, MDCCSR_EL0, DBGCLAIMCLR_EL1, DBGCLAIMSET_EL1].contains(&r) => {
                TrapOutcome::Read(0)
            }
            (r, false) if [MDCCINT_EL1, DBGCLAIMCLR_EL1, DBGCLAIMSET_EL1, DBGPRCR_EL1].contains(&r) => {
                TrapOutcome::Written
            }
            (r, true) if r == DBGPRCR_EL1 => TrapOutcome::Read(0),
            // Non-secure debug allowed, secure debug not implemented.
            (r, true) if r == DBGAUTHSTATUS_EL1 => TrapOutcome::Read(0b1010),
            _ => TrapOutcome::Undefined,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use accel_api::sysreg::{dbgbcr, dbgwvr, PMCCNTR_EL0, PMCR_EL0, SCTLR_EL1};

    /// The ISS of a trapped access to `reg` through Xt `rt`.
    fn iss(reg: RegId, rt: u64, read: bool) -> u64 {
        let (op0, op1, crn, crm, op2) = reg.fields().unwrap_or_default();
        0x18 << 26
            | 1 << 25
            | u64::from(op0) << 20
            | u64::from(op2) << 17
            | u64::from(op1) << 14
            | u64::from(crn) << 10
            | rt << 5
            | u64::from(crm) << 1
            | u64::from(read)
    }

    #[test]
    fn the_iss_names_register_rt_and_direction() {
        let a = SysRegAccess::decode(iss(OSLAR_EL1, 3, false));
        assert_eq!(a, SysRegAccess { reg: OSLAR_EL1, rt: 3, read: false });
        let a = SysRegAccess::decode(iss(dbgwvr(5), 31, true));
        assert_eq!((a.reg, a.rt, a.read), (dbgwvr(5), 31, true));
        assert_eq!(a.written(77), 0, "XZR writes zero");
        // MRS X2, CNTPCT_EL0 as a whole syndrome: 0x6232_f841 (op0 3, op1 3, CRn 14, CRm 0, op2 1).
        let a = SysRegAccess::decode(0x6232_f841);
        assert_eq!((a.reg, a.rt, a.read), (CNTPCT_EL0, 2, true));
    }

    #[test]
    fn the_os_lock_follows_oslar() {
        let mut t = SysRegTraps::new(PmuAnswer::Undefined);
        let read = |t: &mut SysRegTraps| t.emulate(&SysRegAccess::decode(iss(OSLSR_EL1, 0, true)), 0, 0);
        assert_eq!(read(&mut t), TrapOutcome::Read(0b1010), "locked out of reset");
        let unlock = SysRegAccess::decode(iss(OSLAR_EL1, 1, false));
        assert_eq!(t.emulate(&unlock, 0, 0), TrapOutcome::Written);
        assert_eq!(read(&mut t), TrapOutcome::Read(0b1000));
        assert_eq!(t.emulate(&SysRegAccess::decode(iss(OSLAR_EL1, 1, true)), 0, 0), TrapOutcome::Undefined);
        let dlk = SysRegAccess::decode(iss(OSDLR_EL1, 1, false));
        assert_eq!(t.emulate(&dlk, 1, 0), TrapOutcome::Written);
        assert_eq!(t.emulate(&SysRegAccess::decode(iss(OSDLR_EL1, 1, true)), 0, 0), TrapOutcome::Read(1));
    }

    #[test]
    fn counter_pmu_and_the_rest() {
        let mut t = SysRegTraps::new(PmuAnswer::NoCounters);
        let cnt = SysRegAccess::decode(iss(CNTPCT_EL0, 0, true));
        assert_eq!(t.emulate(&cnt, 0, 12345), TrapOutcome::Read(12345));
        for reg in [PMCR_EL0, PMCCNTR_EL0, RegId::sys(3, 3, 14, 8, 0), RegId::sys(3, 0, 9, 14, 1)] {
            assert_eq!(
                t.emulate(&SysRegAccess::decode(iss(reg, 0, true)), 0, 0),
                TrapOutcome::Read(0),
                "{reg}"
            );
            assert_eq!(t.emulate(&SysRegAccess::decode(iss(reg, 0, false)), 9, 0), TrapOutcome::Written);
        }
        let mut none = SysRegTraps::new(PmuAnswer::Undefined);
        assert_eq!(none.emulate(&SysRegAccess::decode(iss(PMCR_EL0, 0, true)), 0, 0), TrapOutcome::Undefined);
        let sctlr = SysRegAccess::decode(iss(SCTLR_EL1, 0, false));
        assert_eq!(t.emulate(&sctlr, 0, 0), TrapOutcome::Undefined, "not ours to emulate");
    }

    #[test]
    fn debug_registers_live_in_the_shadow() {
        let mut t = SysRegTraps::new(PmuAnswer::Undefined);
        t.save_guest_debug([(MDSCR_EL1, 0x8000)]);
        let read_mdscr = SysRegAccess::decode(iss(MDSCR_EL1, 4, true));
        assert_eq!(t.emulate(&read_mdscr, 0, 0), TrapOutcome::Read(0x8000));
        let write_bcr = SysRegAccess::decode(iss(dbgbcr(2), 4, false));
        assert_eq!(t.emulate(&write_bcr, 0x1e7, 0), TrapOutcome::Written);
        assert_eq!(t.shadow(dbgbcr(2)), 0x1e7);
        let back: Vec<(RegId, u64)> = t.guest_debug().collect();
        assert!(back.contains(&(dbgbcr(2), 0x1e7)) && back.contains(&(MDSCR_EL1, 0x8000)));
        let auth = SysRegAccess::decode(iss(DBGAUTHSTATUS_EL1, 0, true));
        assert_eq!(t.emulate(&auth, 0, 0), TrapOutcome::Read(0b1010));
    }
}
