//! The connections to gdb, one after another: a TCP listener, an owner-only Unix socket, or a
//! character device (a virtio-serial port), and the reader thread that turns each connection's bytes into session
//! events. Every connection gets a number, so that what a dead client left behind is never taken
//! for the next one's.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::{
        fd::AsRawFd,
        unix::{
            fs::{FileTypeExt, MetadataExt},
            net::{UnixListener, UnixStream},
        },
    },
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use accel_api::{AccelError, ErrorKind, Result};

use super::{
    options::{GdbAddress, GdbOptions},
    vcpu_thread::Event,
};

/// The most bytes one read of a connection takes, and so the largest chunk the session gets.
const READ_CHUNK: usize = 4096;

/// Writes to one gdb connection: each acknowledgement and reply leaves in one write.
pub struct Conn {
    writer: Box<dyn Write + Send>,
}

impl Conn {
    /// A connection writing to `writer`.
    pub fn new(writer: Box<dyn Write + Send>) -> Self {
        Self { writer }
    }

    /// Sends `bytes` now.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer.write_all(bytes).and_then(|()| self.writer.flush()).map_err(accel_err)
    }
}

/// An I/O failure as the API's error.
pub fn accel_err(e: impl std::fmt::Display) -> AccelError {
    AccelError::new(ErrorKind::IO, e.to_string())
}

