//! PSCI and SMCCC answered by a backend's own code (Arm DEN 0022 "Power State Coordination
//! Interface", Arm DEN 0028 "SMC Calling Convention"), for backends whose hypervisor hands the
//! calls to user space: Hypervisor.framework always, KVM with `KVM_ARM_VM_SMCCC_FILTER`.
//!
//! The answers follow KVM's in-kernel PSCI 1.1, so that a host sees the same exits whichever
//! side answers: SYSTEM_OFF and SYSTEM_RESET stop every vCPU and exit as system events with the
//! same data, CPU_ON starts a stopped vCPU at its entry point with its context id in X0, CPU_OFF
//! stops the caller, and anything unknown returns NOT_SUPPORTED.
//!
//! A VM keeps one [`PowerBoard`]: the power state of each vCPU and the CPU_ON requests waiting
//! to be taken. A stopped vCPU's `run` waits on the board until CPU_ON or a kick.

use std::{
    sync::{Condvar, Mutex, MutexGuard},
    time::Duration,
};

use accel_api::exit::SystemEventKind;

/// PSCI and SMCCC function ids (SMC32 ids have bit 30 clear, SMC64 ids have it set).
pub mod function {
    /// SMCCC_VERSION.
    pub const SMCCC_VERSION: u32 = 0x8000_0000;
    /// SMCCC_ARCH_FEATURES.
    pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
    /// PSCI_VERSION.
    pub const PSCI_VERSION: u32 = 0x8400_0000;
    /// CPU_SUSPEND (SMC32).
    pub const CPU_SUSPEND: u32 = 0x8400_0001;
    /// CPU_OFF.
    pub const CPU_OFF: u32 = 0x8400_0002;
    /// CPU_ON (SMC32).
    pub const CPU_ON: u32 = 0x8400_0003;
    /// AFFINITY_INFO (SMC32).
    pub const AFFINITY_INFO: u32 = 0x8400_0004;
    /// MIGRATE (SMC32).
    pub const MIGRATE: u32 = 0x8400_0005;
    /// MIGRATE_INFO_TYPE.
    pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
    /// MIGRATE_INFO_UP_CPU (SMC32).
    pub const MIGRATE_INFO_UP_CPU: u32 = 0x8400_0007;
    /// SYSTEM_OFF.
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    /// SYSTEM_RESET.
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
    /// PSCI_FEATURES.
    pub const PSCI_FEATURES: u32 = 0x8400_000a;
    /// SYSTEM_SUSPEND (SMC32).
    pub const SYSTEM_SUSPEND: u32 = 0x8400_000e;
    /// SYSTEM_RESET2 (SMC32).
    pub const SYSTEM_RESET2: u32 = 0x8400_0012;
    /// The SMC64 form of an SMC32 function id.
    pub const fn smc64(id: u32) -> u32 {
        id | 1 << 30
    }
    /// The first and last ids of the PSCI range, SMC32.
    pub const PSCI_RANGE_32: (u32, u32) = (0x8400_0000, 0x8400_001f);
    /// The first and last ids of the PSCI range, SMC64.
    pub const PSCI_RANGE_64: (u32, u32) = (0xc400_0000, 0xc400_001f);
}

/// PSCI return codes, as X0 holds them.
pub mod ret {
    /// SUCCESS.
    pub const SUCCESS: u64 = 0;
    /// NOT_SUPPORTED (-1).
    pub const NOT_SUPPORTED: u64 = -1i64 as u64;
    /// INVALID_PARAMETERS (-2).
    pub const INVALID_PARAMETERS: u64 = -2i64 as u64;
    /// DENIED (-3).
    pub const DENIED: u64 = -3i64 as u64;
    /// ALREADY_ON (-4).
    pub const ALREADY_ON: u64 = -4i64 as u64;
    /// INTERNAL_FAILURE (-6).
    pub const INTERNAL_FAILURE: u64 = -6i64 as u64;
}

