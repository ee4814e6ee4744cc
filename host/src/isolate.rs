//! Running plugin code in a child process, so that a plugin that aborts, crashes, hangs or was
//! built with `panic = "abort"` costs only its own line of `accel-host list` or `probe`, and so
//! that `run` learns whether its backend loads and can run before loading it in-process.
//!
//! `accel-host run` keeps its plugin in-process: every vCPU exit, register access and debug stop
//! is a call into the plugin, on the hot path, and a guest's memory is shared with it. An abort
//! inside that plugin ends the host, as a crash inside KVM's own process would.

use std::{
    ffi::OsStr,
    io::Read,
    path::Path,
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::trust;

/// The hidden subcommand the parent runs in its child.
pub const CHILD_COMMAND: &str = "__child";

/// How long a child may take to load and probe a plugin before it is killed, unless
/// [`TIME_LIMIT_ENV`] says otherwise.
pub const CHILD_TIME_LIMIT: Duration = Duration::from_secs(30);

/// The environment variable that sets the child's time limit, in whole seconds (at least 1).
pub const TIME_LIMIT_ENV: &str = "ACCEL_PROBE_TIME_LIMIT";

/// The child's time limit: [`TIME_LIMIT_ENV`] when it holds a positive number of seconds,
/// otherwise [`CHILD_TIME_LIMIT`].
pub fn child_time_limit() -> Duration {
    std::env::var(TIME_LIMIT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&secs| secs > 0)
        .map_or(CHILD_TIME_LIMIT, Duration::from_secs)
}

/// What a child run came to.
pub struct ChildRun {
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// How it ended.
    pub status: ExitStatus,
}

/// Runs this executable's `__child ARGS` about `plugin`, under the trust `policy`, and captures what it prints. The child
/// dies with this process, and is killed after [`child_time_limit`], which is then the error.
pub fn run_child(plugin: &Path, policy: trust::Policy, args: &[&OsStr]) -> Result<ChildRun, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding accel-host's own executable: {e}"))?;
    let mut command = Command::new(&exe);
    if policy.allow_untrusted {
        command.arg(trust::ALLOW_OPTION);
    }
    command.arg(CHILD_COMMAND).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the child between fork and exec, where only
        // async-signal-safe calls are allowed: it makes one prctl system call and touches no
        // memory, lock or allocator.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command.spawn().map_err(|e| format!("running {}: {e}", exe.display()))?;
    let mut out = child.stdout.take().ok_or("the child has no standard output pipe")?;
    let mut err = child.stderr.take().ok_or("the child has no standard error pipe")?;
    let out_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = out.read_to_end(&mut bytes);
        bytes
    });
    let err_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = err.read_to_end(&mut bytes);
        bytes
    });
    let limit = child_time_limit();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("waiting for the child: {e}"))? {
            break status;
        }
        if start.elapsed() >= limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{}: the plugin did not load and answer its probe within {} s; it was killed",
                plugin.display(),
                limit.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    Ok(ChildRun {
        stdout: text(out_reader.join().unwrap_or_default()),
        stderr: text(err_reader.join().unwrap_or_default()),
        status,
    })
}
/// A one-line reason for a child that did not end normally, naming the plugin; `None` when it
/// exited with a status.
pub fn crash_reason(plugin: &Path, status: ExitStatus) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    let signal = status.signal()?;
    let name = match signal {
        libc::SIGABRT => "SIGABRT: it aborted",
        libc::SIGSEGV => "SIGSEGV: it crashed on a bad memory access",
        libc::SIGBUS => "SIGBUS: it crashed on a bad memory access",
        libc::SIGILL => "SIGILL: it executed an illegal instruction",
        libc::SIGFPE => "SIGFPE: it crashed on an arithmetic fault",
        libc::SIGKILL => "SIGKILL: it was killed",
        _ => "it was killed by a signal",
    };
    Some(format!("{}: the plugin ended the probing process (signal {signal}, {name})", plugin.display()))
}
