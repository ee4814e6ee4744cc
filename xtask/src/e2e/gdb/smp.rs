//! Real gdb on two running vCPUs, client after client against one accel-host: stops and
//! interrupts attributed to the right thread, a step asked of a powered-off vCPU, gdb's standard
//! SVE and system-register names, a 12-byte watchpoint over two registers, refusals gdb shows,
//! the monitor commands, a detach and a reattach, clients killed while the guest runs and while
//! it is stopped, and a non-stop session.

use std::time::Duration;

use super::{
    client::{Action, Client},
    session::{host_under_gdb, Outcome, Session},
};
use crate::{error::Result, guests, provision::initramfs::VmFile, report::Tally};

/// The session's accel-host job.
pub const JOB: &str = "gdb-smp";
const ELF: &str = "/guests/smp.elf";

const PROLOGUE: &str =
    "set pagination off\nset confirm off\nset language c\nset remotetimeout 60\nset width 0\n";

/// Threads, registers, watchpoints, refusals and the monitor; then a detach.
const THREADS: &str = r#"target remote 127.0.0.1:PORT
info threads
printf "MDCCINT before thread %d %lx\n", $_thread, $MDCCINT_EL1
thread 2
set scheduler-locking on
stepi
printf "OFF-STEP thread %d\n", $_thread
set scheduler-locking off
thread 1
hbreak secondary_loop
continue
printf "HIT thread %d pc %lx\n", $_thread, $pc
printf "MDCCINT hit thread %d %lx\n", $_thread, $MDCCINT_EL1
thread 1
printf "MDCCINT hit thread %d %lx\n", $_thread, $MDCCINT_EL1
thread 2
delete
stepi
printf "STEP thread %d pc %lx\n", $_thread, $pc
stepi
printf "STEP thread %d pc %lx\n", $_thread, $pc
info threads
echo READY-FOR-CTRL-C\n
continue
printf "INT thread %d\n", $_thread
set var $z0.d.u[1] = 7
echo Z0-VIEW\n
p $z0.d.u
echo SYSREGS\n
p/x $ELR_EL1
p/x $SPSR_EL1
p/x $SP_EL0
p/x $SP_EL1
echo END-SYSREGS\n
set breakpoint always-inserted on
watch *(char(*)[12])((char *)&WIDE + 4)
echo POOL-WITH-WATCH\n
monitor debug-pool
continue
printf "WATCH thread %d\n", $_thread
continue
printf "WATCH thread %d\n", $_thread
delete
python
for command in ["hbreak *0x40000002", "watch *(char(*)[4093])((char *)&SECONDARY_STACK + 3)"]:
    try:
        gdb.execute(command)
    except gdb.error as e:
        print("REFUSED: " + str(e).replace("\n", " "))
end
echo POOL-AFTER-REFUSAL\n
monitor debug-pool
delete
monitor info
detach
"#;

/// Reattaches after the detach, and dies while the guest runs.
const REATTACH: &str = r#"set debug remote 1
target remote 127.0.0.1:PORT
info threads
printf "REATTACHED thread %d\n", $_thread
echo READY-TO-DIE\n
continue
"#;

/// Finds every vCPU stopped after a client died with the guest running; stops at a breakpoint,
/// and dies there (in no-ack mode).
const AFTER_DEATH: &str = r#"target remote 127.0.0.1:PORT
echo STATES\n
monitor info
hbreak primary_loop
continue
printf "STOPPED thread %d\n", $_thread
echo READY-TO-DIE\n
shell sleep 60
"#;

/// Non-stop, typed into gdb so that its event loop takes each stop as it comes: gdb finds
/// vCPU 0 stopped and vCPU 1 running; vCPU 0 runs to a breakpoint while vCPU 1 runs on; vCPU 1
/// is interrupted alone; vCPU 0 runs in the background, then is interrupted alone; then runs in
/// the foreground until a Ctrl-C (`vCtrlC`) stops it.
const NON_STOP: &str = r#"set non-stop on
target remote 127.0.0.1:PORT
echo NS-CONNECTED\n
info threads
hbreak primary_loop
continue
printf "NS-HIT thread %d\n", $_thread
echo NS-THREADS\n
info threads
delete
thread 2
interrupt
#expect Thread 2 stopped.
thread 1
continue &
echo NS-BOTH\n
info threads
interrupt
#expect Thread 1 stopped.
echo NS-CTRL-C\n
continue
#expect received signal SIGINT
printf "NS-INT thread %d\n", $_thread
echo NS-AFTER\n
info threads
monitor info
kill
"#;

/// The guest's file in the VM.
pub fn files() -> Result<Vec<VmFile>> {
    Ok(vec![VmFile::from_host(ELF, &guests::out("smp"), 0o644)?])
}

