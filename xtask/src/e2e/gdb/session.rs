//! A gdb session: the accel-host job that serves gdb, the clients that talk to it, what one round
//! of it produced, and the job names of its rounds.

use std::{collections::HashMap, path::PathBuf};

use super::client::Client;
use crate::vm::{Job, JobResult};

/// The job that runs accel-host on `elf` with `cpus` vCPUs and SVE on, serving gdb on the
/// virtio-serial port and waiting for the first client.
pub fn host_under_gdb(name: &str, cpus: u32, elf: &str) -> Job {
    let cpus = cpus.to_string();
    let argv = ["/bin/accel-host", "run", "--accel", "kvm", "--cpus", &cpus, "--features", "sve"];
    let gdb = ["--gdb", "/dev/vport0p1", "--gdb-wait", elf];
    Job::new(name, &[&argv[..], &gdb[..]].concat())
}

/// Kernel symbols the guests report (`@@linux sym ADDR NAME`), by name.
pub type Symbols = HashMap<String, u64>;

/// Builds a session's clients once its stub is ready, from the port and the symbols seen so far.
pub type ClientsFn = Box<dyn Fn(u16, &Symbols) -> Vec<Client> + Send + Sync>;

/// A gdb session: the accel-host job that serves gdb, and the clients to run against it.
pub struct Session {
    /// The job.
    pub job: Job,
    /// The clients, built once the stub is ready, from the port and the symbols seen so far.
    pub clients: ClientsFn,
    /// Send a malformed client first, which must not hurt the stub.
    pub junk_first: bool,
}

/// What one round of a session produced: its job's result, and each client's output and
/// packet log.
#[derive(Default, Clone)]
pub struct Outcome {
    /// The accel-host job.
    pub job: JobResult,
    /// Each client's output, in order.
    pub clients: Vec<String>,
    /// Where each client logged its packets, in order.
    pub logs: Vec<PathBuf>,
}

impl Outcome {
    /// Where client `i` logged its packets, to add to a failed check's message.
    pub fn log_of(&self, i: usize) -> String {
        match self.logs.get(i) {
            Some(path) => format!(" (client {i}'s packets: {})", path.display()),
            None => format!(" (client {i} never ran)"),
        }
    }
}

/// The job name of round `round` of `rounds` of a session: the session's own name when it runs
/// once, as in `cargo xtask test`.
pub fn round_name(name: &str, round: u32, rounds: u32) -> String {
    if rounds == 1 {
        name.to_string()
    } else {
        format!("{name}-r{round}")
    }
}