/// AFFINITY_INFO's answers.
pub mod affinity {
    /// At least one matching core is on.
    pub const ON: u64 = 0;
    /// Every matching core is off.
    pub const OFF: u64 = 1;
}

/// The PSCI version answered: 1.1.
pub const PSCI_VERSION_1_1: u64 = 0x0001_0001;
/// The SMCCC version answered: 1.1.
pub const SMCCC_VERSION_1_1: u64 = 0x0001_0001;
/// MIGRATE_INFO_TYPE's answer: no Trusted OS that needs migrating.
pub const TOS_NOT_PRESENT_MP: u64 = 2;
/// SYSTEM_RESET2's data flag in a reset event, as KVM's `KVM_SYSTEM_EVENT_RESET_FLAG_PSCI_RESET2`.
pub const RESET_FLAG_PSCI_RESET2: u64 = 1;
/// The MPIDR_EL1 bits that name a core: Aff3 and Aff2..Aff0. A CPU_ON or AFFINITY_INFO target
/// with any other bit set (MPIDR_EL1's RES1 bit 31, say) is invalid, as in KVM.
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// The instruction that made a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    /// `HVC #imm`.
    Hvc,
    /// `SMC #imm`.
    Smc,
}

impl Conduit {
    /// How far the PC has to move past the call after the hypervisor's trap. An HVC's preferred
    /// return address is the next instruction; a trapped SMC's is the SMC itself (Arm ARM D1.10,
    /// "preferred exception return address"), so the SMC needs 4 more bytes. KVM's hypercall
    /// exit has already moved the PC past either.
    pub fn pc_advance_after_trap(self) -> u64 {
        match self {
            Conduit::Hvc => 0,
            Conduit::Smc => 4,
        }
    }
}

/// A call as trapped: the function id in W0, X1–X3, and the instruction's immediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// The function id.
    pub function: u32,
    /// X1, X2, X3.
    pub args: [u64; 3],
    /// The immediate of the HVC or SMC; SMCCC calls use 0.
    pub imm: u16,
}

impl Call {
    /// Argument `n` (1..=3) as the calling convention gives it: 32 bits for an SMC32 call.
    pub fn arg(&self, n: usize) -> u64 {
        let raw = self.args.get(n.wrapping_sub(1)).copied().unwrap_or(0);
        if self.function & (1 << 30) == 0 {
            raw & 0xffff_ffff
        } else {
            raw
        }
    }
}

/// What the backend offers beyond the mandatory calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offer {
    /// SYSTEM_SUSPEND exits as a suspend event (KVM: `KVM_CAP_ARM_SYSTEM_SUSPEND` enabled).
    pub system_suspend: bool,
}

/// Where a vCPU starts after CPU_ON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartContext {
    /// The entry point: the PC.
    pub entry: u64,
    /// The context id: X0.
    pub context_id: u64,
}

/// What the backend does after a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Write the value to X0 and continue after the call.
    Return(u64),
    /// CPU_ON accepted: return SUCCESS and wake vCPU `target`, which takes its start context
    /// from the board.
    Started {
        /// The vCPU turned on.
        target: u32,
    },
    /// CPU_OFF: the caller is off; its `run` waits for CPU_ON or a kick. Nothing is returned.
    PoweredOff,
    /// CPU_SUSPEND, taken as a standby: return SUCCESS, after waiting as for WFI where the
    /// backend can (KVM's in-kernel PSCI does the same).
    Standby,
    /// Exit to the host with a system event. `x0`, when set, is written first: what the call
    /// returns if the host resumes the vCPU.
    SystemEvent {
        /// The event.
        kind: SystemEventKind,
        /// Its data, as KVM reports it.
        data: Vec<u64>,
        /// The value for X0.
        x0: Option<u64>,
    },
}

/// The power state of one vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cpu {
    mpidr: u64,
    on: bool,
    start: Option<StartContext>,
}

/// The power states of a VM's vCPUs, by index, and the pending CPU_ON requests.
#[derive(Clone, Debug, Default)]
pub struct PowerTable {
    cpus: Vec<Option<Cpu>>,
}

