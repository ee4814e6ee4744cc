//! The gdb remote stub of `accel-host`: all-stop debugging of every vCPU through the `gdbstub`
//! crate, over TCP or a character device.
//!
//! Each vCPU keeps its own thread. While the guest runs, the threads run their vCPUs and report
//! stops; while gdb has the machine stopped, they wait for commands, and register and memory
//! access runs on the owning thread. The first vCPU to stop makes the stub kick the others.

pub mod arch;
mod connection;
mod front;
mod monitor;
// The protocol's byte-level front, public for the fuzz targets only.
#[doc(hidden)]
pub mod nonstop;
#[doc(hidden)]
pub mod packets;
mod points;
mod session;
mod target;
mod vcpu_thread;

use std::sync::{mpsc, Arc};

use accel_api::{AccelError, ErrorKind, Result};

use crate::vmm::{console::Escape, machine::vcpu_features, memory_error, step, Machine, Outcome};
use vcpu_thread::{vcpu_thread, VcpuHandle};

/// How to serve gdb.
#[derive(Clone, Debug)]
pub struct GdbOptions {
    /// `HOST:PORT` to listen on, or the path of a character device to talk over.
    pub address: String,
    /// Start with every vCPU stopped, waiting for gdb.
    pub wait: bool,
    /// What `monitor info` says about the backend: its name, ABI and file.
    pub about: String,
}

/// Runs `machine` under gdb's control: each vCPU on its own thread, driven by the session.
/// Returns when the guest ends, gdb kills it, or the user quits from the console (when `console`
/// gives its escape key, the host's stdin is the guest's console input).
pub fn serve(machine: Machine, options: &GdbOptions, console: Option<Escape>) -> Result<Outcome> {
    serve_with(machine, options, console, |events| connection::listen(options, events))
}

/// Serves `machine` to one in-memory client, for the fuzz target of the protocol: the client
/// connects, sends `input`, and hangs up, then the user quits. What the stub sends goes to
/// `output`. Every event is queued before the session starts, so a run depends on `input` alone.
#[doc(hidden)]
pub fn serve_bytes(
    machine: Machine,
    options: &GdbOptions,
    input: &[u8],
    output: Box<dyn std::io::Write + Send>,
) -> Result<Outcome> {
    serve_with(machine, options, None, |events| {
        let mut queue = vec![vcpu_thread::Event::Connected { conn: 1, writer: output }];
        queue.extend(input.iter().map(|&byte| vcpu_thread::Event::Data { conn: 1, byte }));
        queue.extend([vcpu_thread::Event::Closed { conn: 1 }, vcpu_thread::Event::Quit]);
        for event in queue {
            events
                .send(event)
                .map_err(|_| AccelError::bad_state("the session stopped listening before it started"))?;
        }
        // No port reader to tell when the client is done: the queue ends with the client.
        Ok(connection::Listener::default())
    })
}

