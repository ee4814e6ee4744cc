//! The machine: guest RAM with the payload loaded, the GICv3 (and its ITS) through the backend,
//! the device tree, the bus, and vCPUs ready at the entry point, built on any backend. A plain run
//! loop ([`super::run::run`]) or the gdb server drives it.
//!
//! Building has two halves. [`Plan::new`] checks everything it can against the backend's probe
//! and the boot protocol before the backend is opened: the vCPU count, the RAM size against the
//! IPA size, the command line, and where a Linux kernel, its initrd and the device tree go.
//! [`Machine::build`] then creates the VM.

use std::{io::Write, sync::Arc};

use accel_api::{
    client::{Accelerator, Gic, Vcpu, Vm},
    AccelError, Capabilities, ErrorKind, GicConfig, PutLevel, Result, VcpuConfig, VcpuFeatures, VmConfig,
};

use super::{
    boot::{self, BootPlan, ImageHeader, LinuxLayout},
    bus::Bus,
    console::{spawn_reader, Escape, RawTerminal},
    fdt::{self, Chosen, MachineDescription},
    image,
    layout::{self, RAM_BASE},
    ram::{GuestRam, VmWithRam},
};

/// The granule of RAM sizes.
pub const MIN_RAM: u64 = 1 << 20;
/// The IPA size a backend gives by default (KVM's 40 bits); RAM beyond asks for more.
const DEFAULT_IPA_BITS: u32 = 40;

/// What the machine boots.
#[derive(Debug, Clone)]
pub enum Payload {
    /// An AArch64 ELF or raw binary; a raw file with the arm64 Image header boots as Linux.
    Image(Vec<u8>),
    /// A Linux arm64 `Image` and an optional initrd.
    Linux {
        /// The kernel.
        kernel: Vec<u8>,
        /// The initrd.
        initrd: Option<Vec<u8>>,
    },
}

/// How to build the machine.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// Number of vCPUs; vCPU 0 starts at the entry point, the others wait for PSCI CPU_ON.
    pub cpus: u32,
    /// RAM size in bytes.
    pub mem_size: u64,
    /// vCPU features beyond PSCI 0.2 (SVE, PMUv3, pointer authentication...).
    pub features: VcpuFeatures,
    /// `/chosen/bootargs`: the kernel command line, or a bare-metal program's arguments.
    pub cmdline: String,
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
    /// The user quit with the console's escape key.
    Quit,
}

impl Outcome {
    /// The host's exit code for this outcome: 0 off, reset, kill or quit, 2 fault, 3 crash.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::PowerOff | Outcome::Reset | Outcome::Killed | Outcome::Quit => 0,
            Outcome::Fault(_) => 2,
            Outcome::Crash => 3,
        }
    }
}

/// A machine checked before any backend is opened.
#[derive(Debug, Clone)]
pub struct Plan {
    config: MachineConfig,
    payload: Payload,
    linux: Option<LinuxLayout>,
    ipa_bits: u32,
}

fn invalid(message: String) -> AccelError {
    AccelError::invalid(message)
}

