//! A KVM vCPU: init, register sync through `KVM_GET_ONE_REG`/`KVM_SET_ONE_REG`, and `KVM_RUN`.
//!
//! Every register the kernel lists in `KVM_GET_REG_LIST` is synced: core and FP/SIMD registers by
//! their classes, the rest (system, timer, firmware, demultiplexed CCSIDR and any register this
//! backend does not know by name) through the shared model's register ids. A put writes only the
//! registers whose value differs from the last get, so values the host did not touch are never
//! written back, and registers the host edited (ESR_EL1 when injecting an exception) always are.

use std::{cell::Cell, collections::HashMap, sync::Arc};

use accel_api::{
    backend::{BackendEvents, BackendSve, BackendVcpu, Kick},
    sve::{vector_lengths_bits, SveReg, SveRegs, SVE_VQ_MAX},
    sysreg::{FPCR, FPSR},
    AccelError, Capabilities, CoreReg, CoreRegs, DebugExit, ErrorKind, FpReg, FpRegs, MmioAccess, MpState,
    PutLevel, RegClass, RegId, RegValue, Result, SyncCounters, SystemEventKind, VcpuConfig, VcpuEvents,
    VcpuExit, VcpuFeatures,
};

use accel_kit::{
    psci::{self, Call, Outcome, StartContext, Wake},
    put::{LastGet, LastValues},
};
use kvm_bindings::{
    kvm_device_attr, kvm_mp_state, kvm_vcpu_events, kvm_vcpu_init, RegList, KVM_ARM_VCPU_PMU_V3_CTRL,
    KVM_ARM_VCPU_PMU_V3_INIT, KVM_ARM_VCPU_PMU_V3_IRQ, KVM_ARM_VCPU_SVE, KVM_EXIT_ARM_NISV,
};
use kvm_ioctls::{VcpuExit as KvmExit, VcpuFd, VmFd};

use super::{
    debug::{to_kvm, KvmDebug},
    error::ioctl_error,
    gic::Gic,
    kick::{self, KickShared},
    psci::UserPsci,
};
use crate::reg_ids::{
    classify, core_reg_id, fp_reg_id, kvm_id_of, sve_ffr_id, sve_preg_id, sve_zreg_id, KvmReg,
    KVM_REG_ARM64_SVE_VLS, SVE_PREG_SLICE_BYTES, SVE_ZREG_SLICE_BYTES,
};

/// The most registers `KVM_GET_REG_LIST` may report (kvm-bindings' list capacity).
const MAX_LISTED_REGS: usize = 500;

/// A listed register: its id in the shared model, its KVM id and its size in bytes.
#[derive(Clone, Copy, Debug)]
struct Listed {
    id: RegId,
    kvm: u64,
    size: usize,
}

impl Drop for KvmVcpu {
    fn drop(&mut self) {
        self.kick.detach();
        if let Some(psci) = &self.psci {
            psci.board.lock().remove(self.index);
            psci.unregister(self.index);
        }
    }
}

/// What a vCPU shares with its VM.
pub struct VcpuParts {
    /// The VM's GIC, which must be ready before the first run.
    pub gic: Arc<Gic>,
    /// The VM's debug pool, when it has one.
    pub debug: Option<Arc<KvmDebug>>,
    /// PSCI answered in the plugin, when the VM was created so.
    pub psci: Option<Arc<UserPsci>>,
}

/// The PMU overflow interrupt: PPI 7, INTID 23, as on QEMU's `virt` board.
const PMU_OVERFLOW_INTID: u32 = 23;

fn pmu_attr(fd: &VcpuFd, index: u32, attr: u32, addr: u64, name: &str) -> Result<()> {
    let attr = kvm_device_attr { group: KVM_ARM_VCPU_PMU_V3_CTRL, attr: u64::from(attr), addr, flags: 0 };
    fd.set_device_attr(&attr)
        .map_err(|e| ioctl_error(format!("KVM_SET_DEVICE_ATTR({name}) of vCPU {index}"), e))
}

/// An exit KVM completes only on the next KVM_RUN: until then the guest's PC still points at the
/// MMIO instruction (and a read's destination register is unwritten).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    None,
    MmioWrite,
    MmioRead { len: u32, supplied: bool },
}

