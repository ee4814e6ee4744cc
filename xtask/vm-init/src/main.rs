//! `/init` of the nested arm64 test VM.
//!
//! It mounts devtmpfs, proc, sysfs and a tmpfs, brings up the loopback interface (jobs may talk
//! TCP to themselves, as the benchmark does to its own gdb stub), runs each job of `/etc/accel/jobs` with its output
//! on the console between marker lines, and ends the VM through an Arm semihosting `SYS_EXIT`
//! (QEMU's `-semihosting-config ...,userspace=on`), falling back to a power-off.
//!
//! A job line is `NAME<TAB>PROGRAM<TAB>ARG...`; a line `env<TAB>KEY=VALUE` sets an environment
//! variable for the jobs after it, and `respond<TAB>TRIGGER<TAB>TEXT` makes the next job's
//! standard input a pipe into which TEXT (with `\n` for a newline) is written once the job prints
//! a line containing TRIGGER, as a person typing at a prompt would (otherwise it reads
//! `/dev/null`). Two programs are built in: `@hex` prints the file named by its argument as
//! `@@hex` lines of hexadecimal, for the host to read back, and `@kmsg` prints the kernel's log
//! (as `dmesg` would; the VM boots `quiet`, so the console shows little of it). A line `console` gives the next job
//! the console itself, input included, for a person at the terminal: its markers are left out,
//! and its exit status becomes the VM's. For each job the console shows
//! `@@accel job-begin NAME`, the job's output, and `@@accel job-end NAME status=N` (N is the
//! exit code, or 128 + the signal number; 124 for a job killed after ten minutes). The run ends
//! with `@@accel all-done`.

use std::{
    ffi::CString,
    io::Write,
    os::unix::process::ExitStatusExt,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const JOBS: &str = "/etc/accel/jobs";
/// How long one job may print nothing before it is killed and reported with status 124 (a
/// `timeout<TAB>N` line changes it for the jobs after it). A slow job that keeps printing runs on.
static TIMEOUT_SECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(600);

fn mount(source: &str, target: &str, fstype: &str) {
    let _ = std::fs::create_dir_all(target);
    let (Ok(src), Ok(tgt), Ok(fs)) = (CString::new(source), CString::new(target), CString::new(fstype))
    else {
        return;
    };
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; data is null.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        println!("@@accel warning: mounting {fstype} on {target}: {}", std::io::Error::last_os_error());
    }
}

