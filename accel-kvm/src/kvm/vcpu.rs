//! A KVM vCPU: init, register sync through `KVM_GET_ONE_REG`/`KVM_SET_ONE_REG`, and `KVM_RUN`.

use accel_api::{
    backend::BackendVcpu, regs_to_put, AccelError, CoreReg, CoreRegs, DebugExit, FpReg, FpRegs, MmioAccess,
    PutLevel, Result, SystemEventKind, VcpuConfig, VcpuExit,
};
use kvm_bindings::{kvm_vcpu_init, KVM_EXIT_ARM_NISV};
use kvm_ioctls::{VcpuExit as KvmExit, VcpuFd, VmFd};

use super::ioctl_error;
use crate::reg_ids::{core_reg_id, fp_reg_id};

/// A KVM vCPU and the register values of its last get, against which a put finds what the host
/// changed.
pub struct KvmVcpu {
    fd: VcpuFd,
    index: u32,
    last_core: Option<CoreRegs>,
    last_fp: Option<FpRegs>,
    pending_mmio_read: Option<u32>,
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
        Ok(Self { fd, index: config.index, last_core: None, last_fp: None, pending_mmio_read: None })
    }

    fn get_u64(&self, id: u64, name: impl FnOnce() -> String) -> Result<u64> {
        let mut buf = [0u8; 8];
        self.fd
            .get_one_reg(id, &mut buf)
            .map_err(|e| ioctl_error(format_args!("KVM_GET_ONE_REG of {}", name()), e))?;
        Ok(u64::from_le_bytes(buf))
    }

    fn set_bytes(&self, id: u64, bytes: &[u8], name: impl FnOnce() -> String) -> Result<()> {
        self.fd
            .set_one_reg(id, bytes)
            .map(drop)
            .map_err(|e| ioctl_error(format_args!("KVM_SET_ONE_REG of {}", name()), e))
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
            self.fd
                .get_one_reg(fp_reg_id(reg), &mut regs.v[usize::from(n)])
                .map_err(|e| ioctl_error(format_args!("KVM_GET_ONE_REG of {}", reg.name()), e))?;
        }
        for (reg, slot) in [(FpReg::Fpsr, &mut regs.fpsr), (FpReg::Fpcr, &mut regs.fpcr)] {
            let mut buf = [0u8; 4];
            self.fd
                .get_one_reg(fp_reg_id(reg), &mut buf)
                .map_err(|e| ioctl_error(format_args!("KVM_GET_ONE_REG of {}", reg.name()), e))?;
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
