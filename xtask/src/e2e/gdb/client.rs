//! One gdb client: gdb-multiarch on a script, with its output captured, signals sent to it when
//! its output shows a marker (a Ctrl-C, or a `kill -9` as of a client that dies), and a limit on
//! how long it may print nothing (a slow gdb that gets on is waited for). gdb runs in a process
//! group of its own, and a kill takes the group: a `shell` command gdb was running dies with it
//! rather than keep its output open, so the next client starts as soon as one dies, as a person
//! who restarts gdb at once would. A script with `#expect TEXT` lines is typed into gdb's standard
//! input instead of run in batch mode: gdb's event loop then runs between commands, so
//! asynchronous stops (non-stop mode) are taken as they come, and each `#expect` holds the rest
//! back until gdb has printed TEXT.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
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
    /// A SIGKILL after the delay to gdb and what it started: gdb dies without a word to the
    /// stub.
    Kill(Duration),
}

/// A gdb client to run.
pub struct Client {
    /// The script.
    pub script: String,
    /// The program file gdb loads symbols from, if any.
    pub program: Option<PathBuf>,
    /// Markers in its output and what they trigger.
    pub actions: Vec<(&'static str, Action)>,
    /// Seconds it may print nothing before it is killed.
    pub limit_secs: u64,
}

/// A script line that waits for gdb's output to show the rest of the line.
const EXPECT: &str = "#expect ";

/// Types `script` into gdb, line by line, holding back at each `#expect` until `seen` (what gdb
/// printed so far) shows its text; then closes gdb's input, which ends it.
fn type_script(mut stdin: std::process::ChildStdin, script: &str, seen: &Mutex<String>, limit_secs: u64) {
    use std::io::Write;
    let mut from = 0;
    for line in script.lines() {
        if let Some(text) = line.strip_prefix(EXPECT) {
            let found = (0..limit_secs * 20).find_map(|_| {
                let at = seen.lock().ok().and_then(|s| s[from..].find(text).map(|i| from + i + text.len()));
                if at.is_none() {
                    std::thread::sleep(Duration::from_millis(50));
                }
                at
            });
            match found {
                Some(end) => from = end,
                None => return,
            }
        } else if stdin.write_all(line.as_bytes()).and_then(|()| stdin.write_all(b"\n")).is_err() {
            return;
        }
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").args([name, &pid.to_string()]).status();
}

/// Sends a signal to the process group that `pid` leads.
fn signal_group(pid: u32, name: &str) {
    let _ = Command::new("kill").args([name, "--", &format!("-{pid}")]).status();
}

/// Where the client called `name` logs its remote protocol traffic in `dir`: every byte gdb
/// wrote and read, in gdb's `set remotelogfile` form (`w` and `r` lines).
pub fn packet_log(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.remote.log"))
}

/// Runs `client` with its script in `dir`; returns what it printed, its standard output and
/// error in the order written (gdb prints `monitor` output on its error stream). gdb logs its
/// packets to [`packet_log`].
pub fn run(client: &Client, dir: &Path, name: &str) -> String {
    let script = dir.join(format!("{name}.gdb"));
    let log = packet_log(dir, name);
    // A log left by an earlier run must not pass for this one's if gdb never starts.
    let _ = std::fs::remove_file(&log);
    let text = format!("set remotelogfile {}\n{}", log.display(), client.script);
    if let Err(e) = std::fs::write(&script, &text) {
        return format!("writing {}: {e}", script.display());
    }
    // One pipe for both streams, so that lines keep their order.
    let typed = client.script.lines().any(|l| l.starts_with(EXPECT));
    let mut command = Command::new("sh");
    command.args(["-c", "exec gdb-multiarch \"$@\" 2>&1", "sh", "-nx"]);
    if typed {
        command.arg("-q").stdin(Stdio::piped());
    } else {
        command.args(["-batch", "-x"]).arg(&script).stdin(Stdio::null());
    }
    if let Some(program) = &client.program {
        command.arg(program);
    }
    let child = command.stdout(Stdio::piped()).stderr(Stdio::null()).process_group(0).spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return format!("could not run gdb-multiarch: {e}"),
    };
    let pid = child.id();
    let done = Arc::new(Mutex::new(false));
    let heard = Arc::new(Mutex::new(std::time::Instant::now()));
    let watchdog = {
        let (done, heard, limit) =
            (Arc::clone(&done), Arc::clone(&heard), Duration::from_secs(client.limit_secs));
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(100));
            if done.lock().is_ok_and(|d| *d) {
                return;
            }
            if heard.lock().is_ok_and(|at| at.elapsed() > limit) {
                signal_group(pid, "-KILL");
                return;
            }
        })
    };
    let seen = Arc::new(Mutex::new(String::new()));
    let typist = child.stdin.take().map(|stdin| {
        let (lines, seen, limit) = (text.clone(), Arc::clone(&seen), client.limit_secs);
        std::thread::spawn(move || type_script(stdin, &lines, &seen, limit))
    });
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(std::result::Result::ok) {
            if let Ok(mut at) = heard.lock() {
                *at = std::time::Instant::now();
            }
            // Typed into gdb, the output carries its prompts: a line starts after them.
            let mut line = line.as_str();
            while let Some(rest) = line.strip_prefix("(gdb) ") {
                line = rest;
            }
            let line = line.to_string();
            for (marker, action) in &client.actions {
                if line.contains(marker) {
                    let action = *action;
                    std::thread::spawn(move || match action {
                        Action::Interrupt(delay) => {
                            std::thread::sleep(delay);
                            signal(pid, "-INT");
                        }
                        Action::Kill(delay) => {
                            std::thread::sleep(delay);
                            signal_group(pid, "-KILL");
                        }
                    });
                }
            }
            out.push_str(&line);
            out.push('\n');
            if let Ok(mut s) = seen.lock() {
                s.push_str(&line);
                s.push('\n');
            }
        }
    }
    if let Some(t) = typist {
        let _ = t.join();
    }
    let _ = child.wait();
    if let Ok(mut d) = done.lock() {
        *d = true;
    }
    let _ = watchdog.join();
    out
}