/// Brings `lo` up: the kernel creates it down, and nothing else in this VM configures networks.
fn loopback_up() {
    // SAFETY: socket has no memory preconditions; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        println!("@@accel warning: a socket to bring up lo: {}", std::io::Error::last_os_error());
        return;
    }
    // SAFETY: ifreq is plain data, valid when zeroed.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming an interface, which SIOCGIFFLAGS fills and
    // SIOCSIFFLAGS reads; `fd` is the socket opened above. The flags member of the union is the
    // one these requests use.
    let rc = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req)
        } else {
            -1
        }
    };
    if rc != 0 {
        println!("@@accel warning: bringing up lo: {}", std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is open and owned here.
    unsafe { libc::close(fd) };
}

/// Prints the file at `path` as lines `@@hex <hex>` of 64 bytes each; returns an exit status.
fn print_hex(path: &str) -> i32 {
    match std::fs::read(path) {
        Ok(bytes) => {
            for chunk in bytes.chunks(64) {
                let hex: String = chunk.iter().map(|b| format!("{b:02x}")).collect();
                println!("@@hex {hex}");
            }
            0
        }
        Err(e) => {
            println!("@@accel warning: reading {path}: {e}");
            1
        }
    }
}

/// Prints the kernel's log buffer (`klogctl(SYSLOG_ACTION_READ_ALL)`, what `dmesg` shows), one
/// line per record; returns an exit status.
fn print_kernel_log() -> i32 {
    const SYSLOG_ACTION_READ_ALL: libc::c_int = 3;
    const SYSLOG_ACTION_SIZE_BUFFER: libc::c_int = 10;
    // SAFETY: SIZE_BUFFER reads no buffer; a null pointer and length 0 are what it takes.
    let size = unsafe { libc::klogctl(SYSLOG_ACTION_SIZE_BUFFER, std::ptr::null_mut(), 0) };
    let Ok(len) = usize::try_from(size) else {
        println!("@@accel warning: the kernel log's size: {}", std::io::Error::last_os_error());
        return 1;
    };
    let mut buf = vec![0u8; len.max(1)];
    // SAFETY: the buffer is valid for writes of `buf.len()` bytes, the length passed.
    let read = unsafe {
        libc::klogctl(
            SYSLOG_ACTION_READ_ALL,
            buf.as_mut_ptr().cast(),
            libc::c_int::try_from(buf.len()).unwrap_or(0),
        )
    };
    let Ok(read) = usize::try_from(read) else {
        println!("@@accel warning: reading the kernel log: {}", std::io::Error::last_os_error());
        return 1;
    };
    for line in String::from_utf8_lossy(&buf[..read.min(buf.len())]).lines() {
        println!("{line}");
    }
    0
}

/// What to type into a job once it prints a line containing the trigger.
struct Respond {
    trigger: String,
    text: String,
}

/// Copies a job's output to the console line by line, noting when it last printed (`heard`, in
/// milliseconds after `began`), and types `respond`'s text into the job once a line shows its
/// trigger.
fn forward(
    child: &mut std::process::Child,
    respond: Option<Respond>,
    heard: std::sync::Arc<std::sync::atomic::AtomicU64>,
    began: Instant,
) -> Option<std::thread::JoinHandle<()>> {
    use std::io::BufRead;
    let stdout = child.stdout.take()?;
    let mut stdin = child.stdin.take();
    std::thread::Builder::new()
        .name("forward".into())
        .spawn(move || {
            let mut typed = false;
            for line in std::io::BufReader::new(stdout).split(b'\n').map_while(std::result::Result::ok) {
                heard.store(began.elapsed().as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
                let line = String::from_utf8_lossy(&line).into_owned();
                println!("{line}");
                let _ = std::io::stdout().flush();
                if let (Some(respond), Some(stdin), false) = (&respond, stdin.as_mut(), typed) {
                    if line.contains(&respond.trigger) {
                        typed = true;
                        let _ = stdin.write_all(respond.text.as_bytes()).and_then(|()| stdin.flush());
                    }
                }
            }
        })
        .ok()
}

/// What the next job gets besides its command line.
#[derive(Default)]
struct NextJob {
    respond: Option<Respond>,
    console: bool,
}

/// Runs one line of the job list; returns a console job's exit status.
fn run_job(line: &str, env: &mut Vec<(String, String)>, next: &mut NextJob) -> Option<i32> {
    if line.trim_end() == "console" {
        next.console = true;
        return None;
    }
    let respond = &mut next.respond;
    if let Some(rest) = line.strip_prefix("respond\t") {
        if let Some((trigger, text)) = rest.split_once('\t') {
            *respond = Some(Respond { trigger: trigger.to_string(), text: text.replace("\\n", "\n") });
        }
        return None;
    }
    if let Some(seconds) = line.strip_prefix("timeout\t") {
        if let Ok(s) = seconds.trim().parse() {
            TIMEOUT_SECS.store(s, std::sync::atomic::Ordering::Relaxed);
        }
        return None;
    }
    if let Some(assignment) = line.strip_prefix("env\t") {
        if let Some((k, v)) = assignment.split_once('=') {
            env.push((k.to_string(), v.to_string()));
        }
        return None;
    }
    let mut fields = line.split('\t');
    let (Some(name), Some(program)) = (fields.next(), fields.next()) else {
        println!("@@accel warning: malformed job line {line:?}");
        return None;
    };
    let args: Vec<&str> = fields.collect();
    let console = std::mem::take(&mut next.console);
    if !console {
        println!("@@accel job-begin {name}");
    }
    let _ = std::io::stdout().flush();
    if program == "@hex" || program == "@kmsg" {
        let code = match program {
            "@hex" => print_hex(args.first().copied().unwrap_or_default()),
            _ => print_kernel_log(),
        };
        println!("@@accel job-end {name} status={code}");
        let _ = std::io::stdout().flush();
        return None;
    }
    let respond = respond.take();
    let (input, output) = if console {
        (Stdio::inherit(), Stdio::inherit())
    } else if respond.is_some() {
        (Stdio::piped(), Stdio::piped())
    } else {
        (Stdio::null(), Stdio::piped())
    };
    let child = Command::new(program)
        .args(&args)
        .env("PATH", "/bin")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_BACKTRACE", "1")
        .stdin(input)
        .stdout(output)
        .spawn();
    let code = match child {
        Ok(mut child) => {
            // A job is judged by its progress: it is stopped once it has printed nothing for the
            // limit (a console job, whose output goes straight to a person, once it has run
            // for the limit).
            let began = Instant::now();
            let heard = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let forwarder = forward(&mut child, respond, std::sync::Arc::clone(&heard), began);
            let limit = Duration::from_secs(TIMEOUT_SECS.load(std::sync::atomic::Ordering::Relaxed));
            let silent = || {
                let last = Duration::from_millis(heard.load(std::sync::atomic::Ordering::Relaxed));
                began.elapsed().saturating_sub(last)
            };
            loop {
                match child.try_wait() {
                    Ok(Some(s)) => {
                        if let Some(thread) = forwarder {
                            let _ = thread.join();
                        }
                        break s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0));
                    }
                    Ok(None) if silent() >= limit => {
                        println!(
                            "@@accel warning: {name} printed nothing for {} s; killing it",
                            limit.as_secs()
                        );
                        let _ = child.kill();
                        let _ = child.wait();
                        break 124;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                    Err(e) => {
                        println!("@@accel warning: waiting for {program}: {e}");
                        break 125;
                    }
                }
            }
        }
        Err(e) => {
            println!("@@accel warning: starting {program}: {e}");
            127
        }
    };
    if console {
        return Some(code);
    }
    println!("@@accel job-end {name} status={code}");
    let _ = std::io::stdout().flush();
    None
}

/// Ends QEMU with `code` through semihosting SYS_EXIT (operation 0x18 with the parameter block
/// `[ADP_Stopped_ApplicationExit, code]`).
#[cfg(target_arch = "aarch64")]
fn semihosting_exit(code: u64) {
    let block: [u64; 2] = [0x20026, code];
    // SAFETY: HLT #0xF000 is the A64 semihosting trap; QEMU reads the parameter block at x1,
    // which is valid for the call, and stops the machine. Without semihosting the instruction
    // raises an exception that the kernel turns into SIGILL, caught by the fallback below.
    unsafe {
        std::arch::asm!("hlt #0xf000", in("x0") 0x18u64, in("x1") block.as_ptr(), options(nostack));
    }
}

#[cfg(not(target_arch = "aarch64"))]
fn semihosting_exit(_: u64) {}

fn main() {
    mount("devtmpfs", "/dev", "devtmpfs");
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("tmpfs", "/tmp", "tmpfs");
    loopback_up();
    // A console job's status is the VM's, and its person sees no markers.
    let (mut exit_code, mut quiet) = (0, false);
    match std::fs::read_to_string(JOBS) {
        Ok(jobs) => {
            let mut env = Vec::new();
            let mut next = NextJob::default();
            for line in jobs.lines().filter(|l| !l.trim().is_empty()) {
                if let Some(code) = run_job(line, &mut env, &mut next) {
                    exit_code = code;
                    quiet = true;
                }
            }
        }
        Err(e) => println!("@@accel warning: reading {JOBS}: {e}"),
    }
    if !quiet {
        println!("@@accel all-done");
    }
    let _ = std::io::stdout().flush();
    // The semihosting exit stops QEMU at once: let the console's UART drain first, or the last
    // lines (the results) can be lost.
    // SAFETY: tcdrain on the standard output descriptor has no memory-safety preconditions; it
    // fails harmlessly if that is not a terminal.
    unsafe { libc::tcdrain(libc::STDOUT_FILENO) };
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    semihosting_exit(exit_code as u64);
    // SAFETY: reboot with RB_POWER_OFF has no memory-safety preconditions; as PID 1 we may call it.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    loop {
        std::thread::park();
    }
}