fn serve_with(
    machine: Machine,
    options: &GdbOptions,
    console: Option<Escape>,
    connect: impl FnOnce(mpsc::Sender<vcpu_thread::Event>) -> Result<connection::Listener>,
) -> Result<Outcome> {
    let (events_tx, events) = mpsc::channel();
    let _terminal = match console {
        Some(escape) => {
            let quit = events_tx.clone();
            machine.start_console(escape, move || {
                let _ = quit.send(vcpu_thread::Event::Quit);
            })?
        }
        None => None,
    };
    let Machine { vm, ram, bus, vcpus, config, .. } = machine;
    let no_debug = || AccelError::unsupported("this backend does not support guest debug");
    let debug = vm.debug().ok_or_else(no_debug)?;
    let mut handles = Vec::new();
    for (i, vcpu) in vcpus.into_iter().enumerate() {
        let (commands_tx, commands) = mpsc::channel();
        let features = vcpu_features(&config, i as u32);
        handles.push(VcpuHandle { commands: commands_tx, kicker: vcpu.kicker(), features });
        let (bus, ram, events_tx) = (Arc::clone(&bus), Arc::clone(&ram), events_tx.clone());
        let debug = vm.debug().ok_or_else(no_debug)?;
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
    let outcome =
        session::serve_session(options, handles, debug, Arc::clone(&ram), events_tx, events, connect);
    bus.flush_console();
    outcome
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        sync::{Arc, Mutex},
    };

    use accel_api::VcpuFeatures;

    use super::*;
    use crate::{
        fake::{accelerator, World},
        vmm::{MachineConfig, Payload, Plan},
    };

    /// What the stub sends, kept.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Serves a machine of two fake vCPUs to a client that sends `input` and hangs up; returns how
    /// the session ended and what the stub sent.
    fn serve_fake(wait: bool, features: VcpuFeatures, input: &[u8]) -> (Result<Outcome>, String) {
        let world = Arc::new(World::default());
        let accel = accelerator(&world).expect("opening the fake backend");
        let config = MachineConfig { cpus: 2, mem_size: 1 << 20, features, cmdline: String::new() };
        let plan = Plan::new(config, Payload::Image(vec![0; 8]), &accel.probe().caps).expect("planning");
        let machine = Machine::build(&accel, plan, Box::new(std::io::sink())).expect("building");
        let options = GdbOptions { address: String::new(), wait, about: String::new() };
        let sink = Sink::default();
        let outcome = serve_bytes(machine, &options, input, Box::new(sink.clone()));
        world.end();
        let sent = sink.0.lock().map(|s| String::from_utf8_lossy(&s).into_owned()).unwrap_or_default();
        (outcome, sent)
    }

    #[test]
    fn a_machine_served_without_waiting_starts_and_stops_for_gdb() {
        for wait in [false, true] {
            for features in [VcpuFeatures::NONE, VcpuFeatures::SVE] {
                let (outcome, sent) = serve_fake(wait, features, b"$?#3f");
                assert_eq!(
                    outcome.map_err(|e| e.to_string()),
                    Ok(Outcome::Quit),
                    "wait {wait}, {features:?}"
                );
                assert!(sent.starts_with("+$T"), "a stop reply to '?': {sent}");
            }
        }
    }

    #[test]
    fn a_thread_id_beyond_any_vcpu_is_refused() {
        let input: Vec<u8> =
            ["Hg100000000", "g", "Hg5", "g", "Hg2", "g"].iter().flat_map(|p| packets::packet(p)).collect();
        let (outcome, sent) = serve_fake(true, VcpuFeatures::NONE, &input);
        assert_eq!(outcome.map_err(|e| e.to_string()), Ok(Outcome::Quit));
        let replies: Vec<&str> = sent.split('$').skip(1).map(|r| r.split('#').next().unwrap_or("")).collect();
        assert_eq!(replies.len(), 6, "{sent}");
        assert!(replies[1].starts_with('E') && replies[3].starts_with('E'), "no such vCPU: {sent}");
        assert!(!replies[5].is_empty() && !replies[5].starts_with('E'), "vCPU 1's registers: {sent}");
    }

    #[test]
    fn only_the_reply_to_a_valid_qsupported_advertises_non_stop() {
        // A damaged qSupported, and ones gdbstub does not parse as qSupported: none is answered.
        let refused = [
            b"$qSupported:multiprocess+#00".to_vec(),
            packets::packet("qSupported-multiprocess+"),
            packets::packet("qSupported:"),
        ];
        for refused in refused {
            let mut input = refused;
            input.extend(["g", "qSupported:multiprocess+", "g"].iter().flat_map(|p| packets::packet(p)));
            let (outcome, sent) = serve_fake(true, VcpuFeatures::NONE, &input);
            assert_eq!(outcome.map_err(|e| e.to_string()), Ok(Outcome::Quit));
            let replies: Vec<&str> =
                sent.split('$').skip(1).map(|r| r.split('#').next().unwrap_or("")).collect();
            assert_eq!(replies.len(), 3, "no reply to the refused packet: {sent}");
            assert!(!replies[0].contains("QNonStop"), "the registers, unpatched: {sent}");
            assert!(replies[1].starts_with("PacketSize=") && replies[1].ends_with(";QNonStop+"), "{sent}");
            assert!(!replies[2].contains("QNonStop"), "{sent}");
        }
    }

    #[test]
    fn a_continue_while_running_resumes_nothing_twice() {
        // A `c` while the guest runs, then an interrupt and a register read: the read waits on
        // vCPU 0's thread, which must be stopped, not running a second resume.
        let mut input: Vec<u8> = ["c", "c"].iter().flat_map(|p| packets::packet(p)).collect();
        input.push(3);
        input.extend(packets::packet("g"));
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(serve_fake(true, VcpuFeatures::NONE, &input));
        });
        let (outcome, sent) =
            finished.recv_timeout(std::time::Duration::from_secs(60)).expect("the session hung");
        assert_eq!(outcome.map_err(|e| e.to_string()), Ok(Outcome::Quit));
        let replies: Vec<&str> = sent.split('$').skip(1).map(|r| r.split('#').next().unwrap_or("")).collect();
        assert!(replies.first().is_some_and(|r| r.starts_with('T')), "the interrupt's stop: {sent}");
        assert!(
            replies.get(1).is_some_and(|r| !r.is_empty() && !r.starts_with('E')),
            "the registers: {sent}"
        );
    }
}