/// A KVM vCPU and the register values of its last get, against which a put finds what the host
/// changed.
pub struct KvmVcpu {
    fd: VcpuFd,
    index: u32,
    /// The VM's GIC, which must be ready before the first run.
    gic: Arc<Gic>,
    /// This vCPU entered KVM_RUN with the GIC ready (or absent). It stays so: KVM refuses to
    /// create a GIC once any vCPU has entered KVM_RUN (`kvm_vgic_create` returns `EBUSY`), so
    /// later runs need not take the GIC's lock to look.
    gic_checked: bool,
    /// The VM's debug pool, and the pool generation last applied with KVM_SET_GUEST_DEBUG.
    debug: Option<Arc<KvmDebug>>,
    debug_applied: Option<u64>,
    /// The PMU waits for the GIC: it is initialised before the first run.
    pmu_init_pending: bool,
    kick: Arc<KickShared>,
    /// The SVE vector length in quadwords, when SVE is enabled.
    sve_vq: Option<u32>,
    caps: Capabilities,
    listed: Vec<Listed>,
    by_id: HashMap<RegId, usize>,
    last_core: LastGet<CoreRegs>,
    last_fp: LastGet<FpRegs>,
    last_sve: LastGet<SveRegs>,
    last_listed: LastValues,
    /// The MMIO exit KVM has yet to complete (it does so on the next KVM_RUN).
    pending: Pending,
    reads: Cell<u64>,
    writes: Cell<u64>,
    runs: u64,
    /// PSCI answered in the plugin: the VM's power board.
    psci: Option<Arc<UserPsci>>,
    /// The `KVM_ARM_VCPU_INIT` argument, for the reset of a CPU_ON answered in the plugin.
    init: kvm_vcpu_init,
}

