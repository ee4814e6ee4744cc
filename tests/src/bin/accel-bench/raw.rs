//! The raw KVM baseline: one VM and vCPU driven directly through `kvm-ioctls` and
//! `kvm-bindings`, with no plugin and no accel types on the measured path, doing the same work as
//! accel's operations. Every ioctl it makes is counted, so its figures carry their call counts as
//! accel's carry `SyncCounters`.
//!
//! Registers are read and written with `KVM_GET_ONE_REG`/`KVM_SET_ONE_REG`, one register per
//! call: arm64 KVM has no `KVM_GET_REGS`/`KVM_GET_FPU` (they return `EINVAL`), so this is the
//! only way, and the fastest. With SVE on, KVM refuses the FP/SIMD `V` registers and V0–V31 are
//! the low 128 bits of the Z registers, read as their 2048-bit slices, as accel reads them.

use std::mem::offset_of;

use accel_host::vmm::host_mapping::HostMapping;
use kvm_bindings::{
    kvm_guest_debug, kvm_regs, kvm_userspace_memory_region, kvm_vcpu_init, KVM_ARM_VCPU_PSCI_0_2,
    KVM_ARM_VCPU_SVE, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW, KVM_REG_ARM64,
    KVM_REG_ARM64_SVE, KVM_REG_ARM64_SYSREG, KVM_REG_ARM_CORE, KVM_REG_SIZE_U128, KVM_REG_SIZE_U2048,
    KVM_REG_SIZE_U256, KVM_REG_SIZE_U32, KVM_REG_SIZE_U64,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

/// A failed step of the baseline, described.
pub type Error = String;

fn failed(what: &str) -> impl Fn(kvm_ioctls::Error) -> Error + '_ {
    move |e| format!("raw KVM: {what} failed: {e}")
}

/// The ioctls the baseline made.
#[derive(Clone, Copy, Debug, Default)]
pub struct Calls {
    /// `KVM_GET_ONE_REG`.
    pub gets: u64,
    /// `KVM_SET_ONE_REG`.
    pub sets: u64,
    /// `KVM_RUN`.
    pub runs: u64,
    /// `KVM_SET_GUEST_DEBUG`.
    pub guest_debug: u64,
}

/// The id of a core register at byte `offset` of `struct kvm_regs` (`KVM_REG_ARM_CORE_REG`).
fn core_id(size: u64, offset: usize) -> u64 {
    KVM_REG_ARM64 | size | u64::from(KVM_REG_ARM_CORE) | (offset / 4) as u64
}

/// `Xn`.
pub fn x_id(n: usize) -> u64 {
    core_id(KVM_REG_SIZE_U64, offset_of!(kvm_regs, regs.regs) + 8 * n)
}

/// PC.
pub fn pc_id() -> u64 {
    core_id(KVM_REG_SIZE_U64, offset_of!(kvm_regs, regs.pc))
}

/// PSTATE.
pub fn pstate_id() -> u64 {
    core_id(KVM_REG_SIZE_U64, offset_of!(kvm_regs, regs.pstate))
}

/// SP_EL1.
pub fn sp_el1_id() -> u64 {
    core_id(KVM_REG_SIZE_U64, offset_of!(kvm_regs, sp_el1))
}

/// A system register by its encoding (`ARM64_SYS_REG`).
pub fn sys_id(op0: u64, op1: u64, crn: u64, crm: u64, op2: u64) -> u64 {
    KVM_REG_ARM64
        | KVM_REG_SIZE_U64
        | u64::from(KVM_REG_ARM64_SYSREG)
        | op0 << 14
        | op1 << 11
        | crn << 7
        | crm << 3
        | op2
}

/// SCTLR_EL1: what translating a guest virtual address needs first.
pub fn sctlr_el1_id() -> u64 {
    sys_id(3, 0, 1, 0, 0)
}

/// The 41 core registers accel's `get_core` reads: X0–X30, SP_EL0, PC, PSTATE, SP_EL1, ELR_EL1
/// and the five SPSRs.
pub fn core_ids() -> Vec<u64> {
    let mut ids: Vec<u64> = (0..31).map(x_id).collect();
    ids.extend([
        core_id(KVM_REG_SIZE_U64, offset_of!(kvm_regs, regs.sp)),
        pc_id(),
        pstate_id(),
        sp_el1_id(),
        core_id(KVM_REG_SIZE_U64, offset_of!(kvm_regs, elr_el1)),
    ]);
    ids.extend((0..5).map(|n| core_id(KVM_REG_SIZE_U64, offset_of!(kvm_regs, spsr) + 8 * n)));
    ids
}

