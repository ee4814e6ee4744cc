//! A KVM vCPU: register sync through `KVM_GET_ONE_REG`/`KVM_SET_ONE_REG`, multiprocessing state,
//! kicks, and `KVM_RUN` with the MMIO completion the contract asks for.

use std::{cell::Cell, fmt::Display, sync::Arc};

use accel_api::{
    backend::{BackendVcpu, Kick},
    AccelError, CoreReg, CoreRegs, ErrorKind, FpReg, FpRegs, MmioAccess, MpState, PutLevel, RegClass, RegId,
    RegValue, Result, SyncCounters, SystemEventKind, VcpuExit,
};

use accel_kit::put::{LastGet, LastValues};
use kvm_bindings::{kvm_mp_state, kvm_vcpu_init, RegList, KVM_EXIT_ARM_NISV};
use kvm_ioctls::{VcpuExit as KvmExit, VcpuFd, VmFd};

use crate::{
    error::os_error,
    ids,
    kick::{KickState, Kicker},
};

/// An MMIO exit that KVM finishes only on the next `KVM_RUN`: until then the PC still points at
/// the load or store, and a load's destination register is unwritten.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pending {
    Nothing,
    Write,
    Read { len: usize, supplied: bool },
}

/// A KVM vCPU, with the values of its last get: a put compares against them to write only what
/// the host changed.
pub struct MinimalVcpu {
    fd: VcpuFd,
    index: u32,
    /// The 64-bit system registers `KVM_GET_REG_LIST` names, in its order.
    sysregs: Vec<RegId>,
    last_core: LastGet<CoreRegs>,
    last_fp: LastGet<FpRegs>,
    last_sys: LastValues,
    pending: Pending,
    kick: Arc<KickState>,
    reads: Cell<u64>,
    writes: Cell<u64>,
    runs: u64,
}

impl MinimalVcpu {
    pub(crate) fn new(vm: &VmFd, index: u32, init: &kvm_vcpu_init) -> Result<Self> {
        let mut fd =
            vm.create_vcpu(u64::from(index)).map_err(|e| os_error(format!("KVM_CREATE_VCPU {index}"), e))?;
        fd.vcpu_init(init).map_err(|e| os_error(format!("KVM_ARM_VCPU_INIT of vCPU {index}"), e))?;
        // 500 ids is kvm-bindings' list capacity, and more than any kernel lists today.
        let mut list =
            RegList::new(500).map_err(|e| AccelError::bad_state(format!("a register list: {e:?}")))?;
        fd.get_reg_list(&mut list).map_err(|e| os_error(format!("KVM_GET_REG_LIST of vCPU {index}"), e))?;
        // Only class SYS is offered. The generic timer's registers are system registers too, but
        // of class TIMER (KVM even lists two of them under each other's encodings), so they drop
        // out here along with the firmware and cache-id registers.
        let sysregs = list
            .as_slice()
            .iter()
            .filter_map(|&id| ids::sysreg_of(id))
            .filter(|id| id.class() == RegClass::SYS);
        let kick = Arc::new(KickState::new(fd.get_kvm_run()));
        Ok(Self {
            sysregs: sysregs.collect(),
            fd,
            index,
            last_core: LastGet::default(),
            last_fp: LastGet::default(),
            last_sys: LastValues::default(),
            pending: Pending::Nothing,
            kick,
            reads: Cell::new(0),
            writes: Cell::new(0),
            runs: 0,
        })
    }

    /// One `KVM_GET_ONE_REG`, counted; the error names the register.
    fn read(&self, id: u64, buf: &mut [u8], name: impl Display) -> Result<()> {
        self.reads.set(self.reads.get() + 1);
        self.fd.get_one_reg(id, buf).map(drop).map_err(|e| os_error(format!("KVM_GET_ONE_REG of {name}"), e))
    }