/// Hands a connection's bytes to the session, waiting while its queue is full (so a client
/// that sends faster than the session serves it waits too); `false` once the session is gone.
fn send_bytes(events: &mpsc::SyncSender<Event>, conn: u64, bytes: &[u8]) -> bool {
    bytes.chunks(READ_CHUNK).all(|chunk| events.send(Event::Data { conn, bytes: chunk.to_vec() }).is_ok())
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
/// A socket client's connection is hung up at the session's word.
#[derive(Clone, Default)]
pub struct Listener {
    /// The number of the connection whose client is done; 0 for none (numbers start at 1).
    client_done: Arc<std::sync::atomic::AtomicU64>,
    /// The socket client being served: its connection's number, and what hangs it up.
    current: Arc<Mutex<Option<(u64, HangUp)>>>,
    /// The Unix socket made for the stub, removed once the last clone of this is gone.
    socket_file: Option<Arc<SocketFile>>,
}

/// Hangs up a socket client's connection.
type HangUp = Box<dyn Fn() + Send>;

impl Listener {
    /// Connection `conn`'s client is done: a socket client's connection is hung up, and the
    /// next client may come at once (what the session gets of this one from now on is taken for
    /// a gone connection's, by its number).
    pub fn client_done(&self, conn: u64) {
        self.client_done.store(conn, std::sync::atomic::Ordering::Release);
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|(c, _)| *c == conn) {
            if let Some((_, hang_up)) = current.take() {
                hang_up();
            }
        }
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

    /// Part of what may be a client's first packet is held back.
    fn holds(&self) -> bool {
        !self.held.is_empty()
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

/// What became of a port that read as ended.
#[derive(Debug, PartialEq, Eq)]
enum Settled {
    /// It has a client at the other end again, and nothing to read yet.
    Client,
    /// It brought this many bytes, now at the start of the buffer.
    Bytes(usize),
    /// It read as ended, with nothing to read, for the whole grace: no client.
    Ended,
}

/// A character device as the port's reader uses it.
trait Port {
    /// Reads what the client at the other end sent; `Ok(0)` when the port reads as ended.
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
    /// Watches the port after it read as ended, until it has a client again, brings bytes
    /// (read into `buf`), or has read as ended for `grace`.
    fn settle(&mut self, buf: &mut [u8], grace: Duration) -> std::io::Result<Settled>;
    /// A writer for a new connection over the port.
    fn writer(&self) -> std::io::Result<Box<dyn Write + Send>>;
}

impl Port for std::fs::File {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        Read::read(self, buf)
    }

    /// A virtio-serial port polls as hung up while no client is connected at the host's end (a
    /// pipe, once its writer closed and while no other has opened it). It polls as readable
    /// then too, so only a read tells whether something came, and while it is hung up a read
    /// does not wait: it brings what a client sent before the port heard of the client, or
    /// reads as ended.
    fn settle(&mut self, buf: &mut [u8], grace: Duration) -> std::io::Result<Settled> {
        let deadline = Instant::now() + grace;
        loop {
            let mut poll = libc::pollfd { fd: self.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: poll reads and writes the one pollfd it is given, which lives on this
            // stack frame, and with a timeout of 0 it returns at once.
            let ready = unsafe { libc::poll(&mut poll, 1, 0) };
            if ready >= 0 && poll.revents & libc::POLLHUP == 0 {
                return Ok(Settled::Client);
            }
            match Read::read(self, buf) {
                Ok(0) => {}
                Ok(n) => return Ok(Settled::Bytes(n)),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Ok(Settled::Ended);
            }
            std::thread::sleep(PORT_POLL);
        }
    }

    fn writer(&self) -> std::io::Result<Box<dyn Write + Send>> {
        Ok(Box::new(self.try_clone()?))
    }
}

/// How often the reader looks at a port that reads as ended.
const PORT_POLL: Duration = Duration::from_millis(20);

/// How long a port must read as ended before the client it was serving counts as gone. The
/// guest's word that a client went can trail its successor's first packets by a tenth of a
/// second and more in a nested, emulated guest (see [`serve_device`]); a gone client's
/// breakpoints are removed this much later.
const END_GRACE: Duration = Duration::from_secs(1);

/// A character device: data after the port reads as ended, after the session says its client
/// is done, or from a `qSupported` packet on, is a new connection.
///
/// The port reads as ended while no client is connected at the other end, but a virtio-serial
/// port can say so late, and say that a client came late too: the guest learns of a client's
/// coming and going by control messages on a queue of their own, which its kernel handles apart
/// from the data, and in a nested emulated guest a tenth of a second and more after it. When one
/// client leaves and the next comes at once, the new client's first packets can be read before
/// the port reads as ended for the one that left, or before it reads as connected again for
/// the new one. Either way it reads as ended once in the middle of the new client's handshake.
/// So while a connection, or the start of one, is in progress, an end counts only once the port
/// has read as ended with nothing to read for [`END_GRACE`]; otherwise the connection goes on,
/// and a client that did come in between starts its own at its `qSupported`.
fn serve_device(mut port: impl Port, events: mpsc::SyncSender<Event>, listener: Listener) {
    let mut conn = 0;
    let mut connected = false;
    let mut starts = ClientStarts::default();
    let mut buf = [0u8; READ_CHUNK];
    // What the port brought while it was watched after reading as ended.
    let mut brought = None;
    loop {
        let result = brought.take().unwrap_or_else(|| port.read(&mut buf));
        let done = listener.client_done.swap(0, std::sync::atomic::Ordering::AcqRel);
        if connected && done == conn {
            log::debug!("gdb: the session is done with connection {conn}");
            connected = false;
            if events.send(Event::Closed { conn }).is_err() {
                return;
            }
        }
        match result {
            Ok(0) if !connected && !starts.holds() => std::thread::sleep(PORT_POLL),
            Ok(0) => match port.settle(&mut buf, END_GRACE) {
                Ok(Settled::Ended) => {
                    starts.forget();
                    if connected {
                        log::debug!("gdb: the port read as ended; connection {conn} is closed");
                        connected = false;
                        if events.send(Event::Closed { conn }).is_err() {
                            return;
                        }
                    }
                }
                settled => {
                    if connected {
                        log::debug!(
                            "gdb: the port read as ended and has a client again: connection {conn} goes on"
                        );
                    }
                    brought = match settled {
                        Ok(Settled::Bytes(n)) => Some(Ok(n)),
                        Err(e) => Some(Err(e)),
                        _ => None,
                    };
                }
            },
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
                        let Ok(writer) = port.writer() else { return };
                        conn += 1;
                        connected = true;
                        log::debug!("gdb: connection {conn} starts with {}", shown(&bytes));
                        if events.send(Event::Connected { conn, writer }).is_err() {
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
                if connected {
                    let _ = events.send(Event::Closed { conn });
                }
                return;
            }
        }
    }
}

/// How long a write to a socket client may wait for the client to read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a client that comes while another is attached waits for that one to go before it
/// is refused.
const HANDOVER: Duration = Duration::from_millis(500);

/// How long a refused client is given to read its refusal before its socket closes.
const REFUSAL_GRACE: Duration = Duration::from_secs(2);

/// What a client that comes while another is attached reads before its connection closes: an
/// error reply to the `qSupported` it sends first, which gdb shows.
const REFUSAL: &str = "E.another gdb client is attached";

/// A connected socket client: TCP or Unix.
trait Stream: Read + Write + Send + Sized + 'static {
    fn clone_stream(&self) -> std::io::Result<Self>;
    fn shutdown(&self, how: std::net::Shutdown) -> std::io::Result<()>;
    fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> std::io::Result<()>;
}

impl Stream for TcpStream {
    fn clone_stream(&self) -> std::io::Result<Self> {
        self.try_clone()
    }

    fn shutdown(&self, how: std::net::Shutdown) -> std::io::Result<()> {
        TcpStream::shutdown(self, how)
    }

    fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> std::io::Result<()> {
        let _ = self.set_nodelay(true);
        self.set_read_timeout(read)?;
        self.set_write_timeout(write)
    }
}

impl Stream for UnixStream {
    fn clone_stream(&self) -> std::io::Result<Self> {
        self.try_clone()
    }

    fn shutdown(&self, how: std::net::Shutdown) -> std::io::Result<()> {
        UnixStream::shutdown(self, how)
    }

    fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(read)?;
        self.set_write_timeout(write)
    }
}

/// How many refused clients are told why at once, at most; more are closed at once.
const REFUSING: usize = 8;

/// The refused clients being told why.
static REFUSED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Tells a client that came while another is attached so, and closes its connection once it
/// has read that (or after a short grace), on a thread of its own.
fn refuse<S: Stream>(mut stream: S) {
    use std::sync::atomic::Ordering;
    if REFUSED.fetch_add(1, Ordering::AcqRel) >= REFUSING {
        REFUSED.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let spawned = std::thread::Builder::new().name("gdb-refuse".into()).spawn(move || {
        let _ = stream.set_timeouts(Some(REFUSAL_GRACE), Some(REFUSAL_GRACE));
        let packet = format!("${REFUSAL}#{:02x}", super::packets::checksum(REFUSAL.as_bytes()));
        let _ = stream.write_all(packet.as_bytes());
        // Closing with the client's bytes unread would reset the connection, and could lose the
        // reply: the client's end is read until it closes, or the grace is over.
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let started = Instant::now();
        let mut buf = [0u8; 256];
        while started.elapsed() < REFUSAL_GRACE && matches!(stream.read(&mut buf), Ok(1..)) {}
        REFUSED.fetch_sub(1, Ordering::AcqRel);
    });
    if spawned.is_err() {
        REFUSED.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Socket clients, one at a time: each accepted client is served by a reader thread of its own
/// until it hangs up or the session is done with it; one that comes meanwhile is refused.
fn serve_sockets<S: Stream>(
    mut accept: impl FnMut() -> std::io::Result<S>,
    events: mpsc::SyncSender<Event>,
    listener: Listener,
) {
    let mut conn = 0;
    loop {
        let stream = match accept() {
            Ok(stream) => stream,
            Err(e) => {
                log::warn!("gdb: accepting a connection: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // A client that comes as the last one goes (gdb run again at once) is served: the last
        // one's reader is given a moment to see it gone.
        let started = Instant::now();
        let mut current = listener.current.lock().unwrap_or_else(|p| p.into_inner());
        while current.is_some() && started.elapsed() < HANDOVER {
            drop(current);
            std::thread::sleep(Duration::from_millis(10));
            current = listener.current.lock().unwrap_or_else(|p| p.into_inner());
        }
        if current.is_some() {
            log::warn!("gdb: a client came while another is attached; it is refused");
            drop(current);
            refuse(stream);
            continue;
        }
        // A client that stops reading fails the session's next write in time, and counts as gone,
        // rather than holding the session in a write for ever.
        let (Ok(()), Ok(writer), Ok(hang_up)) =
            (stream.set_timeouts(None, Some(WRITE_TIMEOUT)), stream.clone_stream(), stream.clone_stream())
        else {
            continue;
        };
        conn += 1;
        log::info!("gdb: connection {conn}");
        *current = Some((conn, Box::new(move || drop(hang_up.shutdown(std::net::Shutdown::Both)))));
        drop(current);
        if events.send(Event::Connected { conn, writer: Box::new(writer) }).is_err() {
            return;
        }
        let (events, listener) = (events.clone(), listener.clone());
        let reader = move || {
            let mut reader = stream;
            let mut buf = [0u8; READ_CHUNK];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) if send_bytes(&events, conn, &buf[..n]) => {}
                    Ok(_) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = events.send(Event::Closed { conn });
            // Only once its end is queued may the next client come, so that the session sees
            // them in order (unless the session was done with it first).
            let mut current = listener.current.lock().unwrap_or_else(|p| p.into_inner());
            if current.as_ref().is_some_and(|(c, _)| *c == conn) {
                *current = None;
            }
        };
        if std::thread::Builder::new().name(format!("gdb-conn{conn}")).spawn(reader).is_err() {
            log::warn!("gdb: no thread to read connection {conn}");
            return;
        }
    }
}

/// A Unix socket this process made, removed when the stub ends (if it is still the one made).
struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if self.path.symlink_metadata().is_ok_and(|m| (m.dev(), m.ino()) == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Makes a Unix socket at `path` that only this user can reach, with no moment when anyone
/// else could: it is bound in a new owner-only directory next to `path`, made owner-only,
/// then linked to `path` (which fails if anything is there) and its first name removed.
fn bind_unix(path: &Path) -> Result<(UnixListener, SocketFile)> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let shown = path.display();
    let name = path.file_name().ok_or_else(|| accel_err(format!("unix:{shown} names no file")))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut private_name = std::ffi::OsString::from(".");
    private_name.push(name);
    private_name.push(format!(".{}.tmp", std::process::id()));
    let private = parent.join(private_name);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|e| accel_err(format!("making {}: {e}", private.display())))?;
    let inner = private.join("gdb");
    let made = (|| {
        let socket = UnixListener::bind(&inner).map_err(|e| format!("listening on unix:{shown}: {e}"))?;
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("unix:{shown}: {e}"))?;
        std::fs::hard_link(&inner, path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                format!("{shown} already exists; give unix: a path where nothing is")
            }
            _ => format!("unix:{shown}: {e}"),
        })?;
        Ok::<_, String>(socket)
    })();
    let _ = std::fs::remove_file(&inner);
    let _ = std::fs::remove_dir(&private);
    let socket = made.map_err(accel_err)?;
    let meta = path.symlink_metadata().map_err(|e| accel_err(format!("unix:{shown}: {e}")))?;
    let file = SocketFile { path: path.to_path_buf(), id: (meta.dev(), meta.ino()) };
    if !meta.file_type().is_socket() || meta.mode() & 0o077 != 0 {
        return Err(accel_err(format!(
            "unix:{shown} is not an owner-only socket (mode {:o})",
            meta.mode() & 0o7777
        )));
    }
    Ok((socket, file))
}

/// Starts listening where `options` say, with a thread that reports connections, their bytes
/// and their ends on `events`.
pub fn listen(options: &GdbOptions, events: mpsc::SyncSender<Event>) -> Result<Listener> {
    let mut listener = Listener::default();
    let address = &options.address;
    let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new().name(name.into()).spawn(body).map(drop).map_err(accel_err)
    };
    let for_reader = listener.clone();
    match address {
        GdbAddress::Device(path) => {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| accel_err(format!("opening {}: {e}", path.display())))?;
            if !file.metadata().map_err(accel_err)?.file_type().is_char_device() {
                return Err(accel_err(format!("{} is not a character device", path.display())));
            }
            drain(&file);
            spawn("gdb-port", Box::new(move || serve_device(file, events, for_reader)))?;
        }
        GdbAddress::Tcp(addr) => {
            let socket =
                TcpListener::bind(addr).map_err(|e| accel_err(format!("listening on {addr}: {e}")))?;
            if !addr.ip().is_loopback() {
                eprintln!(
                    "accel-host: warning: the gdb stub listens on {addr}, which is not loopback, with no \
                     authentication: anyone who can reach it can read and write guest memory and end \
                     the VM (use :PORT or unix:PATH to keep it to this user)"
                );
            }
            spawn(
                "gdb-listener",
                Box::new(move || serve_sockets(|| socket.accept().map(|a| a.0), events, for_reader)),
            )?;
        }
        GdbAddress::Unix(path) => {
            let (socket, file) = bind_unix(path)?;
            listener.socket_file = Some(Arc::new(file));
            spawn(
                "gdb-listener",
                Box::new(move || serve_sockets(|| socket.accept().map(|a| a.0), events, for_reader)),
            )?;
        }
    }
    eprintln!("accel-host: gdb stub ready on {address}");
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use std::os::fd::FromRawFd;

    use super::*;

    /// What a reader reports, one byte of its chunks at a time.
    struct Reported {
        rx: mpsc::Receiver<Event>,
        pending: std::collections::VecDeque<String>,
    }

    impl Reported {
        fn new(rx: mpsc::Receiver<Event>) -> Self {
            Self { rx, pending: Default::default() }
        }

        /// What the reader reported next, in short: `+N` connected, `N:x` a byte, `-N` closed.
        fn next(&mut self) -> String {
            if let Some(byte) = self.pending.pop_front() {
                return byte;
            }
            match self.rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Event::Connected { conn, .. }) => format!("+{conn}"),
                Ok(Event::Data { conn, bytes }) => {
                    assert!(!bytes.is_empty() && bytes.len() <= READ_CHUNK, "a chunk of {}", bytes.len());
                    self.pending.extend(bytes.iter().map(|b| format!("{conn}:{}", *b as char)));
                    self.next()
                }
                Ok(Event::Closed { conn }) => format!("-{conn}"),
                Ok(_) => "other".into(),
                Err(e) => format!("nothing ({e})"),
            }
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
        let (tx, rx) = mpsc::sync_channel(4);
        std::thread::spawn(move || serve_device(reader, tx, Listener::default()));
        let mut rx = Reported::new(rx);
        writer.write_all(b"$qSupported#37").unwrap();
        assert_eq!([rx.next(), rx.next()], ["+1", "1:$"]);
        while rx.next() != "1:7" {}
        writer.write_all(b"+$qSupported#37").unwrap();
        assert_eq!([rx.next(), rx.next(), rx.next(), rx.next()], ["1:+", "-1", "+2", "2:$"]);
    }

    /// A port that plays a script: what clients sent, and ends of the port.
    struct Scripted(std::collections::VecDeque<Step>);

    enum Step {
        Bytes(&'static [u8]),
        /// The port reads as ended, and has a client again at once.
        Late,
        /// The port reads as ended, and brings these bytes while it is watched.
        LateThen(&'static [u8]),
        /// The port reads as ended, and stays so.
        Gone,
    }

    impl Port for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.0.front() {
                Some(Step::Bytes(bytes)) => {
                    let n = bytes.len();
                    buf[..n].copy_from_slice(bytes);
                    self.0.pop_front();
                    Ok(n)
                }
                Some(_) => Ok(0),
                None => Err(std::io::Error::other("the script is over")),
            }
        }

        fn settle(&mut self, buf: &mut [u8], _grace: Duration) -> std::io::Result<Settled> {
            match self.0.pop_front() {
                Some(Step::Late) => Ok(Settled::Client),
                Some(Step::LateThen(bytes)) => {
                    buf[..bytes.len()].copy_from_slice(bytes);
                    Ok(Settled::Bytes(bytes.len()))
                }
                Some(Step::Gone) => Ok(Settled::Ended),
                _ => Err(std::io::Error::other("nothing ended")),
            }
        }

        fn writer(&self) -> std::io::Result<Box<dyn Write + Send>> {
            Ok(Box::new(std::io::sink()))
        }
    }

    /// Everything the reader reports for `steps`, each connection's bytes run together:
    /// `+N` connected, `N:bytes`, `-N` closed.
    fn transcript(steps: Vec<Step>) -> Vec<String> {
        let (tx, rx) = mpsc::sync_channel(4);
        let port = Scripted(steps.into());
        std::thread::spawn(move || serve_device(port, tx, Listener::default()));
        let mut out: Vec<String> = Vec::new();
        while let Ok(event) = rx.recv_timeout(Duration::from_secs(10)) {
            match event {
                Event::Connected { conn, .. } => out.push(format!("+{conn}")),
                Event::Closed { conn } => out.push(format!("-{conn}")),
                Event::Data { conn, bytes } => {
                    let text = String::from_utf8_lossy(&bytes);
                    match out.last_mut() {
                        Some(last) if last.starts_with(&format!("{conn}:")) => last.push_str(&text),
                        _ => out.push(format!("{conn}:{text}")),
                    }
                }
                _ => out.push("other".into()),
            }
        }
        out
    }

    #[test]
    fn an_end_the_port_reports_late_does_not_split_a_client() {
        use Step::{Bytes, Gone, Late, LateThen};
        // As gdb's packet log showed it: a client came as the last one went, its qSupported was
        // read, and only then did the port read as ended, for the client that had gone. The new
        // client's handshake goes on in the connection that saw its qSupported, whether its next
        // packet comes after the port has a client again or while the port is watched.
        for next in [vec![Late, Bytes(b"+$vMustReplyEmpty#3a")], vec![LateThen(b"+$vMustReplyEmpty#3a")]] {
            let mut steps = vec![Bytes(b"$qSupported:multiprocess+#c6")];
            steps.extend(next);
            steps.push(Gone);
            let late = transcript(steps);
            assert_eq!(late, ["+1", "1:$qSupported:multiprocess+#c6+$vMustReplyEmpty#3a", "-1"]);
        }
        // The late end between the last client's bytes and the next one's: the next one starts
        // at its qSupported all the same.
        let between = transcript(vec![Bytes(b"$D#44"), Late, Bytes(b"+$qSupported#37"), Gone]);
        assert_eq!(between, ["+1", "1:$D#44+", "-1", "+2", "2:$qSupported#37", "-2"]);
        // The late end while part of a qSupported is held back: the rest completes it.
        let held = transcript(vec![Bytes(b"$qSup"), Late, Bytes(b"ported:multiprocess+#c6"), Gone]);
        assert_eq!(held, ["+1", "1:$qSupported:multiprocess+#c6", "-1"]);
        // A port that stays ended has no client: what comes next is a new connection.
        let gone =
            transcript(vec![Bytes(b"$qSupported:multiprocess+#c6"), Gone, Bytes(b"+$vMustReplyEmpty#3a")]);
        assert_eq!(
            gone,
            ["+1", "1:$qSupported:multiprocess+#c6", "-1", "+2", "2:+$vMustReplyEmpty#3a", "-2"]
        );
    }

    #[test]
    fn a_fifo_that_has_a_writer_again_settles_as_having_a_client() {
        // A FIFO reads as ended and polls as hung up once its writer closed, until another opens
        // it: as a virtio-serial port does between two clients.
        let path = std::env::temp_dir().join(format!("accel-gdb-port-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: mkfifo reads the NUL-terminated path, which outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let open_writer = {
            let path = path.clone();
            move || std::fs::OpenOptions::new().write(true).open(&path).expect("writer")
        };
        let reader = std::thread::spawn({
            let path = path.clone();
            move || std::fs::File::open(path).expect("reader")
        });
        let writer = open_writer();
        let mut port = reader.join().expect("reader thread");
        drop(writer);
        let mut buf = [0u8; 16];
        assert_eq!(Port::read(&mut port, &mut buf).expect("read"), 0);
        let started = Instant::now();
        assert_eq!(port.settle(&mut buf, Duration::from_millis(200)).expect("settle"), Settled::Ended);
        assert!(started.elapsed() >= Duration::from_millis(200));
        // The next writer comes while the port is watched, and sends a packet: the port has
        // a client again, or brings the packet already.
        let again = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let mut writer = open_writer();
            writer.write_all(b"$g#67").expect("write");
            writer
        });
        let n = match port.settle(&mut buf, Duration::from_secs(10)).expect("settle") {
            Settled::Client => Port::read(&mut port, &mut buf).expect("read"),
            Settled::Bytes(n) => n,
            Settled::Ended => 0,
        };
        assert_eq!(&buf[..n], b"$g#67");
        drop(again.join().expect("writer thread"));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_done_word_ends_only_the_connection_it_names() {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two new descriptors into an array of two.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors are new and owned by nothing else; each File takes one.
        let (reader, mut writer) =
            unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) };
        let (tx, rx) = mpsc::sync_channel(4);
        let listener = Listener::default();
        let for_reader = listener.clone();
        std::thread::spawn(move || serve_device(reader, tx, for_reader));
        let mut rx = Reported::new(rx);

        writer.write_all(b"a").unwrap();
        assert_eq!([rx.next(), rx.next()], ["+1", "1:a"]);
        // The session is done with client 1 while the port never read as ended: the next bytes
        // are client 2's.
        listener.client_done(1);
        writer.write_all(b"b").unwrap();
        assert_eq!([rx.next(), rx.next(), rx.next()], ["-1", "+2", "2:b"]);
        // A word about client 1 that comes when client 2 is already being served leaves it be.
        listener.client_done(1);
        writer.write_all(b"c").unwrap();
        assert_eq!(rx.next(), "2:c");
        drop(writer);
        assert_eq!(rx.next(), "-2");
    }
}
