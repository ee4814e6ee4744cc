//! One gdb client: gdb-multiarch in batch mode on a script, with its output captured, signals
//! sent to it when its output shows a marker (a Ctrl-C, or a `kill -9` as of a client that dies),
//! and a time limit.

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

/// What to do to gdb when a line of its output contains a marker.
#[derive(Clone, Copy, Debug)]
pub enum Action {
    /// A SIGINT after the delay, as a Ctrl-C at its terminal.
    Interrupt(Duration),
}

/// A gdb client to run.
pub struct Client {
    /// The script.
    pub script: String,
    /// The program file gdb loads symbols from, if any.
    pub program: Option<PathBuf>,
    /// Markers in its output and what they trigger.
    pub actions: Vec<(&'static str, Action)>,
    /// Seconds before it is killed.
    pub limit_secs: u64,
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").args([name, &pid.to_string()]).status();
}

/// Runs `client` with its script in `dir`; returns what it printed (stdout, then stderr).
pub fn run(client: &Client, dir: &Path, name: &str) -> String {
    let script = dir.join(format!("{name}.gdb"));
    if let Err(e) = std::fs::write(&script, &client.script) {
        return format!("writing {}: {e}", script.display());
    }
    let mut command = Command::new("gdb-multiarch");
    command.args(["-nx", "-batch", "-x"]).arg(&script);
    if let Some(program) = &client.program {
        command.arg(program);
    }
    let child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return format!("could not run gdb-multiarch: {e}"),
    };
    let pid = child.id();
    let done = Arc::new(Mutex::new(false));
    let watchdog = {
        let (done, limit) = (Arc::clone(&done), client.limit_secs);
        std::thread::spawn(move || {
            for _ in 0..limit * 10 {
                std::thread::sleep(Duration::from_millis(100));
                if done.lock().is_ok_and(|d| *d) {
                    return;
                }
            }
            signal(pid, "-KILL");
        })
    };
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = e.read_to_string(&mut s);
            s
        })
    });
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(std::result::Result::ok) {
            for (marker, action) in &client.actions {
                if line.contains(marker) {
                    let (delay, name) = match *action {
                        Action::Interrupt(d) => (d, "-INT"),
                    };
                    std::thread::spawn(move || {
                        std::thread::sleep(delay);
                        signal(pid, name);
                    });
                }
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    let _ = child.wait();
    if let Ok(mut d) = done.lock() {
        *d = true;
    }
    let _ = watchdog.join();
    if let Some(err) = stderr.and_then(|h| h.join().ok()) {
        out.push_str(&err);
    }
    out
}
