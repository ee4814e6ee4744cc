//! A KVM vCPU: init, register sync through `KVM_GET_ONE_REG`/`KVM_SET_ONE_REG`, and `KVM_RUN`.
//!
//! Every register the kernel lists in `KVM_GET_REG_LIST` is synced: core and FP/SIMD registers by
//! their classes, the rest (system, timer, firmware, demultiplexed CCSIDR and any register this
//! backend does not know by name) through the shared model's register ids. A put writes only the
//! registers whose value differs from the last get, so values the host did not touch are never
//! written back, and registers the host edited (ESR_EL1 when injecting an exception) always are.

use std::{cell::Cell, collections::HashMap};

use accel_api::{
    backend::BackendVcpu, regs_to_put, sysreg::values_to_put, AccelError, CoreReg, CoreRegs, DebugExit,
    ErrorKind, FpReg, FpRegs, MmioAccess, PutLevel, RegClass, RegId, RegValue, Result, SyncCounters,
    SystemEventKind, VcpuConfig, VcpuExit,
};
use kvm_bindings::{kvm_vcpu_init, RegList, KVM_EXIT_ARM_NISV};
use kvm_ioctls::{VcpuExit as KvmExit, VcpuFd, VmFd};

use super::ioctl_error;
use crate::reg_ids::{classify, core_reg_id, fp_reg_id, KvmReg};

/// The most registers `KVM_GET_REG_LIST` may report (kvm-bindings' list capacity).
const MAX_LISTED_REGS: usize = 500;

/// A listed register: its id in the shared model, its KVM id and its size in bytes.
#[derive(Clone, Copy, Debug)]
struct Listed {
    id: RegId,
    kvm: u64,
    size: usize,
}

/// A KVM vCPU and the register values of its last get, against which a put finds what the host
/// changed.
pub struct KvmVcpu {
    fd: VcpuFd,
    index: u32,
    listed: Vec<Listed>,
    by_id: HashMap<RegId, usize>,
    last_core: Option<CoreRegs>,
    last_fp: Option<FpRegs>,
    last_listed: HashMap<RegId, u64>,
    pending_mmio_read: Option<u32>,
    reads: Cell<u64>,
    writes: Cell<u64>,
    runs: u64,
}

impl KvmVcpu {
    pub(super) fn new(vm: &VmFd, config: &VcpuConfig, init: &kvm_vcpu_init) -> Result<Self> {
        let fd = vm
            .create_vcpu(u64::from(config.index))
            .map_err(|e| ioctl_error(format!("KVM_CREATE_VCPU {}", config.index), e))?;
        fd.vcpu_init(init).map_err(|e| {
            ioctl_error(
                format!(
                    "KVM_ARM_VCPU_INIT of vCPU {} with features [{}]",
                    config.index,
                    config.features.names().join(", ")
                ),
                e,
            )
        })?;
        let mut list = RegList::new(MAX_LISTED_REGS).map_err(|e| {
            AccelError::new(ErrorKind::NO_RESOURCE, format!("allocating the register list: {e:?}"))
        })?;
        fd.get_reg_list(&mut list)
            .map_err(|e| ioctl_error(format!("KVM_GET_REG_LIST of vCPU {}", config.index), e))?;
        let mut listed = Vec::new();
        for &kvm in list.as_slice() {
            match classify(kvm) {
                KvmReg::Listed { id, size: size @ (4 | 8) } => listed.push(Listed { id, kvm, size }),
                KvmReg::Listed { id, size } => {
                    log::debug!("vCPU {}: {id} is {size} bytes wide; not synced", config.index)
                }
                KvmReg::Core | KvmReg::Sve => {}
            }
        }
        let by_id = listed.iter().enumerate().map(|(i, l)| (l.id, i)).collect();
        Ok(Self {
            fd,
            index: config.index,
            listed,
            by_id,
            last_core: None,
            last_fp: None,
            last_listed: HashMap::new(),
            pending_mmio_read: None,
            reads: Cell::new(0),
            writes: Cell::new(0),
            runs: 0,
        })
    }

    fn get_bytes(&self, id: u64, buf: &mut [u8], name: impl FnOnce() -> String) -> Result<()> {
        self.reads.set(self.reads.get() + 1);
        self.fd
            .get_one_reg(id, buf)
            .map(drop)
            .map_err(|e| ioctl_error(format_args!("KVM_GET_ONE_REG of {}", name()), e))
    }

