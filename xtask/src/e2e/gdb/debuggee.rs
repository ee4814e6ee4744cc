//! The bare-metal debuggee under real gdb: breakpoints in a loop and on a function, stepping,
//! watchpoints of each kind, SVE and system registers, a register write the guest reports, and
//! Ctrl-C.

use std::time::Duration;

use super::{
    client::{Action, Client},
    session::{host_under_gdb, Outcome, Session},
};
use crate::{error::Result, guests, provision::initramfs::VmFile, report::Tally};

/// The session's accel-host job.
pub const JOB: &str = "gdb-debuggee";
const ELF: &str = "/guests/debuggee.elf";

/// The gdb session of the end-to-end test, against the debuggee guest. `PORT` is replaced.
const GDB_SCRIPT: &str = r#"set pagination off
set confirm off
set language c
set remotetimeout 60
target remote 127.0.0.1:PORT
info threads
hbreak hw_target
break loop_body
hbreak straight
continue
continue
continue
delete 2
continue
continue
printf "STEP %lx\n", $pc
stepi
printf "STEP %lx\n", $pc
stepi
printf "STEP %lx\n", $pc
stepi
printf "STEP %lx\n", $pc
stepi
printf "STEP %lx\n", $pc
delete
watch *(unsigned long *)&WATCHED
continue
delete
rwatch *(unsigned long *)&WATCHED
continue
delete
awatch *(unsigned long *)&WATCHED
continue
delete
p $vg
break report
continue
info registers
p $v0
p $x0 = 42
delete
echo READY-FOR-CTRL-C\n
continue
printf "STOPPED %lx\n", $pc
info symbol $pc
kill
"#;

/// Real gdb against accel-host in the nested VM, over a virtio-serial port that QEMU serves on
/// a local TCP port.
/// The debuggee's file in the VM.
pub fn files() -> Result<Vec<VmFile>> {
    Ok(vec![VmFile::from_host(ELF, &guests::out("debuggee"), 0o644)?])
}

/// accel-host serving gdb on the debuggee, two vCPUs, SVE on; a malformed client comes first.
pub fn session() -> Session {
    Session {
        job: host_under_gdb(JOB, 2, ELF),
        clients: Box::new(|port, _| {
            vec![Client {
                script: GDB_SCRIPT.replace("PORT", &port.to_string()),
                program: Some(guests::out("debuggee")),
                actions: vec![("READY-FOR-CTRL-C", Action::Interrupt(Duration::from_secs(3)))],
                limit_secs: 200,
            }]
        }),
        junk_first: true,
    }
}

/// Checks what gdb printed and how accel-host ended.
pub fn check(tally: &mut Tally, outcome: &Outcome) {
    let out = outcome.clients.first().cloned().unwrap_or_default();
    let job = &outcome.job;
    let tag = |what: &str| format!("[gdb] {what}");
    let has = |s: &str| out.contains(s);
    tally.check(
        &tag("break in a loop hits three times"),
        out.matches("Breakpoint 2, ").count() == 3 && has("loop_body"),
        || "three 'Breakpoint 2, ... loop_body' stops expected".into(),
    );
    tally.check(&tag("each vCPU is a gdb thread"), has("Thread 1.1 ") && has("Thread 1.2 "), || {
        "info threads did not list two threads".into()
    });
    tally.check(&tag("hbreak on a function stops there"), has("Breakpoint 1, debuggee::hw_target"), || {
        "no hardware breakpoint stop in hw_target".into()
    });
    let steps: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("STEP "))
        .filter_map(|h| u64::from_str_radix(h.trim(), 16).ok())
        .collect();
    tally.check(
        &tag("stepi x4 walks the PC by 4"),
        steps.len() == 5 && steps.windows(2).all(|w| w[1] == w[0] + 4),
        || format!("PC sequence {steps:x?}"),
    );
    tally.check(
        &tag("watch shows the old and new value"),
        has("Old value = 0") && has("New value = 7"),
        || "no 'Old value = 0' / 'New value = 7'".into(),
    );
    tally.check(
        &tag("rwatch stops on the load, awatch on the next store"),
        has("Hardware read watchpoint")
            && has("Value = 7")
            && has("Hardware access (read/write) watchpoint")
            && has("New value = 9"),
        || "no read or access watchpoint stop".into(),
    );
    tally.check(&tag("SVE registers: VG is the vector length in doublewords"), has("= 32\n"), || {
        "p $vg did not print 32".into()
    });
    tally.check(&tag("info registers and p $v0"), has("x30 ") && has("cpsr") && has("{d = {f = "), || {
        "registers not shown".into()
    });
    tally.check(
        &tag("p $x0 = 42 reaches the guest, which reports it"),
        has("= 42") && job.output.iter().any(|l| l.contains("report x0=42")),
        || format!("guest output {:?}", job.output),
    );
    tally.check(
        &tag("Ctrl-C interrupts the spinning guest"),
        has("SIGINT") && out.lines().any(|l| l.starts_with("STOPPED ")),
        || "no SIGINT stop".into(),
    );
    tally.check(&tag("kill ends accel-host cleanly"), job.status == Some(0), || {
        format!("accel-host exited with {:?}", job.status)
    });
}
