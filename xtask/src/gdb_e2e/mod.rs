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
    path::Path,
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::Duration,
};

pub use client::{Action, Client};

use crate::{
    cross_out,
    report::Tally,
    root,
    vm::{self, Job, JobResult, VmFile},
    vm_files, Error, Result, VM_SILENCE,
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

/// What a session produced: its job's result and each client's output.
#[derive(Default, Clone)]
pub struct Outcome {
    /// The accel-host job.
    pub job: JobResult,
    /// Each client's output, in order.
    pub clients: Vec<String>,
}

fn junk_client(port: u16) {
    if let Ok(mut junk) = std::net::TcpStream::connect(("127.0.0.1", port)) {
        use std::io::Write;
        let _ = junk.write_all(b"$garbage#zz$qNonsense#00+-$m0,#1f");
        let _ = junk.shutdown(std::net::Shutdown::Both);
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Boots the VM (`-cpu max`) with `files`, runs `jobs` (plain ones, such as a guest reporting
/// symbols) and then each session's job, and drives each session's clients once its stub is
/// ready. Returns each session's outcome, by job name.
fn run_sessions(
    kernel: &Path,
    files: Vec<VmFile>,
    jobs: Vec<Job>,
    sessions: Vec<Session>,
) -> Result<HashMap<String, Outcome>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error(format!("finding a free port: {e}")))?;
    let work = vm::work_dir(&root());
    let initrd = work.join("gdb-initrd.cpio");
    let mut all_jobs = jobs;
    all_jobs.extend(sessions.iter().map(|s| s.job.clone()));
    let mut all_files = vm_files()?;
    all_files.extend(files);
    vm::initramfs_with_timeout(
        &initrd,
        &cross_out("accel-vm-init"),
        all_files,
        &[("ACCEL_PLUGIN_PATH", "/lib/accel")],
        300,
        &all_jobs,
    )?;
    let sessions: HashMap<String, Arc<Session>> =
        sessions.into_iter().map(|s| (s.job.name.clone(), Arc::new(s))).collect();
    let symbols: Mutex<Symbols> = Mutex::new(HashMap::new());
    let current: Mutex<String> = Mutex::new(String::new());
    let drivers: Mutex<Vec<(String, JoinHandle<Vec<String>>)>> = Mutex::new(Vec::new());
    println!("xtask: real gdb against accel-host in the nested VM (-cpu max)");
    let run = vm::boot(kernel, &initrd, "max", VM_SILENCE, &vm::gdb_channel(port), &|line| {
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
            let Some(session) = sessions.get(&name).cloned() else { return };
            let symbols = symbols.lock().map(|s| s.clone()).unwrap_or_default();
            let dir = work.clone();
            let driver_name = name.clone();
            let handle = std::thread::spawn(move || {
                if session.junk_first {
                    junk_client(port);
                }
                let clients = (session.clients)(port, &symbols);
                clients
                    .iter()
                    .enumerate()
                    .map(|(i, c)| client::run(c, &dir, &format!("{driver_name}-{i}")))
                    .collect()
            });
            if let Ok(mut d) = drivers.lock() {
                d.push((name, handle));
            }
        }
    })?;
    let mut outcomes = HashMap::new();
    let handles = drivers.into_inner().unwrap_or_default();
    for (name, handle) in handles {
        let clients = handle.join().unwrap_or_default();
        for (i, out) in clients.iter().enumerate() {
            for line in out.lines() {
                println!("  gdb[{name} {i}]| {line}");
            }
        }
        let job = run.job(&name).cloned().unwrap_or_default();
        outcomes.insert(name, Outcome { job, clients });
    }
    Ok(outcomes)
}

/// The gdb end-to-end tests: the bare-metal debuggee, and the Linux kernel with the MMU on.
pub fn gdb_end_to_end(tally: &mut Tally, kernel: &Path) -> Result<()> {
    gdb_sessions(tally, kernel, &[debuggee::JOB, smp::JOB, linux::JOB])
}

/// The gdb end-to-end sessions named in `only` (their job names), in one boot of the VM.
pub fn gdb_sessions(tally: &mut Tally, kernel: &Path, only: &[&str]) -> Result<()> {
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
    let outcomes = run_sessions(kernel, files, jobs, sessions)?;
    let get = |name: &str| outcomes.get(name).cloned().unwrap_or_default();
    if wanted(debuggee::JOB) {
        debuggee::check(tally, &get(debuggee::JOB));
    }
    if wanted(smp::JOB) {
        smp::check(tally, &get(smp::JOB));
    }
    if wanted(linux::JOB) {
        linux::check(tally, &get(linux::JOB));
    }
    if wanted(packets::JOB) {
        packets::print(&get(packets::JOB));
    }
    Ok(())
}
