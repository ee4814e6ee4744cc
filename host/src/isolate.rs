//! Running plugin code in a child process, so that a plugin that aborts, crashes or was built
//! with `panic = "abort"` costs only its own line of `accel-host list` or `probe`.
//!
//! `accel-host run` keeps its plugin in-process: every vCPU exit, register access and debug stop
//! is a call into the plugin, on the hot path, and a guest's memory is shared with it. An abort
//! inside that plugin ends the host, as a crash inside KVM's own process would.

use std::{
    path::Path,
    process::{Command, ExitStatus, Stdio},
};

/// The hidden subcommand the parent runs in its child.
pub const CHILD_COMMAND: &str = "__child";

/// What a child run came to.
pub struct ChildRun {
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// How it ended.
    pub status: ExitStatus,
}

/// Runs this executable's `__child ARGS` and captures what it prints.
pub fn run_child(args: &[&str]) -> Result<ChildRun, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding accel-host's own executable: {e}"))?;
    let out = Command::new(&exe)
        .arg(CHILD_COMMAND)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", exe.display()))?;
    Ok(ChildRun {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        status: out.status,
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
