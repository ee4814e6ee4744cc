//! The host side of the guest console: the terminal in raw mode while the guest runs (restored
//! on every way out), a thread reading the host's stdin for the guest, and an escape key to quit,
//! as QEMU's `-nographic` has `Ctrl-A x`.
//!
//! # Raw mode
//! When stdin is a terminal, [`RawTerminal::enter`] turns off line editing, echo and the keys
//! that send signals, so every key (Ctrl-C included) goes to the guest; output processing stays
//! on, so a guest's bare `\n` still starts a new line. The saved settings come back when the
//! guard drops, when the process ends through `std::process::exit` (an `atexit` handler), and
//! on SIGINT, SIGTERM, SIGHUP and SIGQUIT, whose handlers restore the terminal and then deliver
//! the signal as it would have been without them. A signal handler installed after
//! [`RawTerminal::enter`] replaces this one, and must end the process through one of the other
//! paths. SIGKILL cannot be caught: `stty sane` repairs the terminal after one.
//!
//! # The escape key
//! The escape key (default Ctrl-A) followed by `x` quits, by `h` prints help, and by itself
//! sends one escape key to the guest; followed by anything else, both go to the guest. The key
//! is chosen with a value such as `^A` or `^]` (see [`Escape`]'s `FromStr`), or `none`.
//!
//! When accel-host runs inside a VM under an outer `qemu -nographic`, the outer QEMU takes
//! Ctrl-A first: `Ctrl-A x` would stop the outer VM. There, either type `Ctrl-A Ctrl-A x` (the
//! outer QEMU passes one Ctrl-A through), or give accel-host another escape key: `^]`, telnet's
//! escape, clashes with neither QEMU nor a shell's line editing.

use std::{
    cell::UnsafeCell,
    fmt,
    io::{self, Read},
    mem::MaybeUninit,
    os::fd::RawFd,
    str::FromStr,
    sync::{
        atomic::{AtomicBool, AtomicI32, Ordering},
        Once,
    },
    thread::JoinHandle,
};

/// The key that starts a console command, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escape(Option<u8>);

impl Escape {
    /// Ctrl-A, as QEMU.
    pub const CTRL_A: Self = Self(Some(0x01));
    /// No escape key: every byte goes to the guest, and the console cannot quit.
    pub const NONE: Self = Self(None);

    /// The escape byte, if there is one.
    pub fn byte(self) -> Option<u8> {
        self.0
    }

    /// The lines of help for this escape key.
    pub fn help(self) -> String {
        match self.0 {
            None => "the console has no escape key\n".into(),
            Some(_) => format!(
                "{self} h    print this help\n\
                 {self} x    quit accel-host\n\
                 {self} {self}   send {self} to the guest\n"
            ),
        }
    }
}

impl Default for Escape {
    fn default() -> Self {
        Self::CTRL_A
    }
}

impl fmt::Display for Escape {
    /// Caret notation: `^A`, `^]`; or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(byte) => write!(f, "^{}", char::from(byte + 0x40)),
            None => f.write_str("none"),
        }
    }
}

impl FromStr for Escape {
    type Err = String;

    /// `^X` for Ctrl-X: a letter (either case) or one of `\ ] ^ _`; or `none`. Keys that a
    /// keyboard sends on its own (Enter `^M`, Tab `^I`, Backspace `^H`, Esc `^[`, which starts
    /// every arrow key, and `^J`, `^@`) are refused.
    fn from_str(text: &str) -> Result<Self, String> {
        if text.eq_ignore_ascii_case("none") {
            return Ok(Self::NONE);
        }
        let key = match text.as_bytes() {
            [b'^', key] => key.to_ascii_uppercase(),
            _ => {
                return Err(format!(
                    "'{text}': give the escape key as ^X (Ctrl-X), for example ^A or ^], or none"
                ))
            }
        };
        match key {
            b'@' | b'H' | b'I' | b'J' | b'M' | b'[' => Err(format!(
                "'{text}' is a key the keyboard sends on its own; pick another, for example ^A or ^]"
            )),
            b'A'..=b'Z' | b'\\' | b']' | b'^' | b'_' => Ok(Self(Some(key - 0x40))),
            _ => Err(format!("'{text}' is not a control key; give ^ and a letter or one of \\ ] ^ _")),
        }
    }
}

