//! The machine as gdb sees it: the `gdbstub` target over the vCPU threads, the debug pool and
//! guest RAM, with memory read and written by virtual address through the guest's stage-1 tables.

use std::{
    collections::{HashMap, VecDeque},
    sync::{mpsc, Arc},
};

use accel_api::{
    client::{Debug, Vcpu},
    debug::{DebugEvent, WatchKind as AccelWatchKind},
    sysreg::{self, RegId},
    AccelError, CoreRegs, ErrorKind, PutLevel, RegClass, RegValue, Result, VcpuFeatures,
};

use crate::mmu::{translate, TranslationRegs};
use gdbstub::{
    common::{Signal, Tid},
    stub::MultiThreadStopReason,
    target::{
        ext::{
            base::{
                multithread::{
                    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
                    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
                },
                single_register_access::{SingleRegisterAccess, SingleRegisterAccessOps},
                BaseOps,
            },
            breakpoints::{BreakpointsOps, WatchKind},
            target_description_xml_override::{
                TargetDescriptionXmlOverride, TargetDescriptionXmlOverrideOps,
            },
        },
        Target, TargetError, TargetResult,
    },
};

use super::{
    arch::{AccelAArch64, GdbRegId, GdbRegs, SveView, CORE_SYSREGS},
    vcpu_thread::{Command, Event, Stop, VcpuHandle},
};
use crate::vmm::ram::GuestRam;

/// Resume actions of one round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    Continue,
    Step,
}

/// The machine as gdb sees it.
pub struct GdbTarget {
    pub(super) vcpus: Vec<VcpuHandle>,
    pub(super) debug: Debug,
    ram: Arc<GuestRam>,
    pub(super) actions: HashMap<u32, Action>,
    scheduler_locked: bool,
    pub(super) running: Vec<bool>,
    translation: HashMap<u32, TranslationRegs>,
    pub(super) xml: Option<String>,
    /// The thread gdb waits on in the current round.
    waiting_on: Option<u32>,
    /// Each stopped vCPU's system registers, read once per stop.
    sysregs: HashMap<u32, Vec<RegValue>>,
    /// The backend, for `monitor info`.
    pub(super) about: String,
    /// The end of the run a monitor command asked for.
    pub(super) ended: Option<crate::vmm::Outcome>,
    /// The thread gdb last selected for register and memory access (`Hg`).
    pub(super) focus: Option<u32>,
    /// Each vCPU was last resumed for a single step.
    stepping: Vec<bool>,
    /// Why the last breakpoint or watchpoint gdb asked for was refused.
    pub(super) last_refusal: Option<String>,
}

/// A core register that gdb sees as a system register.
#[derive(Clone, Copy)]
enum CoreSysreg {
    SpEl0,
    SpEl1,
    ElrEl1,
    SpsrEl1,
}

impl CoreSysreg {
    fn of(self, core: &CoreRegs) -> &u64 {
        match self {
            CoreSysreg::SpEl0 => &core.sp_el0,
            CoreSysreg::SpEl1 => &core.sp_el1,
            CoreSysreg::ElrEl1 => &core.elr_el1,
            CoreSysreg::SpsrEl1 => &core.spsr[0],
        }
    }

    fn of_mut(self, core: &mut CoreRegs) -> &mut u64 {
        match self {
            CoreSysreg::SpEl0 => &mut core.sp_el0,
            CoreSysreg::SpEl1 => &mut core.sp_el1,
            CoreSysreg::ElrEl1 => &mut core.elr_el1,
            CoreSysreg::SpsrEl1 => &mut core.spsr[0],
        }
    }
}

/// The core register behind a system-register encoding of [`CORE_SYSREGS`], if it is one.
fn core_sysreg(encoding: u16) -> Option<CoreSysreg> {
    let at = CORE_SYSREGS.iter().position(|(e, _)| *e == encoding)?;
    [CoreSysreg::SpEl0, CoreSysreg::SpEl1, CoreSysreg::ElrEl1, CoreSysreg::SpsrEl1].get(at).copied()
}

/// The vCPU index of a gdb thread id (thread ids count from 1). A thread id beyond any index
/// gdb can name (it parses up to `usize`) maps to `u32::MAX`, which no vCPU has.
pub fn tid_index(tid: Tid) -> u32 {
    u32::try_from(tid.get() - 1).unwrap_or(u32::MAX)
}