/// The 34 FP/SIMD registers accel's `get_fp` reads: V0–V31 (slice 0 of Z0–Z31 with SVE), FPSR
/// and FPCR.
pub fn fp_ids(sve: bool) -> Vec<u64> {
    let mut ids: Vec<u64> = (0..32u64)
        .map(|n| match sve {
            true => KVM_REG_ARM64 | u64::from(KVM_REG_ARM64_SVE) | KVM_REG_SIZE_U2048 | n << 5,
            false => core_id(KVM_REG_SIZE_U128, offset_of!(kvm_regs, fp_regs.vregs) + 16 * n as usize),
        })
        .collect();
    ids.push(core_id(KVM_REG_SIZE_U32, offset_of!(kvm_regs, fp_regs.fpsr)));
    ids.push(core_id(KVM_REG_SIZE_U32, offset_of!(kvm_regs, fp_regs.fpcr)));
    ids
}

/// The registers gdb's `g` packet holds, as few as KVM can give them: X0–X30, PSTATE, the SP
/// of EL1h (where the guest runs; gdb's `sp`), the PC read at the stop, the FP/SIMD registers
/// ([`fp_ids`]) and with SVE the P registers and FFR (V0–V31 are then the Z registers' low bits).
pub fn gdb_g_ids(sve: bool) -> Vec<u64> {
    let mut ids: Vec<u64> = (0..31).map(x_id).collect();
    ids.extend([pstate_id(), sp_el1_id()]);
    ids.extend(fp_ids(sve));
    if sve {
        let sve_reg = |base: u64, n: u64| {
            KVM_REG_ARM64 | u64::from(KVM_REG_ARM64_SVE) | KVM_REG_SIZE_U256 | base | n << 5
        };
        // KVM_REG_ARM64_SVE_PREG(n, 0) and KVM_REG_ARM64_SVE_FFR(0).
        ids.extend((0..16).map(|n| sve_reg(0x400, n)));
        ids.push(sve_reg(0x600, 0));
    }
    ids
}

/// The kinds of stop gdb makes, as raw KVM answers them.
#[derive(Clone, Copy, Debug)]
pub enum GdbStop {
    /// `stepi`: one step, then `g` and memory reads.
    Step,
    /// `stepi` with PC, SP, X29, X30 and CPSR expedited in the stop reply and no `g`.
    StepExpedited,
    /// `continue` from a breakpoint back to it: a step off it (expedited), then a run to it,
    /// `g` there.
    Breakpoint,
    /// `continue` to a write watchpoint, then a step over the store, expedited at both.
    Watchpoint,
}

/// DBGBCR0_EL1 for an address match at EL1 (E, PMC = 0b11, BAS = 0b1111).
const BCR_EL1_EXEC: u64 = 0x1e7;
/// DBGWCR0_EL1 for 8 stored bytes at EL1 and EL0 (E, PAC = 0b11, LSC = store, BAS = 0xff).
const WCR_STORE_8: u64 = 0x1ff7;

/// Guest RAM in host memory laid out as accel-host lays its own ([`HostMapping`]: on a 2 MiB
/// boundary, offered for huge pages), so that the baseline's stage-2 faults are the plugin's.
struct Ram(HostMapping);

impl Ram {
    fn new(size: usize) -> Result<Self, Error> {
        HostMapping::new(size)
            .map(Ram)
            .map_err(|e| format!("raw KVM: mapping {size} bytes of guest RAM: {e}"))
    }

    fn write_code(&self, offset: usize, code: &[u32]) -> Result<(), Error> {
        let bytes: Vec<u8> = code.iter().flat_map(|w| w.to_le_bytes()).collect();
        if offset + bytes.len() > self.0.len() {
            return Err("raw KVM: the guest code does not fit its RAM".into());
        }
        // SAFETY: the range was checked to lie inside the mapping, which this process owns and
        // no vCPU runs on yet.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.0.addr().add(offset), bytes.len()) };
        Ok(())
    }
}

/// A VM with one memory slot, guest code, and one vCPU at EL1h with interrupts masked, as the
/// suite's test guests, without an in-kernel GIC (as those the benchmark builds).
pub struct RawGuest {
    vcpu: VcpuFd,
    _vm: VmFd,
    _kvm: Kvm,
    _ram: Ram,
    /// What the baseline asked of KVM so far.
    pub calls: Calls,
    core: Vec<u64>,
    fp: Vec<u64>,
    x0: u64,
    gdb_g: Vec<u64>,
    breakpoint: u64,
    watched: u64,
}

