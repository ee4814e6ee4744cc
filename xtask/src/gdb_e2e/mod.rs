//! Real gdb against accel-host in the nested VM, over a virtio-serial port that QEMU serves on a
//! local TCP port: sessions, each an accel-host job serving gdb and the gdb clients that talk to
//! it one after another, all in one boot of the VM.

mod client;
mod debuggee;
mod linux;
mod packets;
mod smp;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::Duration,
};

pub use client::{Action, Client};

use crate::{
    build::cross_build,
    error::{Error, Result},
    layout::{cross_out, work_dir},
    payload::vm_files,
    provision::{host, initramfs::VmFile, kernel},
    report::Tally,
    vm::{self, Job, JobResult},
};

/// The job that runs accel-host on `elf` with `cpus` vCPUs and SVE on, serving gdb on the
/// virtio-serial port and waiting for the first client.
fn host_under_gdb(name: &str, cpus: u32, elf: &str) -> Job {
    let cpus = cpus.to_string();
    let argv = ["/bin/accel-host", "run", "--accel", "kvm", "--cpus", &cpus, "--features", "sve"];
    let gdb = ["--gdb", "/dev/vport0p1", "--gdb-wait", elf];
    Job::new(name, &[&argv[..], &gdb[..]].concat())
}

/// Kernel symbols the guests report (`@@linux sym ADDR NAME`), by name.
pub type Symbols = HashMap<String, u64>;

/// Seconds a job in the VM may print nothing before it is stopped.
const JOB_LIMIT_SECS: u64 = 300;

/// What the stub prints when it listens on the VM's gdb port.
const READY: &str = "gdb stub ready on /dev/vport0p1";

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
fn round_name(name: &str, round: u32, rounds: u32) -> String {
    if rounds == 1 {
        name.to_string()
    } else {
        format!("{name}-r{round}")
    }
}