    /// One `KVM_SET_ONE_REG`, counted; the error names the register.
    fn write(&self, id: u64, bytes: &[u8], name: impl Display) -> Result<()> {
        self.writes.set(self.writes.get() + 1);
        self.fd
            .set_one_reg(id, bytes)
            .map(drop)
            .map_err(|e| os_error(format!("KVM_SET_ONE_REG of {name}"), e))
    }

    fn read_u64(&self, id: u64, name: impl Display) -> Result<u64> {
        let mut buf = [0u8; 8];
        self.read(id, &mut buf, name)?;
        Ok(u64::from_le_bytes(buf))
    }

    /// Contract, MMIO: registers are read and written as they are *after* the access. KVM
    /// finishes an MMIO access (writes a load's register, advances the PC) only when it is next
    /// entered, so a register read now would see the PC of the load or store, and a PC the host
    /// set now would be advanced past its target. So, before touching registers, this enters KVM
    /// with `immediate_exit` set: KVM finishes the access and returns `EINTR` without running the
    /// guest.
    fn complete_pending(&mut self) -> Result<()> {
        match self.pending {
            Pending::Nothing => return Ok(()),
            Pending::Read { supplied: false, .. } => {
                return Err(AccelError::bad_state(format!(
                    "vCPU {} is stopped in an MMIO read: supply its data before accessing registers",
                    self.index
                )))
            }
            Pending::Write | Pending::Read { supplied: true, .. } => self.pending = Pending::Nothing,
        }
        self.kick.force_immediate_exit(true);
        self.runs += 1;
        let result = self.fd.run().map(drop);
        self.kick.force_immediate_exit(false);
        match result {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            Err(e) => Err(os_error(format!("completing the MMIO access of vCPU {}", self.index), e)),
            Ok(()) => Err(AccelError::bad_state("KVM_RUN with immediate_exit set did not return EINTR")),
        }
    }
}

impl Drop for MinimalVcpu {
    fn drop(&mut self) {
        // The `kvm_run` mapping goes with `fd`: kickers must stop writing to it first.
        self.kick.detach();
    }
}

/// An MMIO access as the ABI reports it.
fn access(addr: u64, data: &[u8]) -> MmioAccess {
    let mut access = MmioAccess { addr, len: data.len() as u32, data: [0; 8] };
    let n = data.len().min(8);
    access.data[..n].copy_from_slice(&data[..n]);
    access
}

impl BackendVcpu for MinimalVcpu {
    /// The index the VM was asked for; KVM_CREATE_VCPU refuses a duplicate.
    fn index(&self) -> u32 {
        self.index
    }

    /// Reads X0–X30, SP_EL0, SP_EL1, PC, PSTATE, ELR_EL1 and the SPSRs, and remembers them.
    fn get_core(&mut self) -> Result<CoreRegs> {
        self.complete_pending()?;
        let mut regs = CoreRegs::default();
        for reg in CoreReg::all() {
            regs.set(reg, self.read_u64(ids::core_reg(reg), reg.name())?);
        }
        self.last_core.got(&regs);
        Ok(regs)
    }

    /// Contract, puts: only the registers that differ from the last get are written (all of them
    /// at `PutLevel::FULL`, with no earlier get, or after a failed put): the kit's `LastGet`
    /// decides, and forgets the last get until the put has written everything it named.
    fn put_core(&mut self, regs: &CoreRegs, level: PutLevel) -> Result<()> {
        self.complete_pending()?;
        for reg in self.last_core.to_write(level, regs) {
            self.write(ids::core_reg(reg), &regs.get(reg).to_le_bytes(), reg.name())?;
        }
        self.last_core.got(regs);
        Ok(())
    }