    fn get_u64(&self, id: u64, name: impl FnOnce() -> String) -> Result<u64> {
        let mut buf = [0u8; 8];
        self.get_bytes(id, &mut buf, name)?;
        Ok(u64::from_le_bytes(buf))
    }

    fn set_bytes(&self, id: u64, bytes: &[u8], name: impl FnOnce() -> String) -> Result<()> {
        self.writes.set(self.writes.get() + 1);
        self.fd
            .set_one_reg(id, bytes)
            .map(drop)
            .map_err(|e| ioctl_error(format_args!("KVM_SET_ONE_REG of {}", name()), e))
    }

    fn get_listed(&self, reg: &Listed) -> Result<u64> {
        let mut buf = [0u8; 8];
        self.get_bytes(reg.kvm, &mut buf[..reg.size], || reg.id.name().into_owned())?;
        Ok(u64::from_le_bytes(buf))
    }

    fn set_listed(&self, reg: &Listed, value: u64) -> Result<()> {
        if reg.size == 4 && value >> 32 != 0 {
            return Err(AccelError::invalid(format!(
                "{} is a 32-bit register; {value:#x} does not fit",
                reg.id
            )));
        }
        self.set_bytes(reg.kvm, &value.to_le_bytes()[..reg.size], || reg.id.name().into_owned())
    }
}

fn system_event(kind: u32, data: &[u64]) -> VcpuExit {
    VcpuExit::SystemEvent { kind: SystemEventKind(kind), data: data.to_vec().into() }
}

impl BackendVcpu for KvmVcpu {
    fn index(&self) -> u32 {
        self.index
    }

    fn get_core(&mut self) -> Result<CoreRegs> {
        let mut regs = CoreRegs::default();
        for reg in CoreReg::all() {
            regs.set(reg, self.get_u64(core_reg_id(reg), || reg.name())?);
        }
        self.last_core = Some(regs);
        Ok(regs)
    }

    fn put_core(&mut self, regs: &CoreRegs, level: PutLevel) -> Result<()> {
        for reg in regs_to_put(level, self.last_core.as_ref(), regs) {
            let result = self.set_bytes(core_reg_id(reg), &regs.get(reg).to_le_bytes(), || reg.name());
            if let Err(e) = result {
                // What reached the vCPU is unknown now: the next put writes everything.
                self.last_core = None;
                return Err(e);
            }
        }
        self.last_core = Some(*regs);
        Ok(())
    }

    fn get_fp(&mut self) -> Result<FpRegs> {
        let mut regs = FpRegs::default();
        for n in 0..32u8 {
            let reg = FpReg::V(n);
            self.get_bytes(fp_reg_id(reg), &mut regs.v[usize::from(n)], || reg.name())?;
        }
        for (reg, slot) in [(FpReg::Fpsr, &mut regs.fpsr), (FpReg::Fpcr, &mut regs.fpcr)] {
            let mut buf = [0u8; 4];
            self.get_bytes(fp_reg_id(reg), &mut buf, || reg.name())?;
            *slot = u32::from_le_bytes(buf);
        }
        self.last_fp = Some(regs);
        Ok(regs)
    }

    fn put_fp(&mut self, regs: &FpRegs, level: PutLevel) -> Result<()> {
        let (fpsr, fpcr) = (regs.fpsr.to_le_bytes(), regs.fpcr.to_le_bytes());
        for reg in regs_to_put(level, self.last_fp.as_ref(), regs) {
            let bytes: &[u8] = match reg {
                FpReg::V(n) => &regs.v[usize::from(n)],
                FpReg::Fpsr => &fpsr,
                FpReg::Fpcr => &fpcr,
            };
            if let Err(e) = self.set_bytes(fp_reg_id(reg), bytes, || reg.name()) {
                self.last_fp = None;
                return Err(e);
            }
        }
        self.last_fp = Some(*regs);
        Ok(())
    }

    fn get_regs(&mut self, class: RegClass) -> Result<Vec<RegValue>> {
        let mut values = Vec::new();
        for reg in self.listed.iter().filter(|r| r.id.class() == class) {
            values.push(RegValue { id: reg.id, value: self.get_listed(reg)? });
        }
        self.last_listed.extend(values.iter().map(|v| (v.id, v.value)));
        Ok(values)
    }