/// A console command typed after the escape key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Escape, `x`: end the run.
    Quit,
    /// Escape, `h`: show the keys.
    Help,
}

/// The escape key's state machine: host bytes in, guest bytes and commands out.
#[derive(Debug, Clone)]
pub struct EscapeFilter {
    escape: Escape,
    /// The last byte was the escape key.
    pending: bool,
}

impl EscapeFilter {
    /// A filter for `escape`.
    pub fn new(escape: Escape) -> Self {
        Self { escape, pending: false }
    }

    /// Takes one byte from the host: appends what goes to the guest to `to_guest`, and returns
    /// the command it completes, if any.
    pub fn feed(&mut self, byte: u8, to_guest: &mut Vec<u8>) -> Option<Command> {
        let Some(escape) = self.escape.byte() else {
            to_guest.push(byte);
            return None;
        };
        if !std::mem::take(&mut self.pending) {
            if byte == escape {
                self.pending = true;
            } else {
                to_guest.push(byte);
            }
            return None;
        }
        match byte {
            b'x' | b'X' => Some(Command::Quit),
            b'h' | b'H' | b'?' => Some(Command::Help),
            _ if byte == escape => {
                to_guest.push(escape);
                None
            }
            _ => {
                to_guest.extend([escape, byte]);
                None
            }
        }
    }
}

/// How reading the host's input ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The user typed the escape key and `x`.
    Quit,
    /// The input ended (stdin closed, or a file or pipe read to its end).
    Eof,
}

/// Reads `source` until it ends or the user quits: what goes to the guest is handed to `input`
/// a read at a time, and help text to `help`.
pub fn pump(
    mut source: impl Read,
    escape: Escape,
    mut input: impl FnMut(&[u8]),
    mut help: impl FnMut(&str),
) -> io::Result<End> {
    let mut filter = EscapeFilter::new(escape);
    let mut buf = [0u8; 256];
    let mut to_guest = Vec::with_capacity(buf.len() * 2);
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => return Ok(End::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for byte in &buf[..n] {
            match filter.feed(*byte, &mut to_guest) {
                Some(Command::Quit) => {
                    if !to_guest.is_empty() {
                        input(&to_guest);
                    }
                    return Ok(End::Quit);
                }
                Some(Command::Help) => help(&escape.help()),
                None => {}
            }
        }
        if !to_guest.is_empty() {
            input(&to_guest);
            to_guest.clear();
        }
    }
}

/// Starts a thread that reads the host's stdin: guest bytes go to `input`; the escape key and
/// `x` call `quit` and end the thread; help goes to stderr. At the end of stdin the thread ends
/// and the guest runs on, as QEMU does. The thread blocks in `read` and is not joined: it ends
/// with the process.
pub fn spawn_reader(
    escape: Escape,
    input: impl FnMut(&[u8]) + Send + 'static,
    quit: impl FnOnce() + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("console".into()).spawn(move || {
        match pump(io::stdin().lock(), escape, input, |help| eprint!("\n{help}")) {
            Ok(End::Quit) => quit(),
            Ok(End::Eof) => log::debug!("console: the host's input ended"),
            Err(e) => log::warn!(
                "console: reading the host's input ({}): {e}",
                std::fs::read_link("/proc/self/fd/0").map(|p| p.display().to_string()).unwrap_or_default()
            ),
        }
    })
}

/// The terminal settings to restore, readable from a signal handler: `armed` says whether
/// `termios` holds them for `fd`.
struct Saved {
    armed: AtomicBool,
    fd: AtomicI32,
    termios: UnsafeCell<MaybeUninit<libc::termios>>,
}

