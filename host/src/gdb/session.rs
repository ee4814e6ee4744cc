//! The gdb session: serves the protocol until the guest ends, gdb kills it, or gdb goes away,
//! and then lets the guest run on without the debugger.

use std::{
    collections::VecDeque,
    io::Write,
    sync::{mpsc, Arc},
};

use accel_api::{client::Debug, AccelError, RegClass, Result, VcpuFeatures};
use gdbstub::{
    common::Signal,
    stub::{state_machine::GdbStubStateMachine, DisconnectReason, GdbStub, MultiThreadStopReason},
};

use super::{
    arch::target_xml,
    connection::{accel_err, connect, Conn},
    target::{index_tid, GdbTarget},
    vcpu_thread::{Command, Event, Stop, VcpuHandle},
    GdbOptions,
};
use crate::vmm::{ram::GuestRam, Outcome};

/// Serves gdb over `options` for the vCPUs behind `vcpus`, whose threads report on `events`.
/// Returns when the guest ends or gdb kills it; after a detach the guest runs on without the
/// debugger until it ends.
pub fn serve_session(
    options: &GdbOptions,
    vcpus: Vec<VcpuHandle>,
    debug: Debug,
    ram: Arc<GuestRam>,
    events_tx: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
) -> Result<Outcome> {
    let writer = connect(options, events_tx)?;
    let mut machine = GdbTarget::new(vcpus, debug, ram, !options.wait);
    let sve_vq = if machine.vcpus.first().is_some_and(|h| h.features.contains(VcpuFeatures::SVE)) {
        Some(machine.exec(0, |v| v.get_sve().map(|s| s.vq))?)
    } else {
        None
    };
    let sysregs = machine.exec(0, |v| v.get_regs(RegClass::SYS))?;
    machine.xml = Some(target_xml(sve_vq, &sysregs));

    let mut pending: VecDeque<u8> = VecDeque::new();
    // gdb finds the machine stopped.
    machine.stop_others(&events, &mut pending);
    // Room for a whole `G` packet at the largest SVE vector length.
    let mut packet_buffer = vec![0u8; 0x10000];
    let writer = Arc::new(std::sync::Mutex::new(writer));
    loop {
        match run_protocol(&mut machine, &writer, &mut packet_buffer, &events, &mut pending) {
            Ok(Flow::Ended(outcome)) => return Ok(outcome),
            Ok(Flow::Detached) => return detach(&mut machine, &events),
            Err(e) if e.is_connection_error() => {
                log::warn!("gdb: the connection failed ({e}); detaching");
                return detach(&mut machine, &events);
            }
            Err(e) if e.is_target_error() => return Err(accel_err(format!("gdb: {e}"))),
            Err(e) => {
                // Malformed input must not end the session: stop the machine and start the
                // protocol afresh; gdb resends what it did not get an answer to.
                log::warn!("gdb: bad input from the client ({e}); restarting the protocol");
                machine.stop_others(&events, &mut pending);
            }
        }
    }
}

/// How a protocol run ended.
enum Flow {
    /// The guest ended, or gdb killed it.
    Ended(Outcome),
    /// gdb went away or detached.
    Detached,
}

type StubError = gdbstub::stub::GdbStubError<AccelError, std::io::Error>;

/// Runs the gdb protocol over `writer` and the bytes from `events` until it ends or fails.
fn run_protocol(
    machine: &mut GdbTarget,
    writer: &Arc<std::sync::Mutex<Box<dyn Write + Send>>>,
    packet_buffer: &mut [u8],
    events: &mpsc::Receiver<Event>,
    pending: &mut VecDeque<u8>,
) -> std::result::Result<Flow, StubError> {
    let stub = match GdbStub::builder(Conn(Arc::clone(writer))).with_packet_buffer(packet_buffer).build() {
        Ok(stub) => stub,
        Err(e) => return Ok(Flow::Ended(Outcome::Fault(format!("setting up the gdb stub: {e}")))),
    };
    let mut gdb = stub.run_state_machine(machine)?;
    loop {
        gdb = match gdb {
            GdbStubStateMachine::Idle(g) => {
                let byte = match pending.pop_front() {
                    Some(b) => b,
                    None => match events.recv() {
                        Ok(Event::Byte(b)) => b,
                        Ok(Event::Quit) => return Ok(Flow::Ended(Outcome::Quit)),
                        Ok(Event::Closed) | Err(_) => return Ok(Flow::Detached),
                        Ok(Event::Vcpu(i, stop)) => {
                            log::warn!("gdb: vCPU {i} reported {stop:?} while stopped");
                            gdb = GdbStubStateMachine::Idle(g);
                            continue;
                        }
                    },
                };
                g.incoming_data(machine, byte)?
            }
            GdbStubStateMachine::Running(g) => match events.recv() {
                Ok(Event::Byte(b)) => g.incoming_data(machine, b)?,
                Ok(Event::Quit) => return Ok(Flow::Ended(Outcome::Quit)),
                Ok(Event::Closed) | Err(_) => return Ok(Flow::Detached),
                Ok(Event::Vcpu(i, stop)) => {
                    machine.running[i as usize] = false;
                    let outcome = if let Stop::Exited(o) = &stop { Some(o.clone()) } else { None };
                    machine.stop_others(events, pending);
                    let reason = match machine.stop_reason(i, stop) {
                        Ok(r) => r,
                        Err(e) => {
                            log::error!("gdb: vCPU {i} failed: {e}");
                            return Ok(Flow::Ended(Outcome::Fault(e.to_string())));
                        }
                    };
                    let next = g.report_stop(machine, reason)?;
                    if let Some(outcome) = outcome {
                        return Ok(Flow::Ended(outcome));
                    }
                    next
                }
            },
            GdbStubStateMachine::CtrlCInterrupt(g) => {
                machine.stop_others(events, pending);
                let reason =
                    MultiThreadStopReason::SignalWithThread { tid: index_tid(0), signal: Signal::SIGINT };
                g.interrupt_handled(machine, Some(reason))?
            }
            GdbStubStateMachine::Disconnected(g) => match g.get_reason() {
                DisconnectReason::Kill => {
                    log::info!("gdb killed the guest");
                    return Ok(Flow::Ended(Outcome::Killed));
                }
                _ => return Ok(Flow::Detached),
            },
        };
    }
}

/// Removes every breakpoint and lets the guest run on until it ends.
fn detach(machine: &mut GdbTarget, events: &mpsc::Receiver<Event>) -> Result<Outcome> {
    log::info!("gdb detached; the guest runs on");
    machine.debug.remove_all()?;
    machine.actions.clear();
    if !machine.running.iter().any(|r| *r) {
        machine.resume_all()?;
    }
    loop {
        match events.recv() {
            Ok(Event::Vcpu(_, Stop::Exited(outcome))) => return Ok(outcome),
            Ok(Event::Vcpu(_, Stop::Failed(e))) => return Err(e),
            Ok(Event::Quit) => return Ok(Outcome::Quit),
            Ok(Event::Vcpu(i, _)) => {
                let _ = machine.vcpus[i as usize].commands.send(Command::Resume);
            }
            Ok(_) => {}
            Err(_) => return Err(AccelError::bad_state("every vCPU thread ended")),
        }
    }
}
