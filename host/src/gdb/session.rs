//! The gdb server: connections one after another, each a fresh protocol session, for as long as
//! the machine runs. A new client finds the machine stopped (it is stopped when the client
//! connects, as QEMU does). A client that detaches leaves it running without breakpoints; one
//! whose connection just ends (it died, or never spoke the protocol) leaves it as it was, running
//! or stopped, without its breakpoints; `kill` ends it. A client that sends nothing for the idle
//! timeout while the guest is stopped is disconnected, and counts as one whose connection ended.

use std::{
    collections::VecDeque,
    io::Write,
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use accel_api::{client::Debug, AccelError, ErrorKind, RegClass, Result, VcpuFeatures};

use super::{
    arch::target_xml,
    connection::{Conn, Listener},
    engine::{Engine, Flow},
    options::GdbOptions,
    target::GdbTarget,
    vcpu_thread::{Event, Events, Stop, VcpuHandle},
};
use crate::vmm::{ram::GuestRam, Outcome};

/// Serves gdb as `options` say for the vCPUs behind `vcpus`, whose threads report on `events`,
/// until the guest ends, a client kills it, or the user quits. `connect` starts what reports the
/// connections and their bytes on `events` (see [`super::connection::listen`]) and returns what the session tells when a client is done.
pub fn serve_session(
    options: &GdbOptions,
    vcpus: Vec<VcpuHandle>,
    debug: Debug,
    ram: Arc<GuestRam>,
    events_tx: mpsc::SyncSender<Event>,
    events: mpsc::Receiver<Event>,
    connect: impl FnOnce(mpsc::SyncSender<Event>) -> Result<Listener>,
) -> Result<Outcome> {
    let mut machine = GdbTarget::new(vcpus, debug, ram);
    machine.about = options.about.clone();
    if machine.vcpus.first().is_some_and(|h| h.features.contains(VcpuFeatures::SVE)) {
        machine.sve_vq = Some(machine.exec(0, |v| v.get_sve().map(|s| s.vq))?);
    }
    let sysregs = machine.exec(0, |v| v.get_regs(RegClass::SYS))?;
    machine.xml = Some(target_xml(machine.sve_vq, &sysregs));
    // The target description is read from vCPU 0 while it is stopped; only then does the guest
    // start, unless it waits for gdb.
    if !options.wait {
        machine.resume_stopped()?;
    }
    let listener = connect(events_tx)?;
    let mut events = Events { channel: events, deferred: VecDeque::new() };
    loop {
        // No client: the guest runs (or waits, stopped, for the first one with --gdb-wait).
        match events.next() {
            Some(Event::Connected { conn, writer }) => {
                log::info!("gdb: client {conn} connected");
                // The client finds the machine stopped.
                machine.stop_others(&events.channel, &mut events.deferred);
                let flow = serve_client(&mut machine, conn, writer, &mut events, options.idle_timeout)?;
                listener.client_done(conn);
                match flow {
                    Some(Flow::Ended(outcome)) => return Ok(outcome),
                    Some(Flow::Detached) => {
                        log::info!("gdb: client {conn} detached; the guest runs on without breakpoints");
                        forget(&mut machine, &mut events)?;
                        machine.resume_stopped()?;
                    }
                    None => {
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

/// Serves one client until it ends the guest or detaches (`Some`), or goes away (`None`).
/// Nothing it sends ends the connection otherwise: a packet the engine cannot make sense of is
/// refused, and the next is served. A client that sends nothing for `idle` while every vCPU is
/// stopped counts as gone (the guest stays as it is, for the next client).
fn serve_client(
    machine: &mut GdbTarget,
    conn: u64,
    writer: Box<dyn Write + Send>,
    events: &mut Events,
    idle: Option<Duration>,
) -> Result<Option<Flow>> {
    let mut engine = Engine::new(Conn::new(writer));
    let mut last = Instant::now();
    loop {
        // While a vCPU runs, the client may wait for its stop as long as it takes.
        let waiting = idle.filter(|_| !machine.running.iter().any(|r| *r));
        let event = match waiting {
            Some(idle) => match events.next_within(idle.saturating_sub(last.elapsed())) {
                Ok(event) => Some(event),
                Err(true) => {
                    log::warn!(
                        "gdb: client {conn} sent nothing for {} s; it is disconnected",
                        idle.as_secs()
                    );
                    return Ok(None);
                }
                Err(false) => None,
            },
            None => events.next(),
        };
        if matches!(&event, Some(Event::Data { conn: c, .. }) if *c == conn)
            || machine.running.iter().any(|r| *r)
        {
            last = Instant::now();
        }
        let flow = match event {
            Some(Event::Data { conn: c, bytes }) if c == conn => engine.data(&bytes, machine, events),
            Some(Event::Closed { conn: c }) if c == conn => return Ok(None),
            Some(Event::Quit) => return Ok(Some(Flow::Ended(Outcome::Quit))),
            Some(Event::Vcpu(i, stop)) => engine.vcpu_stopped(machine, i, stop, events),
            // What a connection before this one left behind.
            Some(_) => continue,
            None => return Ok(None),
        };
        match flow {
            Ok(None) => {}
            Ok(flow) => return Ok(flow),
            Err(e) if e.kind == ErrorKind::IO => {
                log::warn!("gdb: client {conn}'s connection failed ({e})");
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
}
