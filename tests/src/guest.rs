//! A minimal machine for cases: one VM with a little RAM, guest code at its start, and vCPUs.

use accel_api::{
    abi::vm_option,
    client::{Accelerator, Vcpu, Vm},
    CoreRegs, ErrorKind, GicConfig, PutLevel, VcpuConfig, VcpuExit, VcpuFeatures, VmConfig,
};
use accel_host::vmm::{ram::GuestRam, PSTATE_EL1H_DAIF};

use crate::{asm, ensure, Context, Failure};

/// The prelude at the start of RAM: enable FP/SIMD and SVE at EL1 (CPACR_EL1.FPEN = 0b11,
/// CPACR_EL1.ZEN = 0b11; ZEN is RES0 without SVE), install the
/// reporting vector table, and branch to the case's code.
fn prelude() -> Vec<u32> {
    let mut code = vec![asm::movz(0, 0x33, 1), asm::msr(accel_api::sysreg::CPACR_EL1, 0)];
    code.extend(asm::mov_imm64(0, VECTORS));
    code.extend([asm::msr(accel_api::sysreg::VBAR_EL1, 0), asm::ISB]);
    let here = (code.len() * 4) as i32;
    code.push(asm::b((CODE - RAM_BASE) as i32 - here));
    code
}

/// One vector-table entry: report ESR_EL1, ELR_EL1, FAR_EL1, the entry's offset and SPSR_EL1 to
/// [`EXCEPTION_MMIO`], then spin. IRQ entries acknowledge the interrupt (ICC_IAR1_EL1, then
/// ICC_EOIR1_EL1) and report its INTID in place of ESR_EL1.
fn vector_entry(offset: u16) -> Vec<u32> {
    let first = if offset & 0x180 == 0x080 {
        vec![asm::mrs(0, asm::ICC_IAR1_EL1), asm::msr(asm::ICC_EOIR1_EL1, 0)]
    } else {
        vec![asm::mrs(0, accel_api::sysreg::ESR_EL1)]
    };
    let mut code = first;
    code.extend([asm::mrs(1, accel_api::sysreg::ELR_EL1), asm::mrs(2, accel_api::sysreg::FAR_EL1)]);
    code.extend(asm::mov_imm64(3, EXCEPTION_MMIO));
    code.extend([
        asm::str(asm::Size::X, 0, 3, 0),
        asm::str(asm::Size::X, 1, 3, 8),
        asm::str(asm::Size::X, 2, 3, 16),
        asm::movz(4, offset, 0),
        asm::str(asm::Size::X, 4, 3, 24),
        asm::mrs(5, accel_api::sysreg::SPSR_EL1),
        asm::str(asm::Size::X, 5, 3, 32),
        asm::b(0),
    ]);
    code
}

/// What the vector table reported about an exception the guest took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakenException {
    /// ESR_EL1.
    pub esr: u64,
    /// ELR_EL1.
    pub elr: u64,
    /// FAR_EL1.
    pub far: u64,
    /// The offset of the vector entry taken.
    pub offset: u64,
    /// SPSR_EL1.
    pub spsr: u64,
}

/// Where test RAM starts.
pub const RAM_BASE: u64 = 0x4000_0000;
/// How much RAM a test guest gets.
pub const RAM_SIZE: u64 = 2 << 20;
/// An address with no memory behind it: accesses exit to the host as MMIO.
pub const MMIO_BASE: u64 = 0x0a00_0000;
/// Where the guest reports an exception: ESR_EL1, ELR_EL1, FAR_EL1, the vector offset and
/// SPSR_EL1 are stored at offsets 0, 8, 16, 24 and 32.
pub const EXCEPTION_MMIO: u64 = 0x0b00_0000;
/// The vector table every test guest installs (2 KiB aligned), after the prelude.
pub const VECTORS: u64 = RAM_BASE + 0x800;
/// Where a case's own code starts.
pub const CODE: u64 = RAM_BASE + 0x1000;
/// A data area in RAM that cases may use.
pub const DATA: u64 = RAM_BASE + 0x10000;
/// PSCI 0.2 SYSTEM_OFF function id (SMC32).
pub const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
/// PSCI 0.2 SYSTEM_RESET function id (SMC32).
pub const PSCI_SYSTEM_RESET: u64 = 0x8400_0009;

