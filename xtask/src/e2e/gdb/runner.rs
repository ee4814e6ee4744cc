//! One boot of the nested VM for gdb sessions: every round's accel-host job in the VM, serving
//! gdb on a virtio-serial port that QEMU forwards to a local TCP port, and each round's clients
//! driven from the host once its stub is ready.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::Duration,
};

use super::{
    client,
    session::{round_name, Outcome, Session, Symbols},
};
use crate::{
    error::{Error, Result},
    layout::{cross_out, work_dir},
    payload::vm_files,
    provision::initramfs::VmFile,
    vm::{self, Job},
};

/// Seconds a job in the VM may print nothing before it is stopped.
const JOB_LIMIT_SECS: u64 = 300;

/// What the stub prints when it listens on the VM's gdb port.
const READY: &str = "gdb stub ready on /dev/vport0p1";

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
pub fn run_sessions(
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