fn client(script: &str, port: u16, actions: Vec<(&'static str, Action)>) -> Client {
    Client {
        script: format!("{PROLOGUE}{}", script.replace("PORT", &port.to_string())),
        program: Some(guests::out("smp")),
        actions,
        limit_secs: 240,
    }
}

/// accel-host serving gdb on the two-vCPU guest, SVE on, waiting for the first client.
pub fn session() -> Session {
    Session {
        job: host_under_gdb(JOB, 2, ELF),
        clients: Box::new(|port, _| {
            vec![
                client(THREADS, port, vec![("READY-FOR-CTRL-C", Action::Interrupt(Duration::from_secs(3)))]),
                client(REATTACH, port, vec![("READY-TO-DIE", Action::Kill(Duration::from_secs(3)))]),
                client(AFTER_DEATH, port, vec![("READY-TO-DIE", Action::Kill(Duration::from_secs(1)))]),
                client(NON_STOP, port, vec![("NS-CTRL-C", Action::Interrupt(Duration::from_secs(3)))]),
            ]
        }),
        junk_first: false,
    }
}

/// The lines after `marker`, up to the next line that starts with `until`.
fn section<'a>(out: &'a str, marker: &str, until: &str) -> Vec<&'a str> {
    out.lines().skip_while(|l| *l != marker).skip(1).take_while(|l| !l.starts_with(until)).collect()
}

