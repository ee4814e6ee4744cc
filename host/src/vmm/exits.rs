//! One guest entry and what its exit comes to: MMIO on the bus, system events, and a hardware
//! memory error signalled while the vCPU ran.

use accel_api::{client::Vcpu, AccelError, DebugExit, ErrorKind, Result, SystemEventKind, VcpuExit};

use super::{
    bus::{Bus, ExitStats},
    machine::Outcome,
    memory_error,
    ram::GuestRam,
};

/// Completes an MMIO exit on the bus (the bus counts it).
fn mmio(vcpu: &mut Vcpu, bus: &Bus, exit: VcpuExit) -> Result<()> {
    match exit {
        VcpuExit::MmioWrite(access) => bus.write(access.addr, access.value()),
        VcpuExit::MmioRead(access) => vcpu.set_mmio_read_data(bus.read(access.addr))?,
        _ => {}
    }
    Ok(())
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
    Debug(DebugExit),
}

/// Runs the guest once and handles the exit.
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
    let stats = bus.stats();
    let exit = memory_error::in_run(|| vcpu.run())?;
    ExitStats::count(match &exit {
        VcpuExit::MmioRead(_) | VcpuExit::MmioWrite(_) => {
            return mmio(vcpu, bus, exit).map(|()| Step::Continue)
        }
        VcpuExit::SystemEvent { .. } => &stats.system_events,
        VcpuExit::Interrupted => &stats.interrupted,
        VcpuExit::Debug(_) => &stats.debug,
        _ => &stats.other,
    });
    match exit {
        VcpuExit::MmioWrite(_) | VcpuExit::MmioRead(_) => {}
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
            return fault(format!("internal error {suberror} (data {data:x?})"))
        }
        VcpuExit::FailEntry { reason, cpu } => {
            return fault(format!("entry failed on CPU {cpu}, reason {reason:#x}"))
        }
        VcpuExit::ArmNisv { esr_iss, fault_ipa } => {
            return fault(format!(
                "data abort at IPA {fault_ipa:#x} with no instruction syndrome (ISS {esr_iss:#x})"
            ))
        }
        VcpuExit::BackendSpecific { reason } => return fault(format!("exit reason {reason} of the backend")),
        VcpuExit::Unknown { kind, .. } => return fault(format!("unknown exit kind {kind}")),
    }
    Ok(Step::Continue)
}