    fn put_regs(&mut self, values: &[RegValue], level: PutLevel) -> Result<()> {
        let plan: Vec<RegValue> =
            values_to_put(level, |id| self.last_listed.get(&id).copied(), values).collect();
        for v in plan {
            let reg = self.by_id.get(&v.id).map(|&i| self.listed[i]).ok_or_else(|| {
                AccelError::new(
                    ErrorKind::NOT_FOUND,
                    format!("{} is not a register of vCPU {}", v.id, self.index),
                )
            })?;
            self.set_listed(&reg, v.value)?;
            self.last_listed.insert(v.id, v.value);
        }
        Ok(())
    }

    fn counters(&self) -> SyncCounters {
        SyncCounters { reg_reads: self.reads.get(), reg_writes: self.writes.get(), runs: self.runs }
    }

    fn set_mmio_read_data(&mut self, value: u64) -> Result<()> {
        let data = value.to_le_bytes();
        let len = self.pending_mmio_read.take().ok_or_else(|| {
            AccelError::bad_state("no MMIO read is pending: the last exit was not an MMIO read")
        })?;
        let run = self.fd.get_kvm_run();
        // SAFETY: the last KVM_RUN returned KVM_EXIT_MMIO for a read (pending_mmio_read is only
        // set then), so `mmio` is the active member of the exit union.
        let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
        let len = (len as usize).min(mmio.data.len());
        mmio.data[..len].copy_from_slice(&data[..len]);
        Ok(())
    }

    fn run(&mut self) -> Result<VcpuExit> {
        self.pending_mmio_read = None;
        loop {
            self.runs += 1;
            let exit = match self.fd.run() {
                Ok(exit) => exit,
                Err(e) if e.errno() == libc::EINTR => return Ok(VcpuExit::Interrupted),
                Err(e) if e.errno() == libc::EAGAIN => continue,
                Err(e) => return Err(ioctl_error(format_args!("KVM_RUN of vCPU {}", self.index), e)),
            };
            let mmio = |addr: u64, data: &[u8]| {
                let mut access = MmioAccess { addr, len: data.len() as u32, data: [0; 8] };
                let n = data.len().min(8);
                access.data[..n].copy_from_slice(&data[..n]);
                access
            };
            let exit = match exit {
                KvmExit::MmioRead(addr, data) => {
                    self.pending_mmio_read = Some(data.len() as u32);
                    VcpuExit::MmioRead(mmio(addr, data))
                }
                KvmExit::MmioWrite(addr, data) => VcpuExit::MmioWrite(mmio(addr, data)),
                KvmExit::SystemEvent(kind, data) => system_event(kind, data),
                KvmExit::Debug(debug) => VcpuExit::Debug(DebugExit {
                    esr: u64::from(debug.hsr) | (u64::from(debug.hsr_high) << 32),
                    far: debug.far,
                }),
                KvmExit::FailEntry(reason, cpu) => VcpuExit::FailEntry { reason, cpu },
                KvmExit::Intr => VcpuExit::Interrupted,
                KvmExit::InternalError => {
                    let run = self.fd.get_kvm_run();
                    // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the
                    // active member of the exit union.
                    let internal = unsafe { run.__bindgen_anon_1.internal };
                    let n = (internal.ndata as usize).min(internal.data.len());
                    VcpuExit::InternalError {
                        suberror: internal.suberror,
                        data: internal.data[..n].to_vec().into(),
                    }
                }
                KvmExit::Unsupported(KVM_EXIT_ARM_NISV) => {
                    let run = self.fd.get_kvm_run();
                    // SAFETY: the exit reason is KVM_EXIT_ARM_NISV, so `arm_nisv` is the active
                    // member of the exit union.
                    let nisv = unsafe { run.__bindgen_anon_1.arm_nisv };
                    VcpuExit::ArmNisv { esr_iss: nisv.esr_iss, fault_ipa: nisv.fault_ipa }
                }
                KvmExit::Unsupported(reason) => VcpuExit::Unknown { reason },
                other => {
                    let described = format!("{other:?}");
                    let reason = self.fd.get_kvm_run().exit_reason;
                    log::warn!("vCPU {}: unexpected KVM exit {described}", self.index);
                    VcpuExit::Unknown { reason }
                }
            };
            return Ok(exit);
        }
    }
}
