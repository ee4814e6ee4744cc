//! The gdb server: connections one after another, each a fresh protocol session, for as long as
//! the machine runs. A new client finds the machine stopped (it is stopped when the client
//! connects, as QEMU does). A client that detaches leaves it running without breakpoints; one
//! whose connection just ends (it died, or never spoke the protocol) leaves it as it was, running
//! or stopped, without its breakpoints; `kill` ends it.

use std::{
    collections::VecDeque,
    io::Write,
    sync::{mpsc, Arc, Mutex},
};

use accel_api::{client::Debug, AccelError, RegClass, Result, VcpuFeatures};
use gdbstub::{
    common::Signal,
    conn::Connection,
    stub::{state_machine::GdbStubStateMachine, DisconnectReason, GdbStub, MultiThreadStopReason},
};

use super::{
    arch::target_xml,
    connection::{accel_err, listen, Conn},
    target::GdbTarget,
    vcpu_thread::{Event, Stop, VcpuHandle},
    GdbOptions,
};
use crate::vmm::{ram::GuestRam, Outcome};

/// The events of the session, taken from what an earlier wait put aside first.
struct Events {
    channel: mpsc::Receiver<Event>,
    deferred: VecDeque<Event>,
}

impl Events {
    fn next(&mut self) -> Option<Event> {
        self.deferred.pop_front().or_else(|| self.channel.recv().ok())
    }
}

/// How one connection ended.
enum Flow {
    /// The guest ended, or gdb killed it.
    Ended(Outcome),
    /// gdb detached.
    Detached,
    /// The connection ended without a detach.
    Gone,
}

/// Serves gdb over `options` for the vCPUs behind `vcpus`, whose threads report on `events`,
/// until the guest ends, a client kills it, or the user quits.
pub fn serve_session(
    options: &GdbOptions,
    vcpus: Vec<VcpuHandle>,
    debug: Debug,
    ram: Arc<GuestRam>,
    events_tx: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
) -> Result<Outcome> {
    let mut machine = GdbTarget::new(vcpus, debug, ram, !options.wait);
    machine.about = options.about.clone();
    let sve_vq = if machine.vcpus.first().is_some_and(|h| h.features.contains(VcpuFeatures::SVE)) {
        Some(machine.exec(0, |v| v.get_sve().map(|s| s.vq))?)
    } else {
        None
    };
    let sysregs = machine.exec(0, |v| v.get_regs(RegClass::SYS))?;
    machine.xml = Some(target_xml(sve_vq, &sysregs));
    listen(options, events_tx)?;
    let mut events = Events { channel: events, deferred: VecDeque::new() };
    // Room for a whole `G` packet at the largest SVE vector length.
    let mut packet_buffer = vec![0u8; 0x10000];
    loop {
        // No client: the guest runs (or waits, stopped, for the first one with --gdb-wait).
        match events.next() {
            Some(Event::Connected { conn, writer }) => {
                log::info!("gdb: client {conn} connected");
                // The client finds the machine stopped.
                machine.stop_others(&events.channel, &mut events.deferred);
                match serve_client(&mut machine, conn, writer, &mut packet_buffer, &mut events)? {
                    Flow::Ended(outcome) => return Ok(outcome),
                    Flow::Detached => {
                        log::info!("gdb: client {conn} detached; the guest runs on without breakpoints");
                        forget(&mut machine)?;
                        machine.resume_stopped()?;
                    }
                    Flow::Gone => {
                        log::info!("gdb: client {conn} is gone; its breakpoints are removed");
                        forget(&mut machine)?;
                    }
                }
            }
            Some(Event::Vcpu(_, Stop::Exited(outcome))) => return Ok(outcome),
            Some(Event::Vcpu(_, Stop::Failed(e))) => return Err(e),
            Some(Event::Vcpu(i, _)) => {
                // A stop nobody is there to see (a breakpoint hit as its client went): run on.
                machine.running[i as usize] = false;
                machine.resume_one(i)?;
            }
            Some(Event::Quit) => return Ok(Outcome::Quit),
            Some(Event::Data { .. } | Event::Closed { .. }) => {}
            None => return Err(AccelError::bad_state("every vCPU thread and the gdb listener ended")),
        }
    }
}

/// Removes every breakpoint, watchpoint and step a client set: the next client knows nothing
/// of them.
fn forget(machine: &mut GdbTarget) -> Result<()> {
    machine.actions.clear();
    machine.debug.remove_all()
}

