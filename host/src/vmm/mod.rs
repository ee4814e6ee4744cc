//! A small VMM on top of any backend: guest RAM, an image loader, a PL011 console, PSCI through
//! the backend, and one thread per vCPU.
//!
//! The machine's memory map follows QEMU's `virt` board where it overlaps:
//!
//! | range | device |
//! | --- | --- |
//! | `0x0900_0000 .. +0x1000` | PL011 UART |
//! | `0x4000_0000 .. +mem` | RAM; images load here |

pub mod boot;
pub mod console;
pub mod fdt;
pub mod image;
pub mod layout;
pub mod memory_error;
pub mod pl011;
pub mod ram;

use std::{
    collections::HashSet,
    io::Write,
    sync::{mpsc, Arc, Mutex},
};

use accel_api::{
    client::{Accelerator, Vcpu},
    AccelError, ErrorKind, PutLevel, Result, SystemEventKind, VcpuConfig, VcpuExit, VcpuFeatures, VmConfig,
};

use self::{pl011::Pl011, ram::GuestRam};

/// The guest physical address of RAM.
pub const RAM_BASE: u64 = 0x4000_0000;
/// The guest physical address of the PL011 UART.
pub const UART_BASE: u64 = 0x0900_0000;
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
    /// Serve gdb, if set.
    pub gdb: Option<GdbConfig>,
}

/// How to serve gdb.
#[derive(Debug, Clone)]
pub struct GdbConfig {
    /// Where.
    pub options: crate::gdb::GdbOptions,
    /// Start with every vCPU stopped, waiting for gdb.
    pub wait: bool,
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

/// The MMIO devices of the machine.
pub struct Bus {
    uart: Mutex<Pl011<Box<dyn Write + Send>>>,
    warned: Mutex<HashSet<u64>>,
}

impl Bus {
    fn uart_offset(addr: u64) -> Option<u64> {
        addr.checked_sub(UART_BASE).filter(|o| *o < pl011::PL011_SIZE)
    }

    fn unmapped(&self, addr: u64, what: &str) {
        if self.warned.lock().is_ok_and(|mut w| w.insert(addr)) {
            log::warn!("guest {what} unmapped MMIO address {addr:#x}: reads as zero, writes ignored");
        }
    }

    fn read(&self, addr: u64) -> u64 {
        match Self::uart_offset(addr) {
            Some(offset) => self.uart.lock().map_or(0, |mut u| u64::from(u.read(offset))),
            None => {
                self.unmapped(addr, "read from");
                0
            }
        }
    }

