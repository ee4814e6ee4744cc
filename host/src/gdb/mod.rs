//! The gdb remote stub of `accel-host`: all-stop and non-stop debugging of every vCPU, over TCP
//! a Unix socket or a character device, with one protocol engine (see `engine`) from gdb's bytes
//! to the replies. One client at a time: another is refused, and one that sends nothing for the
//! idle timeout while the guest is stopped is disconnected.
//!
//! Each vCPU keeps its own thread. While the guest runs, the threads run their vCPUs and report
//! stops; while gdb has a vCPU stopped, its thread waits for commands, and register and memory
//! access runs on it. In all-stop mode the first vCPU to stop makes the stub kick the others.
//! gdb's bytes reach the session in chunks of a few KiB through a bounded queue, so a client
//! that sends faster than it is served waits, and a packet longer than the advertised
//! `PacketSize` is discarded as it comes.

pub mod arch;
mod connection;
mod engine;
mod monitor;
mod options;
// The protocol's pure parts, public for the fuzz targets only.
#[doc(hidden)]
pub mod expedite;
#[doc(hidden)]
pub mod nonstop;
#[doc(hidden)]
pub mod packets;
mod points;
mod session;
mod target;
mod vcpu_thread;
pub mod z_packet;

use std::sync::{mpsc, Arc};

use accel_api::{AccelError, ErrorKind, Result};

use crate::vmm::{console::Escape, machine::vcpu_features, memory_error, step, Machine, Outcome};
use accel_kit::thread_proxy::ThreadProxy;
pub use options::{GdbAddress, GdbOptions, DEFAULT_IDLE_TIMEOUT};
use vcpu_thread::{Runner, VcpuHandle};

/// How many events (each a vCPU's stop, or a chunk of at most a few KiB of a client's bytes)
/// wait for the session at most; whoever sends more waits.
const EVENT_QUEUE: usize = 64;

/// The chunks an in-memory client's bytes arrive in, as a connection's reads would bring them.
const CLIENT_CHUNK: usize = 1024;

/// Runs `machine` under gdb's control: each vCPU on its own thread, driven by the session.
/// Returns when the guest ends, gdb kills it, or the user quits from the console (when `console`
/// gives its escape key, the host's stdin is the guest's console input).
pub fn serve(machine: Machine, options: &GdbOptions, console: Option<Escape>) -> Result<Outcome> {
    serve_with(machine, options, console, |events| connection::listen(options, events))
}