type StubError = gdbstub::stub::GdbStubError<AccelError, std::io::Error>;

/// Serves one client until it ends the guest, detaches, or goes away. Malformed input does not
/// end the connection: the machine stops and the protocol starts afresh; gdb resends what it did
/// not get an answer to.
fn serve_client(
    machine: &mut GdbTarget,
    conn: u64,
    writer: Box<dyn Write + Send>,
    packet_buffer: &mut [u8],
    events: &mut Events,
) -> Result<Flow> {
    let writer = Conn(Arc::new(Mutex::new(writer)));
    loop {
        match run_protocol(machine, conn, writer.clone(), packet_buffer, events) {
            Ok(flow) => return Ok(flow),
            Err(e) if e.is_connection_error() => {
                log::warn!("gdb: client {conn}'s connection failed ({e})");
                return Ok(Flow::Gone);
            }
            Err(e) if e.is_target_error() => return Err(accel_err(format!("gdb: {e}"))),
            Err(e) => {
                log::warn!("gdb: bad input from client {conn} ({e}); restarting the protocol");
                machine.stop_others(&events.channel, &mut events.deferred);
            }
        }
    }
}

/// Runs the gdb protocol over `writer` and connection `conn`'s bytes until it ends or fails.
fn run_protocol(
    machine: &mut GdbTarget,
    conn: u64,
    writer: Conn,
    packet_buffer: &mut [u8],
    events: &mut Events,
) -> std::result::Result<Flow, StubError> {
    let stub = match GdbStub::builder(writer.clone()).with_packet_buffer(packet_buffer).build() {
        Ok(stub) => stub,
        Err(e) => return Ok(Flow::Ended(Outcome::Fault(format!("setting up the gdb stub: {e}")))),
    };
    let mut gdb = stub.run_state_machine(machine)?;
    loop {
        gdb = match gdb {
            GdbStubStateMachine::Idle(_) if machine.ended.is_some() => {
                return Ok(Flow::Ended(machine.ended.take().unwrap_or(Outcome::Reset)))
            }
            GdbStubStateMachine::Idle(g) => match events.next() {
                Some(Event::Data { conn: c, byte }) if c == conn => g.incoming_data(machine, byte)?,
                Some(Event::Closed { conn: c }) if c == conn => return Ok(Flow::Gone),
                Some(Event::Quit) => return Ok(Flow::Ended(Outcome::Quit)),
                Some(Event::Vcpu(_, Stop::Exited(outcome))) => return Ok(Flow::Ended(outcome)),
                Some(Event::Vcpu(i, stop)) => {
                    log::debug!("gdb: vCPU {i} reported {stop:?} while stopped");
                    GdbStubStateMachine::Idle(g)
                }
                Some(_) => GdbStubStateMachine::Idle(g),
                None => return Ok(Flow::Gone),
            },
            GdbStubStateMachine::Running(g) => match events.next() {
                Some(Event::Data { conn: c, byte }) if c == conn => g.incoming_data(machine, byte)?,
                Some(Event::Closed { conn: c }) if c == conn => return Ok(Flow::Gone),
                Some(Event::Quit) => return Ok(Flow::Ended(Outcome::Quit)),
                Some(Event::Vcpu(i, stop)) => {
                    machine.running[i as usize] = false;
                    let outcome = if let Stop::Exited(o) = &stop { Some(o.clone()) } else { None };
                    machine.stop_others(&events.channel, &mut events.deferred);
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
                Some(_) => GdbStubStateMachine::Running(g),
                None => return Ok(Flow::Gone),
            },
            GdbStubStateMachine::CtrlCInterrupt(g) => {
                machine.stop_others(&events.channel, &mut events.deferred);
                let reason = MultiThreadStopReason::SignalWithThread {
                    tid: machine.waiting_on(),
                    signal: Signal::SIGINT,
                };
                g.interrupt_handled(machine, Some(reason))?
            }
            GdbStubStateMachine::Disconnected(g) => match g.get_reason() {
                DisconnectReason::Kill => {
                    log::info!("gdb killed the guest");
                    // gdbstub leaves `vKill` unanswered outside extended mode, and gdb then
                    // reports the connection lost: answer it (after a plain `k`, gdb closes
                    // the connection and ignores the reply).
                    let mut writer = writer;
                    let _ = writer.write_all(b"$OK#9a").and_then(|()| writer.flush());
                    return Ok(Flow::Ended(Outcome::Killed));
                }
                _ => return Ok(Flow::Detached),
            },
        };
    }
}