fn numbers_after(out: &str, prefix: &str) -> Vec<u64> {
    out.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Checks what each gdb printed and how accel-host ended.
pub fn check(tally: &mut Tally, outcome: &Outcome) {
    let tag = |what: &str| format!("[gdb, 2 vCPUs] {what}");
    let client = |i: usize| outcome.clients.get(i).cloned().unwrap_or_default();
    // A failure names the packet log of the client whose output it read.
    let note = |i: usize, why: String| format!("{why}{}", outcome.log_of(i));
    let (threads, reattach, after_death, non_stop) = (client(0), client(1), client(2), client(3));
    for (i, out) in outcome.clients.iter().enumerate() {
        tally.check(
            &tag(&format!("client {i}: no gdb internal error")),
            !out.contains("internal-error"),
            || note(i, "gdb reported an internal error".into()),
        );
    }
    let has = |s: &str| threads.contains(s);

    tally.check(
        &tag("a step asked of the powered-off vCPU 1 answers at once, on thread 2"),
        numbers_after(&threads, "OFF-STEP thread ") == [2] && has("received signal SIGSTOP"),
        || note(0, "no OFF-STEP thread 2 / SIGSTOP".into()),
    );
    tally.check(
        &tag("a breakpoint vCPU 1 hits is reported on thread 2"),
        numbers_after(&threads, "HIT thread ") == [2] && has("Thread 2 hit Breakpoint 1, "),
        || note(0, "no HIT thread 2".into()),
    );
    tally.check(
        &tag("stepi on vCPU 1 while vCPU 0 runs stops on thread 2"),
        numbers_after(&threads, "STEP thread ") == [2, 2],
        || note(0, format!("STEP threads {:?}", numbers_after(&threads, "STEP thread "))),
    );
    let thread1 = threads.lines().rfind(|l| l.contains("Thread 1.1 ")).unwrap_or("");
    tally.check(
        &tag("info threads puts each vCPU at its own PC"),
        !thread1.contains("secondary_loop")
            && threads.lines().any(|l| l.contains("Thread 1.2 ") && l.contains("secondary")),
        || note(0, format!("thread 1's line: {thread1:?}")),
    );
    tally.check(
        &tag("Ctrl-C while both run stops the thread gdb looks at (2)"),
        numbers_after(&threads, "INT thread ") == [2] && has("received signal SIGINT"),
        || note(0, format!("INT thread {:?}", numbers_after(&threads, "INT thread "))),
    );
    let mdccint: Vec<&str> = threads.lines().filter(|l| l.starts_with("MDCCINT ")).collect();
    tally.check(
        &tag("MDCCINT_EL1 reads 0 on both vCPUs, before and at a hardware breakpoint"),
        mdccint.len() == 3 && mdccint.iter().all(|l| l.ends_with(" 0")),
        || note(0, format!("read {mdccint:?}")),
    );
    let z0 = section(&threads, "Z0-VIEW", "SYSREGS");
    tally.check(
        &tag("$z0.d.u, gdb's standard SVE view, written and read back (2048-bit vectors)"),
        z0.len() == 1 && z0[0].starts_with('$') && z0[0].contains(" = {0, 7, 0 <repeats 30 times>}"),
        || note(0, format!("p $z0.d.u printed {z0:?}")),
    );
    let sysregs = section(&threads, "SYSREGS", "END-SYSREGS");
    tally.check(
        &tag("p $ELR_EL1, $SPSR_EL1, $SP_EL0, $SP_EL1 print values, not void"),
        sysregs.len() == 4 && sysregs.iter().all(|l| l.starts_with('$') && l.contains(" = 0x")),
        || note(0, format!("printed {sysregs:?}")),
    );
    let pool = section(&threads, "POOL-WITH-WATCH", "Continuing");
    tally.check(
        &tag("a 12-byte watch takes two watchpoint registers on each vCPU"),
        pool.iter().filter(|l| l.contains("DBGWVR0_EL1")).count() == 2
            && pool.iter().filter(|l| l.contains("DBGWVR1_EL1")).count() == 2,
        || note(0, format!("monitor debug-pool: {pool:?}")),
    );
    tally.check(
        &tag("both halves of the 12-byte watch stop vCPU 1"),
        threads.matches("Hardware watchpoint 2: ").count() >= 3
            && numbers_after(&threads, "WATCH thread ") == [2, 2],
        || note(0, format!("WATCH threads {:?}", numbers_after(&threads, "WATCH thread "))),
    );
    let refused: Vec<&str> = threads.lines().filter(|l| l.starts_with("REFUSED: ")).collect();
    tally.check(
        &tag("a refused hbreak shows gdb its reason"),
        !refused.is_empty()
            && has("Remote failure reply: a breakpoint address must be 4-byte aligned; 0x40000002 is not"),
        || note(0, format!("refusals: {refused:?}")),
    );
    let refusal = section(&threads, "POOL-AFTER-REFUSAL", "[Inferior");
    tally.check(
        &tag("a refused watch: gdb says too many, and monitor debug-pool says why"),
        refused.len() == 2
            && has("Could not insert hardware watchpoint")
            && refusal.iter().any(|l| l.contains("last refused: a 4093-byte watchpoint")),
        || note(0, format!("after the refusal: {refusal:?}")),
    );
    tally.check(
        &tag("monitor info names the backend and both vCPUs"),
        has("backend: kvm (accel ABI") && has("vCPU 1 (thread 2): "),
        || note(0, "monitor info output missing".into()),
    );
    tally.check(&tag("detach leaves the guest running"), has("[Inferior 1 (process 1) detached]"), || {
        note(0, "no detach".into())
    });
    tally.check(
        &tag("a second gdb attaches after the detach"),
        reattach.contains("REATTACHED thread ") && reattach.contains("Thread 1.2 "),
        || note(1, "the reattach saw no threads".into()),
    );
    let states = section(&after_death, "STATES", "Hardware assisted");
    tally.check(
        &tag("after a gdb killed while the guest ran, the next finds every vCPU stopped"),
        states.iter().filter(|l| l.contains(", PC 0x")).count() == 2
            && !states.iter().any(|l| l.contains("running")),
        || note(2, format!("monitor info: {states:?}")),
    );
    tally.check(
        &tag("that gdb stops at a breakpoint (then dies there, in no-ack mode)"),
        numbers_after(&after_death, "STOPPED thread ") == [1],
        || note(2, "no STOPPED thread 1".into()),
    );
    let connected = section(&non_stop, "NS-CONNECTED", "Hardware assisted");
    tally.check(
        &tag("non-stop, after a gdb that died in no-ack mode: vCPU 0 stopped, vCPU 1 running"),
        connected.iter().any(|l| l.contains("Thread 1.1") && !l.contains("(running)"))
            && connected.iter().any(|l| l.contains("Thread 1.2") && l.contains("(running)")),
        || note(3, format!("info threads: {connected:?}")),
    );
    let ns_threads = section(&non_stop, "NS-THREADS", "[Switching");
    tally.check(
        &tag("non-stop: vCPU 0 stops at a breakpoint while vCPU 1 runs on"),
        numbers_after(&non_stop, "NS-HIT thread ").first() == Some(&1)
            && ns_threads.iter().any(|l| l.contains("Thread 1.2") && l.contains("(running)")),
        || note(3, format!("info threads: {ns_threads:?}")),
    );
    let both = section(&non_stop, "NS-BOTH", "Thread 1 stopped.");
    tally.check(
        &tag("non-stop: interrupt stops vCPU 1 alone, then vCPU 0 alone"),
        non_stop.contains("Thread 2 stopped.")
            && both.iter().any(|l| l.contains("Thread 1.1") && l.contains("(running)"))
            && both.iter().any(|l| l.contains("Thread 1.2") && !l.contains("(running)"))
            && non_stop.contains("Thread 1 stopped."),
        || note(3, format!("with vCPU 0 running: {both:?}")),
    );
    let after = section(&non_stop, "NS-AFTER", "[Inferior");
    tally.check(
        &tag("non-stop: Ctrl-C stops the vCPU running in the foreground; both end stopped"),
        numbers_after(&non_stop, "NS-INT thread ") == [1]
            && after.iter().filter(|l| l.contains(", PC 0x")).count() == 2,
        || note(3, format!("after Ctrl-C: {after:?}")),
    );
    let job = &outcome.job;
    tally.check(&tag("kill ends accel-host cleanly"), job.status == Some(0), || {
        note(3, format!("accel-host exited with {:?}", job.status))
    });
}