/// The gdb thread id of vCPU `index`.
pub fn index_tid(index: u32) -> Tid {
    Tid::new(index as usize + 1).unwrap_or(Tid::MIN)
}

impl GdbTarget {
    /// The target over the vCPU threads behind `vcpus`, all stopped.
    pub fn new(vcpus: Vec<VcpuHandle>, debug: Debug, ram: Arc<GuestRam>) -> Self {
        let running = vec![false; vcpus.len()];
        let stepping = vec![false; vcpus.len()];
        Self {
            vcpus,
            debug,
            ram,
            actions: HashMap::new(),
            scheduler_locked: false,
            running,
            translation: HashMap::new(),
            xml: None,
            waiting_on: None,
            sysregs: HashMap::new(),
            about: String::new(),
            ended: None,
            focus: None,
            stepping,
            last_refusal: None,
        }
    }

    /// Runs `f` on vCPU `index`'s thread and waits for the result.
    pub(super) fn exec<T: Send + 'static>(
        &self,
        index: u32,
        f: impl FnOnce(&mut Vcpu) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let handle = self
            .vcpus
            .get(index as usize)
            .ok_or_else(|| AccelError::new(ErrorKind::NOT_FOUND, format!("no vCPU {index}")))?;
        if self.running[index as usize] {
            // Its thread is inside the guest: the request would wait for the next stop.
            return Err(AccelError::bad_state(format!("vCPU {index} is running")));
        }
        let (tx, rx) = mpsc::channel();
        handle
            .commands
            .send(Command::Exec(Box::new(move |v| {
                let _ = tx.send(f(v));
            })))
            .map_err(|_| AccelError::bad_state(format!("vCPU {index}'s thread is gone")))?;
        rx.recv().map_err(|_| AccelError::bad_state(format!("vCPU {index} did not answer")))?
    }

    /// vCPU `index`'s translation registers, read once per stop. A running vCPU's are those of
    /// its last stop, or else a stopped vCPU's: its tables are in RAM and read as they are now.
    fn translation(&mut self, index: u32) -> Result<TranslationRegs> {
        if let Some(t) = self.translation.get(&index) {
            return Ok(*t);
        }
        if self.running.get(index as usize).copied().unwrap_or(false) {
            let stopped = (0..self.vcpus.len() as u32).find(|i| !self.running[*i as usize]);
            return match stopped {
                Some(other) => self.translation(other),
                None => Err(AccelError::bad_state(format!(
                    "vCPU {index} is running and no vCPU is stopped to translate through"
                ))),
            };
        }
        let sys = self.exec(index, |v| v.get_regs(RegClass::SYS))?;
        let find = |id: RegId| sys.iter().find(|r| r.id == id).map_or(0, |r| r.value);
        let t = TranslationRegs {
            sctlr: find(sysreg::SCTLR_EL1),
            tcr: find(sysreg::TCR_EL1),
            ttbr0: find(sysreg::TTBR0_EL1),
            ttbr1: find(sysreg::TTBR1_EL1),
        };
        self.translation.insert(index, t);
        Ok(t)
    }

    fn physical(&mut self, index: u32, va: u64) -> Result<u64> {
        let regs = self.translation(index)?;
        let ram = Arc::clone(&self.ram);
        translate(va, &regs, |pa| {
            let mut b = [0u8; 8];
            ram.read(pa, &mut b)?;
            Ok(u64::from_le_bytes(b))
        })
    }

    /// The physical address of a breakpoint at `va`, through the tables of the vCPU gdb looks at.
    pub(super) fn physical_for_breakpoint(&mut self, va: u64) -> Result<u64> {
        self.physical(self.focus.unwrap_or(0), va)
    }

    /// Reads or writes guest memory at a virtual address, page by page.
    fn access(
        &mut self,
        index: u32,
        va: u64,
        len: usize,
        mut each: impl FnMut(&GuestRam, u64, usize, usize) -> Result<()>,
    ) -> Result<()> {
        let mut done = 0usize;
        while done < len {
            let at = va.wrapping_add(done as u64);
            let in_page = (0x1000 - (at & 0xfff)) as usize;
            let n = in_page.min(len - done);
            let pa = self.physical(index, at)?;
            each(&self.ram, pa, done, n)?;
            done += n;
        }
        Ok(())
    }

    /// Sends `Resume` to every vCPU per this round's actions.
    pub(super) fn resume_all(&mut self) -> Result<()> {
        let (mut first_step, mut first) = (None, None);
        for index in 0..self.vcpus.len() as u32 {
            // With scheduler locking, threads without an action of their own stay stopped.
            let action = match self.actions.get(&index) {
                Some(a) => *a,
                None if self.scheduler_locked => continue,
                None => Action::Continue,
            };
            let step = action == Action::Step;
            self.resume_thread(index, step)?;
            first_step = first_step.or(step.then_some(index));
            first = first.or(Some(index));
        }
        // gdb waits on the thread it steps, or else on the one it looks at if that runs, or else
        // on the first it resumed.
        let focus = self.focus.filter(|f| self.running.get(*f as usize).copied().unwrap_or(false));
        self.waiting_on = first_step.or(focus).or(first);
        Ok(())
    }

    /// Resumes vCPU `index`, for one instruction if `step`.
    /// A vCPU already running is left as it is: a second `Resume` would wait in its thread's queue
    /// and run it again after its next stop, while the session took it for stopped and waited on
    /// it forever (gdbstub resumes every thread for a `c` that arrives while the guest runs).
    pub(super) fn resume_thread(&mut self, index: u32, step: bool) -> Result<()> {
        let handle = self
            .vcpus
            .get(index as usize)
            .ok_or_else(|| AccelError::bad_state(format!("no vCPU {index}")))?;
        if self.running[index as usize] {
            return Ok(());
        }
        self.debug.set_single_step(index, step)?;
        handle
            .commands
            .send(Command::Resume { step })
            .map_err(|_| AccelError::bad_state(format!("vCPU {index}'s thread is gone")))?;
        self.running[index as usize] = true;
        self.stepping[index as usize] = step;
        Ok(())
    }

    /// Kicks vCPU `index` out of the guest; its thread then reports a stop.
    pub(super) fn kick(&self, index: u32) {
        if let Some(h) = self.vcpus.get(index as usize) {
            h.kicker.kick();
        }
    }

    /// Records that vCPU `index` stopped: what was read of it before may have changed.
    pub(super) fn stopped(&mut self, index: u32) {
        if let Some(r) = self.running.get_mut(index as usize) {
            *r = false;
        }
        self.translation.remove(&index);
        self.sysregs.remove(&index);
    }

    /// Whether vCPU `index` was last resumed for a single step.
    pub(super) fn stepping(&self, index: u32) -> bool {
        self.stepping.get(index as usize).copied().unwrap_or(false)
    }

    /// A system register by encoding: the core-kept ones (SP_EL0, SP_EL1, ELR_EL1, SPSR_EL1) from
    /// the core registers, the rest from the vCPU's system registers, read once per stop for
    /// every register gdb asks for afterwards (`info registers` reads hundreds).
    fn read_sysreg(&mut self, index: u32, encoding: u16) -> Result<u64> {
        if let Some(field) = core_sysreg(encoding) {
            let core = self.exec(index, |v| v.get_core())?;
            return Ok(*field.of(&core));
        }
        if !self.sysregs.contains_key(&index) {
            let values = self.exec(index, |v| v.get_regs(RegClass::SYS))?;
            self.sysregs.insert(index, values);
        }
        let id = RegId::from_encoding(encoding);
        self.sysregs
            .get(&index)
            .and_then(|values| values.iter().find(|v| v.id == id))
            .map(|v| v.value)
            .ok_or_else(|| {
                AccelError::new(ErrorKind::NOT_FOUND, format!("{id} is not a register of vCPU {index}"))
            })
    }

    /// Writes a system register by encoding (see [`GdbTarget::read_sysreg`]).
    fn write_sysreg(&mut self, index: u32, encoding: u16, value: u64) -> Result<()> {
        self.sysregs.remove(&index);
        self.translation.remove(&index);
        if let Some(field) = core_sysreg(encoding) {
            return self.exec(index, move |v| {
                let mut core = v.get_core()?;
                *field.of_mut(&mut core) = value;
                v.put_core(&core, PutLevel::RUNTIME)
            });
        }
        let id = RegId::from_encoding(encoding);
        self.exec(index, move |v| {
            v.get_regs(id.class())?;
            v.put_regs(&[RegValue { id, value }], PutLevel::RUNTIME)
        })
    }

    /// Lets every stopped vCPU run on, with no step.
    pub(super) fn resume_stopped(&mut self) -> Result<()> {
        for index in 0..self.vcpus.len() as u32 {
            if !self.running[index as usize] {
                self.resume_thread(index, false)?;
            }
        }
        Ok(())
    }

    /// The thread gdb waits on this round: where an interrupt is reported.
    pub(super) fn waiting_on(&self) -> Tid {
        index_tid(self.waiting_on.unwrap_or(0))
    }

    /// Stops every vCPU still running, waits until they have, and returns why each stopped
    /// (a kick, or what it met first). Events that are not vCPU stops (gdb's bytes, a
    /// connection's end, a quit) are queued on `deferred` in order, for the caller to take next.
    pub(super) fn stop_running(
        &mut self,
        events: &mpsc::Receiver<Event>,
        deferred: &mut VecDeque<Event>,
    ) -> Vec<(u32, Stop)> {
        for (i, h) in self.vcpus.iter().enumerate() {
            if self.running[i] {
                h.kicker.kick();
            }
        }
        let mut stops = Vec::new();
        while self.running.iter().any(|r| *r) {
            match events.recv() {
                Ok(Event::Vcpu(i, stop)) => {
                    self.stopped(i);
                    stops.push((i, stop));
                }
                Ok(other) => deferred.push_back(other),
                Err(_) => break,
            }
        }
        stops
    }

    /// Stops every vCPU still running (see [`GdbTarget::stop_running`]); why they stopped is
    /// dropped, except the machine's end, which goes first on `deferred` for the caller to see.
    pub(super) fn stop_others(&mut self, events: &mpsc::Receiver<Event>, deferred: &mut VecDeque<Event>) {
        for (i, stop) in self.stop_running(events, deferred) {
            if let Stop::Exited(outcome) = stop {
                deferred.push_front(Event::Vcpu(i, Stop::Exited(outcome)));
            }
        }
    }

    pub(super) fn stop_reason(&mut self, index: u32, stop: Stop) -> Result<MultiThreadStopReason<u64>> {
        let tid = index_tid(index);
        Ok(match stop {
            // A step names its thread: gdb files the registers it reads next under it.
            Stop::Debug(DebugEvent::Step) => {
                MultiThreadStopReason::SignalWithThread { tid, signal: Signal::SIGTRAP }
            }
            Stop::PoweredOff => {
                log::info!("gdb: vCPU {index} is powered off; it cannot step until PSCI CPU_ON starts it");
                MultiThreadStopReason::SignalWithThread { tid, signal: Signal::SIGSTOP }
            }
            Stop::Debug(DebugEvent::HwBreakpoint { .. }) => MultiThreadStopReason::HwBreak(tid),
            Stop::Debug(DebugEvent::SwBreakpoint { .. }) => MultiThreadStopReason::SwBreak(tid),
            Stop::Debug(DebugEvent::Watchpoint { watch, accessed }) => MultiThreadStopReason::Watch {
                tid,
                kind: match watch.kind {
                    AccelWatchKind::READ => WatchKind::Read,
                    AccelWatchKind::WRITE => WatchKind::Write,
                    _ => WatchKind::ReadWrite,
                },
                addr: accessed,
            },
            Stop::Debug(DebugEvent::Guest | DebugEvent::Unknown { .. }) | Stop::Kicked => {
                MultiThreadStopReason::SignalWithThread { tid, signal: Signal::SIGINT }
            }
            Stop::Exited(outcome) => MultiThreadStopReason::Exited(outcome.exit_code() as u8),
            Stop::Failed(e) => return Err(e),
        })
    }
}