impl Plan {
    /// Checks `config` and `payload` against the backend's capabilities and the boot protocol.
    pub fn new(config: MachineConfig, payload: Payload, caps: &Capabilities) -> Result<Self> {
        if config.cpus == 0 {
            return Err(invalid("at least one vCPU is needed".into()));
        }
        if config.cpus > caps.max_vcpus {
            return Err(invalid(format!(
                "{} vCPUs: this backend allows at most {}",
                config.cpus, caps.max_vcpus
            )));
        }
        if config.cpus > layout::MAX_VCPUS {
            return Err(invalid(format!(
                "{} vCPUs: the machine's GICv3 redistributor window holds at most {}",
                config.cpus,
                layout::MAX_VCPUS
            )));
        }
        if config.mem_size < MIN_RAM || config.mem_size % MIN_RAM != 0 {
            return Err(invalid(format!(
                "RAM size {:#x} must be a non-zero multiple of 1 MiB",
                config.mem_size
            )));
        }
        let ram_end = RAM_BASE
            .checked_add(config.mem_size)
            .ok_or_else(|| invalid(format!("RAM size {:#x} is too large", config.mem_size)))?;
        let needed_bits = 64 - (ram_end - 1).leading_zeros();
        if needed_bits > caps.ipa_bits {
            return Err(invalid(format!(
                "{} MiB of RAM at {RAM_BASE:#x} ends at {ram_end:#x}, beyond the {}-bit guest physical \
                 address space this backend offers",
                config.mem_size >> 20,
                caps.ipa_bits
            )));
        }
        let ipa_bits = if needed_bits <= DEFAULT_IPA_BITS { 0 } else { needed_bits };
        boot::check_cmdline(&config.cmdline).map_err(boot_error)?;
        let payload = match payload {
            // QEMU boots a raw file with the arm64 Image header as Linux; so does this machine.
            Payload::Image(bytes) if ImageHeader::parse(&bytes).is_ok() => {
                Payload::Linux { kernel: bytes, initrd: None }
            }
            other => other,
        };
        let linux = match &payload {
            Payload::Linux { kernel, initrd } => Some(
                LinuxLayout::plan(RAM_BASE, config.mem_size, kernel, initrd.as_ref().map(|i| i.len() as u64))
                    .map_err(boot_error)?,
            ),
            Payload::Image(bytes) if bytes.is_empty() => return Err(invalid("the image is empty".into())),
            Payload::Image(bytes) if bytes.len() as u64 > config.mem_size => {
                return Err(invalid(format!(
                    "the image ({} bytes) does not fit in guest RAM ({} bytes)",
                    bytes.len(),
                    config.mem_size
                )))
            }
            Payload::Image(_) => None,
        };
        Ok(Self { config, payload, linux, ipa_bits })
    }

    /// What the machine is built from.
    pub fn config(&self) -> &MachineConfig {
        &self.config
    }

    /// True when the payload boots as Linux.
    pub fn is_linux(&self) -> bool {
        self.linux.is_some()
    }

    /// Loads the payload into `ram` (this plan's RAM, at [`RAM_BASE`]) with the device tree of
    /// `description`, whose initrd it sets for a Linux payload: the part of building that needs
    /// no backend. Returns the device tree and where everything went.
    pub fn load(&self, ram: &GuestRam, description: &mut MachineDescription) -> Result<(Vec<u8>, BootPlan)> {
        match (&self.payload, &self.linux) {
            (Payload::Linux { kernel, initrd }, Some(layout)) => {
                description.chosen.initrd = layout.initrd.clone();
                let dtb = fdt::build(description).map_err(|e| invalid(e.to_string()))?;
                let boot =
                    boot::load_linux(ram, layout, kernel, initrd.as_deref(), &dtb).map_err(boot_error)?;
                Ok((dtb, boot))
            }
            (Payload::Image(bytes), _) => {
                let loaded = image::load(ram, bytes)?;
                let dtb = fdt::build(description).map_err(|e| invalid(e.to_string()))?;
                let boot = boot::load_bare_metal(ram, &loaded, &dtb).map_err(boot_error)?;
                Ok((dtb, boot))
            }
            (Payload::Linux { .. }, None) => {
                Err(AccelError::bad_state("a Linux payload without a planned layout"))
            }
        }
    }
}

fn boot_error(e: boot::BootError) -> AccelError {
    AccelError::invalid(e.to_string())
}

/// A built machine, ready to run.
///
/// Fields are dropped in declaration order: the VM before the RAM it maps (as [`VmWithRam`]
/// keeps them while building).
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
    /// The device tree the guest got.
    pub dtb: Vec<u8>,
    /// Where everything went, and where the boot vCPU starts.
    pub boot: BootPlan,
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

/// Creates the GICv3 with its ITS when the backend offers one; a plugin of an ABI before the ITS
/// refuses it, and the machine goes on without. Returns the GIC and whether it has an ITS.
fn create_gic(vm: &Vm, caps: &Capabilities) -> Result<(Gic, bool)> {
    let gic = vm.gic().ok_or_else(|| {
        AccelError::unsupported("this backend has no in-kernel GICv3, which the machine needs")
    })?;
    if caps.gic_its {
        match gic
            .create(&GicConfig { its_base: Some(layout::GIC_ITS_BASE), ..GicConfig::virt(layout::NUM_SPIS) })
        {
            Ok(()) => return Ok((gic, true)),
            Err(e) if e.kind == ErrorKind::UNSUPPORTED => log::info!("no GICv3 ITS: {e}"),
            Err(e) => return Err(e),
        }
    }
    gic.create(&GicConfig::virt(layout::NUM_SPIS))?;
    Ok((gic, false))
}