fn junk_client(port: u16) {
    if let Ok(mut junk) = std::net::TcpStream::connect(("127.0.0.1", port)) {
        use std::io::Write;
        let _ = junk.write_all(b"$garbage#zz$qNonsense#00+-$m0,#1f");
        let _ = junk.shutdown(std::net::Shutdown::Both);
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The thread that drives a round's clients; it returns each one's output and packet log.
type Driver = JoinHandle<Vec<(String, PathBuf)>>;

/// Boots the VM (`-cpu max`) with `files`, runs `jobs` (plain ones, such as a guest reporting
/// symbols) and then each session's job `rounds` times, and drives each round's clients once
/// its stub is ready. Returns each session's outcomes, one per round, by the session's job name.
fn run_sessions(
    kernel: &Path,
    files: Vec<VmFile>,
    jobs: Vec<Job>,
    sessions: Vec<Session>,
    rounds: u32,
) -> Result<HashMap<String, Vec<Outcome>>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error(format!("finding a free port: {e}")))?;
    let work = work_dir();
    std::fs::create_dir_all(&work).map_err(|e| Error(format!("creating {}: {e}", work.display())))?;
    let initrd = work.join("gdb-initrd.cpio");
    let sessions: Vec<Arc<Session>> = sessions.into_iter().map(Arc::new).collect();
    // The session of each round's job, by the job's name.
    let mut round_jobs: HashMap<String, Arc<Session>> = HashMap::new();
    let mut all_jobs = jobs;
    for round in 1..=rounds {
        for session in &sessions {
            let name = round_name(&session.job.name, round, rounds);
            all_jobs.push(Job { name: name.clone(), ..session.job.clone() });
            round_jobs.insert(name, Arc::clone(session));
        }
    }
    let mut all_files = vm_files()?;
    all_files.extend(files);
    // The stub says when a connection starts and ends, and why, and what became of each client.
    let log = "warn,accel_host::gdb::connection=debug,accel_host::gdb::session=info";
    let env = [("ACCEL_PLUGIN_PATH", "/lib/accel"), ("RUST_LOG", log), ("RUST_LOG_STYLE", "never")];
    vm::initramfs_with_timeout(
        &initrd,
        &cross_out("accel-vm-init"),
        all_files,
        &env,
        JOB_LIMIT_SECS,
        &all_jobs,
    )?;
    let symbols: Mutex<Symbols> = Mutex::new(HashMap::new());
    let current: Mutex<String> = Mutex::new(String::new());
    let drivers: Mutex<Vec<(String, Driver)>> = Mutex::new(Vec::new());
    // One round's clients at a time on the port: a round whose job ended early (it failed, or
    // hit its time limit) may still have a client running when the next round's stub is ready.
    let port_turn = Arc::new(Mutex::new(()));
    println!("xtask: real gdb against accel-host in the nested VM (-cpu max)");
    let run = vm::boot(kernel, &initrd, "max", vm::SILENCE, &vm::gdb_channel(port), &|line| {
        println!("  vm[gdb]| {line}");
        if let Some(name) = line.strip_prefix("@@accel job-begin ") {
            if let Ok(mut c) = current.lock() {
                *c = name.trim().to_string();
            }
        }
        if let Some(rest) = line.find("@@linux sym ").map(|i| &line[i + "@@linux sym ".len()..]) {
            let mut words = rest.split_whitespace();
            if let (Some(addr), Some(_kind), Some(name)) = (words.next(), words.next(), words.next()) {
                if let (Ok(addr), Ok(mut s)) = (u64::from_str_radix(addr, 16), symbols.lock()) {
                    s.insert(name.to_string(), addr);
                }
            }
        }
        if line.contains(READY) {
            let name = current.lock().map(|c| c.clone()).unwrap_or_default();
            let Some(session) = round_jobs.get(&name).cloned() else { return };
            let symbols = symbols.lock().map(|s| s.clone()).unwrap_or_default();
            let dir = work.clone();
            let driver_name = name.clone();
            let turn = Arc::clone(&port_turn);
            let handle = std::thread::spawn(move || {
                let _turn = turn.lock();
                if session.junk_first {
                    junk_client(port);
                }
                let clients = (session.clients)(port, &symbols);
                clients
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let name = format!("{driver_name}-c{i}");
                        (client::run(c, &dir, &name), client::packet_log(&dir, &name))
                    })
                    .collect()
            });
            if let Ok(mut d) = drivers.lock() {
                d.push((name, handle));
            }
        }
    })?;
    let mut by_job = HashMap::new();
    for (name, handle) in drivers.into_inner().unwrap_or_default() {
        let (clients, logs) = handle.join().unwrap_or_default().into_iter().unzip();
        let job = run.job(&name).cloned().unwrap_or_default();
        by_job.insert(name, Outcome { job, clients, logs });
    }
    // Every round has an outcome, an empty one if its job never ran or never got ready: its
    // checks then fail rather than go unseen.
    let mut outcomes: HashMap<String, Vec<Outcome>> = HashMap::new();
    for round in 1..=rounds {
        for session in &sessions {
            let name = round_name(&session.job.name, round, rounds);
            let outcome = by_job.remove(&name).unwrap_or_else(|| Outcome {
                job: run.job(&name).cloned().unwrap_or_default(),
                ..Outcome::default()
            });
            outcomes.entry(session.job.name.clone()).or_default().push(outcome);
        }
    }
    Ok(outcomes)
}

/// Prints what each client of a round printed.
fn print_clients(name: &str, outcome: &Outcome) {
    for (i, out) in outcome.clients.iter().enumerate() {
        for line in out.lines() {
            println!("  gdb[{name} {i}]| {line}");
        }
    }
}

