//! The machine: guest RAM with the image loaded, the bus, and vCPUs ready at the entry point,
//! built on any backend. A plain run loop ([`super::run::run`]) or the gdb server drives it.

use std::{io::Write, sync::Arc};

use accel_api::{
    client::{Accelerator, Vcpu, Vm},
    AccelError, PutLevel, Result, VcpuConfig, VcpuFeatures, VmConfig,
};

use super::{bus::Bus, image, ram::GuestRam};

/// The guest physical address of RAM.
pub const RAM_BASE: u64 = 0x4000_0000;
/// The granule of RAM sizes.
pub const MIN_RAM: u64 = 1 << 20;
/// PSTATE at entry: EL1h with D, A, I and F masked.
pub const PSTATE_EL1H_DAIF: u64 = 0x3c5;

/// How to build the machine.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// Number of vCPUs; vCPU 0 starts at the image's entry, the others wait for PSCI CPU_ON.
    pub cpus: u32,
    /// RAM size in bytes.
    pub mem_size: u64,
    /// vCPU features beyond PSCI 0.2 (SVE, PMUv3, pointer authentication...).
    pub features: VcpuFeatures,
}

/// How a guest run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// PSCI SYSTEM_OFF.
    PowerOff,
    /// PSCI SYSTEM_RESET: the machine stops rather than reboots.
    Reset,
    /// The guest reported a crash (a system event of kind crash).
    Crash,
    /// The guest did something the machine cannot continue from.
    Fault(String),
    /// The debugger ended the run (gdb's `kill`).
    Killed,
}

impl Outcome {
    /// The host's exit code for this outcome: 0 off or reset, 2 fault, 3 crash.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::PowerOff | Outcome::Reset | Outcome::Killed => 0,
            Outcome::Fault(_) => 2,
            Outcome::Crash => 3,
        }
    }
}

/// A built machine, ready to run.
pub struct Machine {
    /// The VM.
    pub vm: Vm,
    /// Guest RAM; every vCPU thread holds a clone, so it stays mapped while a vCPU can run.
    pub ram: Arc<GuestRam>,
    /// The MMIO devices.
    pub bus: Arc<Bus>,
    /// The vCPUs, by index; vCPU 0 at the entry point, the others powered off.
    pub vcpus: Vec<Vcpu>,
    /// What the machine was built from.
    pub config: MachineConfig,
}

/// vCPU `index`'s features: PSCI 0.2, the machine's extra features, and power-off for all but
/// the boot vCPU.
pub fn vcpu_features(config: &MachineConfig, index: u32) -> VcpuFeatures {
    let mut features = VcpuFeatures::PSCI_0_2 | config.features;
    if index > 0 {
        features |= VcpuFeatures::POWER_OFF;
    }
    features
}

impl Machine {
    /// Builds a machine on `accel` and loads `image`; console output goes to `console`.
    pub fn build(
        accel: &Accelerator,
        config: &MachineConfig,
        image: &[u8],
        console: Box<dyn Write + Send>,
    ) -> Result<Self> {
        if config.cpus == 0 {
            return Err(AccelError::invalid("at least one vCPU is needed"));
        }
        if config.mem_size < MIN_RAM || config.mem_size % MIN_RAM != 0 {
            return Err(AccelError::invalid(format!(
                "RAM size {:#x} must be a non-zero multiple of 1 MiB",
                config.mem_size
            )));
        }
        let vm = accel.create_vm(&VmConfig::default())?;
        let ram = Arc::new(GuestRam::new(RAM_BASE, config.mem_size)?);
        // SAFETY: every vCPU thread holds a clone of `ram`, so the RAM outlives every vCPU that
        // can run; the VM itself never touches it after the vCPUs are gone.
        unsafe { ram.map_into(&vm) }?;
        let loaded = image::load(&ram, image)?;
        log::info!(
            "image loaded at {:#x}..{:#x}, entry {:#x}",
            loaded.extent.0,
            loaded.extent.1,
            loaded.entry
        );
        let mut vcpus = Vec::new();
        for index in 0..config.cpus {
            vcpus.push(vm.create_vcpu(&VcpuConfig::new(index, vcpu_features(config, index)))?);
        }
        let boot = &mut vcpus[0];
        let mut regs = boot.get_core()?;
        regs.pc = loaded.entry;
        regs.pstate = PSTATE_EL1H_DAIF;
        boot.put_core(&regs, PutLevel::RESET)?;
        Ok(Self { vm, ram, bus: Arc::new(Bus::new(console)), vcpus, config: config.clone() })
    }
}