impl Target for GdbTarget {
    type Arch = AccelAArch64;
    type Error = AccelError;

    fn base_ops(&mut self) -> BaseOps<'_, AccelAArch64, AccelError> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_target_description_xml_override(
        &mut self,
    ) -> Option<TargetDescriptionXmlOverrideOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<gdbstub::target::ext::monitor_cmd::MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }
}

fn nonfatal(e: AccelError) -> TargetError<AccelError> {
    // gdb reads past what is mapped all the time (a backtrace, `x` at a bad address) and shows
    // the failure itself: not worth a line among the guest's console output.
    log::debug!("gdb: {e}");
    TargetError::NonFatal
}

impl MultiThreadBase for GdbTarget {
    fn read_registers(&mut self, regs: &mut GdbRegs, tid: Tid) -> TargetResult<(), Self> {
        let index = tid_index(tid);
        let sve = self.vcpus.get(index as usize).is_some_and(|h| h.features.contains(VcpuFeatures::SVE));
        *regs = self
            .exec(index, move |v| {
                let core = v.get_core()?;
                let fp = v.get_fp()?;
                let mut r = GdbRegs {
                    x: core.x,
                    sp: if core.pstate & 1 == 1 { core.sp_el1 } else { core.sp_el0 },
                    pc: core.pc,
                    cpsr: core.pstate as u32,
                    v: fp.v,
                    fpsr: fp.fpsr,
                    fpcr: fp.fpcr,
                    sve: None,
                };
                if sve {
                    let s = v.get_sve()?;
                    r.sve = Some(SveView { vq: s.vq, z: s.z.to_vec(), p: s.p.to_vec(), ffr: s.ffr.to_vec() });
                }
                Ok(r)
            })
            .map_err(nonfatal)?;
        Ok(())
    }