impl KvmVcpu {
    pub(super) fn new(
        vm: &VmFd,
        config: &VcpuConfig,
        init: &kvm_vcpu_init,
        caps: &Capabilities,
        parts: VcpuParts,
    ) -> Result<Self> {
        let VcpuParts { gic, debug, psci } = parts;
        let index = config.index;
        let mut fd = vm
            .create_vcpu(u64::from(index))
            .map_err(|e| ioctl_error(format!("KVM_CREATE_VCPU {index}"), e))?;
        fd.vcpu_init(init).map_err(|e| {
            ioctl_error(
                format!(
                    "KVM_ARM_VCPU_INIT of vCPU {index} with features [{}]",
                    config.features.names().join(", ")
                ),
                e,
            )
        })?;
        let sve_vq = if config.features.contains(VcpuFeatures::SVE) {
            Some(configure_sve(&fd, index, config.sve_max_vq, caps.sve_vqs)?)
        } else {
            None
        };
        // With an in-kernel GIC, KVM initialises the PMU only after the GIC, which waits for
        // every vCPU: give it its overflow interrupt now and initialise it before the first run.
        let pmu = config.features.contains(VcpuFeatures::PMU_V3);
        if pmu && gic.config().is_some() {
            let irq = PMU_OVERFLOW_INTID;
            pmu_attr(
                &fd,
                index,
                KVM_ARM_VCPU_PMU_V3_IRQ,
                &irq as *const u32 as u64,
                "KVM_ARM_VCPU_PMU_V3_IRQ",
            )?;
        } else if pmu {
            pmu_attr(&fd, index, KVM_ARM_VCPU_PMU_V3_INIT, 0, "KVM_ARM_VCPU_PMU_V3_INIT")?;
        }
        let pmu_init_pending = pmu && gic.config().is_some();
        if let Some(psci) = &psci {
            let id = kvm_id_of(accel_api::sysreg::MPIDR_EL1, 8)
                .ok_or_else(|| AccelError::invalid("MPIDR_EL1 has no KVM id"))?;
            let mut mpidr = [0u8; 8];
            fd.get_one_reg(id, &mut mpidr)
                .map_err(|e| ioctl_error(format!("KVM_GET_ONE_REG of MPIDR_EL1 of vCPU {index}"), e))?;
            let on = !config.features.contains(VcpuFeatures::POWER_OFF);
            psci.board.lock().add(index, u64::from_le_bytes(mpidr), on);
        }
        kick::install_handler();
        let board = psci.as_ref().map(|p| Arc::clone(&p.board));
        let kick = Arc::new(KickShared::new(fd.get_kvm_run(), board));
        if let Some(psci) = &psci {
            psci.register(index, &kick);
        }
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
            index,
            gic,
            gic_checked: false,
            debug,
            debug_applied: None,
            pmu_init_pending,
            kick,
            sve_vq,
            caps: *caps,
            listed,
            by_id,
            last_core: LastGet::default(),
            last_fp: LastGet::default(),
            last_sve: LastGet::default(),
            last_listed: LastValues::default(),
            pending: Pending::None,
            reads: Cell::new(0),
            writes: Cell::new(0),
            runs: 0,
            psci,
            init: *init,
        })
    }

    fn set_x(&self, n: u8, value: u64) -> Result<()> {
        let reg = CoreReg::X(n);
        self.set_bytes(core_reg_id(reg), &value.to_le_bytes(), || reg.name())
    }

    /// Starts the vCPU where a CPU_ON answered in the plugin says: resets it with
    /// `KVM_ARM_VCPU_INIT` (as KVM's own CPU_ON resets it), then sets the PC to the entry point
    /// and X0 to the context id. Every register value of the last get is stale after that.
    fn start_at(&mut self, start: StartContext) -> Result<()> {
        self.fd.vcpu_init(&self.init).map_err(|e| {
            ioctl_error(format!("KVM_ARM_VCPU_INIT resetting vCPU {} for CPU_ON", self.index), e)
        })?;
        self.set_bytes(core_reg_id(CoreReg::Pc), &start.entry.to_le_bytes(), || "PC".into())?;
        self.set_x(0, start.context_id)?;
        self.last_core.forget();
        self.last_fp.forget();
        self.last_sve.forget();
        self.last_listed.forget();
        self.debug_applied = None;
        Ok(())
    }

    /// Before entering the guest with PSCI in the plugin: run on, start from a CPU_ON, or wait
    /// while the vCPU is off. `Some(Interrupted)` when a kick ended the wait.
    fn wait_while_off(&mut self) -> Result<Option<VcpuExit>> {
        let Some(psci) = self.psci.clone() else { return Ok(None) };
        let kick = Arc::clone(&self.kick);
        match psci.board.wait_until_on(self.index, || kick.requested()) {
            Wake::Running => Ok(None),
            Wake::Start(start) => self.start_at(start).map(|()| None),
            Wake::Interrupted => {
                self.kick.take();
                Ok(Some(VcpuExit::Interrupted))
            }
        }
    }

    /// Answers a PSCI call KVM forwarded (`KVM_EXIT_HYPERCALL` with function id `nr`) with the
    /// shared code. The PC is already past the HVC or SMC. `Some` exit for the host, or `None`
    /// to carry on.
    fn hypercall(&mut self, nr: u64) -> Result<Option<VcpuExit>> {
        let Some(psci) = self.psci.clone() else {
            log::warn!("vCPU {}: a hypercall exit ({nr:#x}) without PSCI in the plugin", self.index);
            return Ok(Some(VcpuExit::BackendSpecific { reason: kvm_bindings::KVM_EXIT_HYPERCALL }));
        };
        let mut args = [0u64; 3];
        for (n, arg) in (1u8..).zip(args.iter_mut()) {
            let reg = CoreReg::X(n);
            *arg = self.get_u64(core_reg_id(reg), || reg.name())?;
        }
        let call = Call { function: nr as u32, args, imm: 0 };
        match psci.board.handle(&call, self.index, psci.offer) {
            Outcome::Return(value) => self.set_x(0, value).map(|()| None),
            // KVM's in-kernel CPU_SUSPEND waits as for WFI first; returning at once is a
            // wake-up the caller has to expect anyway.
            Outcome::Started { .. } | Outcome::Standby => self.set_x(0, psci::ret::SUCCESS).map(|()| None),
            Outcome::PoweredOff => Ok(None),
            Outcome::SystemEvent { kind, data, x0 } => {
                if let Some(value) = x0 {
                    self.set_x(0, value)?;
                }
                // KVM's own PSCI stops every vCPU at once: bring the others out of the guest to
                // their power check.
                psci.nudge_others(self.index);
                Ok(Some(VcpuExit::SystemEvent { kind, data }))
            }
        }
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

    /// Lets KVM complete a pending MMIO access without running the guest (KVM_RUN with
    /// `immediate_exit`, which finishes the access, commits the PC and returns EINTR), so that
    /// register reads see, and writes start from, the state after the access. Without this a PC
    /// set by the host would be advanced past its target on the next entry.
    fn complete_pending(&mut self) -> Result<()> {
        match self.pending {
            Pending::None => return Ok(()),
            Pending::MmioRead { supplied: false, .. } => {
                return Err(AccelError::bad_state(format!(
                    "vCPU {} is stopped in an MMIO read: supply its data before accessing registers",
                    self.index
                )))
            }
            Pending::MmioWrite | Pending::MmioRead { supplied: true, .. } => {}
        }
        self.fd.set_kvm_immediate_exit(1);
        self.runs += 1;
        let result = self.fd.run().map(|exit| format!("{exit:?}"));
        self.fd.set_kvm_immediate_exit(0);
        self.pending = Pending::None;
        match result {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            Err(e) => Err(ioctl_error(format!("completing the MMIO access of vCPU {}", self.index), e)),
            Ok(exit) => Err(AccelError::bad_state(format!(
                "vCPU {}: KVM_RUN with immediate_exit returned exit {exit} instead of EINTR",
                self.index
            ))),
        }
    }

    fn sve_enabled(&self) -> Result<u32> {
        self.sve_vq
            .ok_or_else(|| AccelError::unsupported(format!("SVE is not enabled on vCPU {}", self.index)))
    }

    /// Reads the first `out.len()` bytes of an SVE register, slice by slice (a whole slice
    /// straight into `out` where it fits, so the common reads copy nothing).
    fn read_sve(&self, reg: SveReg, out: &mut [u8]) -> Result<()> {
        let (_, slice_len) = sve_slice(reg, 0);
        let mut buf = [0u8; SVE_ZREG_SLICE_BYTES];
        for (slice, chunk) in out.chunks_mut(slice_len).enumerate() {
            let (id, _) = sve_slice(reg, slice as u8);
            let name = || format!("{} slice {slice}", reg.name());
            if chunk.len() == slice_len {
                self.get_bytes(id, chunk, name)?;
            } else {
                self.get_bytes(id, &mut buf[..slice_len], name)?;
                chunk.copy_from_slice(&buf[..chunk.len()]);
            }
        }
        Ok(())
    }

    /// Writes `bytes` to an SVE register, slice by slice, zeroing the rest of each slice.
    fn write_sve(&self, reg: SveReg, bytes: &[u8]) -> Result<()> {
        let (_, slice_len) = sve_slice(reg, 0);
        for (slice, chunk) in bytes.chunks(slice_len).enumerate() {
            let mut slot = [0u8; SVE_ZREG_SLICE_BYTES];
            let buf = &mut slot[..slice_len];
            buf[..chunk.len()].copy_from_slice(chunk);
            let (id, _) = sve_slice(reg, slice as u8);
            self.set_bytes(id, buf, || format!("{} slice {slice}", reg.name()))?;
        }
        Ok(())
    }

    /// The listed register `id`, or `NOT_FOUND`.
    fn listed_reg(&self, id: RegId) -> Result<Listed> {
        self.by_id.get(&id).map(|&i| self.listed[i]).ok_or_else(|| {
            AccelError::new(ErrorKind::NOT_FOUND, format!("{id} is not a register of vCPU {}", self.index))
        })
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

/// Sets the vCPU's SVE vector lengths (every offered length up to `max_vq`, which KVM requires
/// to be exactly the host's set below the maximum) and finalizes SVE. Returns the vector length.
fn configure_sve(fd: &VcpuFd, index: u32, max_vq: u32, offered: u32) -> Result<u32> {
    let max_offered = 32 - offered.leading_zeros();
    let max_vq = if max_vq == 0 { max_offered } else { max_vq };
    if max_vq == 0 || max_vq > SVE_VQ_MAX || offered & (1 << (max_vq - 1)) == 0 {
        return Err(AccelError::unsupported(format!(
            "an SVE vector length of {} bits is not offered; this host offers {:?} bits",
            max_vq * 128,
            vector_lengths_bits(offered)
        )));
    }
    let set = u64::from(offered & (u32::MAX >> (32 - max_vq)));
    let mut vls = [0u8; 64];
    vls[..8].copy_from_slice(&set.to_le_bytes());
    fd.set_one_reg(KVM_REG_ARM64_SVE_VLS, &vls).map_err(|e| {
        ioctl_error(format!("KVM_SET_ONE_REG of KVM_REG_ARM64_SVE_VLS ({set:#x}) for vCPU {index}"), e)
    })?;
    fd.vcpu_finalize(&(KVM_ARM_VCPU_SVE as i32))
        .map_err(|e| ioctl_error(format!("KVM_ARM_VCPU_FINALIZE(SVE) of vCPU {index}"), e))?;
    Ok(max_vq)
}

/// The KVM id of slice `slice` of an SVE register, and the slice's size.
///
/// KVM exposes Z registers in 2048-bit slices and predicates in 256-bit slices (slice `i` holds
/// bytes `i * size ..`). 2048 bits is the architectural maximum vector length, so slice 0 holds
/// any register whole and is the only slice KVM defines today; the sync loops over slices anyway
/// so a longer register would be handled.
fn sve_slice(reg: SveReg, slice: u8) -> (u64, usize) {
    match reg {
        SveReg::Z(n) => (sve_zreg_id(n, slice), SVE_ZREG_SLICE_BYTES),
        SveReg::P(n) => (sve_preg_id(n, slice), SVE_PREG_SLICE_BYTES),
        SveReg::Ffr => (sve_ffr_id(slice), SVE_PREG_SLICE_BYTES),
    }
}

fn system_event(kind: u32, data: &[u64]) -> VcpuExit {
    VcpuExit::SystemEvent { kind: SystemEventKind(kind), data: data.to_vec() }
}

impl BackendVcpu for KvmVcpu {
    fn index(&self) -> u32 {
        self.index
    }

    fn get_core(&mut self) -> Result<CoreRegs> {
        self.complete_pending()?;
        let mut regs = CoreRegs::default();
        for reg in CoreReg::all() {
            regs.set(reg, self.get_u64(core_reg_id(reg), || reg.name())?);
        }
        self.last_core.got(&regs);
        Ok(regs)
    }

    fn put_core(&mut self, regs: &CoreRegs, level: PutLevel) -> Result<()> {
        self.complete_pending()?;
        for reg in self.last_core.to_write(level, regs) {
            self.set_bytes(core_reg_id(reg), &regs.get(reg).to_le_bytes(), || reg.name())?;
        }
        self.last_core.got(regs);
        Ok(())
    }

    fn get_fp(&mut self) -> Result<FpRegs> {
        self.complete_pending()?;
        let mut regs = FpRegs::default();
        for n in 0..32u8 {
            let reg = FpReg::V(n);
            if self.sve_vq.is_some() {
                // With SVE on, KVM exposes Vn only as the low 128 bits of Zn.
                self.read_sve(SveReg::Z(n), &mut regs.v[usize::from(n)])?;
            } else {
                self.get_bytes(fp_reg_id(reg), &mut regs.v[usize::from(n)], || reg.name())?;
            }
        }
        for (reg, slot) in [(FpReg::Fpsr, &mut regs.fpsr), (FpReg::Fpcr, &mut regs.fpcr)] {
            let mut buf = [0u8; 4];
            self.get_bytes(fp_reg_id(reg), &mut buf, || reg.name())?;
            *slot = u32::from_le_bytes(buf);
        }
        self.last_fp.got(&regs);
        Ok(regs)
    }

    fn put_fp(&mut self, regs: &FpRegs, level: PutLevel) -> Result<()> {
        self.complete_pending()?;
        let (fpsr, fpcr) = (regs.fpsr.to_le_bytes(), regs.fpcr.to_le_bytes());
        for reg in self.last_fp.to_write(level, regs) {
            let bytes: &[u8] = match reg {
                FpReg::V(n) => &regs.v[usize::from(n)],
                FpReg::Fpsr => &fpsr,
                FpReg::Fpcr => &fpcr,
            };
            match reg {
                // A write to Vn zeroes the rest of Zn, as an AdvSIMD write does.
                FpReg::V(n) if self.sve_vq.is_some() => {
                    self.last_sve.forget();
                    self.write_sve(SveReg::Z(n), bytes)?;
                }
                _ => self.set_bytes(fp_reg_id(reg), bytes, || reg.name())?,
            }
        }
        self.last_fp.got(regs);
        Ok(())
    }

    fn get_regs(&mut self, class: RegClass) -> Result<Vec<RegValue>> {
        self.complete_pending()?;
        let mut values = Vec::new();
        for reg in self.listed.iter().filter(|r| r.id.class() == class) {
            values.push(RegValue { id: reg.id, value: self.get_listed(reg)? });
        }
        self.last_listed.got(&values);
        Ok(values)
    }

    fn get_named(&mut self, ids: &[RegId]) -> Result<Vec<RegValue>> {
        self.complete_pending()?;
        let mut values = Vec::with_capacity(ids.len());
        let mut listed = Vec::new();
        for &id in ids {
            let value = match id.core_reg() {
                Some(reg) => self.get_u64(core_reg_id(reg), || reg.name())?,
                None if id == FPSR || id == FPCR => {
                    let reg = if id == FPSR { FpReg::Fpsr } else { FpReg::Fpcr };
                    let mut buf = [0u8; 4];
                    self.get_bytes(fp_reg_id(reg), &mut buf, || reg.name())?;
                    u32::from_le_bytes(buf).into()
                }
                None => {
                    let value = self.get_listed(&self.listed_reg(id)?)?;
                    listed.push(RegValue { id, value });
                    value
                }
            };
            values.push(RegValue { id, value });
        }
        self.last_listed.got(&listed);
        Ok(values)
    }

    fn put_regs(&mut self, values: &[RegValue], level: PutLevel) -> Result<()> {
        self.complete_pending()?;
        for v in self.last_listed.to_write(level, values) {
            let reg = self.listed_reg(v.id)?;
            self.set_listed(&reg, v.value)?;
            self.last_listed.wrote(v);
        }
        Ok(())
    }

    fn get_mp_state(&mut self) -> Result<MpState> {
        self.complete_pending()?;
        if self.psci.as_ref().is_some_and(|p| !p.board.lock().is_on(self.index)) {
            return Ok(MpState::STOPPED);
        }
        self.fd
            .get_mp_state()
            .map(|s| MpState(s.mp_state))
            .map_err(|e| ioctl_error(format!("KVM_GET_MP_STATE of vCPU {}", self.index), e))
    }

    fn set_mp_state(&mut self, state: MpState) -> Result<()> {
        self.complete_pending()?;
        if ![MpState::RUNNABLE, MpState::STOPPED, MpState::SUSPENDED].contains(&state) {
            return Err(AccelError::invalid(format!(
                "MP state {} is not one of runnable, stopped, suspended",
                state.0
            )));
        }
        if let Some(psci) = &self.psci {
            // Stopped lives on the power board; KVM keeps the vCPU runnable or suspended.
            psci.board.lock().set_on(self.index, state != MpState::STOPPED);
            psci.board.wake_all();
            if state == MpState::STOPPED {
                return Ok(());
            }
        }
        self.fd
            .set_mp_state(kvm_mp_state { mp_state: state.0 })
            .map_err(|e| ioctl_error(format!("KVM_SET_MP_STATE({}) of vCPU {}", state.name(), self.index), e))
    }

    fn kicker(&self) -> Box<dyn Kick> {
        Box::new(kick::Kicker(Arc::clone(&self.kick)))
    }

    fn counters(&self) -> SyncCounters {
        SyncCounters { reg_reads: self.reads.get(), reg_writes: self.writes.get(), runs: self.runs }
    }

    fn set_mmio_read_data(&mut self, value: u64) -> Result<()> {
        let data = value.to_le_bytes();
        let Pending::MmioRead { len, .. } = self.pending else {
            return Err(AccelError::bad_state("no MMIO read is pending: the last exit was not an MMIO read"));
        };
        self.pending = Pending::MmioRead { len, supplied: true };
        let run = self.fd.get_kvm_run();
        // SAFETY: the last KVM_RUN returned KVM_EXIT_MMIO for a read (`Pending::MmioRead` is only
        // set then), so `mmio` is the active member of the exit union.
        let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
        let len = (len as usize).min(mmio.data.len());
        mmio.data[..len].copy_from_slice(&data[..len]);
        Ok(())
    }

    fn support_sve(&mut self) -> Option<&mut dyn BackendSve> {
        if self.sve_vq.is_some() {
            Some(self)
        } else {
            None
        }
    }

    fn support_events(&mut self) -> Option<&mut dyn BackendEvents> {
        Some(self)
    }

    fn run(&mut self) -> Result<VcpuExit> {
        if let Pending::MmioRead { supplied: false, .. } = self.pending {
            log::warn!(
                "vCPU {}: running on after an MMIO read with no data supplied; the guest reads 0",
                self.index
            );
        }
        self.pending = Pending::None;
        if !self.gic_checked {
            self.gic.ensure_ready()?;
        }
        if self.pmu_init_pending {
            pmu_attr(&self.fd, self.index, KVM_ARM_VCPU_PMU_V3_INIT, 0, "KVM_ARM_VCPU_PMU_V3_INIT")?;
            self.pmu_init_pending = false;
        }
        if let Some(debug) = &self.debug {
            if let Some(setup) = debug.setup_if_changed(self.index, &mut self.debug_applied)? {
                if let Err(e) = self.fd.set_guest_debug(&to_kvm(&setup)) {
                    self.debug_applied = None;
                    return Err(ioctl_error(format!("KVM_SET_GUEST_DEBUG of vCPU {}", self.index), e));
                }
            }
        }
        loop {
            if let Some(interrupted) = self.wait_while_off()? {
                return Ok(interrupted);
            }
            let Some(inside) = self.kick.enter() else {
                return Ok(VcpuExit::Interrupted);
            };
            self.runs += 1;
            self.gic_checked = true;
            let result = self.fd.run();
            let eintr = matches!(&result, Err(e) if e.errno() == libc::EINTR);
            let why = self.kick.leave(inside, eintr);
            let exit = match result {
                Ok(exit) => exit,
                Err(_) if eintr => {
                    if why.nudged && !why.kicked {
                        // Only the plugin's own nudge: look at the power state again.
                        continue;
                    }
                    return Ok(VcpuExit::Interrupted);
                }
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
                    self.pending = Pending::MmioRead { len: data.len() as u32, supplied: false };
                    VcpuExit::MmioRead(mmio(addr, data))
                }
                KvmExit::MmioWrite(addr, data) => {
                    self.pending = Pending::MmioWrite;
                    VcpuExit::MmioWrite(mmio(addr, data))
                }
                KvmExit::SystemEvent(kind, data) => system_event(kind, data),
                KvmExit::Hypercall(call) => {
                    let nr = call.nr;
                    match self.hypercall(nr)? {
                        Some(exit) => exit,
                        None => continue,
                    }
                }
                KvmExit::Debug(debug) => {
                    let (esr, far) = (u64::from(debug.hsr) | (u64::from(debug.hsr_high) << 32), debug.far);
                    let pc = self.get_u64(core_reg_id(CoreReg::Pc), || "PC".into())?;
                    VcpuExit::Debug(DebugExit { esr, far, pc })
                }
                KvmExit::FailEntry(reason, cpu) => VcpuExit::FailEntry { reason, cpu },
                KvmExit::Intr => VcpuExit::Interrupted,
                KvmExit::InternalError => {
                    let run = self.fd.get_kvm_run();
                    // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the
                    // active member of the exit union.
                    let internal = unsafe { run.__bindgen_anon_1.internal };
                    let n = (internal.ndata as usize).min(internal.data.len());
                    VcpuExit::InternalError { suberror: internal.suberror, data: internal.data[..n].to_vec() }
                }
                KvmExit::Unsupported(KVM_EXIT_ARM_NISV) => {
                    let run = self.fd.get_kvm_run();
                    // SAFETY: the exit reason is KVM_EXIT_ARM_NISV, so `arm_nisv` is the active
                    // member of the exit union.
                    let nisv = unsafe { run.__bindgen_anon_1.arm_nisv };
                    VcpuExit::ArmNisv { esr_iss: nisv.esr_iss, fault_ipa: nisv.fault_ipa }
                }
                KvmExit::Unsupported(reason) => VcpuExit::BackendSpecific { reason },
                other => {
                    let described = format!("{other:?}");
                    let reason = self.fd.get_kvm_run().exit_reason;
                    log::warn!("vCPU {}: unexpected KVM exit {described}", self.index);
                    VcpuExit::BackendSpecific { reason }
                }
            };
            return Ok(exit);
        }
    }
}

impl BackendSve for KvmVcpu {
    fn get_sve(&mut self) -> Result<SveRegs> {
        self.complete_pending()?;
        let vq = self.sve_enabled()?;
        let mut regs = SveRegs::zeroed(vq);
        for reg in SveReg::all() {
            self.read_sve(reg, regs.reg_mut(reg))?;
        }
        self.last_sve.got(&regs);
        Ok(regs)
    }

    fn put_sve(&mut self, regs: &SveRegs, level: PutLevel) -> Result<()> {
        self.complete_pending()?;
        let vq = self.sve_enabled()?;
        if !regs.is_well_formed() || regs.vq != vq {
            return Err(AccelError::invalid(format!(
                "SVE registers for a {}-bit vector length do not fit vCPU {}, whose vector length is {} bits",
                regs.vq * 128,
                self.index,
                vq * 128
            )));
        }
        let plan = self.last_sve.to_write(level, regs);
        if !plan.is_empty() {
            // Zn holds Vn: the FP/SIMD record no longer says what the vCPU holds.
            self.last_fp.forget();
        }
        for reg in plan {
            self.write_sve(reg, regs.reg(reg))?;
        }
        self.last_sve.got(regs);
        Ok(())
    }
}

impl BackendEvents for KvmVcpu {
    fn get_events(&mut self) -> Result<VcpuEvents> {
        self.complete_pending()?;
        let e = self
            .fd
            .get_vcpu_events()
            .map_err(|e| ioctl_error(format!("KVM_GET_VCPU_EVENTS of vCPU {}", self.index), e))?;
        Ok(VcpuEvents {
            serror_pending: e.exception.serror_pending != 0,
            serror_has_esr: e.exception.serror_has_esr != 0,
            serror_esr: e.exception.serror_esr,
            ext_dabt_pending: e.exception.ext_dabt_pending != 0,
        })
    }

    fn put_events(&mut self, events: &VcpuEvents) -> Result<()> {
        self.complete_pending()?;
        if events.serror_has_esr && !self.caps.serror_esr {
            return Err(AccelError::unsupported(
                "injecting an SError with a syndrome needs KVM_CAP_ARM_INJECT_SERROR_ESR, which this host lacks",
            ));
        }
        if events.ext_dabt_pending && !self.caps.ext_dabt {
            return Err(AccelError::unsupported(
                "injecting an external data abort needs KVM_CAP_ARM_INJECT_EXT_DABT, which this host lacks",
            ));
        }
        if events.serror_esr & !0x1ff_ffff != 0 {
            return Err(AccelError::invalid(format!(
                "SError syndrome {:#x} does not fit ESR_EL1.ISS (bits [24:0])",
                events.serror_esr
            )));
        }
        let mut e = kvm_vcpu_events::default();
        e.exception.serror_pending = u8::from(events.serror_pending);
        e.exception.serror_has_esr = u8::from(events.serror_has_esr);
        e.exception.serror_esr = events.serror_esr;
        e.exception.ext_dabt_pending = u8::from(events.ext_dabt_pending);
        self.fd
            .set_vcpu_events(&e)
            .map_err(|e| ioctl_error(format!("KVM_SET_VCPU_EVENTS of vCPU {}", self.index), e))
    }
}
