//! The gdb server: connections one after another, each a fresh protocol session, for as long as
//! the machine runs. A new client finds the machine stopped (it is stopped when the client
//! connects, as QEMU does). A client that detaches leaves it running without breakpoints; one
//! whose connection just ends (it died, or never spoke the protocol) leaves it as it was, running
//! or stopped, without its breakpoints; `kill` ends it.

use std::{
    collections::VecDeque,
    io::Write,
    sync::{mpsc, Arc},
};

use accel_api::{client::Debug, AccelError, ErrorKind, RegClass, Result, VcpuFeatures};
use gdbstub::{
    common::Signal,
    conn::Connection,
    stub::{state_machine::GdbStubStateMachine, DisconnectReason, GdbStub, MultiThreadStopReason},
};

use super::{
    arch::target_xml,
    connection::{accel_err, Conn, Listener},
    front::{Front, Route},
    target::GdbTarget,
    vcpu_thread::{Event, Events, Stop, VcpuHandle},
    GdbOptions,
};
use crate::vmm::{ram::GuestRam, Outcome};

/// How one connection ended.
enum Flow {
    /// The guest ended, or gdb killed it.
    Ended(Outcome),
    /// gdb detached.
    Detached,
    /// The connection ended without a detach.
    Gone,
}

/// Serves gdb as `options` say for the vCPUs behind `vcpus`, whose threads report on `events`,
/// until the guest ends, a client kills it, or the user quits. `connect` starts what reports the
/// connections and their bytes on `events` (see [`super::connection::listen`]) and returns what the session tells when a client is done.
pub fn serve_session(
    options: &GdbOptions,
    vcpus: Vec<VcpuHandle>,
    debug: Debug,
    ram: Arc<GuestRam>,
    events_tx: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
    connect: impl FnOnce(mpsc::Sender<Event>) -> Result<Listener>,
) -> Result<Outcome> {
    let mut machine = GdbTarget::new(vcpus, debug, ram);
    machine.about = options.about.clone();
    let sve_vq = if machine.vcpus.first().is_some_and(|h| h.features.contains(VcpuFeatures::SVE)) {
        Some(machine.exec(0, |v| v.get_sve().map(|s| s.vq))?)
    } else {
        None
    };
    let sysregs = machine.exec(0, |v| v.get_regs(RegClass::SYS))?;
    machine.xml = Some(target_xml(sve_vq, &sysregs));
    // The target description is read from vCPU 0 while it is stopped; only then does the guest
    // start, unless it waits for gdb.
    if !options.wait {
        machine.resume_stopped()?;
    }
    let listener = connect(events_tx)?;
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
                let flow = serve_client(&mut machine, conn, writer, &mut packet_buffer, &mut events)?;
                listener.client_done(conn);
                match flow {
                    Flow::Ended(outcome) => return Ok(outcome),
                    Flow::Detached => {
                        log::info!("gdb: client {conn} detached; the guest runs on without breakpoints");
                        forget(&mut machine, &mut events)?;
                        machine.resume_stopped()?;
                    }
                    Flow::Gone => {
                        log::info!("gdb: client {conn} is gone; its breakpoints are removed");
                        forget(&mut machine, &mut events)?;
                    }
                }
            }
            Some(Event::Vcpu(_, Stop::Exited(outcome))) => return Ok(outcome),
            Some(Event::Vcpu(_, Stop::Failed(e))) => return Err(e),
            Some(Event::Vcpu(i, _)) => {
                // A stop nobody is there to see (a breakpoint hit as its client went): run on.
                machine.stopped(i);
                machine.resume_thread(i, false)?;
            }
            Some(Event::Quit) => return Ok(Outcome::Quit),
            Some(Event::Data { .. } | Event::Closed { .. }) => {}
            None => return Err(AccelError::bad_state("every vCPU thread and the gdb listener ended")),
        }
    }
}

/// Removes every breakpoint, watchpoint and step a client set: the next client knows nothing
/// of them. vCPUs still running (a non-stop client, or one that went while the guest ran) pause
/// around the change, so that none stops later on a breakpoint nobody holds, and run on.
fn forget(machine: &mut GdbTarget, events: &mut Events) -> Result<()> {
    let was_running: Vec<u32> =
        (0..machine.vcpus.len() as u32).filter(|i| machine.running[*i as usize]).collect();
    machine.stop_others(&events.channel, &mut events.deferred);
    machine.actions.clear();
    machine.focus = None;
    machine.debug.remove_all()?;
    for index in was_running {
        machine.resume_thread(index, false)?;
    }
    Ok(())
}

type StubError = gdbstub::stub::GdbStubError<AccelError, std::io::Error>;