/// Checks each round of a session with `check`: every client's output when it runs once, and
/// with more rounds, a verdict per round (the output of a failed one, and where its clients'
/// packets are), then the total.
fn check_rounds(tally: &mut Tally, name: &str, outcomes: &[Outcome], check: fn(&mut Tally, &Outcome)) {
    let rounds = outcomes.len();
    let mut passed = 0;
    for (i, outcome) in outcomes.iter().enumerate() {
        let round = round_name(name, i as u32 + 1, rounds as u32);
        if rounds == 1 {
            print_clients(&round, outcome);
        }
        let before = tally.failed;
        check(tally, outcome);
        let failed = tally.failed - before;
        if failed == 0 {
            passed += 1;
        } else {
            if rounds > 1 {
                print_clients(&round, outcome);
            }
            for (c, log) in outcome.logs.iter().enumerate() {
                println!("xtask: {round}: client {c}'s packets: {}", log.display());
            }
        }
        if rounds > 1 {
            let verdict = if failed == 0 { "passed".to_string() } else { format!("FAILED {failed} checks") };
            println!("xtask: {name} round {} of {rounds}: {verdict}", i + 1);
        }
    }
    if rounds > 1 {
        println!("xtask: {name}: {passed} of {rounds} rounds passed");
    }
}

/// The sessions of the gdb end-to-end tests: the bare-metal debuggee on one and on two running
/// vCPUs, and the Linux kernel with the MMU on.
pub const SESSIONS: [&str; 3] = [debuggee::JOB, smp::JOB, linux::JOB];

/// The gdb end-to-end tests, each session once.
pub fn gdb_end_to_end(tally: &mut Tally, kernel: &Path) -> Result<()> {
    gdb_sessions(tally, kernel, &SESSIONS, 1)
}

/// The gdb end-to-end sessions named in `only` (their job names), each `rounds` times, in one
/// boot of the VM.
pub fn gdb_sessions(tally: &mut Tally, kernel: &Path, only: &[&str], rounds: u32) -> Result<()> {
    let wanted = |job: &str| only.contains(&job);
    let mut files = Vec::new();
    let mut jobs = Vec::new();
    let mut sessions = Vec::new();
    if wanted(debuggee::JOB) {
        files.extend(debuggee::files()?);
        sessions.push(debuggee::session());
    }
    if wanted(smp::JOB) {
        files.extend(smp::files()?);
        sessions.push(smp::session());
    }
    if wanted(packets::JOB) {
        if !wanted(debuggee::JOB) {
            files.extend(debuggee::files()?);
        }
        sessions.push(packets::session());
    }
    if wanted(linux::JOB) {
        files.extend(linux::files(kernel)?);
        jobs.extend(linux::jobs());
        sessions.push(linux::session());
    }
    let outcomes = run_sessions(kernel, files, jobs, sessions, rounds.max(1))?;
    let get = |name: &str| outcomes.get(name).cloned().unwrap_or_default();
    if wanted(debuggee::JOB) {
        check_rounds(tally, debuggee::JOB, &get(debuggee::JOB), debuggee::check);
    }
    if wanted(smp::JOB) {
        check_rounds(tally, smp::JOB, &get(smp::JOB), smp::check);
    }
    if wanted(linux::JOB) {
        check_rounds(tally, linux::JOB, &get(linux::JOB), linux::check);
    }
    if wanted(packets::JOB) {
        for outcome in get(packets::JOB) {
            print_clients(packets::JOB, &outcome);
            packets::print(&outcome);
        }
    }
    Ok(())
}

/// `cargo xtask gdb-e2e`: the sessions named in `sessions` (all of them when it is empty), each
/// `rounds` times in one boot of the VM; true when every check passed.
pub fn command(sessions: &[String], rounds: u32) -> Result<bool> {
    host::tools()?;
    host::rust_targets()?;
    cross_build()?;
    let kernel = kernel::default_image()?;
    let mut tally = Tally::default();
    let only: Vec<&str> =
        if sessions.is_empty() { SESSIONS.to_vec() } else { sessions.iter().map(String::as_str).collect() };
    gdb_sessions(&mut tally, &kernel, &only, rounds)?;
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(tally.failed == 0)
}