    fn write(&self, addr: u64, value: u64) {
        match Self::uart_offset(addr) {
            Some(offset) => {
                if let Ok(mut u) = self.uart.lock() {
                    u.write(offset, value as u32);
                }
            }
            None => self.unmapped(addr, "write to"),
        }
    }
}

/// What one guest entry came to.
pub enum Step {
    /// Handled (MMIO, a resumable event): run again.
    Continue,
    /// The guest ended the machine.
    Ended(Outcome),
    /// `run` was interrupted (a kick or a signal).
    Interrupted,
    /// A debug exception reached the monitor.
    Debug(accel_api::DebugExit),
}

/// Runs the guest once and handles the exit: MMIO on the bus, system events, and a hardware
/// memory error signalled while the vCPU ran.
pub fn step(vcpu: &mut Vcpu, bus: &Bus, ram: &GuestRam) -> Result<Step> {
    let index = vcpu.index();
    if let Some(error) = memory_error::take_pending() {
        match (error.kind, ram.host_to_guest(error.host_addr)) {
            (memory_error::MemoryErrorKind::ActionRequired, Some(gpa)) => {
                log::warn!(
                    "vCPU {index}: hardware memory error at guest address {gpa:#x}; injecting an abort"
                );
                memory_error::inject_sea(vcpu)?;
            }
            (memory_error::MemoryErrorKind::ActionOptional, Some(gpa)) => {
                log::warn!("vCPU {index}: guest page at {gpa:#x} reported bad (action optional)");
            }
            (_, None) => {
                return Err(AccelError::new(
                    ErrorKind::GUEST,
                    format!(
                        "hardware memory error at host address {:#x}, outside guest RAM",
                        error.host_addr
                    ),
                ))
            }
        }
    }
    let fault = |why: String| Ok(Step::Ended(Outcome::Fault(format!("vCPU {index}: {why}"))));
    match vcpu.run()? {
        VcpuExit::MmioWrite(access) => bus.write(access.addr, access.value()),
        VcpuExit::MmioRead(access) => vcpu.set_mmio_read_data(bus.read(access.addr))?,
        VcpuExit::SystemEvent { kind, .. } => match kind {
            SystemEventKind::SHUTDOWN => return Ok(Step::Ended(Outcome::PowerOff)),
            SystemEventKind::RESET => {
                log::info!("vCPU {index}: the guest requested a reset; the machine stops");
                return Ok(Step::Ended(Outcome::Reset));
            }
            SystemEventKind::CRASH => return Ok(Step::Ended(Outcome::Crash)),
            SystemEventKind::SUSPEND | SystemEventKind::WAKEUP => {
                log::info!("vCPU {index}: system {} event; resuming", kind.name());
            }
            other => return fault(format!("unknown system event {}", other.0)),
        },
        VcpuExit::Interrupted => return Ok(Step::Interrupted),
        VcpuExit::Debug(d) => return Ok(Step::Debug(d)),
        VcpuExit::InternalError { suberror, data } => {
            return fault(format!("internal error {suberror} (data {:x?})", data.as_slice()))
        }
        VcpuExit::FailEntry { reason, cpu } => {
            return fault(format!("entry failed on CPU {cpu}, reason {reason:#x}"))
        }
        VcpuExit::ArmNisv { esr_iss, fault_ipa } => {
            return fault(format!(
                "data abort at IPA {fault_ipa:#x} with no instruction syndrome (ISS {esr_iss:#x})"
            ))
        }
        VcpuExit::Unknown { reason } => return fault(format!("unknown exit reason {reason}")),
    }
    Ok(Step::Continue)
}

fn vcpu_loop(vcpu: &mut Vcpu, bus: &Bus, ram: &GuestRam) -> Result<Outcome> {
    loop {
        match step(vcpu, bus, ram)? {
            Step::Continue | Step::Interrupted => {}
            Step::Ended(outcome) => return Ok(outcome),
            Step::Debug(d) => {
                return Ok(Outcome::Fault(format!(
                    "vCPU {}: debug exception (ESR {:#x}) with no debugger attached",
                    vcpu.index(),
                    d.esr
                )))
            }
        }
    }
}

/// vCPU `index`'s features: PSCI 0.2, the machine's extra features, and power-off for all but
/// the boot vCPU.
fn vcpu_features(config: &MachineConfig, index: u32) -> VcpuFeatures {
    let mut features = VcpuFeatures::PSCI_0_2 | config.features;
    if index > 0 {
        features |= VcpuFeatures::POWER_OFF;
    }
    features
}

/// Runs the vCPUs under gdb's control: each on its own thread, driven by the session.
fn run_with_gdb(
    config: &MachineConfig,
    gdb: &GdbConfig,
    vm: &accel_api::client::Vm,
    vcpus: Vec<Vcpu>,
    bus: &Arc<Bus>,
    ram: &Arc<GuestRam>,
) -> Result<Outcome> {
    use crate::gdb::session::{vcpu_thread, Command, VcpuHandle};
    let debug =
        vm.debug().ok_or_else(|| AccelError::unsupported("this backend does not support guest debug"))?;
    let (events_tx, events) = mpsc::channel();
    let mut handles = Vec::new();
    for (i, vcpu) in vcpus.into_iter().enumerate() {
        let (commands_tx, commands) = mpsc::channel();
        let features = vcpu_features(config, i as u32);
        handles.push(VcpuHandle { commands: commands_tx, kicker: vcpu.kicker(), features });
        let (bus, ram, events_tx) = (Arc::clone(bus), Arc::clone(ram), events_tx.clone());
        let debug =
            vm.debug().ok_or_else(|| AccelError::unsupported("this backend does not support guest debug"))?;
        std::thread::Builder::new()
            .name(format!("vcpu{i}"))
            .spawn(move || {
                memory_error::install();
                vcpu_thread(vcpu, commands, events_tx, debug, |v| step(v, &bus, &ram));
            })
            .map_err(|e| {
                AccelError::new(ErrorKind::NO_RESOURCE, format!("spawning the thread of vCPU {i}: {e}"))
            })?;
    }
    if !gdb.wait {
        for h in &handles {
            let _ = h.commands.send(Command::Resume);
        }
    }
    crate::gdb::serve(&gdb.options, handles, debug, Arc::clone(ram), events_tx, events, !gdb.wait)
}

/// Builds a machine on `accel`, loads `image`, runs it, and returns when the guest powers off,
/// resets, crashes or faults on any vCPU. Console output goes to `console`.
///
/// vCPU threads that are still inside the guest when another vCPU ends the run are left
/// detached; they end with the process.
pub fn run(
    accel: &Accelerator,
    config: &MachineConfig,
    image: &[u8],
    console: Box<dyn Write + Send>,
) -> Result<Outcome> {
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
    // SAFETY: every vCPU thread holds a clone of `ram`, so the RAM outlives every vCPU that can
    // run; the VM itself never touches it after the vCPUs are gone.
    unsafe { ram.map_into(&vm) }?;
    let loaded = image::load(&ram, image)?;
    log::info!("image loaded at {:#x}..{:#x}, entry {:#x}", loaded.extent.0, loaded.extent.1, loaded.entry);

    let mut vcpus = Vec::new();
    for index in 0..config.cpus {
        vcpus.push(vm.create_vcpu(&VcpuConfig::new(index, vcpu_features(config, index)))?);
    }
    let boot = &mut vcpus[0];
    let mut regs = boot.get_core()?;
    regs.pc = loaded.entry;
    regs.pstate = PSTATE_EL1H_DAIF;
    boot.put_core(&regs, PutLevel::Reset)?;

    let bus = Arc::new(Bus { uart: Mutex::new(Pl011::new(console)), warned: Mutex::new(HashSet::new()) });
    if let Some(gdb) = &config.gdb {
        let outcome = run_with_gdb(config, gdb, &vm, vcpus, &bus, &ram);
        if let Ok(mut uart) = bus.uart.lock() {
            let _ = uart.output().flush();
        }
        return outcome;
    }
    let (tx, rx) = mpsc::channel();
    for mut vcpu in vcpus {
        let (bus, tx, ram) = (Arc::clone(&bus), tx.clone(), Arc::clone(&ram));
        let index = vcpu.index();
        std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || {
                memory_error::install();
                let outcome = vcpu_loop(&mut vcpu, &bus, &ram);
                let _ = tx.send(outcome);
                // Each vCPU thread holds the RAM: it stays mapped while any vCPU can run.
                drop(ram);
            })
            .map_err(|e| {
                AccelError::new(ErrorKind::NO_RESOURCE, format!("spawning the thread of vCPU {index}: {e}"))
            })?;
    }
    drop(tx);
    let outcome =
        rx.recv().map_err(|_| AccelError::bad_state("every vCPU thread ended without an outcome"))??;
    if let Ok(mut uart) = bus.uart.lock() {
        let _ = uart.output().flush();
    }
    Ok(outcome)
}