impl PowerTable {
    /// Registers vCPU `index` with its MPIDR_EL1, on or off.
    pub fn add(&mut self, index: u32, mpidr: u64, on: bool) {
        let i = index as usize;
        if self.cpus.len() <= i {
            self.cpus.resize(i + 1, None);
        }
        self.cpus[i] = Some(Cpu { mpidr: mpidr & MPIDR_AFFINITY_MASK, on, start: None });
    }

    /// Forgets vCPU `index`.
    pub fn remove(&mut self, index: u32) {
        if let Some(slot) = self.cpus.get_mut(index as usize) {
            *slot = None;
        }
    }

    fn cpu(&mut self, index: u32) -> Option<&mut Cpu> {
        self.cpus.get_mut(index as usize).and_then(Option::as_mut)
    }

    /// Whether vCPU `index` is on (a CPU_ON not yet taken counts as on, as in KVM).
    pub fn is_on(&self, index: u32) -> bool {
        self.cpus.get(index as usize).and_then(Option::as_ref).is_some_and(|c| c.on)
    }

    /// Turns vCPU `index` on or off by the host's hand (an MP state put); drops a pending start.
    pub fn set_on(&mut self, index: u32, on: bool) {
        if let Some(cpu) = self.cpu(index) {
            cpu.on = on;
            cpu.start = None;
        }
    }

    /// The start context of a CPU_ON for vCPU `index` that its `run` has not taken yet; taking
    /// it leaves the vCPU on.
    pub fn take_start(&mut self, index: u32) -> Option<StartContext> {
        self.cpu(index).and_then(|c| c.start.take())
    }

    fn others_on(&self, index: u32) -> bool {
        self.cpus.iter().enumerate().any(|(i, c)| i != index as usize && c.is_some_and(|c| c.on))
    }

    fn stop_all(&mut self) {
        for cpu in self.cpus.iter_mut().flatten() {
            cpu.on = false;
            cpu.start = None;
        }
    }

    fn affinity_info(&self, target: u64, level: u64) -> u64 {
        if target & !MPIDR_AFFINITY_MASK != 0 {
            return ret::INVALID_PARAMETERS;
        }
        let mask = match level {
            0 => MPIDR_AFFINITY_MASK,
            1 => MPIDR_AFFINITY_MASK & !0xff,
            2 => MPIDR_AFFINITY_MASK & !0xffff,
            3 => MPIDR_AFFINITY_MASK & !0xff_ffff,
            _ => return ret::INVALID_PARAMETERS,
        };
        let mut matching = self.cpus.iter().flatten().filter(|c| c.mpidr & mask == target & mask).peekable();
        if matching.peek().is_none() {
            return ret::INVALID_PARAMETERS;
        }
        if matching.any(|c| c.on) {
            affinity::ON
        } else {
            affinity::OFF
        }
    }

    fn cpu_on(&mut self, target: u64, start: StartContext) -> Result<u32, u64> {
        if target & !MPIDR_AFFINITY_MASK != 0 {
            return Err(ret::INVALID_PARAMETERS);
        }
        let index = self
            .cpus
            .iter()
            .position(|c| c.is_some_and(|c| c.mpidr == target))
            .ok_or(ret::INVALID_PARAMETERS)?;
        let cpu = self.cpus[index].as_mut().ok_or(ret::INVALID_PARAMETERS)?;
        if cpu.on {
            return Err(ret::ALREADY_ON);
        }
        cpu.on = true;
        cpu.start = Some(start);
        u32::try_from(index).map_err(|_| ret::INVALID_PARAMETERS)
    }