/// Guest code that brings up the GICv3 of QEMU `virt`'s layout for vCPU 0 and enables the
/// interrupts `intids` in group 1 (SPIs at the distributor, PPIs at the redistributor), then
/// unmasks IRQs at the CPU interface and in PSTATE. Uses X19–X22.
pub fn gic_enable(intids: &[u32]) -> Vec<u32> {
    const GICD: u64 = 0x0800_0000;
    const GICR: u64 = 0x080a_0000;
    const SGI_FRAME: u64 = GICR + 0x1_0000;
    let mut code = asm::mov_imm64(20, GICD);
    code.extend(asm::mov_imm64(21, GICR));
    code.extend(asm::mov_imm64(22, SGI_FRAME));
    // GICR_WAKER.ProcessorSleep = 0; GICD_CTLR = ARE | EnableGrp1.
    code.push(asm::str(asm::Size::W, 31, 21, 0x14));
    code.push(asm::movz(19, 0x12, 0));
    code.push(asm::str(asm::Size::W, 19, 20, 0));
    for &intid in intids {
        let (base, word) = if intid < 32 { (22, 0) } else { (20, intid / 32) };
        code.push(asm::movz(19, (1u32 << (intid % 16)) as u16, (intid % 32) / 16));
        // GICx_IGROUPR<n> (group 1), then GICx_ISENABLER<n>.
        code.push(asm::str(asm::Size::W, 19, base, 0x080 + 4 * word));
        code.push(asm::str(asm::Size::W, 19, base, 0x100 + 4 * word));
    }
    code.extend([
        asm::movz(19, 0xff, 0),
        asm::msr(asm::ICC_PMR_EL1, 19),
        asm::movz(19, 1, 0),
        asm::msr(asm::ICC_IGRPEN1_EL1, 19),
        asm::ISB,
        asm::msr_daifclr(2),
    ]);
    code
}

/// Who answers a case's PSCI calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Psci {
    /// The backend's default: the hypervisor, where it answers them (KVM).
    Default,
    /// The plugin's own code, asked for with `VmConfig::userspace_psci`.
    InPlugin,
}

impl Psci {
    /// A guest with `code` in a VM of this mode, vCPU 0 with PSCI 0.2.
    ///
    /// `None` when the mode is PSCI in the plugin and the probe says the backend does not offer
    /// it (KVM before Linux 6.4 has no SMCCC filter): the case's check is then that the backend
    /// refuses the option by name ([`userspace_psci_refused`]), which has been made and passed.
    pub fn guest(
        self,
        ctx: &Context,
        accel: &Accelerator,
        code: &[u32],
    ) -> Result<Option<TestGuest>, Failure> {
        let vm_config = match self {
            Psci::Default => VmConfig::default(),
            Psci::InPlugin if accel.probe().caps.userspace_psci => {
                VmConfig { userspace_psci: true, ..VmConfig::default() }
            }
            Psci::InPlugin => {
                userspace_psci_refused(ctx, accel)?;
                return Ok(None);
            }
        };
        let config = VcpuConfig::new(0, VcpuFeatures::PSCI_0_2);
        TestGuest::build_in(accel, &vm_config, code, &config, None).map(Some)
    }
}

/// A backend whose probe does not offer PSCI in the plugin refuses a VM that asks for it, as
/// unsupported, naming the option (a plugin older than ABI 2.2 names it by its number), and
/// still creates a VM without it.
pub fn userspace_psci_refused(ctx: &Context, accel: &Accelerator) -> Result<(), Failure> {
    ensure!(!accel.probe().caps.userspace_psci, "the probe offers PSCI in the plugin");
    let config = VmConfig { userspace_psci: true, ..VmConfig::default() };
    let err = match accel.create_vm(&config) {
        Ok(_) => {
            return Err(Failure::Fail("PSCI in the plugin is not offered, yet the VM was created".into()))
        }
        Err(e) => e,
    };
    let name = if ctx.plugin.abi_version().minor < 2 {
        format!("VM option {}", vm_option::USERSPACE_PSCI)
    } else {
        "userspace-psci".to_string()
    };
    ensure!(
        err.kind == ErrorKind::UNSUPPORTED && err.message.contains(&name),
        "refusing PSCI in the plugin: expected an unsupported error naming {name}, got {err:?}"
    );
    accel.create_vm(&VmConfig::default())?;
    Ok(())
}

/// What a test guest's RAM holds, as (guest physical address, instructions): the prelude at
/// [`RAM_BASE`], where the vCPU starts, the vector table at [`VECTORS`], and `code` at [`CODE`].
pub fn image(code: &[u32]) -> Vec<(u64, Vec<u32>)> {
    let mut parts = vec![(RAM_BASE, prelude())];
    parts.extend((0..16u16).map(|entry| (VECTORS + u64::from(entry) * 0x80, vector_entry(entry * 0x80))));
    parts.push((CODE, code.to_vec()));
    parts
}

/// A VM with RAM, guest code and one vCPU.
pub struct TestGuest {
    /// The VM.
    pub vm: Vm,
    /// Its RAM.
    pub ram: GuestRam,
    /// vCPU 0, with PC at the start of the code.
    pub vcpu: Vcpu,
}

impl TestGuest {
    /// Builds a guest at EL1h with interrupts masked that runs the prelude and then `code` from
    /// [`CODE`].
    pub fn new(accel: &Accelerator, code: &[u32]) -> Result<Self, Failure> {
        Self::with_vcpu(accel, code, &VcpuConfig::new(0, VcpuFeatures::PSCI_0_2))
    }

