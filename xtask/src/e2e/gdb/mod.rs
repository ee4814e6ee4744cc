//! Real gdb against accel-host in the nested VM, over a virtio-serial port that QEMU serves on a
//! local TCP port: sessions, each an accel-host job serving gdb and the gdb clients that talk to
//! it one after another, all in one boot of the VM. Here: which sessions run, and each round
//! checked; the boot and the clients are driven by [`runner`], and a session is described in
//! [`session`].

mod client;
mod debuggee;
mod linux;
mod packets;
mod runner;
mod session;
mod smp;

use std::path::Path;

use runner::run_sessions;
use session::{round_name, Outcome};

use crate::{
    build::cross_build,
    error::Result,
    provision::{host, kernel},
    report::Tally,
};

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
/// vCPUs, the packets gdb sends at each kind of stop, and the Linux kernel with the MMU on.
pub const SESSIONS: [&str; 4] = [debuggee::JOB, smp::JOB, packets::JOB, linux::JOB];

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
            packets::print(&outcome);
        }
        check_rounds(tally, packets::JOB, &get(packets::JOB), packets::check);
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