    /// Answers `call` made by vCPU `caller`, updating the power states.
    pub fn handle(&mut self, call: &Call, caller: u32, offer: Offer) -> Outcome {
        use function::*;
        if call.imm != 0 {
            return Outcome::Return(ret::NOT_SUPPORTED);
        }
        let f = call.function;
        // The call fails, as far as a host that resumes the vCPU is concerned.
        let stopping =
            |kind, data: Vec<u64>| Outcome::SystemEvent { kind, data, x0: Some(ret::INTERNAL_FAILURE) };
        match f {
            PSCI_VERSION => Outcome::Return(PSCI_VERSION_1_1),
            SMCCC_VERSION => Outcome::Return(SMCCC_VERSION_1_1),
            MIGRATE_INFO_TYPE => Outcome::Return(TOS_NOT_PRESENT_MP),
            PSCI_FEATURES => Outcome::Return(features(call.arg(1) as u32, offer)),
            _ if f == CPU_SUSPEND || f == smc64(CPU_SUSPEND) => Outcome::Standby,
            CPU_OFF => {
                self.set_on(caller, false);
                Outcome::PoweredOff
            }
            _ if f == CPU_ON || f == smc64(CPU_ON) => {
                let start = StartContext { entry: call.arg(2), context_id: call.arg(3) };
                match self.cpu_on(call.arg(1), start) {
                    Ok(target) => Outcome::Started { target },
                    Err(code) => Outcome::Return(code),
                }
            }
            _ if f == AFFINITY_INFO || f == smc64(AFFINITY_INFO) => {
                Outcome::Return(self.affinity_info(call.arg(1), call.arg(2)))
            }
            SYSTEM_OFF => {
                self.stop_all();
                stopping(SystemEventKind::SHUTDOWN, vec![0])
            }
            SYSTEM_RESET => {
                self.stop_all();
                stopping(SystemEventKind::RESET, vec![0])
            }
            _ if f == SYSTEM_RESET2 || f == smc64(SYSTEM_RESET2) => {
                // Architectural reset types other than 0 (SYSTEM_WARM_RESET) are invalid; vendor
                // types (bit 31 set) are the host's business.
                let kind = call.arg(1);
                if kind != 0 && kind & (1 << 31) == 0 {
                    return Outcome::Return(ret::INVALID_PARAMETERS);
                }
                self.stop_all();
                stopping(SystemEventKind::RESET, vec![RESET_FLAG_PSCI_RESET2])
            }
            _ if (f == SYSTEM_SUSPEND || f == smc64(SYSTEM_SUSPEND)) && offer.system_suspend => {
                if self.others_on(caller) {
                    Outcome::Return(ret::DENIED)
                } else {
                    Outcome::SystemEvent { kind: SystemEventKind::SUSPEND, data: Vec::new(), x0: None }
                }
            }
            _ => Outcome::Return(ret::NOT_SUPPORTED),
        }
    }
}

/// PSCI_FEATURES of `id`: SUCCESS for what is answered, NOT_SUPPORTED otherwise.
fn features(id: u32, offer: Offer) -> u64 {
    use function::*;
    let always = [
        PSCI_VERSION,
        CPU_SUSPEND,
        smc64(CPU_SUSPEND),
        CPU_OFF,
        CPU_ON,
        smc64(CPU_ON),
        AFFINITY_INFO,
        smc64(AFFINITY_INFO),
        MIGRATE_INFO_TYPE,
        SYSTEM_OFF,
        SYSTEM_RESET,
        SYSTEM_RESET2,
        smc64(SYSTEM_RESET2),
        PSCI_FEATURES,
        SMCCC_VERSION,
    ];
    let suspend = offer.system_suspend && (id == SYSTEM_SUSPEND || id == smc64(SYSTEM_SUSPEND));
    if always.contains(&id) || suspend {
        ret::SUCCESS
    } else {
        ret::NOT_SUPPORTED
    }
}

/// Whether `function` is a PSCI call (either calling convention).
pub fn is_psci(function: u32) -> bool {
    let (a, b) = function::PSCI_RANGE_32;
    let (c, d) = function::PSCI_RANGE_64;
    (a..=b).contains(&function) || (c..=d).contains(&function)
}

/// What a stopped vCPU's wait ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The vCPU is on: run it.
    Running,
    /// A CPU_ON for it: reset it, start it here, then run it.
    Start(StartContext),
    /// The caller's `interrupted` said to stop waiting (a kick).
    Interrupted,
}