    /// As [`TestGuest::new`], with vCPU 0 configured by `config`.
    pub fn with_vcpu(accel: &Accelerator, code: &[u32], config: &VcpuConfig) -> Result<Self, Failure> {
        Self::build(accel, code, config, None)
    }

    /// As [`TestGuest::new`], with an in-kernel GICv3 at QEMU `virt`'s addresses (64 SPIs).
    pub fn with_gic(accel: &Accelerator, code: &[u32]) -> Result<Self, Failure> {
        Self::build(accel, code, &VcpuConfig::new(0, VcpuFeatures::PSCI_0_2), Some(GicConfig::virt(64)))
    }

    /// The general form: vCPU 0 configured by `config`, and a GIC if `gic` says where.
    pub fn build(
        accel: &Accelerator,
        code: &[u32],
        config: &VcpuConfig,
        gic: Option<GicConfig>,
    ) -> Result<Self, Failure> {
        Self::build_in(accel, &VmConfig::default(), code, config, gic)
    }

    /// As [`TestGuest::build`], in a VM created with `vm_config`.
    pub fn build_in(
        accel: &Accelerator,
        vm_config: &VmConfig,
        code: &[u32],
        config: &VcpuConfig,
        gic: Option<GicConfig>,
    ) -> Result<Self, Failure> {
        let vm = accel.create_vm(vm_config)?;
        if let Some(gic) = gic {
            let promised = accel.probe().caps.gic_v3;
            crate::extension(vm.gic(), "in-kernel GICv3", promised)?.create(&gic)?;
        }
        let ram = GuestRam::new(RAM_BASE, RAM_SIZE)?;
        // SAFETY: the RAM lives in the returned TestGuest next to the vCPU, and fields drop in
        // declaration order: the VM, then the RAM, then the vCPU, which never runs again by then.
        unsafe { ram.map_into(&vm) }?;
        for (at, words) in image(code) {
            ram.write_code(at, &words)?;
        }
        let mut vcpu = vm.create_vcpu(config)?;
        let mut regs = vcpu.get_core()?;
        regs.pc = RAM_BASE;
        regs.pstate = PSTATE_EL1H_DAIF;
        vcpu.put_core(&regs, PutLevel::RESET)?;
        Ok(Self { vm, ram, vcpu })
    }

    /// Runs until an exit other than an interruption. An exception the guest did not expect
    /// fails the case with its syndrome.
    pub fn run(&mut self) -> Result<VcpuExit, Failure> {
        loop {
            match self.vcpu.run()? {
                VcpuExit::Interrupted => continue,
                VcpuExit::MmioWrite(a) if a.addr == EXCEPTION_MMIO => {
                    let elr = self.vcpu.get_core()?.x[1];
                    return Err(Failure::Fail(format!(
                        "the guest took an unexpected exception: ESR_EL1 {:#x}, ELR_EL1 {elr:#x}",
                        a.value()
                    )));
                }
                exit => return Ok(exit),
            }
        }
    }

    /// Runs until the guest reports an exception through its vector table.
    pub fn expect_exception(&mut self) -> Result<TakenException, Failure> {
        let mut words = [0u64; 5];
        for (i, word) in words.iter_mut().enumerate() {
            match self.vcpu.run()? {
                VcpuExit::MmioWrite(a) if a.addr == EXCEPTION_MMIO + 8 * i as u64 => *word = a.value(),
                VcpuExit::Interrupted => {
                    return Err(Failure::Fail("interrupted while waiting for an exception".into()))
                }
                other => {
                    return Err(Failure::Fail(format!("expected the vector table's report, got {other:?}")))
                }
            }
        }
        let [esr, elr, far, offset, spsr] = words;
        Ok(TakenException { esr, elr, far, offset, spsr })
    }

    /// Runs and expects an MMIO write; returns its address, size and value.
    pub fn expect_mmio_write(&mut self) -> Result<(u64, u32, u64), Failure> {
        match self.run()? {
            VcpuExit::MmioWrite(a) => Ok((a.addr, a.len, a.value())),
            other => Err(Failure::Fail(format!("expected an MMIO write exit, got {other:?}"))),
        }
    }

    /// The core registers.
    pub fn core(&mut self) -> Result<CoreRegs, Failure> {
        Ok(self.vcpu.get_core()?)
    }

    /// The VM's GIC (the guest was built with one).
    pub fn gic(&self) -> Result<accel_api::client::Gic, Failure> {
        crate::extension(self.vm.gic(), "in-kernel GICv3", true)
    }

    /// The VM's Linux eventfds, or NOT RUN where the backend has none.
    pub fn eventfds(&self) -> Result<accel_api::client::EventFds, Failure> {
        crate::extension(self.vm.linux_eventfd(), "Linux eventfds (irqfd, ioeventfd)", false)
    }

    /// The VM's dirty-page logging, or NOT RUN where the backend has none.
    pub fn dirty_log(&self) -> Result<accel_api::client::DirtyLog, Failure> {
        crate::extension(self.vm.dirty_log(), "dirty-page logging", false)
    }
}
