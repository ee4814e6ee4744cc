//! A minimal machine for cases: one VM with a little RAM, guest code at its start, and vCPUs.

use accel_api::{
    client::{Accelerator, Vcpu, Vm},
    CoreRegs, PutLevel, VcpuConfig, VcpuExit, VcpuFeatures, VmConfig,
};
use accel_host::vmm::{ram::GuestRam, PSTATE_EL1H_DAIF};

use crate::Failure;

/// Where test RAM starts.
pub const RAM_BASE: u64 = 0x4000_0000;
/// How much RAM a test guest gets.
pub const RAM_SIZE: u64 = 2 << 20;
/// An address with no memory behind it: accesses exit to the host as MMIO.
pub const MMIO_BASE: u64 = 0x0a00_0000;
/// PSCI 0.2 SYSTEM_OFF function id (SMC32).
pub const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
/// PSCI 0.2 SYSTEM_RESET function id (SMC32).
pub const PSCI_SYSTEM_RESET: u64 = 0x8400_0009;

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
    /// Builds a guest running `code` from the start of RAM at EL1h with interrupts masked.
    pub fn new(accel: &Accelerator, code: &[u32]) -> Result<Self, Failure> {
        let vm = accel.create_vm(&VmConfig::default())?;
        let ram = GuestRam::new(&vm, RAM_BASE, RAM_SIZE)?;
        ram.write_code(RAM_BASE, code)?;
        let mut vcpu = vm.create_vcpu(&VcpuConfig {
            index: 0,
            features: VcpuFeatures::PSCI_0_2,
        })?;
        let mut regs = vcpu.get_core()?;
        regs.pc = RAM_BASE;
        regs.pstate = PSTATE_EL1H_DAIF;
        vcpu.put_core(&regs, PutLevel::Reset)?;
        Ok(Self { vm, ram, vcpu })
    }

    /// Runs until an exit other than an interruption.
    pub fn run(&mut self) -> Result<VcpuExit, Failure> {
        loop {
            match self.vcpu.run()? {
                VcpuExit::Interrupted => continue,
                exit => return Ok(exit),
            }
        }
    }

    /// Runs and expects an MMIO write; returns its address, size and value.
    pub fn expect_mmio_write(&mut self) -> Result<(u64, u32, u64), Failure> {
        match self.run()? {
            VcpuExit::MmioWrite(a) => Ok((a.addr, a.len, a.value())),
            other => Err(Failure::Fail(format!(
                "expected an MMIO write exit, got {other:?}"
            ))),
        }
    }

    /// The core registers.
    pub fn core(&mut self) -> Result<CoreRegs, Failure> {
        Ok(self.vcpu.get_core()?)
    }
}