    fn write_registers(&mut self, regs: &GdbRegs, tid: Tid) -> TargetResult<(), Self> {
        let regs = regs.clone();
        self.exec(tid_index(tid), move |v| {
            let mut core = v.get_core()?;
            core.x = regs.x;
            if core.pstate & 1 == 1 {
                core.sp_el1 = regs.sp;
            } else {
                core.sp_el0 = regs.sp;
            }
            core.pc = regs.pc;
            core.pstate = (core.pstate & !0xffff_ffff) | u64::from(regs.cpsr);
            v.put_core(&core, PutLevel::RUNTIME)?;
            match &regs.sve {
                Some(s) => {
                    let mut sve = v.get_sve()?;
                    sve.z = s.z.clone().into();
                    sve.p = s.p.clone().into();
                    sve.ffr = s.ffr.clone().into();
                    v.put_sve(&sve, PutLevel::RUNTIME)?;
                    let mut fp = v.get_fp()?;
                    fp.fpsr = regs.fpsr;
                    fp.fpcr = regs.fpcr;
                    v.put_fp(&fp, PutLevel::RUNTIME)
                }
                None => {
                    let mut fp = v.get_fp()?;
                    fp.v = regs.v;
                    fp.fpsr = regs.fpsr;
                    fp.fpcr = regs.fpcr;
                    v.put_fp(&fp, PutLevel::RUNTIME)
                }
            }
        })
        .map_err(nonfatal)
    }