/// Why a protocol run failed: in `gdbstub`, or in the session's own packets.
enum Failure {
    Stub(StubError),
    Session(AccelError),
}

impl From<StubError> for Failure {
    fn from(e: StubError) -> Self {
        Failure::Stub(e)
    }
}

impl From<AccelError> for Failure {
    fn from(e: AccelError) -> Self {
        Failure::Session(e)
    }
}

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
    let writer = Conn::new(writer);
    let mut front = Front::new(writer.clone());
    loop {
        match run_protocol(machine, conn, writer.clone(), &mut front, packet_buffer, events) {
            Ok(flow) => return Ok(flow),
            Err(Failure::Session(e)) if e.kind == ErrorKind::IO => {
                log::warn!("gdb: client {conn}'s connection failed ({e})");
                return Ok(Flow::Gone);
            }
            Err(Failure::Session(e)) => return Err(e),
            Err(Failure::Stub(e)) if e.is_connection_error() => {
                log::warn!("gdb: client {conn}'s connection failed ({e})");
                return Ok(Flow::Gone);
            }
            Err(Failure::Stub(e)) if e.is_target_error() => return Err(accel_err(format!("gdb: {e}"))),
            Err(Failure::Stub(e)) => {
                log::warn!("gdb: bad input from client {conn} ({e}); restarting the protocol");
                machine.stop_others(&events.channel, &mut events.deferred);
                front.restart_framing();
            }
        }
    }
}

/// Runs the gdb protocol over `writer` and connection `conn`'s bytes until it ends or fails.
fn run_protocol(
    machine: &mut GdbTarget,
    conn: u64,
    writer: Conn,
    front: &mut Front,
    packet_buffer: &mut [u8],
    events: &mut Events,
) -> std::result::Result<Flow, Failure> {
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
                Some(Event::Data { conn: c, byte }) if c == conn => {
                    match front.data(byte, machine, events)? {
                        Route::Pass(bytes) => {
                            spent(feed(GdbStubStateMachine::Idle(g), machine, &bytes), &writer)?
                        }
                        Route::Done => GdbStubStateMachine::Idle(g),
                    }
                }
                Some(Event::Closed { conn: c }) if c == conn => return Ok(Flow::Gone),
                Some(Event::Quit) => return Ok(Flow::Ended(Outcome::Quit)),
                Some(Event::Vcpu(i, stop)) if front.non_stop => {
                    match front.vcpu_stopped(machine, i, stop)? {
                        Some(outcome) => return Ok(Flow::Ended(outcome)),
                        None => GdbStubStateMachine::Idle(g),
                    }
                }
                Some(Event::Vcpu(_, Stop::Exited(outcome))) => return Ok(Flow::Ended(outcome)),
                Some(Event::Vcpu(i, stop)) => {
                    log::debug!("gdb: vCPU {i} reported {stop:?} while stopped");
                    GdbStubStateMachine::Idle(g)
                }
                Some(_) => GdbStubStateMachine::Idle(g),
                None => return Ok(Flow::Gone),
            },
            GdbStubStateMachine::Running(g) => match events.next() {
                Some(Event::Data { conn: c, byte }) if c == conn => {
                    match front.data(byte, machine, events)? {
                        Route::Pass(bytes) => {
                            spent(feed(GdbStubStateMachine::Running(g), machine, &bytes), &writer)?
                        }
                        Route::Done => GdbStubStateMachine::Running(g),
                    }
                }
                Some(Event::Closed { conn: c }) if c == conn => return Ok(Flow::Gone),
                Some(Event::Quit) => return Ok(Flow::Ended(Outcome::Quit)),
                Some(Event::Vcpu(i, stop)) => {
                    machine.stopped(i);
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

/// Ends the reply patch a packet armed once `gdbstub` has had the packet: it either answered,
/// and the patch went on that reply, or refused it unanswered, and the patch must not go on the
/// next reply, which answers something else.
fn spent<T>(fed: T, writer: &Conn) -> T {
    writer.cancel_patch();
    fed
}

/// Hands whole packets (or lone bytes) to `gdbstub`'s state machine, byte by byte.
fn feed<'a>(
    mut state: GdbStubStateMachine<'a, GdbTarget, Conn>,
    machine: &mut GdbTarget,
    bytes: &[u8],
) -> std::result::Result<GdbStubStateMachine<'a, GdbTarget, Conn>, StubError> {
    for &byte in bytes {
        state = match state {
            GdbStubStateMachine::Idle(g) => g.incoming_data(machine, byte)?,
            GdbStubStateMachine::Running(g) => g.incoming_data(machine, byte)?,
            // A packet that ended the session or asked for an interrupt: the rest is moot.
            other => return Ok(other),
        };
    }
    Ok(state)
}
