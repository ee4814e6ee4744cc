//! What gdb sends around each kind of stop, captured with `set debug remote 1` against
//! accel-host in the nested VM: a `stepi`, a `continue` to a software and to a hardware
//! breakpoint, and a `continue` to a watchpoint, on the debuggee (one vCPU, SVE on).
//! `cargo xtask gdb-e2e --session gdb-packets` prints the packets of each step between its
//! markers, the sequences `accel-bench` replays to measure a stop as gdb sees it; the check is
//! that gdb asks for no `g` after a `stepi` within a frame or at a watchpoint, since the stop
//! replies carry the registers it needs.

use super::{
    client::Client,
    session::{host_under_gdb, Outcome, Session},
};
use crate::{guests, report::Tally};

/// The session's accel-host job.
pub const JOB: &str = "gdb-packets";
const ELF: &str = "/guests/debuggee.elf";

/// Each measured step is between `@@step NAME` and `@@end` markers, with the packet log on.
const SCRIPT: &str = r#"set pagination off
set confirm off
set language c
set remotetimeout 60
target remote 127.0.0.1:PORT
break loop_body
continue
set debug remote 1
echo @@step continue-to-breakpoint\n
continue
echo @@end\n
echo @@step stepi\n
stepi
echo @@end\n
echo @@step stepi-again\n
stepi
echo @@end\n
set debug remote 0
delete
hbreak hw_target
set debug remote 1
echo @@step continue-to-hbreak\n
continue
echo @@end\n
set debug remote 0
delete
watch *(unsigned long *)&WATCHED
set debug remote 1
echo @@step continue-to-watchpoint\n
continue
echo @@end\n
echo @@step continue-to-watchpoint-again\n
continue
echo @@end\n
set debug remote 0
kill
"#;

/// accel-host serving gdb on the debuggee with one vCPU, SVE on, stopped at the start.
pub fn session() -> Session {
    Session {
        job: host_under_gdb(JOB, 1, ELF),
        clients: Box::new(|port, _| {
            vec![Client {
                script: SCRIPT.replace("PORT", &port.to_string()),
                program: Some(guests::out("debuggee")),
                actions: Vec::new(),
                limit_secs: 200,
            }]
        }),
        junk_first: false,
    }
}

/// The packets gdb sent in each marked step, by step.
fn sent_by_step(out: &str) -> Vec<(String, Vec<String>)> {
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    let mut in_step = false;
    for line in out.lines() {
        if let Some(name) = line.strip_prefix("@@step ") {
            steps.push((name.trim().to_string(), Vec::new()));
            in_step = true;
        } else if line.starts_with("@@end") {
            in_step = false;
        } else if let (true, Some(packet), Some((_, sent))) =
            (in_step, line.split("Sending packet: ").nth(1), steps.last_mut())
        {
            sent.push(packet.trim().to_string());
        }
    }
    steps
}

/// Checks that gdb asked for no `g` after a `stepi` within a frame or at a watchpoint, and that
/// the stop replies carried the expedited registers.
pub fn check(tally: &mut Tally, outcome: &Outcome) {
    let out = outcome.clients.first().cloned().unwrap_or_default();
    let steps = sent_by_step(&out);
    // Not the steps that stop in a frame gdb shows anew (a breakpoint, or `stepi-again`, which
    // steps past one): gdb prints its arguments, and asks for `g` to read them.
    let expect = ["stepi", "continue-to-watchpoint", "continue-to-watchpoint-again"];
    for name in expect {
        let sent = steps.iter().find(|(n, _)| n == name).map(|(_, s)| s.clone());
        tally.check(
            &format!("[gdb] gdb asks for no g in {name}: the stop reply carries its registers"),
            sent.as_ref().is_some_and(|s| !s.is_empty() && !s.iter().any(|p| p.starts_with("$g#"))),
            || format!("packets sent: {sent:?} ({})", outcome.log_of(0)),
        );
    }
    tally.check(
        "[gdb] stop replies carry X29, X30, SP, PC, CPSR and VG",
        out.lines().any(|l| {
            l.contains("Packet received: T05")
                && ["1d:", "1e:", "1f:", "20:", "21:", "55:"].iter().all(|f| l.contains(f))
        }),
        || format!("no stop reply with all six ({})", outcome.log_of(0)),
    );
}

/// Prints the packets gdb sent in each marked step, and the stop replies it received.
pub fn print(outcome: &Outcome) {
    let out = outcome.clients.first().cloned().unwrap_or_default();
    let mut step: Option<&str> = None;
    for line in out.lines() {
        if let Some(name) = line.strip_prefix("@@step ") {
            step = Some(name.trim());
            println!("xtask: gdb packets: {}", name.trim());
        } else if line.starts_with("@@end") {
            step = None;
        } else if step.is_some() {
            if let Some(packet) = line.split("Sending packet: ").nth(1) {
                println!("  -> {packet}");
            } else if let Some(packet) = line.split("Packet received: ").nth(1) {
                let shown: String = packet.chars().take(60).collect();
                println!("  <- {shown}{}", if packet.len() > 60 { "..." } else { "" });
            }
        }
    }
}