    fn support_single_register_access(&mut self) -> Option<SingleRegisterAccessOps<'_, Tid, Self>> {
        Some(self)
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], tid: Tid) -> TargetResult<usize, Self> {
        let len = data.len();
        let result =
            self.access(tid_index(tid), start, len, |ram, pa, off, n| ram.read(pa, &mut data[off..off + n]));
        result.map(|()| len).map_err(nonfatal)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], tid: Tid) -> TargetResult<(), Self> {
        let result = self
            .access(tid_index(tid), start, data.len(), |ram, pa, off, n| ram.write(pa, &data[off..off + n]));
        result.map_err(nonfatal)
    }

    fn list_active_threads(&mut self, thread_is_active: &mut dyn FnMut(Tid)) -> Result<()> {
        for i in 0..self.vcpus.len() {
            thread_is_active(index_tid(i as u32));
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleRegisterAccess<Tid> for GdbTarget {
    fn read_register(&mut self, tid: Tid, reg: GdbRegId, buf: &mut [u8]) -> TargetResult<usize, Self> {
        let mut regs = GdbRegs::default();
        match reg {
            GdbRegId::Sys(encoding) => {
                let value = self.read_sysreg(tid_index(tid), encoding).map_err(nonfatal)?;
                let bytes = value.to_le_bytes();
                let n = buf.len().min(8);
                buf[..n].copy_from_slice(&bytes[..n]);
                Ok(n)
            }
            other => {
                self.read_registers(&mut regs, tid)?;
                let mut all = Vec::new();
                gdbstub::arch::Registers::gdb_serialize(&regs, |b| all.push(b.unwrap_or(0)));
                let (offset, size) = reg_span(&regs, other).ok_or(TargetError::NonFatal)?;
                let n = size.min(buf.len());
                buf[..n].copy_from_slice(&all[offset..offset + n]);
                Ok(n)
            }
        }
    }

    fn write_register(&mut self, tid: Tid, reg: GdbRegId, val: &[u8]) -> TargetResult<(), Self> {
        match reg {
            GdbRegId::Sys(encoding) => {
                let mut b = [0u8; 8];
                let n = val.len().min(8);
                b[..n].copy_from_slice(&val[..n]);
                self.write_sysreg(tid_index(tid), encoding, u64::from_le_bytes(b)).map_err(nonfatal)
            }
            other => {
                let mut regs = GdbRegs::default();
                self.read_registers(&mut regs, tid)?;
                let mut all = Vec::new();
                gdbstub::arch::Registers::gdb_serialize(&regs, |b| all.push(b.unwrap_or(0)));
                let (offset, size) = reg_span(&regs, other).ok_or(TargetError::NonFatal)?;
                if val.len() != size {
                    return Err(TargetError::NonFatal);
                }
                all[offset..offset + size].copy_from_slice(val);
                gdbstub::arch::Registers::gdb_deserialize(&mut regs, &all)
                    .map_err(|()| TargetError::NonFatal)?;
                self.write_registers(&regs, tid)
            }
        }
    }
}

/// Where register `reg` sits in the `g` packet of `regs`, and its size.
fn reg_span(regs: &GdbRegs, reg: GdbRegId) -> Option<(usize, usize)> {
    let (zl, pl) = regs.sve.as_ref().map_or((16, 0), |s| (s.vq as usize * 16, s.vq as usize * 2));
    let vec_base = 31 * 8 + 8 + 8 + 4;
    let after_vec = vec_base + 32 * zl;
    Some(match reg {
        GdbRegId::X(n) => (8 * n as usize, 8),
        GdbRegId::Sp => (31 * 8, 8),
        GdbRegId::Pc => (32 * 8, 8),
        GdbRegId::Cpsr => (33 * 8, 4),
        GdbRegId::Vector(n) => (vec_base + n as usize * zl, zl),
        GdbRegId::Fpsr => (after_vec, 4),
        GdbRegId::Fpcr => (after_vec + 4, 4),
        GdbRegId::Pred(n) if pl > 0 => (after_vec + 8 + n as usize * pl, pl),
        GdbRegId::Ffr if pl > 0 => (after_vec + 8 + 16 * pl, pl),
        GdbRegId::Vg if pl > 0 => (after_vec + 8 + 17 * pl, 8),
        _ => return None,
    })
}

impl MultiThreadResume for GdbTarget {
    fn resume(&mut self) -> Result<()> {
        self.resume_all()
    }

    fn clear_resume_actions(&mut self) -> Result<()> {
        self.actions.clear();
        self.scheduler_locked = false;
        Ok(())
    }

    fn set_resume_action_continue(&mut self, tid: Tid, _signal: Option<Signal>) -> Result<()> {
        self.actions.insert(tid_index(tid), Action::Continue);
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadSchedulerLocking for GdbTarget {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<()> {
        self.scheduler_locked = true;
        Ok(())
    }
}

impl MultiThreadSingleStep for GdbTarget {
    fn set_resume_action_step(&mut self, tid: Tid, _signal: Option<Signal>) -> Result<()> {
        self.actions.insert(tid_index(tid), Action::Step);
        Ok(())
    }
}

impl TargetDescriptionXmlOverride for GdbTarget {
    fn target_description_xml(
        &self,
        annex: &[u8],
        offset: u64,
        length: usize,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        if annex != b"target.xml" {
            return Err(TargetError::NonFatal);
        }
        let xml = self.xml.as_deref().unwrap_or("").as_bytes();
        let start = (offset as usize).min(xml.len());
        let n = length.min(buf.len()).min(xml.len() - start);
        buf[..n].copy_from_slice(&xml[start..start + n]);
        Ok(n)
    }
}