/// A VM's [`PowerTable`] shared by its vCPUs' threads, with the wait of a stopped vCPU.
#[derive(Debug, Default)]
pub struct PowerBoard {
    table: Mutex<PowerTable>,
    changed: Condvar,
}

/// How long a stopped vCPU sleeps between checks of its `interrupted` condition, in case a
/// wake-up was missed.
const RECHECK: Duration = Duration::from_millis(50);

impl PowerBoard {
    /// The table, locked. A poisoned lock still gives the table: it holds plain data.
    pub fn lock(&self) -> MutexGuard<'_, PowerTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers a call of vCPU `caller` and wakes the vCPUs waiting on the board if a state
    /// changed.
    pub fn handle(&self, call: &Call, caller: u32, offer: Offer) -> Outcome {
        let outcome = self.lock().handle(call, caller, offer);
        if matches!(outcome, Outcome::Started { .. } | Outcome::SystemEvent { .. }) {
            self.changed.notify_all();
        }
        outcome
    }

    /// Wakes every vCPU waiting on the board, to check its state (after a kick, or a host's
    /// MP-state put).
    pub fn wake_all(&self) {
        let _guard = self.lock();
        self.changed.notify_all();
    }

    /// What vCPU `index` should do before entering the guest: run on, start from a CPU_ON, or
    /// (while it is off) wait until one of those or until `interrupted` returns true.
    pub fn wait_until_on(&self, index: u32, interrupted: impl Fn() -> bool) -> Wake {
        let mut table = self.lock();
        loop {
            if let Some(start) = table.take_start(index) {
                return Wake::Start(start);
            }
            if table.is_on(index) {
                return Wake::Running;
            }
            if interrupted() {
                return Wake::Interrupted;
            }
            table = match self.changed.wait_timeout(table, RECHECK) {
                Ok((t, _)) => t,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };

    use super::{function::*, *};

    fn call(function: u32, args: [u64; 3]) -> Call {
        Call { function, args, imm: 0 }
    }

    /// Two vCPUs with MPIDR_EL1 0x8000_0000 (on) and 0x8000_0001 (off): affinities 0 and 1.
    fn two_cpus() -> PowerTable {
        let mut t = PowerTable::default();
        t.add(0, 0x8000_0000, true);
        t.add(1, 0x8000_0001, false);
        t
    }

    #[test]
    fn version_features_and_migrate_info() {
        let mut t = two_cpus();
        let offer = Offer::default();
        assert_eq!(t.handle(&call(PSCI_VERSION, [0; 3]), 0, offer), Outcome::Return(0x10001));
        assert_eq!(t.handle(&call(SMCCC_VERSION, [0; 3]), 0, offer), Outcome::Return(0x10001));
        assert_eq!(t.handle(&call(MIGRATE_INFO_TYPE, [0; 3]), 0, offer), Outcome::Return(2));
        for id in [CPU_ON, smc64(CPU_ON), CPU_OFF, SYSTEM_OFF, SYSTEM_RESET2, PSCI_FEATURES, SMCCC_VERSION] {
            let got = t.handle(&call(PSCI_FEATURES, [u64::from(id), 0, 0]), 0, offer);
            assert_eq!(got, Outcome::Return(ret::SUCCESS), "{id:#x}");
        }
        for id in [SYSTEM_SUSPEND, MIGRATE, 0x8400_001f, 0xdead] {
            let got = t.handle(&call(PSCI_FEATURES, [u64::from(id), 0, 0]), 0, offer);
            assert_eq!(got, Outcome::Return(ret::NOT_SUPPORTED), "{id:#x}");
        }
        let with_suspend = Offer { system_suspend: true };
        let got = t.handle(&call(PSCI_FEATURES, [u64::from(smc64(SYSTEM_SUSPEND)), 0, 0]), 0, with_suspend);
        assert_eq!(got, Outcome::Return(ret::SUCCESS));
    }

    #[test]
    fn unknown_calls_and_nonzero_immediates_are_not_supported() {
        let mut t = two_cpus();
        for f in [MIGRATE, MIGRATE_INFO_UP_CPU, SMCCC_ARCH_FEATURES, 0xc200_0000, 0x1234] {
            assert_eq!(t.handle(&call(f, [0; 3]), 0, Offer::default()), Outcome::Return(ret::NOT_SUPPORTED));
        }
        let with_imm = Call { imm: 1, ..call(PSCI_VERSION, [0; 3]) };
        assert_eq!(t.handle(&with_imm, 0, Offer::default()), Outcome::Return(ret::NOT_SUPPORTED));
        assert_eq!(ret::NOT_SUPPORTED, u64::MAX);
    }

    #[test]
    fn cpu_on_starts_a_stopped_cpu_once() {
        let mut t = two_cpus();
        let with_bit_31 = call(smc64(CPU_ON), [0x8000_0001, 0x4000_0800, 0x55]);
        assert_eq!(t.handle(&with_bit_31, 0, Offer::default()), Outcome::Return(ret::INVALID_PARAMETERS));
        let on = call(smc64(CPU_ON), [1, 0x4000_0800, 0x55]);
        assert_eq!(t.handle(&on, 0, Offer::default()), Outcome::Started { target: 1 });
        assert!(t.is_on(1));
        assert_eq!(
            t.handle(&on, 0, Offer::default()),
            Outcome::Return(ret::ALREADY_ON),
            "pending counts as on"
        );
        assert_eq!(t.take_start(1), Some(StartContext { entry: 0x4000_0800, context_id: 0x55 }));
        assert_eq!(t.take_start(1), None, "taken once");
        assert_eq!(t.handle(&on, 0, Offer::default()), Outcome::Return(ret::ALREADY_ON));
        let nobody = call(smc64(CPU_ON), [7, 0x4000_0800, 0]);
        assert_eq!(t.handle(&nobody, 0, Offer::default()), Outcome::Return(ret::INVALID_PARAMETERS));
    }

    #[test]
    fn smc32_arguments_are_truncated() {
        let mut t = two_cpus();
        let on = call(CPU_ON, [0xffff_ffff_0000_0001, 0xffff_0000_4000_0800, 0x1_0000_0055]);
        assert_eq!(t.handle(&on, 0, Offer::default()), Outcome::Started { target: 1 });
        assert_eq!(t.take_start(1), Some(StartContext { entry: 0x4000_0800, context_id: 0x55 }));
    }

    #[test]
    fn cpu_off_and_affinity_info() {
        let mut t = two_cpus();
        let info = |t: &mut PowerTable, mpidr: u64, level: u64| {
            t.handle(&call(smc64(AFFINITY_INFO), [mpidr, level, 0]), 0, Offer::default())
        };
        assert_eq!(info(&mut t, 0, 0), Outcome::Return(affinity::ON));
        assert_eq!(info(&mut t, 1, 0), Outcome::Return(affinity::OFF));
        assert_eq!(info(&mut t, 9, 0), Outcome::Return(ret::INVALID_PARAMETERS));
        assert_eq!(
            info(&mut t, 0x8000_0000, 0),
            Outcome::Return(ret::INVALID_PARAMETERS),
            "bit 31 is not affinity"
        );
        assert_eq!(info(&mut t, 1, 1), Outcome::Return(affinity::ON), "cluster 0 has a core on");
        assert_eq!(info(&mut t, 1, 4), Outcome::Return(ret::INVALID_PARAMETERS));
        assert_eq!(t.handle(&call(CPU_OFF, [0; 3]), 0, Offer::default()), Outcome::PoweredOff);
        assert!(!t.is_on(0));
        assert_eq!(info(&mut t, 0, 1), Outcome::Return(affinity::OFF));
    }

    #[test]
    fn system_calls_exit_as_kvm_reports_them() {
        let mut t = two_cpus();
        t.set_on(1, true);
        let off = t.handle(&call(SYSTEM_OFF, [0; 3]), 0, Offer::default());
        assert_eq!(
            off,
            Outcome::SystemEvent {
                kind: SystemEventKind::SHUTDOWN,
                data: vec![0],
                x0: Some(ret::INTERNAL_FAILURE)
            }
        );
        assert!(!t.is_on(0) && !t.is_on(1), "every vCPU stops");
        let mut t = two_cpus();
        let reset = t.handle(&call(SYSTEM_RESET, [0; 3]), 0, Offer::default());
        assert!(
            matches!(reset, Outcome::SystemEvent { kind: SystemEventKind::RESET, ref data, .. } if data == &[0])
        );
        let mut t = two_cpus();
        let reset2 = t.handle(&call(smc64(SYSTEM_RESET2), [0, 0, 0]), 0, Offer::default());
        assert!(
            matches!(reset2, Outcome::SystemEvent { kind: SystemEventKind::RESET, ref data, .. } if data == &[1])
        );
        let vendor = t.handle(&call(SYSTEM_RESET2, [0x8000_0001, 0, 0]), 0, Offer::default());
        assert!(matches!(vendor, Outcome::SystemEvent { .. }));
        let bad = t.handle(&call(SYSTEM_RESET2, [5, 0, 0]), 0, Offer::default());
        assert_eq!(bad, Outcome::Return(ret::INVALID_PARAMETERS));
    }

    #[test]
    fn system_suspend_needs_the_offer_and_the_others_off() {
        let mut t = two_cpus();
        let suspend = call(smc64(SYSTEM_SUSPEND), [0x4000_0000, 0, 0]);
        assert_eq!(t.handle(&suspend, 0, Offer::default()), Outcome::Return(ret::NOT_SUPPORTED));
        let offer = Offer { system_suspend: true };
        assert_eq!(
            t.handle(&suspend, 0, offer),
            Outcome::SystemEvent { kind: SystemEventKind::SUSPEND, data: vec![], x0: None }
        );
        t.set_on(1, true);
        assert_eq!(t.handle(&suspend, 0, offer), Outcome::Return(ret::DENIED));
        assert_eq!(t.handle(&call(CPU_SUSPEND, [0; 3]), 0, offer), Outcome::Standby);
    }

    #[test]
    fn conduits_and_ranges() {
        assert_eq!(Conduit::Hvc.pc_advance_after_trap(), 0);
        assert_eq!(Conduit::Smc.pc_advance_after_trap(), 4);
        assert!(is_psci(SYSTEM_OFF) && is_psci(smc64(CPU_ON)) && !is_psci(SMCCC_VERSION));
    }

    #[test]
    fn a_stopped_cpu_waits_for_cpu_on_or_a_kick() {
        let board = Arc::new(PowerBoard::default());
        board.lock().add(0, 0x8000_0000, true);
        board.lock().add(1, 0x8000_0001, false);
        let kicked = Arc::new(AtomicBool::new(false));
        let k = Arc::clone(&kicked);
        let b = Arc::clone(&board);
        let waiter = std::thread::spawn(move || b.wait_until_on(1, || k.load(Ordering::SeqCst)));
        std::thread::sleep(Duration::from_millis(20));
        let on = call(smc64(CPU_ON), [1, 0x4000_1000, 7]);
        assert_eq!(board.handle(&on, 0, Offer::default()), Outcome::Started { target: 1 });
        let woke = waiter.join().map_err(|_| "the waiter panicked");
        assert_eq!(woke, Ok(Wake::Start(StartContext { entry: 0x4000_1000, context_id: 7 })));
        assert_eq!(board.wait_until_on(1, || false), Wake::Running);

        board.lock().set_on(1, false);
        let k = Arc::clone(&kicked);
        let b = Arc::clone(&board);
        let waiter = std::thread::spawn(move || b.wait_until_on(1, || k.load(Ordering::SeqCst)));
        kicked.store(true, Ordering::SeqCst);
        board.wake_all();
        assert_eq!(waiter.join().map_err(|_| "the waiter panicked"), Ok(Wake::Interrupted));
    }
}