// SAFETY: `termios` is written only while `armed` is false and no `RawTerminal` exists (the
// `ACTIVE` flag makes `enter` exclusive), and read only after loading `armed` as true with
// Acquire ordering, which the writer stores with Release ordering after the write.
unsafe impl Sync for Saved {}

static SAVED: Saved = Saved {
    armed: AtomicBool::new(false),
    fd: AtomicI32::new(0),
    termios: UnsafeCell::new(MaybeUninit::uninit()),
};
/// A `RawTerminal` exists.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// The signals whose default action ends the process, and after which the terminal must work.
const SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Each signal's disposition before ours, to deliver the signal with.
struct Previous([UnsafeCell<MaybeUninit<libc::sigaction>>; SIGNALS.len()]);

// SAFETY: each entry is written once (inside `INSTALL`), by a plain store made before the
// `sigaction` call that installs the handler for its signal, so before that handler can run on
// any thread; the handler only reads it.
unsafe impl Sync for Previous {}

static PREVIOUS: Previous = Previous([const { UnsafeCell::new(MaybeUninit::uninit()) }; SIGNALS.len()]);

/// Puts the saved settings back, if any: async-signal-safe (an atomic load and `tcsetattr`).
fn restore_saved() {
    if SAVED.armed.load(Ordering::Acquire) {
        // SAFETY: `armed` is true, so `termios` was fully written before it was set (see
        // `Saved`); `tcsetattr` only reads it.
        unsafe {
            libc::tcsetattr(SAVED.fd.load(Ordering::Relaxed), libc::TCSANOW, (*SAVED.termios.get()).as_ptr());
        }
    }
}

extern "C" fn restore_at_exit() {
    restore_saved();
}

extern "C" fn restore_on_signal(signal: libc::c_int) {
    restore_saved();
    if let Some(i) = SIGNALS.iter().position(|s| *s == signal) {
        // SAFETY: the handler runs only for a signal it was installed for, and
        // `install_restorers` stored that signal's previous disposition in `PREVIOUS.0[i]`
        // before installing it (see `Previous`). Reinstating it and
        // raising the signal again are async-signal-safe; the raised signal is delivered, with
        // the previous disposition, when this handler returns.
        unsafe {
            libc::sigaction(signal, (*PREVIOUS.0[i].get()).as_ptr(), std::ptr::null_mut());
            libc::raise(signal);
        }
    }
}

/// Installs, once per process, the exit and signal paths that restore the terminal. A signal
/// the process ignores stays ignored.
fn install_restorers() {
    INSTALL.call_once(|| {
        // SAFETY: `restore_at_exit` is an `extern "C" fn()` that stays valid for the life of
        // the process.
        if unsafe { libc::atexit(restore_at_exit) } != 0 {
            log::warn!("console: cannot register the terminal restore at exit");
        }
        for (i, signal) in SIGNALS.into_iter().enumerate() {
            // SAFETY: `current` is a valid out-pointer for `sigaction`, which fills it in on
            // success; it is read only then.
            let current = unsafe {
                let mut current = MaybeUninit::<libc::sigaction>::zeroed();
                (libc::sigaction(signal, std::ptr::null(), current.as_mut_ptr()) == 0)
                    .then(|| current.assume_init())
            };
            let Some(current) = current else {
                log::warn!(
                    "console: cannot read the action of signal {signal}; not restoring the terminal on it"
                );
                continue;
            };
            if current.sa_sigaction == libc::SIG_IGN {
                continue;
            }
            // The previous action is stored before the handler is installed: the kernel writes
            // `sigaction`'s old action only after installing the new one, when the handler may
            // already run on another thread.
            // SAFETY: `PREVIOUS.0[i]` is written only here, once, and read only by the handler
            // for `signal`, which is not installed yet (see `Previous`).
            unsafe { (*PREVIOUS.0[i].get()).write(current) };
            // SAFETY: the new action is fully initialised (zeroed, then the handler, an empty
            // mask and no flags) and `restore_on_signal` is async-signal-safe.
            unsafe {
                let mut action = MaybeUninit::<libc::sigaction>::zeroed().assume_init();
                action.sa_sigaction = restore_on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                    log::warn!("console: cannot restore the terminal on signal {signal}");
                }
            }
        }
    });
}

