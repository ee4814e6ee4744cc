//! The connections to gdb, one after another: a TCP listener, or a character device (a
//! virtio-serial port), and the reader thread that turns each connection's bytes into session
//! events. Every connection gets a number, so that what a dead client left behind is never taken
//! for the next one's.

use std::{
    io::{Read, Write},
    net::TcpListener,
    os::fd::AsRawFd,
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use accel_api::{AccelError, ErrorKind, Result};
use gdbstub::conn::Connection;

use super::{packets::ReplyPatch, vcpu_thread::Event, GdbOptions};

/// Writes to one gdb connection. Shared, so that a protocol restarted on the same connection
/// keeps writing to it, and the session's own replies go the same way as `gdbstub`'s.
///
/// `gdbstub` hands over its replies a byte at a time and flushes at the end of each packet, so
/// a packet is gathered here and leaves in one write at the flush: a register packet is kilobytes
/// long with SVE, and a write per byte made each one cost thousands of system calls. An
/// acknowledgement (`+` or `-` outside a packet) goes out at once, since `gdbstub` does not flush
/// it and gdb waits for it; inside a packet the same bytes are the packet's own.
#[derive(Clone)]
pub struct Conn {
    out: Arc<Mutex<Out>>,
}

/// The connection's writer, the packet gathered so far, and the reply patch.
struct Out {
    writer: Box<dyn Write + Send>,
    gathered: Vec<u8>,
    /// A packet (`$`) or notification (`%`) was started and not flushed yet. The reply patch
    /// may hold its bytes back, so `gathered` being empty does not say that none was started.
    open: bool,
    patch: ReplyPatch,
}

impl Conn {
    /// A connection writing to `writer`.
    pub fn new(writer: Box<dyn Write + Send>) -> Self {
        let out = Out { writer, gathered: Vec::new(), open: false, patch: ReplyPatch::default() };
        Self { out: Arc::new(Mutex::new(out)) }
    }

    /// Extends the next reply packet with `suffix` (features `gdbstub` does not advertise).
    pub fn patch_next_reply(&self, suffix: &'static str) {
        if let Ok(mut out) = self.out.lock() {
            out.patch.arm(suffix);
        }
    }

    /// Cancels a patch not yet applied.
    pub fn cancel_patch(&self) {
        if let Ok(mut out) = self.out.lock() {
            out.patch.disarm();
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Out) -> std::io::Result<T>) -> std::io::Result<T> {
        let mut out =
            self.out.lock().map_err(|_| std::io::Error::other("the gdb writer lock is poisoned"))?;
        f(&mut out)
    }
}

impl Out {
    fn gather(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if !self.open && matches!(bytes, [b'+' | b'-']) {
            return self.writer.write_all(bytes).and_then(|()| self.writer.flush());
        }
        self.open |= bytes.iter().any(|b| matches!(b, b'$' | b'%'));
        if self.patch.armed() {
            let filtered = self.patch.filter(bytes);
            self.gathered.extend_from_slice(&filtered);
        } else {
            self.gathered.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let result = self.writer.write_all(&self.gathered).and_then(|()| self.writer.flush());
        self.gathered.clear();
        self.open = false;
        result
    }
}

impl Connection for Conn {
    type Error = std::io::Error;

    fn write(&mut self, byte: u8) -> std::io::Result<()> {
        self.with(|out| out.gather(&[byte]))
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.with(|out| out.gather(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.with(Out::flush)
    }
}

/// An I/O failure as the API's error.
pub fn accel_err(e: impl std::fmt::Display) -> AccelError {
    AccelError::new(ErrorKind::IO, e.to_string())
}

fn send_bytes(events: &mpsc::Sender<Event>, conn: u64, bytes: &[u8]) -> bool {
    bytes.iter().all(|b| events.send(Event::Data { conn, byte: *b }).is_ok())
}

/// Reads and drops what a character device holds from before this process opened it: bytes a
/// client sent to a stub that has since gone.
fn drain(file: &std::fs::File) {
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL and F_SETFL on a descriptor this process owns change only its flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return;
    }
    // SAFETY: as above.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    let mut buf = [0u8; 4096];
    let mut dropped = 0;
    while let Ok(n @ 1..) = (&*file).read(&mut buf) {
        dropped += n;
    }
    // SAFETY: as above; the descriptor's original flags come back.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
    if dropped > 0 {
        log::debug!("gdb: dropped {dropped} bytes left on the port from an earlier client");
    }
}

/// The session's word to the reader: the client it served is done (it detached or went), so
/// the next bytes on a character device are a new connection even if the device never read as
/// ended in between (a client that left and one that came faster than the port said so). The
/// word names its connection: by the time the session says it, the reader may already have seen
/// the port end and started the next client's connection, which must not be ended for it.
#[derive(Clone, Default)]
pub struct Listener {
    /// The number of the connection whose client is done; 0 for none (numbers start at 1).
    client_done: Arc<std::sync::atomic::AtomicU64>,
}

impl Listener {
    /// Connection `conn`'s client is done.
    pub fn client_done(&self, conn: u64) {
        self.client_done.store(conn, std::sync::atomic::Ordering::Release);
    }
}

/// The first packet every gdb sends on connecting, and only then.
const CLIENT_START: &[u8] = b"$qSupported";

/// Finds where a new client starts in a character device's bytes: at its `qSupported` packet.
/// A device carries every client's bytes in one stream, and neither its end-of-file nor the
/// session's word always comes between two clients (a client can come before the port reads as
/// ended, and its first packet can reach the last client's protocol before the session says that
/// client is done). A prefix of the packet's name is held back until the bytes after it show
/// whether it is one.
#[derive(Default)]
struct ClientStarts {
    held: Vec<u8>,
}

/// A run of bytes for the current connection, or the start of a new client.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Bytes(Vec<u8>),
    NewClient,
}

impl ClientStarts {
    /// Splits `bytes` into pieces; what may still be the start of a client's first packet is
    /// kept for the next call.
    fn feed(&mut self, bytes: &[u8]) -> Vec<Piece> {
        let mut pieces = Vec::new();
        let mut run = Vec::new();
        for &b in bytes {
            if b != CLIENT_START[self.held.len()] {
                run.append(&mut self.held);
            }
            if b == CLIENT_START[self.held.len()] {
                self.held.push(b);
                if self.held.len() == CLIENT_START.len() {
                    if !run.is_empty() {
                        pieces.push(Piece::Bytes(std::mem::take(&mut run)));
                    }
                    pieces.push(Piece::NewClient);
                    run.append(&mut self.held);
                }
            } else {
                run.push(b);
            }
        }
        if !run.is_empty() {
            pieces.push(Piece::Bytes(run));
        }
        pieces
    }

    /// The port ended: what was held belonged to a client that has gone.
    fn forget(&mut self) {
        self.held.clear();
    }
}

/// The first bytes of `bytes`, escaped, for a log line.
fn shown(bytes: &[u8]) -> String {
    let text: String =
        bytes.iter().take(48).flat_map(|b| std::ascii::escape_default(*b)).map(char::from).collect();
    if bytes.len() > 48 {
        format!("{text}...")
    } else {
        text
    }
}

/// A character device: end-of-file means no client is connected at the other end (a
/// virtio-serial port reads so), and data after it, after the session says its client is done,
/// or from a `qSupported` packet on, is a new connection.
fn serve_device(file: std::fs::File, events: mpsc::Sender<Event>, listener: Listener) {
    let mut conn = 0;
    let mut connected = false;
    let mut starts = ClientStarts::default();
    let mut buf = [0u8; 4096];
    loop {
        let result = (&file).read(&mut buf);
        let done = listener.client_done.swap(0, std::sync::atomic::Ordering::AcqRel);
        if connected && done == conn {
            log::debug!("gdb: the session is done with connection {conn}");
            connected = false;
            if events.send(Event::Closed { conn }).is_err() {
                return;
            }
        }
        match result {
            Ok(0) => {
                starts.forget();
                if connected {
                    log::debug!("gdb: the port read as ended; connection {conn} is closed");
                    connected = false;
                    if events.send(Event::Closed { conn }).is_err() {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(n) => {
                for piece in starts.feed(&buf[..n]) {
                    let bytes = match piece {
                        Piece::NewClient => {
                            if connected {
                                log::debug!("gdb: a new client's qSupported ends connection {conn}");
                                connected = false;
                                if events.send(Event::Closed { conn }).is_err() {
                                    return;
                                }
                            }
                            continue;
                        }
                        Piece::Bytes(bytes) => bytes,
                    };
                    if !connected {
                        let Ok(writer) = file.try_clone() else { return };
                        conn += 1;
                        connected = true;
                        log::debug!("gdb: connection {conn} starts with {}", shown(&bytes));
                        if events.send(Event::Connected { conn, writer: Box::new(writer) }).is_err() {
                            return;
                        }
                    }
                    if !send_bytes(&events, conn, &bytes) {
                        return;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("gdb: reading the port: {e}");
                let _ = events.send(Event::Closed { conn });
                return;
            }
        }
    }
}

/// A TCP listener: each accepted client in turn, until it hangs up.
fn serve_tcp(listener: TcpListener, events: mpsc::Sender<Event>) {
    let mut conn = 0;
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("gdb: accepting a connection: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        log::info!("gdb: connection from {peer}");
        let _ = stream.set_nodelay(true);
        let Ok(writer) = stream.try_clone() else { continue };
        conn += 1;
        if events.send(Event::Connected { conn, writer: Box::new(writer) }).is_err() {
            return;
        }
        let mut reader = stream;
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) if send_bytes(&events, conn, &buf[..n]) => {}
                Ok(_) => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if events.send(Event::Closed { conn }).is_err() {
            return;
        }
    }
}

/// Starts listening where `options` says, with a thread that reports connections, their bytes
/// and their ends on `events`.
pub fn listen(options: &GdbOptions, events: mpsc::Sender<Event>) -> Result<Listener> {
    let listener = Listener::default();
    let address = &options.address;
    let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new().name(name.into()).spawn(body).map(drop).map_err(accel_err)
    };
    if address.contains('/') {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(address)
            .map_err(|e| accel_err(format!("opening {address}: {e}")))?;
        drain(&file);
        let for_reader = listener.clone();
        spawn("gdb-port", Box::new(move || serve_device(file, events, for_reader)))?;
    } else {
        let listener =
            TcpListener::bind(address).map_err(|e| accel_err(format!("listening on {address}: {e}")))?;
        spawn("gdb-listener", Box::new(move || serve_tcp(listener, events)))?;
    }
    eprintln!("accel-host: gdb stub ready on {address}");
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use std::os::fd::FromRawFd;

    use super::*;

    /// What the reader reported next, in short: `+N` connected, `N:x` a byte, `-N` closed.
    fn next(rx: &mpsc::Receiver<Event>) -> String {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Event::Connected { conn, .. }) => format!("+{conn}"),
            Ok(Event::Data { conn, byte }) => format!("{conn}:{}", byte as char),
            Ok(Event::Closed { conn }) => format!("-{conn}"),
            Ok(_) => "other".into(),
            Err(e) => format!("nothing ({e})"),
        }
    }

    /// What a connection wrote, and how many writes it took.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut s = self.0.lock().expect("sink");
            s.0.extend_from_slice(buf);
            s.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn bytewise(conn: &mut Conn, bytes: &[u8]) {
        for b in bytes {
            conn.write(*b).expect("write");
        }
    }

    #[test]
    fn a_client_starts_at_its_qsupported_even_across_reads() {
        let mut starts = ClientStarts::default();
        let bytes = |b: &[u8]| Piece::Bytes(b.to_vec());
        assert_eq!(starts.feed(b"+$D#44"), [bytes(b"+$D#44")]);
        // The next client's first packet, split over two reads: its start is held back.
        assert_eq!(starts.feed(b"+$qSup"), [bytes(b"+")]);
        assert_eq!(
            starts.feed(b"ported:multiprocess+#c6"),
            [Piece::NewClient, bytes(b"$qSupported:multiprocess+#c6")]
        );
        // Lookalikes pass as they are, a held prefix included.
        assert_eq!(starts.feed(b"$qS"), []);
        assert_eq!(
            starts.feed(b"ymbol::#5b$$qSupported"),
            [bytes(b"$qSymbol::#5b$"), Piece::NewClient, bytes(b"$qSupported")]
        );
        starts.feed(b"$qSu");
        starts.forget();
        assert_eq!(starts.feed(b"x"), [bytes(b"x")]);
    }

    #[test]
    fn a_new_client_on_the_port_ends_the_last_one_that_never_said_goodbye() {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two new descriptors into an array of two.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors are new and owned by nothing else; each File takes one.
        let (reader, mut writer) =
            unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || serve_device(reader, tx, Listener::default()));
        writer.write_all(b"$qSupported#37").unwrap();
        assert_eq!([next(&rx), next(&rx)], ["+1", "1:$"]);
        while next(&rx) != "1:7" {}
        writer.write_all(b"+$qSupported#37").unwrap();
        assert_eq!([next(&rx), next(&rx), next(&rx), next(&rx)], ["1:+", "-1", "+2", "2:$"]);
    }

    #[test]
    fn a_done_word_ends_only_the_connection_it_names() {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two new descriptors into an array of two.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors are new and owned by nothing else; each File takes one.
        let (reader, mut writer) =
            unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) };
        let (tx, rx) = mpsc::channel();
        let listener = Listener::default();
        let for_reader = listener.clone();
        std::thread::spawn(move || serve_device(reader, tx, for_reader));

        writer.write_all(b"a").unwrap();
        assert_eq!([next(&rx), next(&rx)], ["+1", "1:a"]);
        // The session is done with client 1 while the port never read as ended: the next bytes
        // are client 2's.
        listener.client_done(1);
        writer.write_all(b"b").unwrap();
        assert_eq!([next(&rx), next(&rx), next(&rx)], ["-1", "+2", "2:b"]);
        // A word about client 1 that comes when client 2 is already being served leaves it be.
        listener.client_done(1);
        writer.write_all(b"c").unwrap();
        assert_eq!(next(&rx), "2:c");
        drop(writer);
        assert_eq!(next(&rx), "-2");
    }

    #[test]
    fn a_packet_leaves_in_one_write_and_an_ack_at_once() {
        let sink = Sink::default();
        let mut conn = Conn::new(Box::new(sink.clone()));
        conn.write(b'+').expect("ack");
        assert_eq!(sink.0.lock().expect("sink").0, b"+");
        bytewise(&mut conn, b"$swbreak+;hwbreak+#00");
        assert_eq!(sink.0.lock().expect("sink").1, 1, "nothing of the packet before the flush");
        conn.flush().expect("flush");
        let (bytes, writes) = sink.0.lock().expect("sink").clone();
        assert_eq!((bytes.as_slice(), writes), (&b"+$swbreak+;hwbreak+#00"[..], 2));
    }

    #[test]
    fn a_patched_reply_keeps_its_plus_signs() {
        let sink = Sink::default();
        let mut conn = Conn::new(Box::new(sink.clone()));
        conn.patch_next_reply(";QNonStop+");
        conn.write(b'+').expect("ack");
        bytewise(&mut conn, b"$swbreak+#00");
        conn.flush().expect("flush");
        let bytes = sink.0.lock().expect("sink").0.clone();
        let text = String::from_utf8(bytes).expect("text");
        assert!(text.starts_with("+$swbreak+;QNonStop+#"), "{text}");
    }
}