    /// Reads V0–V31 (16 little-endian bytes each, as KVM gives them), FPSR and FPCR.
    fn get_fp(&mut self) -> Result<FpRegs> {
        self.complete_pending()?;
        let mut regs = FpRegs::default();
        for (n, v) in regs.v.iter_mut().enumerate() {
            let reg = FpReg::V(n as u8);
            self.read(ids::fp_reg(reg), v, reg.name())?;
        }
        let (mut fpsr, mut fpcr) = ([0u8; 4], [0u8; 4]);
        self.read(ids::fp_reg(FpReg::Fpsr), &mut fpsr, "FPSR")?;
        self.read(ids::fp_reg(FpReg::Fpcr), &mut fpcr, "FPCR")?;
        (regs.fpsr, regs.fpcr) = (u32::from_le_bytes(fpsr), u32::from_le_bytes(fpcr));
        self.last_fp.got(&regs);
        Ok(regs)
    }

    /// Contract, puts: as `put_core`.
    fn put_fp(&mut self, regs: &FpRegs, level: PutLevel) -> Result<()> {
        self.complete_pending()?;
        for reg in self.last_fp.to_write(level, regs) {
            let bytes = match reg {
                FpReg::V(n) => regs.v[usize::from(n)].to_vec(),
                FpReg::Fpsr => regs.fpsr.to_le_bytes().to_vec(),
                FpReg::Fpcr => regs.fpcr.to_le_bytes().to_vec(),
            };
            self.write(ids::fp_reg(reg), &bytes, reg.name())?;
        }
        self.last_fp.got(regs);
        Ok(())
    }

    /// Reads the system registers (class SYS). Other classes (timer, firmware, cache ids,
    /// backend-specific) are not implemented: they are `unsupported`, naming the class.
    fn get_regs(&mut self, class: RegClass) -> Result<Vec<RegValue>> {
        if class != RegClass::SYS {
            return Err(AccelError::unsupported(format!(
                "register class {} is not implemented by the example plugin, which syncs system registers only",
                class.0
            )));
        }
        self.complete_pending()?;
        let mut values = Vec::with_capacity(self.sysregs.len());
        for &id in &self.sysregs {
            values.push(RegValue { id, value: self.read_u64(ids::sysreg(id), id)? });
        }
        self.last_sys.got(&values);
        Ok(values)
    }

    /// Contract, puts: the kit's `LastValues` keeps the values that differ from the last get and
    /// that `level` allows. A register this vCPU does not have is `not found`.
    fn put_regs(&mut self, values: &[RegValue], level: PutLevel) -> Result<()> {
        self.complete_pending()?;
        for v in self.last_sys.to_write(level, values) {
            let RegValue { id, value } = v;
            if !self.sysregs.contains(&id) {
                let kind =
                    if id.class() == RegClass::SYS { ErrorKind::NOT_FOUND } else { ErrorKind::UNSUPPORTED };
                return Err(AccelError::new(kind, format!("{id} is not a register of vCPU {}", self.index)));
            }
            self.write(ids::sysreg(id), &value.to_le_bytes(), id)?;
            self.last_sys.wrote(v);
        }
        Ok(())
    }

    /// `KVM_GET_MP_STATE`: runnable, stopped (powered off) or suspended.
    fn get_mp_state(&mut self) -> Result<MpState> {
        self.complete_pending()?;
        let state = self
            .fd
            .get_mp_state()
            .map_err(|e| os_error(format!("KVM_GET_MP_STATE of vCPU {}", self.index), e))?;
        Ok(MpState(state.mp_state))
    }

    /// `KVM_SET_MP_STATE`. A state other than the three arm64 has is an invalid argument.
    fn set_mp_state(&mut self, state: MpState) -> Result<()> {
        self.complete_pending()?;
        if ![MpState::RUNNABLE, MpState::STOPPED, MpState::SUSPENDED].contains(&state) {
            return Err(AccelError::invalid(format!(
                "MP state {} is not runnable, stopped or suspended",
                state.0
            )));
        }
        self.fd
            .set_mp_state(kvm_mp_state { mp_state: state.0 })
            .map_err(|e| os_error(format!("KVM_SET_MP_STATE({}) of vCPU {}", state.name(), self.index), e))
    }