/// The host terminal in raw mode; dropping it restores the settings it found.
pub struct RawTerminal {
    fd: RawFd,
    saved: libc::termios,
}

impl RawTerminal {
    /// Puts stdin in raw mode if it is a terminal; `None` when it is not (a file, a pipe).
    pub fn enter() -> io::Result<Option<Self>> {
        Self::enter_fd(libc::STDIN_FILENO)
    }

    fn enter_fd(fd: RawFd) -> io::Result<Option<Self>> {
        // SAFETY: `isatty` only inspects the descriptor.
        if unsafe { libc::isatty(fd) } != 1 {
            return Ok(None);
        }
        if ACTIVE.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "the terminal is in raw mode already"));
        }
        let entered = Self::set_raw(fd);
        if entered.is_err() {
            ACTIVE.store(false, Ordering::Release);
        }
        entered.map(Some)
    }

    fn set_raw(fd: RawFd) -> io::Result<Self> {
        let mut saved = MaybeUninit::<libc::termios>::uninit();
        // SAFETY: `saved` is a valid out-pointer that `tcgetattr` fills in when it succeeds,
        // which is checked before it is read.
        let saved = unsafe {
            if libc::tcgetattr(fd, saved.as_mut_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            saved.assume_init()
        };
        // SAFETY: no `RawTerminal` exists (`ACTIVE` was just taken) and `armed` is false, so
        // no one reads `termios` while it is written (see `Saved`).
        unsafe { (*SAVED.termios.get()).write(saved) };
        SAVED.fd.store(fd, Ordering::Relaxed);
        SAVED.armed.store(true, Ordering::Release);
        install_restorers();

        let mut raw = saved;
        raw.c_iflag &= !(libc::IGNBRK
            | libc::BRKINT
            | libc::PARMRK
            | libc::ISTRIP
            | libc::INLCR
            | libc::IGNCR
            | libc::ICRNL
            | libc::IXON);
        raw.c_oflag |= libc::OPOST;
        raw.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::ISIG | libc::IEXTEN);
        raw.c_cflag &= !(libc::CSIZE | libc::PARENB);
        raw.c_cflag |= libc::CS8;
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: `raw` is a complete termios structure derived from the one the kernel gave.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            let error = io::Error::last_os_error();
            SAVED.armed.store(false, Ordering::Release);
            return Err(error);
        }
        Ok(Self { fd, saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        SAVED.armed.store(false, Ordering::Release);
        // SAFETY: `self.saved` is the complete structure `tcgetattr` returned for `self.fd`.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
        ACTIVE.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        ffi::CStr,
        io::{BufRead, BufReader},
        os::fd::{AsRawFd, FromRawFd, OwnedFd},
        process::{Command as Process, Stdio},
    };

    use super::*;

    /// Runs `input` through a filter for `escape`: the guest's bytes and the commands.
    fn filter(escape: Escape, input: &[u8]) -> (Vec<u8>, Vec<Command>) {
        let mut filter = EscapeFilter::new(escape);
        let mut to_guest = Vec::new();
        let commands = input.iter().filter_map(|b| filter.feed(*b, &mut to_guest)).collect();
        (to_guest, commands)
    }

    #[test]
    fn escape_keys_parse_from_caret_notation() {
        assert_eq!("^A".parse(), Ok(Escape::CTRL_A));
        assert_eq!("^a".parse(), Ok(Escape::CTRL_A));
        assert_eq!("^]".parse::<Escape>().map(Escape::byte), Ok(Some(0x1d)));
        assert_eq!("^\\".parse::<Escape>().map(Escape::byte), Ok(Some(0x1c)));
        assert_eq!("^_".parse::<Escape>().map(Escape::byte), Ok(Some(0x1f)));
        assert_eq!("NONE".parse(), Ok(Escape::NONE));
        assert_eq!(Escape::default(), Escape::CTRL_A);
        for bad in ["^M", "^[", "^i", "^@"] {
            let message = bad.parse::<Escape>().expect_err(bad);
            assert!(message.contains("sends on its own"), "{bad}: {message}");
        }
        for bad in ["A", "^", "^AB", "^1", "ctrl-a", ""] {
            assert!(bad.parse::<Escape>().is_err(), "{bad}");
        }
        for text in ["^A", "^]", "^\\", "none"] {
            assert_eq!(text.parse::<Escape>().map(|e| e.to_string()).as_deref(), Ok(text));
        }
    }

    #[test]
    fn the_escape_key_and_x_quit() {
        assert_eq!(filter(Escape::CTRL_A, b"ls\r\x01x"), (b"ls\r".to_vec(), vec![Command::Quit]));
        assert_eq!(filter(Escape::CTRL_A, b"\x01X"), (vec![], vec![Command::Quit]));
        let ctrl_bracket = "^]".parse().expect("parsing");
        assert_eq!(filter(ctrl_bracket, b"\x01x\x1dx"), (b"\x01x".to_vec(), vec![Command::Quit]));
    }

    #[test]
    fn the_escape_key_twice_sends_it_once() {
        assert_eq!(filter(Escape::CTRL_A, b"\x01\x01"), (vec![0x01], vec![]));
        assert_eq!(filter(Escape::CTRL_A, b"\x01\x01\x01\x01x"), (b"\x01\x01x".to_vec(), vec![]));
        assert_eq!(filter(Escape::CTRL_A, b"\x01\x01\x01x"), (vec![0x01], vec![Command::Quit]));
    }

    #[test]
    fn other_keys_after_the_escape_reach_the_guest_with_it() {
        assert_eq!(filter(Escape::CTRL_A, b"\x01b"), (vec![0x01, b'b'], vec![]));
        assert_eq!(filter(Escape::CTRL_A, b"\x01h"), (vec![], vec![Command::Help]));
        assert_eq!(filter(Escape::CTRL_A, b"\x01"), (vec![], vec![]), "an escape waits for the next key");
        assert_eq!(filter(Escape::NONE, b"\x01x\x1dx"), (b"\x01x\x1dx".to_vec(), vec![]));
    }

    #[test]
    fn pump_hands_input_over_until_quit_or_the_end() {
        let mut guest: Vec<u8> = Vec::new();
        let mut help = String::new();
        let end = pump(
            &b"echo hi\r\x01h\x01\x01\x01xrest"[..],
            Escape::CTRL_A,
            |b| guest.extend(b),
            |h| help.push_str(h),
        );
        assert_eq!(end.expect("pumping"), End::Quit);
        assert_eq!(guest, b"echo hi\r\x01");
        assert_eq!(help, Escape::CTRL_A.help());
        assert!(help.contains("^A x    quit accel-host"), "{help}");

        let mut guest: Vec<u8> = Vec::new();
        let end = pump(&b"no escape here"[..], Escape::CTRL_A, |b| guest.extend(b), |_| {});
        assert_eq!(end.expect("pumping"), End::Eof);
        assert_eq!(guest, b"no escape here");
    }

    /// A new pseudo-terminal: its controller side and its terminal's path.
    fn pty() -> (OwnedFd, String) {
        // SAFETY: plain libc calls on a descriptor this function owns; `ptsname`'s static
        // buffer is copied at once (no other test calls it).
        unsafe {
            let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
            assert!(fd >= 0, "posix_openpt: {}", io::Error::last_os_error());
            let controller = OwnedFd::from_raw_fd(fd);
            assert_eq!(libc::grantpt(fd), 0);
            assert_eq!(libc::unlockpt(fd), 0);
            let name = libc::ptsname(fd);
            assert!(!name.is_null());
            (controller, CStr::from_ptr(name).to_string_lossy().into_owned())
        }
    }

    fn local_flags(terminal: &std::fs::File) -> libc::tcflag_t {
        let mut termios = MaybeUninit::<libc::termios>::uninit();
        // SAFETY: `termios` is a valid out-pointer, read only after `tcgetattr` succeeds.
        unsafe {
            assert_eq!(libc::tcgetattr(terminal.as_raw_fd(), termios.as_mut_ptr()), 0);
            termios.assume_init().c_lflag
        }
    }

    const COOKED: libc::tcflag_t = libc::ICANON | libc::ECHO | libc::ISIG;

    fn open_terminal(path: &str) -> std::fs::File {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
            .expect("opening the terminal")
    }

    #[test]
    fn raw_mode_is_left_when_the_guard_drops() {
        let (_controller, path) = pty();
        let terminal = open_terminal(&path);
        assert_eq!(local_flags(&terminal) & COOKED, COOKED);
        let raw = RawTerminal::enter_fd(terminal.as_raw_fd()).expect("entering").expect("a terminal");
        assert_eq!(local_flags(&terminal) & COOKED, 0);
        let again = RawTerminal::enter_fd(terminal.as_raw_fd()).map(|_| ()).expect_err("nested");
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        drop(raw);
        assert_eq!(local_flags(&terminal) & COOKED, COOKED);

        let (socket, _peer) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
        assert!(RawTerminal::enter_fd(socket.as_raw_fd()).expect("not a terminal").is_none());
    }

    /// The environment variables that make `raw_mode_ends_with_the_process` the child.
    const CHILD_TERMINAL: &str = "ACCEL_CONSOLE_TEST_TERMINAL";
    const CHILD_END: &str = "ACCEL_CONSOLE_TEST_END";

    /// The child: raw mode on the terminal it is given, then the end it is told.
    fn child(path: &str, end: &str) {
        let terminal = open_terminal(path);
        let raw = RawTerminal::enter_fd(terminal.as_raw_fd()).expect("entering").expect("a terminal");
        println!("raw");
        match end {
            "exit" => std::process::exit(7),
            _ => {
                std::thread::sleep(std::time::Duration::from_secs(30));
                drop(raw);
            }
        }
    }

    /// The terminal comes back out of raw mode when the process exits through
    /// `std::process::exit` or dies of SIGTERM or SIGHUP, which keep their usual effect. The
    /// test runs this test binary again as the child.
    #[test]
    fn raw_mode_ends_with_the_process() {
        if let (Ok(path), Ok(end)) = (std::env::var(CHILD_TERMINAL), std::env::var(CHILD_END)) {
            return child(&path, &end);
        }
        use std::os::unix::process::ExitStatusExt;
        let exe = std::env::current_exe().expect("the test binary");
        for (end, signal) in [("exit", None), ("signal", Some(libc::SIGTERM)), ("signal", Some(libc::SIGHUP))]
        {
            let (_controller, path) = pty();
            let terminal = open_terminal(&path);
            let mut process = Process::new(&exe)
                .args(["--exact", "vmm::console::tests::raw_mode_ends_with_the_process", "--nocapture"])
                .env(CHILD_TERMINAL, &path)
                .env(CHILD_END, end)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting the child");
            let stdout = process.stdout.take().expect("the child's stdout");
            let entered = BufReader::new(stdout).lines().map_while(Result::ok).any(|line| line == "raw");
            assert!(entered, "the child did not enter raw mode");
            if let Some(signal) = signal {
                assert_eq!(local_flags(&terminal) & COOKED, 0, "raw while the child runs");
                // SAFETY: signals the child this test started and has not waited for.
                assert_eq!(unsafe { libc::kill(process.id() as libc::pid_t, signal) }, 0);
            }
            let status = process.wait().expect("waiting for the child");
            match signal {
                Some(signal) => assert_eq!(status.signal(), Some(signal), "{end}: {status}"),
                None => assert_eq!(status.code(), Some(7), "{end}: {status}"),
            }
            assert_eq!(local_flags(&terminal) & COOKED, COOKED, "restored after {end} {signal:?}");
        }
    }
}
