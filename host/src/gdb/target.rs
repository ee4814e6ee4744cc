//! The machine as gdb sees it: the vCPU threads, the debug pool and guest RAM, with registers
//! read and written by gdb's numbers and memory by virtual address through the guest's stage-1
//! tables.

use std::{
    collections::{HashMap, VecDeque},
    sync::{mpsc, Arc},
};

use accel_api::{
    client::{Debug, Vcpu},
    debug::{DebugEvent, WatchKind as AccelWatchKind},
    sysreg::{self, RegId},
    AccelError, CoreReg, CoreRegs, ErrorKind, PutLevel, RegClass, RegValue, Result,
};

use crate::mmu::{translate, TranslationRegs};

use super::{
    arch::{GdbRegId, GdbRegs, SveView, CORE_SYSREGS},
    expedite::{Expedited, ExpeditedSlot},
    nonstop::{StopReason, SIGINT, SIGSTOP, SIGTRAP},
    vcpu_thread::{Event, Stop, VcpuHandle},
    z_packet::WatchKind,
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
    /// What each vCPU does in the next all-stop resume; one without an action stays stopped.
    pub(super) actions: HashMap<u32, Action>,
    pub(super) running: Vec<bool>,
    translation: HashMap<u32, TranslationRegs>,
    pub(super) xml: Option<String>,
    /// The vector length of the vCPUs' SVE in quadwords, when they have SVE.
    pub(super) sve_vq: Option<u32>,
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

/// SCTLR_EL1.M: the stage-1 MMU is on.
const SCTLR_M: u64 = 1;

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
            running,
            translation: HashMap::new(),
            xml: None,
            sve_vq: None,
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
        handle.thread.call(move |runner| f(runner.vcpu()))?
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
        // The registers the walk needs, not the whole class, by id where the backend can:
        // SCTLR_EL1, and only with the MMU on (SCTLR_EL1.M) TCR_EL1 and TTBRn_EL1.
        const TABLES: [RegId; 3] = [sysreg::TCR_EL1, sysreg::TTBR0_EL1, sysreg::TTBR1_EL1];
        let t = match self.sysregs.get(&index) {
            Some(sys) => {
                let find = |id: RegId| sys.iter().find(|r| r.id == id).map_or(0, |r| r.value);
                TranslationRegs {
                    sctlr: find(sysreg::SCTLR_EL1),
                    tcr: find(sysreg::TCR_EL1),
                    ttbr0: find(sysreg::TTBR0_EL1),
                    ttbr1: find(sysreg::TTBR1_EL1),
                }
            }
            None => self.exec(index, |v| {
                let sctlr = v.get_reg(sysreg::SCTLR_EL1)?;
                if sctlr & SCTLR_M == 0 {
                    return Ok(TranslationRegs { sctlr, tcr: 0, ttbr0: 0, ttbr1: 0 });
                }
                let tables = v.read_named(&TABLES)?;
                Ok(TranslationRegs {
                    sctlr,
                    tcr: tables[0].value,
                    ttbr0: tables[1].value,
                    ttbr1: tables[2].value,
                })
            })?,
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
            let Some(&action) = self.actions.get(&index) else { continue };
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
    /// it forever (gdb can send a `c` while the guest runs).
    pub(super) fn resume_thread(&mut self, index: u32, step: bool) -> Result<()> {
        let handle = self
            .vcpus
            .get(index as usize)
            .ok_or_else(|| AccelError::bad_state(format!("no vCPU {index}")))?;
        if self.running[index as usize] {
            return Ok(());
        }
        self.debug.set_single_step(index, step)?;
        forget(&handle.expedited);
        handle.thread.post(move |runner| runner.resume(step))?;
        self.running[index as usize] = true;
        self.stepping[index as usize] = step;
        Ok(())
    }

    /// The expedited registers of stopped vCPU `index`'s last debug stop, as its thread read
    /// them, if it has not been written since.
    pub(super) fn expedited(&self, index: u32) -> Option<Expedited> {
        if self.running.get(index as usize).copied().unwrap_or(true) {
            return None;
        }
        self.vcpus.get(index as usize).and_then(|h| h.expedited.lock().ok().and_then(|held| *held))
    }

    fn forget_expedited(&self, index: u32) {
        if let Some(h) = self.vcpus.get(index as usize) {
            forget(&h.expedited);
        }
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
        self.forget_expedited(index);
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

    /// The vCPU gdb waits on this round: where an interrupt is reported.
    pub(super) fn waiting_on(&self) -> u32 {
        self.waiting_on.unwrap_or(0)
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

    /// Why vCPU `index` stopped, as gdb is told; `Err` when it failed.
    pub(super) fn stop_reason(&mut self, index: u32, stop: Stop) -> Result<StopReason> {
        let signal = |signal| StopReason::Signal { index, signal };
        Ok(match stop {
            // A step names its thread: gdb files the registers it reads next under it.
            Stop::Debug(DebugEvent::Step) => signal(SIGTRAP),
            Stop::PoweredOff => {
                log::info!("gdb: vCPU {index} is powered off; it cannot step until PSCI CPU_ON starts it");
                signal(SIGSTOP)
            }
            Stop::Debug(DebugEvent::HwBreakpoint { .. }) => StopReason::HwBreak(index),
            Stop::Debug(DebugEvent::SwBreakpoint { .. }) => StopReason::SwBreak(index),
            Stop::Debug(DebugEvent::Watchpoint { watch, accessed }) => StopReason::Watch {
                index,
                kind: match watch.kind {
                    AccelWatchKind::READ => WatchKind::Read,
                    AccelWatchKind::WRITE => WatchKind::Write,
                    _ => WatchKind::ReadWrite,
                },
                addr: accessed,
            },
            Stop::Debug(DebugEvent::Guest | DebugEvent::Unknown { .. }) | Stop::Kicked => signal(SIGINT),
            Stop::Exited(outcome) => StopReason::Exited(outcome.exit_code() as u8),
            Stop::Failed(e) => return Err(e),
        })
    }

    /// The registers of a `g` packet of vCPU `index`.
    pub(super) fn read_registers(&mut self, index: u32) -> Result<GdbRegs> {
        let sve = self.sve_vq.is_some();
        self.exec(index, move |v| {
            let core = v.get_core()?;
            let mut r = GdbRegs {
                x: core.x,
                sp: *sp_of(&core),
                pc: core.pc,
                cpsr: core.pstate as u32,
                ..GdbRegs::default()
            };
            if sve {
                // The V registers are the Z registers' low 128 bits: read once, as Z.
                let s = v.get_sve()?;
                let status = v.read_named(&[sysreg::FPSR, sysreg::FPCR])?;
                (r.fpsr, r.fpcr) = (status[0].value as u32, status[1].value as u32);
                r.sve = Some(SveView { vq: s.vq, z: s.z.to_vec(), p: s.p.to_vec(), ffr: s.ffr.to_vec() });
            } else {
                let fp = v.get_fp()?;
                (r.v, r.fpsr, r.fpcr) = (fp.v, fp.fpsr, fp.fpcr);
            }
            Ok(r)
        })
    }

    /// Writes the registers of a `G` packet (bytes in the shape of [`GdbRegs::serialize`]) to
    /// vCPU `index`.
    pub(super) fn write_registers(&mut self, index: u32, bytes: &[u8]) -> Result<()> {
        self.forget_expedited(index);
        let mut regs = GdbRegs::default();
        if let Some(vq) = self.sve_vq {
            let (z, p) = (vq as usize * 16, vq as usize * 2);
            regs.sve = Some(SveView { vq, z: vec![0; 32 * z], p: vec![0; 16 * p], ffr: vec![0; p] });
        }
        regs.deserialize(bytes)?;
        self.exec(index, move |v| {
            let mut core = v.get_core()?;
            core.x = regs.x;
            *sp_of_mut(&mut core) = regs.sp;
            core.pc = regs.pc;
            core.pstate = (core.pstate & !0xffff_ffff) | u64::from(regs.cpsr);
            v.put_core(&core, PutLevel::RUNTIME)?;
            if let Some(s) = &regs.sve {
                let mut sve = v.get_sve()?;
                sve.z = s.z.clone().into();
                sve.p = s.p.clone().into();
                sve.ffr = s.ffr.clone().into();
                v.put_sve(&sve, PutLevel::RUNTIME)?;
            }
            let mut fp = v.get_fp()?;
            if regs.sve.is_none() {
                fp.v = regs.v;
            }
            fp.fpsr = regs.fpsr;
            fp.fpcr = regs.fpcr;
            v.put_fp(&fp, PutLevel::RUNTIME)
        })
    }

    /// One register of vCPU `index` (a `p` packet), read through its own class alone.
    pub(super) fn read_register(&mut self, index: u32, reg: GdbRegId) -> Result<Vec<u8>> {
        let size = self.register_size(reg)?;
        let zl = size;
        Ok(match reg {
            GdbRegId::Sys(encoding) => self.read_sysreg(index, encoding)?.to_le_bytes().to_vec(),
            GdbRegId::X(_) | GdbRegId::Sp | GdbRegId::Pc | GdbRegId::Cpsr => {
                if let Some(value) = self.expedited(index).and_then(|e| e.value(reg)) {
                    return Ok(value);
                }
                let value = self.exec(index, move |v| {
                    let id = match reg {
                        GdbRegId::X(n) => CoreReg::X(n),
                        GdbRegId::Pc => CoreReg::Pc,
                        GdbRegId::Cpsr => CoreReg::Pstate,
                        _ => {
                            let pstate = v.get_reg(RegId::core(CoreReg::Pstate))?;
                            if pstate & 1 == 1 {
                                CoreReg::SpEl1
                            } else {
                                CoreReg::SpEl0
                            }
                        }
                    };
                    v.get_reg(RegId::core(id))
                })?;
                value.to_le_bytes()[..size].to_vec()
            }
            GdbRegId::Vector(n) if self.sve_vq.is_some() => {
                let sve = self.exec(index, |v| v.get_sve())?;
                sve.z[usize::from(n) * zl..][..zl].to_vec()
            }
            GdbRegId::Vector(_) | GdbRegId::Fpsr | GdbRegId::Fpcr => {
                let fp = self.exec(index, |v| v.get_fp())?;
                match reg {
                    GdbRegId::Vector(n) => fp.v[usize::from(n)].to_vec(),
                    GdbRegId::Fpsr => fp.fpsr.to_le_bytes().to_vec(),
                    _ => fp.fpcr.to_le_bytes().to_vec(),
                }
            }
            // The vector length is fixed at the vCPU's creation: no read.
            GdbRegId::Vg => (u64::from(self.sve_vq.unwrap_or(0)) * 2).to_le_bytes().to_vec(),
            GdbRegId::Pred(_) | GdbRegId::Ffr => {
                let sve = self.exec(index, |v| v.get_sve())?;
                match reg {
                    GdbRegId::Pred(n) => sve.p[usize::from(n) * size..][..size].to_vec(),
                    _ => sve.ffr.to_vec(),
                }
            }
        })
    }

    /// Writes one register of vCPU `index` (a `P` packet): its class is read and only this
    /// register put back, so the backend writes this register alone.
    pub(super) fn write_register(&mut self, index: u32, reg: GdbRegId, bytes: &[u8]) -> Result<()> {
        self.forget_expedited(index);
        let size = self.register_size(reg)?;
        if bytes.len() != size {
            return Err(AccelError::invalid(format!("{reg:?} takes {size} bytes, not {}", bytes.len())));
        }
        let mut b = [0u8; 8];
        b[..size.min(8)].copy_from_slice(&bytes[..size.min(8)]);
        let value = u64::from_le_bytes(b);
        let bytes = bytes.to_vec();
        match reg {
            GdbRegId::Sys(encoding) => self.write_sysreg(index, encoding, value),
            GdbRegId::X(_) | GdbRegId::Sp | GdbRegId::Pc | GdbRegId::Cpsr => self.exec(index, move |v| {
                let mut core = v.get_core()?;
                match reg {
                    GdbRegId::X(n) => core.x[usize::from(n)] = value,
                    GdbRegId::Sp => *sp_of_mut(&mut core) = value,
                    GdbRegId::Pc => core.pc = value,
                    _ => core.pstate = (core.pstate & !0xffff_ffff) | value,
                }
                v.put_core(&core, PutLevel::RUNTIME)
            }),
            GdbRegId::Vector(n) if self.sve_vq.is_some() => self.exec(index, move |v| {
                let mut sve = v.get_sve()?;
                sve.z[usize::from(n) * size..][..size].copy_from_slice(&bytes);
                v.put_sve(&sve, PutLevel::RUNTIME)
            }),
            GdbRegId::Vector(_) | GdbRegId::Fpsr | GdbRegId::Fpcr => self.exec(index, move |v| {
                let mut fp = v.get_fp()?;
                match reg {
                    GdbRegId::Vector(n) => fp.v[usize::from(n)].copy_from_slice(&bytes),
                    GdbRegId::Fpsr => fp.fpsr = value as u32,
                    _ => fp.fpcr = value as u32,
                }
                v.put_fp(&fp, PutLevel::RUNTIME)
            }),
            GdbRegId::Pred(_) | GdbRegId::Ffr => self.exec(index, move |v| {
                let mut sve = v.get_sve()?;
                match reg {
                    GdbRegId::Pred(n) => sve.p[usize::from(n) * size..][..size].copy_from_slice(&bytes),
                    _ => sve.ffr.copy_from_slice(&bytes),
                }
                v.put_sve(&sve, PutLevel::RUNTIME)
            }),
            GdbRegId::Vg if Some(value) == self.sve_vq.map(|vq| u64::from(vq) * 2) => Ok(()),
            GdbRegId::Vg => Err(AccelError::invalid("the SVE vector length (VG) cannot be changed")),
        }
    }

    fn register_size(&self, reg: GdbRegId) -> Result<usize> {
        reg.size(self.sve_vq)
            .ok_or_else(|| AccelError::new(ErrorKind::NOT_FOUND, format!("{reg:?} needs SVE, which is off")))
    }

    /// Reads `len` bytes of guest memory at virtual address `addr`, through vCPU `index`'s
    /// tables.
    pub(super) fn read_memory(&mut self, index: u32, addr: u64, len: usize) -> Result<Vec<u8>> {
        let mut data = vec![0u8; len];
        self.access(index, addr, len, |ram, pa, off, n| ram.read(pa, &mut data[off..off + n]))?;
        Ok(data)
    }

    /// Writes `data` to guest memory at virtual address `addr`, through vCPU `index`'s tables.
    /// Every page is translated, and found in RAM, before any byte is written: a write that
    /// fails anywhere leaves memory as it was.
    pub(super) fn write_memory(&mut self, index: u32, addr: u64, data: &[u8]) -> Result<()> {
        let mut pieces = Vec::new();
        self.access(index, addr, data.len(), |ram, pa, off, n| {
            if !ram.contains(pa, n as u64) {
                return Err(AccelError::new(
                    ErrorKind::NOT_FOUND,
                    format!(
                        "{n} bytes at physical {pa:#x} (virtual {:#x}) are outside RAM",
                        addr.wrapping_add(off as u64)
                    ),
                ));
            }
            pieces.push((pa, off, n));
            Ok(())
        })?;
        for (pa, off, n) in pieces {
            self.ram.write(pa, &data[off..off + n])?;
        }
        Ok(())
    }
}

/// The stack pointer gdb calls SP: SP_EL1 when PSTATE.SP selects it (at EL1), else SP_EL0.
/// Drops what a slot holds: the registers may change.
fn forget(slot: &ExpeditedSlot) {
    if let Ok(mut held) = slot.lock() {
        *held = None;
    }
}

fn sp_of(core: &CoreRegs) -> &u64 {
    if core.pstate & 1 == 1 {
        &core.sp_el1
    } else {
        &core.sp_el0
    }
}

fn sp_of_mut(core: &mut CoreRegs) -> &mut u64 {
    if core.pstate & 1 == 1 {
        &mut core.sp_el1
    } else {
        &mut core.sp_el0
    }
}