impl RawGuest {
    /// RAM of `ram_size` bytes at `ram_base` holding `image` (instructions by guest physical
    /// address); vCPU 0 with PSCI 0.2, SVE too if `sve` (at every vector length the host
    /// offers, KVM's default), its PC at `entry`.
    pub fn new(
        ram_base: u64,
        ram_size: usize,
        image: &[(u64, Vec<u32>)],
        entry: u64,
        sve: bool,
    ) -> Result<Self, Error> {
        let kvm = Kvm::new().map_err(failed("opening /dev/kvm"))?;
        let vm = kvm.create_vm().map_err(failed("KVM_CREATE_VM"))?;
        let ram = Ram::new(ram_size)?;
        for (at, words) in image {
            let offset = at.checked_sub(ram_base).ok_or("raw KVM: guest code below RAM")?;
            ram.write_code(offset as usize, words)?;
        }
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: ram_base,
            memory_size: ram_size as u64,
            userspace_addr: ram.0.addr() as u64,
        };
        // SAFETY: the region is this process's mapping in `ram`, which outlives the VM (field
        // order in `RawGuest`).
        unsafe { vm.set_user_memory_region(region) }.map_err(failed("KVM_SET_USER_MEMORY_REGION"))?;
        let vcpu = vm.create_vcpu(0).map_err(failed("KVM_CREATE_VCPU"))?;
        let mut init = kvm_vcpu_init::default();
        vm.get_preferred_target(&mut init).map_err(failed("KVM_ARM_PREFERRED_TARGET"))?;
        init.features[0] |= 1 << KVM_ARM_VCPU_PSCI_0_2;
        if sve {
            init.features[0] |= 1 << KVM_ARM_VCPU_SVE;
        }
        vcpu.vcpu_init(&init).map_err(failed("KVM_ARM_VCPU_INIT"))?;
        if sve {
            vcpu.vcpu_finalize(&(KVM_ARM_VCPU_SVE as i32)).map_err(failed("KVM_ARM_VCPU_FINALIZE"))?;
        }
        let mut guest = Self {
            vcpu,
            _vm: vm,
            _kvm: kvm,
            _ram: ram,
            calls: Calls::default(),
            core: core_ids(),
            fp: fp_ids(sve),
            x0: 0,
            gdb_g: gdb_g_ids(sve),
            breakpoint: 0,
            watched: 0,
        };
        guest.set(pc_id(), entry)?;
        // EL1h with D, A, I and F masked.
        guest.set(pstate_id(), 0x3c5)?;
        Ok(guest)
    }

    /// One `KVM_GET_ONE_REG` of a register of up to 2048 bits.
    pub fn get(&mut self, id: u64) -> Result<(), Error> {
        let mut buf = [0u8; 256];
        self.calls.gets += 1;
        self.vcpu.get_one_reg(id, &mut buf).map(drop).map_err(failed("KVM_GET_ONE_REG"))
    }

    /// One `KVM_SET_ONE_REG` of a 64-bit register.
    pub fn set(&mut self, id: u64, value: u64) -> Result<(), Error> {
        self.calls.sets += 1;
        self.vcpu.set_one_reg(id, &value.to_le_bytes()).map(drop).map_err(failed("KVM_SET_ONE_REG"))
    }

    /// What accel's `get_core` and `get_fp` read, one `KVM_GET_ONE_REG` each.
    pub fn get_core_fp(&mut self) -> Result<(), Error> {
        for i in 0..self.core.len() {
            self.get(self.core[i])?;
        }
        for i in 0..self.fp.len() {
            self.get(self.fp[i])?;
        }
        Ok(())
    }

    /// Writes X0 with a value other than the last: what a put of one changed register does.
    pub fn put_x0(&mut self) -> Result<(), Error> {
        self.x0 ^= 1;
        self.set(x_id(0), self.x0)
    }

    /// Sets the PC.
    pub fn set_pc(&mut self, pc: u64) -> Result<(), Error> {
        self.set(pc_id(), pc)
    }

    /// `KVM_SET_GUEST_DEBUG`: single-step if `step`, the hardware breakpoint and watchpoint
    /// registers from `hw` (BCR0, BVR0, WCR0, WVR0) when given.
    pub fn guest_debug(&mut self, step: bool, hw: Option<[u64; 4]>) -> Result<(), Error> {
        let mut debug = kvm_guest_debug { control: KVM_GUESTDBG_ENABLE, ..Default::default() };
        if step {
            debug.control |= KVM_GUESTDBG_SINGLESTEP;
        }
        if let Some([bcr, bvr, wcr, wvr]) = hw {
            debug.control |= KVM_GUESTDBG_USE_HW;
            debug.arch.dbg_bcr[0] = bcr;
            debug.arch.dbg_bvr[0] = bvr;
            debug.arch.dbg_wcr[0] = wcr;
            debug.arch.dbg_wvr[0] = wvr;
        }
        self.calls.guest_debug += 1;
        self.vcpu.set_guest_debug(&debug).map_err(failed("KVM_SET_GUEST_DEBUG"))
    }

    /// Lets KVM finish the MMIO access of the last exit without entering the guest (`KVM_RUN`
    /// with `immediate_exit`, which returns `EINTR`), so that a PC set next is not advanced past
    /// its target: what accel does before touching registers after an MMIO exit.
    pub fn complete_mmio(&mut self) -> Result<(), Error> {
        self.vcpu.set_kvm_immediate_exit(1);
        self.calls.runs += 1;
        let result = self.vcpu.run().map(|exit| format!("{exit:?}"));
        self.vcpu.set_kvm_immediate_exit(0);
        match result {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            Err(e) => Err(format!("raw KVM: completing the MMIO access failed: {e}")),
            Ok(exit) => Err(format!("raw KVM: KVM_RUN with immediate_exit returned {exit}")),
        }
    }

    /// One `KVM_RUN`; the exit must be an MMIO write.
    pub fn run_to_mmio(&mut self) -> Result<(), Error> {
        self.calls.runs += 1;
        match self.vcpu.run().map_err(failed("KVM_RUN"))? {
            VcpuExit::MmioWrite(..) => Ok(()),
            other => Err(format!("raw KVM: expected an MMIO write exit, got {other:?}")),
        }
    }

    /// One `KVM_RUN`; the exit must be a debug exit. Then the PC: KVM's debug exit gives the
    /// syndrome and FAR but not where the vCPU stopped, which every user of a stop needs and
    /// accel's debug exit carries.
    pub fn run_to_debug(&mut self) -> Result<(), Error> {
        self.calls.runs += 1;
        match self.vcpu.run().map_err(failed("KVM_RUN"))? {
            VcpuExit::Debug(_) => self.get(pc_id()),
            other => Err(format!("raw KVM: expected a debug exit, got {other:?}")),
        }
    }

    /// Before repeating stops of `kind`: the breakpoint at `breakpoint` and the watchpoint on the
    /// doubleword at `watched`, and for a breakpoint the vCPU on it.
    pub fn gdb_prepare(&mut self, kind: GdbStop, breakpoint: u64, watched: u64) -> Result<(), Error> {
        (self.breakpoint, self.watched) = (breakpoint, watched);
        match kind {
            GdbStop::Step | GdbStop::StepExpedited => self.guest_debug(true, None),
            GdbStop::Breakpoint => {
                self.guest_debug(false, Some([BCR_EL1_EXEC, breakpoint, 0, 0]))?;
                self.run_to_debug()
            }
            GdbStop::Watchpoint => Ok(()),
        }
    }

    /// What gdb asks at a stop, with the fewest calls: `g` (one read per register, the PC
    /// known from the stop), or only PSTATE, SP, X29 and X30 where they are expedited; and SCTLR_EL1 once,
    /// to see that the MMU is off so that gdb's memory reads by virtual address are physical.
    fn gdb_answer(&mut self, g: bool) -> Result<(), Error> {
        if g {
            for i in 0..self.gdb_g.len() {
                self.get(self.gdb_g[i])?;
            }
        } else {
            for id in [pstate_id(), sp_el1_id(), x_id(29), x_id(30)] {
                self.get(id)?;
            }
        }
        self.get(sctlr_el1_id())
    }

    /// One stop of `kind` as gdb makes it, after [`RawGuest::gdb_prepare`].
    pub fn gdb_stop(&mut self, kind: GdbStop) -> Result<(), Error> {
        let (bp, wp) = ([BCR_EL1_EXEC, self.breakpoint, 0, 0], [0, 0, WCR_STORE_8, self.watched]);
        match kind {
            GdbStop::Step => {
                self.run_to_debug()?;
                self.gdb_answer(true)
            }
            GdbStop::StepExpedited => {
                self.run_to_debug()?;
                self.gdb_answer(false)
            }
            GdbStop::Breakpoint | GdbStop::Watchpoint => {
                let (first, then_step) = match kind {
                    GdbStop::Breakpoint => (None, Some(bp)),
                    _ => (Some(wp), None),
                };
                // A breakpoint: a step off it, then on to it. A watchpoint: on to it, then a
                // step over the store.
                let breakpoint = matches!(kind, GdbStop::Breakpoint);
                self.guest_debug(first.is_none(), first)?;
                self.run_to_debug()?;
                self.gdb_answer(false)?;
                self.guest_debug(then_step.is_none(), then_step)?;
                self.run_to_debug()?;
                self.gdb_answer(breakpoint)
            }
        }
    }
}