/// Serves `machine` to one in-memory client, for the fuzz target of the protocol: the client
/// connects, sends `input`, and hangs up, then the user quits. What the stub sends goes to
/// `output`. The client's events are queued in order as the session takes them.
#[doc(hidden)]
pub fn serve_bytes(
    machine: Machine,
    options: &GdbOptions,
    input: &[u8],
    output: Box<dyn std::io::Write + Send>,
) -> Result<Outcome> {
    let input = input.to_vec();
    serve_with(machine, options, None, move |events| {
        let mut queue = vec![vcpu_thread::Event::Connected { conn: 1, writer: output }];
        queue.extend(
            input.chunks(CLIENT_CHUNK).map(|c| vcpu_thread::Event::Data { conn: 1, bytes: c.to_vec() }),
        );
        queue.extend([vcpu_thread::Event::Closed { conn: 1 }, vcpu_thread::Event::Quit]);
        // The queue is bounded: a thread of its own feeds it as the session takes it.
        std::thread::Builder::new()
            .name("gdb-bytes".into())
            .spawn(move || {
                for event in queue {
                    if events.send(event).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| AccelError::new(ErrorKind::NO_RESOURCE, format!("spawning the client: {e}")))?;
        // No port reader to tell when the client is done: the queue ends with the client.
        Ok(connection::Listener::default())
    })
}

fn serve_with(
    machine: Machine,
    options: &GdbOptions,
    console: Option<Escape>,
    connect: impl FnOnce(mpsc::SyncSender<vcpu_thread::Event>) -> Result<connection::Listener>,
) -> Result<Outcome> {
    let (events_tx, events) = mpsc::sync_channel(EVENT_QUEUE);
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
        let features = vcpu_features(&config, i as u32);
        let kicker = vcpu.kicker();
        let (bus, ram, events_tx) = (Arc::clone(&bus), Arc::clone(&ram), events_tx.clone());
        let debug = vm.debug().ok_or_else(no_debug)?;
        let expedited = expedite::ExpeditedSlot::default();
        let slot = Arc::clone(&expedited);
        let thread = ThreadProxy::spawn(format!("vcpu{i}"), move || {
            memory_error::install();
            Ok(Runner::new(vcpu, events_tx, debug, Box::new(move |v| step(v, &bus, &ram)), slot))
        })?;
        handles.push(VcpuHandle { thread, kicker, features, expedited });
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
        let address = GdbAddress::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let options = GdbOptions { address, wait, about: String::new(), idle_timeout: None };
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

    /// A packet as gdb sends it: the body as it is, and its checksum.
    fn sent(body: &str) -> Vec<u8> {
        format!("${body}#{:02x}", packets::checksum(body.as_bytes())).into_bytes()
    }

    fn script(bodies: &[&str]) -> Vec<u8> {
        bodies.iter().flat_map(|b| sent(b)).collect()
    }

    /// The bodies of the reply packets in what the stub sent, run-length encoding undone.
    fn replies(sent: &str) -> Vec<String> {
        sent.split('$')
            .skip(1)
            .map(|r| {
                let body = r.split('#').next().unwrap_or("").as_bytes();
                let mut out: Vec<u8> = Vec::new();
                let mut at = 0;
                while at < body.len() {
                    match (body[at], out.last()) {
                        (b'*', Some(&last)) if at + 1 < body.len() => {
                            out.extend(std::iter::repeat_n(last, usize::from(body[at + 1]) - 29));
                            at += 2;
                        }
                        (b, _) => {
                            out.push(b);
                            at += 1;
                        }
                    }
                }
                String::from_utf8_lossy(&out).into_owned()
            })
            .collect()
    }

    #[test]
    fn a_thread_id_beyond_any_vcpu_is_refused() {
        let input = script(&["Hg100000000", "g", "Hg5", "g", "Hg2", "g"]);
        let (outcome, sent) = serve_fake(true, VcpuFeatures::NONE, &input);
        assert_eq!(outcome.map_err(|e| e.to_string()), Ok(Outcome::Quit));
        let replies = replies(&sent);
        assert_eq!(replies.len(), 6, "{sent}");
        assert!(replies[1].starts_with('E') && replies[3].starts_with('E'), "no such vCPU: {sent}");
        assert!(!replies[5].is_empty() && !replies[5].starts_with('E'), "vCPU 1's registers: {sent}");
    }

    #[test]
    fn only_the_reply_to_a_qsupported_advertises_non_stop() {
        // A damaged qSupported is dropped unanswered; a packet that only starts like one gets
        // the empty reply of a packet not supported.
        let cases = [
            (b"$qSupported:multiprocess+#00".to_vec(), None),
            (sent("qSupported-multiprocess+"), Some("")),
            (sent("qSupported:"), Some("PacketSize=10000;")),
        ];
        for (first, answer) in cases {
            let mut input = first;
            input.extend(script(&["g", "qSupported:multiprocess+", "g"]));
            let (outcome, sent) = serve_fake(true, VcpuFeatures::NONE, &input);
            assert_eq!(outcome.map_err(|e| e.to_string()), Ok(Outcome::Quit));
            let mut replies = replies(&sent);
            match answer {
                None => assert!(sent.starts_with("+$"), "{sent}"),
                Some(answer) => assert!(replies.remove(0).starts_with(answer), "{sent}"),
            }
            assert_eq!(replies.len(), 3, "{sent}");
            assert!(!replies[0].contains("QNonStop"), "the registers: {sent}");
            assert!(replies[1].starts_with("PacketSize=") && replies[1].ends_with(";QNonStop+"), "{sent}");
            assert!(!replies[2].contains("QNonStop"), "{sent}");
        }
    }

    #[test]
    fn a_p_packet_writes_its_register_alone() {
        for (features, regs) in [
            (VcpuFeatures::NONE, vec![("5", 8), ("1f", 8), ("22", 16), ("42", 4)]),
            (VcpuFeatures::SVE, vec![("5", 8), ("22", 0), ("44", 0), ("54", 0)]),
        ] {
            for (number, size) in regs {
                // Learn the register's size (with SVE, from the vector length), then write it.
                let (_, sent) = serve_fake(true, features, &script(&[&format!("p{number}")]));
                let size = if size == 0 { replies(&sent)[0].len() / 2 } else { size };
                let value: String = (0..size).map(|i| format!("{:02x}", 0x11 + i % 0xee)).collect();
                let input = script(&["g", &format!("P{number}={value}"), &format!("p{number}"), "g"]);
                let (outcome, sent) = serve_fake(true, features, &input);
                assert_eq!(outcome.map_err(|e| e.to_string()), Ok(Outcome::Quit));
                let replies = replies(&sent);
                assert_eq!(replies[1], "OK", "{features:?} P{number}: {sent}");
                assert_eq!(replies[2], value, "{features:?} p{number} reads back");
                let (before, after) = (replies[0].as_bytes(), replies[3].as_bytes());
                assert_eq!(before.len(), after.len());
                let changed: Vec<usize> = (0..before.len()).filter(|i| before[*i] != after[*i]).collect();
                let (first, last) = (changed[0], changed[changed.len() - 1]);
                assert!(last - first < value.len(), "{features:?} P{number}: only its bytes change");
                assert!(after.windows(value.len()).any(|w| w == value.as_bytes()));
            }
        }
    }

    #[test]
    fn an_overlong_packet_is_dropped_and_the_next_is_served() {
        let mut input = b"$X1000,40000:".to_vec();
        input.extend(std::iter::repeat_n(b'a', 4 * packets::PACKET_SIZE));
        input.extend(b"#00");
        input.extend(sent("g"));
        // One that never ends, then another.
        input.push(b'$');
        input.extend(std::iter::repeat_n(b'a', 2 * packets::PACKET_SIZE));
        input.extend(sent("qC"));
        let (outcome, sent) = serve_fake(true, VcpuFeatures::NONE, &input);
        assert_eq!(outcome.map_err(|e| e.to_string()), Ok(Outcome::Quit));
        let replies = replies(&sent);
        assert_eq!(replies.len(), 3, "{sent}");
        assert!(replies[0].starts_with("E.01.packet longer than PacketSize"), "{sent}");
        assert!(replies[1].len() > 100 && !replies[1].starts_with('E'), "{sent}");
        assert_eq!(replies[2], "QC1");
    }

    #[test]
    fn packets_split_across_chunks_are_each_answered_once() {
        // Packets of assorted lengths, so that many straddle the chunks the client's bytes come in.
        let bodies: Vec<String> = (0..400).map(|i| format!("m{:x},{}", 0x1000 + i, 1 + i % 7)).collect();
        let input: Vec<u8> = bodies.iter().flat_map(|b| sent(b)).collect();
        assert!(input.len() > 4 * CLIENT_CHUNK);
        let (outcome, sent) = serve_fake(true, VcpuFeatures::NONE, &input);
        assert_eq!(outcome.map_err(|e| e.to_string()), Ok(Outcome::Quit));
        let replies = replies(&sent);
        assert_eq!(replies.len(), bodies.len(), "{sent}");
        for (i, reply) in replies.iter().enumerate() {
            assert!(reply.len() == 2 * (1 + i % 7) || reply.starts_with('E'), "reply {i}: {reply}");
        }
    }

    #[test]
    fn non_stop_reports_one_stop_and_notifies_the_others() {
        // Sent in one chunk: vCPU 1's stop, asked for by `vCont;t`, is seen while the
        // breakpoint's insertion pauses the running vCPUs, and goes out as a notification.
        let input =
            script(&["QNonStop:1", "?", "vStopped", "vCont;t:2", "Z1,40000000,4", "vStopped", "QNonStop:0"]);
        assert!(input.len() < CLIENT_CHUNK);
        let (outcome, sent) = serve_fake(true, VcpuFeatures::NONE, &input);
        assert_eq!(outcome.map_err(|e| e.to_string()), Ok(Outcome::Quit));
        let replies = replies(&sent);
        assert_eq!(replies, ["OK", "T00thread:1;", "OK", "OK", "OK", "OK", "OK"], "{sent}");
        let note = String::from_utf8(packets::notification("Stop:T00thread:2;")).unwrap_or_default();
        // After the reply to `vCont;t`, before the one to the breakpoint.
        let at_note = sent.find(&note);
        let reply_at = |n: usize| sent.match_indices('$').nth(n).map(|(i, _)| i);
        assert!(reply_at(3) < at_note && at_note < reply_at(4), "{sent}");
    }

    #[test]
    fn a_packet_is_acknowledged_before_what_answers_it() {
        // `monitor help`: its output, then its reply, both after the acknowledgement; none once
        // acknowledgements are off.
        let help = format!("qRcmd,{}", packets::hex(b"help"));
        let input = script(&[&help, "QStartNoAckMode", &help]);
        let (outcome, sent) = serve_fake(true, VcpuFeatures::NONE, &input);
        assert_eq!(outcome.map_err(|e| e.to_string()), Ok(Outcome::Quit));
        assert!(sent.starts_with("+$O"), "{sent}");
        assert_eq!(sent.matches('+').count(), 2, "{sent}");
        let replies = replies(&sent);
        assert_eq!(replies.len(), 5, "{sent}");
        assert_eq!([&replies[1], &replies[2], &replies[4]], ["OK", "OK", "OK"], "{sent}");
        let text = packets::unhex(&replies[0].as_bytes()[1..]).unwrap_or_default();
        assert!(String::from_utf8_lossy(&text).contains("debug-pool"), "{sent}");
    }

    #[test]
    fn a_continue_while_running_resumes_nothing_twice() {
        // A `c` while the guest runs, then an interrupt and a register read: the read waits on
        // vCPU 0's thread, which must be stopped, not running a second resume.
        let mut input = script(&["c", "c"]);
        input.push(3);
        input.extend(sent("g"));
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(serve_fake(true, VcpuFeatures::NONE, &input));
        });
        let (outcome, sent) =
            finished.recv_timeout(std::time::Duration::from_secs(60)).expect("the session hung");
        assert_eq!(outcome.map_err(|e| e.to_string()), Ok(Outcome::Quit));
        let replies = replies(&sent);
        assert!(replies.first().is_some_and(|r| r.starts_with('T')), "the interrupt's stop: {sent}");
        assert!(
            replies.get(1).is_some_and(|r| !r.is_empty() && !r.starts_with('E')),
            "the registers: {sent}"
        );
    }
    #[test]
    fn a_write_that_crosses_the_end_of_ram_writes_nothing() {
        // RAM is 1 MiB at 0x4000_0000, and the MMU is off: its last two bytes, then past it.
        let mut input = script(&["m400ffffe,2", "M400ffffe,4:11223344", "m400ffffe,2"]);
        let mut x = b"X400ffffe,4:".to_vec();
        x.extend([0x55, 0x66, 0x77, 0x78]);
        input.extend(format!("${}#{:02x}", String::from_utf8_lossy(&x), packets::checksum(&x)).into_bytes());
        input.extend(script(&["m400ffffe,2", "M400ffffe,2:abcd", "m400ffffe,2"]));
        let (outcome, sent) = serve_fake(true, VcpuFeatures::NONE, &input);
        assert_eq!(outcome.map_err(|e| e.to_string()), Ok(Outcome::Quit));
        let replies = replies(&sent);
        assert_eq!(replies.len(), 7, "{sent}");
        assert_eq!(replies[0].len(), 4, "{sent}");
        assert!(replies[1].starts_with('E') && replies[3].starts_with('E'), "{sent}");
        assert_eq!([&replies[2], &replies[4]], [&replies[0], &replies[0]], "RAM unchanged: {sent}");
        assert_eq!([replies[5].as_str(), replies[6].as_str()], ["OK", "abcd"], "{sent}");
    }
    /// Serves a fake machine, stopped, on a new Unix socket in a fresh directory, on a thread of
    /// its own: the socket's path, and what the session comes to.
    fn serve_unix(
        name: &str,
        idle_timeout: Option<std::time::Duration>,
    ) -> (std::path::PathBuf, std::sync::mpsc::Receiver<Result<Outcome>>) {
        let dir = std::env::temp_dir().join(format!("accel-gdb-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("gdb.sock");
        let address = GdbAddress::parse(&format!("unix:{}", path.display())).expect("address");
        let (done, outcome) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let world = Arc::new(World::default());
            let accel = accelerator(&world).expect("opening the fake backend");
            let config = MachineConfig {
                cpus: 1,
                mem_size: 1 << 20,
                features: VcpuFeatures::NONE,
                cmdline: String::new(),
            };
            let plan = Plan::new(config, Payload::Image(vec![0; 8]), &accel.probe().caps).expect("planning");
            let machine = Machine::build(&accel, plan, Box::new(std::io::sink())).expect("building");
            let options = GdbOptions { address, wait: true, about: String::new(), idle_timeout };
            let _ = done.send(serve(machine, &options, None));
            world.end();
        });
        (path, outcome)
    }

    /// Connects to the stub's socket once it is there.
    fn connect(path: &std::path::Path) -> std::os::unix::net::UnixStream {
        let started = std::time::Instant::now();
        loop {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(stream) => {
                    let limit = Some(std::time::Duration::from_secs(30));
                    stream.set_read_timeout(limit).expect("timeout");
                    return stream;
                }
                Err(e) if started.elapsed() > std::time::Duration::from_secs(30) => panic!("connecting: {e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
    }

    /// Sends `body` as a packet and reads until its reply is complete.
    fn ask(stream: &mut std::os::unix::net::UnixStream, body: &str) -> String {
        use std::io::Read;
        stream.write_all(&sent(body)).expect("send");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.iter().rposition(|b| *b == b'#').is_none_or(|at| got.len() < at + 3) {
            let n = stream.read(&mut buf).expect("a reply");
            assert!(n > 0, "the stub hung up: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        replies(&String::from_utf8_lossy(&got)).pop().unwrap_or_default()
    }

    /// Everything the stub sends until it hangs up.
    fn rest(stream: &mut std::os::unix::net::UnixStream) -> String {
        use std::io::Read;
        let mut got = Vec::new();
        stream.read_to_end(&mut got).expect("the stub hangs up");
        String::from_utf8_lossy(&got).into_owned()
    }

    #[test]
    fn a_unix_socket_is_owner_only_takes_one_client_and_is_removed_at_the_end() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let (path, outcome) = serve_unix("one", None);
        let mut first = connect(&path);
        let meta = path.symlink_metadata().expect("the socket");
        assert!(meta.file_type().is_socket(), "{meta:?}");
        assert_eq!(meta.mode() & 0o077, 0, "mode {:o}", meta.mode());
        assert!(ask(&mut first, "qSupported:multiprocess+").starts_with("PacketSize="));
        // A second client is told why, and its connection ends; the first is served on.
        let mut second = connect(&path);
        second.write_all(&sent("qSupported:multiprocess+")).expect("send");
        let refused = rest(&mut second);
        assert!(refused.contains("$E.another gdb client is attached#"), "{refused}");
        assert!(ask(&mut first, "?").starts_with('T'));
        first.write_all(&sent("k")).expect("kill");
        let outcome = outcome.recv_timeout(std::time::Duration::from_secs(60)).expect("the session ends");
        assert_eq!(outcome.map_err(|e| e.to_string()), Ok(Outcome::Killed));
        assert!(path.symlink_metadata().is_err(), "the socket is removed");
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[test]
    fn an_idle_client_is_disconnected_and_the_next_is_served() {
        let (path, outcome) = serve_unix("idle", Some(std::time::Duration::from_secs(1)));
        let mut idle = connect(&path);
        assert!(ask(&mut idle, "?").starts_with('T'));
        // It says nothing more: the stub hangs up on it.
        assert_eq!(rest(&mut idle), "");
        let mut next = connect(&path);
        assert!(ask(&mut next, "?").starts_with('T'), "the guest is still stopped");
        next.write_all(&sent("k")).expect("kill");
        let outcome = outcome.recv_timeout(std::time::Duration::from_secs(60)).expect("the session ends");
        assert_eq!(outcome.map_err(|e| e.to_string()), Ok(Outcome::Killed));
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }
}