/// Seeds for the guest: `rng-seed` bytes and a `kaslr-seed`, from the host's random source.
fn seeds() -> (Vec<u8>, u64) {
    use rand::RngCore;
    let mut rng = rand::rng();
    let mut seed = vec![0u8; 32];
    rng.fill_bytes(&mut seed);
    (seed, rng.next_u64())
}

impl Machine {
    /// Starts reading the host's stdin into the UART, in raw mode when it is a terminal (see
    /// [`console`](super::console)); `quit` runs when the user types the escape key and `x`.
    /// Returns the guard that restores the terminal, to keep for the whole run.
    pub fn start_console(
        &self,
        escape: Escape,
        quit: impl FnOnce() + Send + 'static,
    ) -> Result<Option<RawTerminal>> {
        let raw = RawTerminal::enter()
            .map_err(|e| AccelError::from(e).context("setting the terminal to raw mode"))?;
        if raw.is_some() && escape.byte().is_some() {
            eprintln!("accel-host: {escape} x quits, {escape} h for help");
        }
        let bus = Arc::clone(&self.bus);
        let input = move |mut bytes: &[u8]| {
            while !bytes.is_empty() {
                let taken = bus.push_input(bytes);
                bytes = &bytes[taken..];
                if taken == 0 {
                    // The UART's backlog is full until the guest reads; wait for it.
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        };
        spawn_reader(escape, input, quit)
            .map_err(|e| AccelError::from(e).context("starting the console reader"))?;
        Ok(raw)
    }

    /// Builds the machine of `plan` on `accel`; console output goes to `console`.
    pub fn build(accel: &Accelerator, plan: Plan, console: Box<dyn Write + Send>) -> Result<Self> {
        let config = &plan.config;
        let caps = accel.probe().caps;
        let vm = accel.create_vm(&VmConfig { ipa_bits: plan.ipa_bits, ..VmConfig::default() })?;
        let ram = GuestRam::new(RAM_BASE, config.mem_size)?;
        // SAFETY: every vCPU thread holds a clone of the RAM, so it outlives every vCPU that can
        // run. On an error below, `machine` drops the VM before the RAM (its field order), and
        // the vCPUs, declared after it, before both.
        let machine = unsafe { VmWithRam::map(vm, ram) }?;
        let (vm, ram) = (machine.vm(), machine.ram());
        let (gic, its) = create_gic(vm, &caps)?;
        let mut vcpus = Vec::new();
        for index in 0..config.cpus {
            vcpus.push(vm.create_vcpu(&VcpuConfig::new(index, vcpu_features(config, index)))?);
        }
        let mpidrs = vcpus.iter_mut().map(Vcpu::mpidr).collect::<Result<Vec<u64>>>()?;
        let (rng_seed, kaslr_seed) = seeds();
        let mut description = MachineDescription {
            ram_base: RAM_BASE,
            ram_size: config.mem_size,
            mpidrs,
            its,
            num_spis: layout::NUM_SPIS,
            pmu: config.features.contains(VcpuFeatures::PMU_V3),
            chosen: Chosen {
                bootargs: config.cmdline.clone(),
                initrd: None,
                rng_seed,
                kaslr_seed: Some(kaslr_seed),
            },
        };
        let (dtb, boot) = plan.load(ram, &mut description)?;
        log::info!(
            "loaded {:#x}..{:#x}, device tree at {:#x}, entry {:#x}",
            boot.kernel.start,
            boot.kernel.end,
            boot.dtb.start,
            boot.entry
        );
        let cpu0 = &mut vcpus[0];
        let mut regs = cpu0.get_core()?;
        regs.pc = boot.entry;
        regs.x[..4].copy_from_slice(&boot.x0_to_x3());
        regs.pstate = boot.pstate;
        cpu0.put_core(&regs, PutLevel::RESET)?;
        let bus = Arc::new(Bus::new(console, Some(gic)));
        let (vm, ram) = machine.into_parts();
        Ok(Self { vm, ram, bus, vcpus, config: plan.config, dtb, boot })
    }
}
