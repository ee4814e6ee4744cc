//! The plain run loop: one thread per vCPU, each running its vCPU until the guest ends the
//! machine or faults.

use std::sync::{mpsc, Arc};

use accel_api::{client::Vcpu, AccelError, ErrorKind, Result};

use super::{
    bus::Bus,
    console::Escape,
    exits::{step, Step},
    machine::{Machine, Outcome},
    memory_error,
    ram::GuestRam,
};

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

/// Runs the machine until the guest powers off, resets, crashes or faults on any vCPU, or the
/// user quits from the console (when `console` gives its escape key, the host's stdin is the
/// guest's console input).
///
/// vCPU threads that are still inside the guest when another vCPU ends the run are left
/// detached; they end with the process.
pub fn run(machine: Machine, console: Option<Escape>) -> Result<Outcome> {
    let (tx, rx) = mpsc::channel();
    let _terminal = match console {
        Some(escape) => {
            let quit = tx.clone();
            machine.start_console(escape, move || {
                let _ = quit.send(Ok(Outcome::Quit));
            })?
        }
        None => None,
    };
    let Machine { vcpus, bus, ram, .. } = machine;
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
    bus.flush_console();
    Ok(outcome)
}
