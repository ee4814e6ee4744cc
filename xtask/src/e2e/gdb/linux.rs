//! The Debian kernel under real gdb with the MMU on: a hardware breakpoint at `start_kernel`,
//! instructions read through the TTBR1 walk, stepping, every vCPU a thread, a watchpoint on
//! `jiffies_64` that the timer writes, and the boot going on to its end.
//!
//! The addresses come from the same kernel's `/proc/kallsyms`, read by a first boot with
//! `nokaslr` (Debian's image package carries no real `System.map`; its `-dbg` package does, at
//! about 1 GB). The boot under gdb uses `nokaslr` too, so the addresses hold.

use super::{
    client::Client,
    session::{Outcome, Session, Symbols},
};
use crate::{
    error::Result,
    layout::work_dir,
    provision::{initramfs::VmFile, linux_guest},
    report::Tally,
    vm::Job,
};

/// The session's accel-host job.
pub const JOB: &str = "gdb-linux";
const KERNEL: &str = "/guests/linux/Image";
const SYMS_INITRD: &str = "/guests/linux/syms.cpio";
const BOOT_INITRD: &str = "/guests/linux/booted.cpio";
const APPEND: &str = "console=ttyAMA0 panic=-1 quiet nokaslr";
/// The function the breakpoint goes on: reached once, on vCPU 0, with the MMU on.
const FUNCTION: &str = "start_kernel";
/// The variable the watchpoint goes on: the timer tick writes it.
const VARIABLE: &str = "jiffies_64";
/// The drain of `linux_guest`: the console must have sent everything before a forced poweroff.
const DRAIN: &str = "stty -F /dev/console \"$(stty -F /dev/console -g)\" 2>/dev/null\n";

/// The kernel and the two initramfs images in the VM.
pub fn files(kernel: &std::path::Path) -> Result<Vec<VmFile>> {
    let busybox = linux_guest::busybox()?;
    let work = work_dir();
    let syms = linux_guest::init_script(&format!(
        "grep -E ' ({FUNCTION}|{VARIABLE})$' /proc/kallsyms | while read a t n; do echo \"@@linux sym $a $t $n\"; done\n\
         {DRAIN}poweroff -f\n"
    ));
    let booted = linux_guest::init_script(&format!("echo \"@@linux booted\"\n{DRAIN}poweroff -f\n"));
    let mut files = vec![VmFile::from_host(KERNEL, kernel, 0o644)?];
    for (vm_path, init) in [(SYMS_INITRD, syms), (BOOT_INITRD, booted)] {
        let out = work.join(std::path::Path::new(vm_path).file_name().unwrap_or_default());
        linux_guest::initramfs(&out, &busybox, &init, Vec::new())?;
        files.push(VmFile::from_host(vm_path, &out, 0o644)?);
    }
    Ok(files)
}

fn linux(initrd: &str, extra: &[&str]) -> Vec<String> {
    let mut argv = vec!["/bin/accel-host", "run", "--accel", "kvm", "--kernel", KERNEL, "--initrd", initrd];
    argv.extend_from_slice(&["--append", APPEND, "--cpus", "2", "--mem", "256M", "--escape", "none"]);
    argv.extend_from_slice(extra);
    argv.iter().map(|s| s.to_string()).collect()
}

/// The boot that reports the symbols, before the session.
pub fn jobs() -> Vec<Job> {
    vec![Job { name: "linux-symbols".into(), argv: linux(SYMS_INITRD, &[]), respond: None, console: false }]
}

fn script(port: u16, function: u64, variable: u64) -> String {
    format!(
        "set pagination off\n\
         set confirm off\n\
         set architecture aarch64\n\
         set debug remote 1\n\
         target remote 127.0.0.1:{port}\n\
         info threads\n\
         hbreak *{function:#x}\n\
         continue\n\
         printf \"HIT %lx\\n\", $pc\n\
         x/4i $pc\n\
         stepi\n\
         printf \"STEP %lx\\n\", $pc\n\
         stepi\n\
         printf \"STEP %lx\\n\", $pc\n\
         stepi\n\
         printf \"STEP %lx\\n\", $pc\n\
         info threads\n\
         delete\n\
         watch *(unsigned long *){variable:#x}\n\
         continue\n\
         delete\n\
         continue\n"
    )
}