    /// Contract, threads: the kicker is used from other threads while this vCPU runs.
    fn kicker(&self) -> Box<dyn Kick> {
        Box::new(Kicker(Arc::clone(&self.kick)))
    }

    /// What this vCPU asked of KVM: every ONE_REG call and every `KVM_RUN`, including the ones
    /// that only complete an MMIO access.
    fn counters(&self) -> SyncCounters {
        SyncCounters { reg_reads: self.reads.get(), reg_writes: self.writes.get(), runs: self.runs }
    }

    /// Contract, MMIO: the value of the pending read goes into `kvm_run`, where KVM takes it
    /// when it finishes the access. Without a pending read this is `bad state`.
    fn set_mmio_read_data(&mut self, value: u64) -> Result<()> {
        let Pending::Read { len, .. } = self.pending else {
            return Err(AccelError::bad_state("no MMIO read is pending: the last exit was not an MMIO read"));
        };
        let run = self.fd.get_kvm_run();
        // SAFETY: the last KVM_RUN exited with KVM_EXIT_MMIO (`Pending::Read` is set only then),
        // so `mmio` is the active member of the exit union.
        let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
        let len = len.min(mmio.data.len());
        mmio.data[..len].copy_from_slice(&value.to_le_bytes()[..len]);
        self.pending = Pending::Read { len, supplied: true };
        Ok(())
    }

    /// Runs the guest until an exit the host must see.
    fn run(&mut self) -> Result<VcpuExit> {
        if let Pending::Read { supplied: false, .. } = self.pending {
            return Err(AccelError::bad_state(
                "the MMIO read of the last exit has no data: supply it before running",
            ));
        }
        // KVM finishes a pending MMIO access itself on this entry.
        self.pending = Pending::Nothing;
        // Contract, kicks: a kick that came before this call is reported at once.
        if self.kick.take() {
            return Ok(VcpuExit::Interrupted);
        }
        // SAFETY: pthread_self has no preconditions.
        self.kick.set_thread(Some(unsafe { libc::pthread_self() }));
        self.runs += 1;
        let result = self.fd.run();
        self.kick.set_thread(None);
        Ok(match result {
            Ok(KvmExit::MmioRead(addr, data)) => {
                self.pending = Pending::Read { len: data.len(), supplied: false };
                VcpuExit::MmioRead(access(addr, data))
            }
            Ok(KvmExit::MmioWrite(addr, data)) => {
                self.pending = Pending::Write;
                VcpuExit::MmioWrite(access(addr, data))
            }
            // PSCI SYSTEM_OFF, SYSTEM_RESET …: the ABI numbers system events as KVM does.
            Ok(KvmExit::SystemEvent(kind, data)) => {
                VcpuExit::SystemEvent { kind: SystemEventKind(kind), data: data.to_vec() }
            }
            Ok(KvmExit::Unsupported(KVM_EXIT_ARM_NISV)) => {
                // SAFETY: the exit reason is KVM_EXIT_ARM_NISV, so `arm_nisv` is the active
                // member of the exit union.
                let nisv = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.arm_nisv };
                VcpuExit::ArmNisv { esr_iss: nisv.esr_iss, fault_ipa: nisv.fault_ipa }
            }
            Err(e) if e.errno() != libc::EINTR => {
                return Err(os_error(format!("KVM_RUN of vCPU {}", self.index), e))
            }
            // EINTR: a signal or a kick. Take the kick, so that it is reported once.
            Ok(KvmExit::Intr) | Err(_) => {
                self.kick.take();
                VcpuExit::Interrupted
            }
            // Anything else goes to the host by KVM's exit number.
            Ok(_) => VcpuExit::BackendSpecific { reason: self.fd.get_kvm_run().exit_reason },
        })
    }
}