/// accel-host serving gdb on the kernel, stopped before its first instruction.
pub fn session() -> Session {
    Session {
        job: Job {
            name: JOB.into(),
            argv: linux(BOOT_INITRD, &["--gdb", "/dev/vport0p1", "--gdb-wait"]),
            respond: None,
            console: false,
        },
        clients: Box::new(|port, symbols: &Symbols| {
            let (function, variable) = (symbols.get(FUNCTION), symbols.get(VARIABLE));
            match (function, variable) {
                (Some(f), Some(v)) => vec![Client {
                    script: script(port, *f, *v),
                    program: None,
                    actions: Vec::new(),
                    limit_secs: 300,
                }],
                _ => Vec::new(),
            }
        }),
        junk_first: false,
    }
}

fn hex_after<'a>(out: &'a str, prefix: &str) -> impl Iterator<Item = u64> + 'a {
    let prefix = prefix.to_string();
    out.lines()
        .filter_map(move |l| l.strip_prefix(&prefix))
        .filter_map(|h| u64::from_str_radix(h.trim(), 16).ok())
}

/// Checks what gdb printed and how the boot ended.
pub fn check(tally: &mut Tally, outcome: &Outcome) {
    let tag = |what: &str| format!("[gdb, Linux] {what}");
    let Some(out) = outcome.clients.first() else {
        tally.check(&tag("gdb ran against the kernel"), false, || {
            format!("no gdb client ran (were {FUNCTION} and {VARIABLE} in /proc/kallsyms?)")
        });
        return;
    };
    let hits: Vec<u64> = hex_after(out, "HIT ").collect();
    let kernel_va = |a: u64| a >> 48 == 0xffff;
    tally.check(
        &tag(&format!("hbreak at {FUNCTION} stops there, a kernel address")),
        hits.len() == 1 && kernel_va(hits[0]),
        || format!("HIT lines {hits:x?}"),
    );
    let disassembled = hits.first().map_or(0, |hit| {
        out.lines().filter(|l| l.contains(&format!("{:#x}", hit & !0xfff)[..10]) && l.contains(":\t")).count()
    });
    tally.check(
        &tag("x/4i $pc reads the kernel's code through the TTBR1 walk"),
        disassembled >= 4 && !out.contains("Cannot access memory"),
        || format!("{disassembled} disassembled lines"),
    );
    let steps: Vec<u64> = hex_after(out, "STEP ").collect();
    tally.check(
        &tag("stepi walks the kernel, one instruction at a time"),
        steps.len() == 3 && steps.iter().all(|s| kernel_va(*s)) && steps.windows(2).all(|w| w[0] != w[1]),
        || format!("PCs {steps:x?} after {hits:x?}"),
    );
    tally.check(
        &tag("info threads shows both vCPUs"),
        out.contains("Thread 1.1 ") && out.contains("Thread 1.2 "),
        || "two threads expected".into(),
    );
    tally.check(
        &tag(&format!("watch on {VARIABLE} stops with the old and new values")),
        out.contains("Hardware watchpoint") && out.contains("Old value = ") && out.contains("New value = "),
        || "no watchpoint stop".into(),
    );
    let job = &outcome.job;
    tally.check(
        &tag("continue lets the boot finish, and accel-host exits 0"),
        job.status == Some(0) && job.output.iter().any(|l| l.contains("@@linux booted")),
        || format!("status {:?}", job.status),
    );
    if out.contains("internal-error") {
        tally.check(&tag("gdb had no internal error"), false, || "gdb reported an internal error".into());
    }
}
