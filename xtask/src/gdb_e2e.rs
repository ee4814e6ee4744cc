//! The real-gdb end-to-end test: gdb-multiarch on this machine against `accel-host --gdb` in the
//! nested VM, over a virtio-serial port that QEMU serves on a local TCP port.

use std::{path::Path, process::Command, time::Duration};

use crate::{
    cross_out, job, report::Tally, root, vm, vm::VmFile, vm_files, Error, Result, GUEST_TARGET, VM_TIMEOUT,
};

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
pub fn gdb_end_to_end(tally: &mut Tally, kernel: &Path) -> Result<()> {
    let debuggee = root().join("target/guests").join(GUEST_TARGET).join("release/debuggee");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error(format!("finding a free port: {e}")))?;
    let work = vm::work_dir(&root());
    let script = work.join("gdb-e2e.gdb");
    std::fs::write(&script, GDB_SCRIPT.replace("PORT", &port.to_string()))
        .map_err(|e| Error(format!("writing {}: {e}", script.display())))?;
    let initrd = work.join("gdb-initrd.cpio");
    let jobs = [job(
        "gdb-e2e",
        &[
            "/bin/accel-host",
            "run",
            "--accel",
            "kvm",
            "--cpus",
            "2",
            "--features",
            "sve",
            "--gdb",
            "/dev/vport0p1",
            "--gdb-wait",
            "/guests/debuggee.elf",
        ],
    )];
    let mut files = vm_files()?;
    files.push(VmFile::from_host("/guests/debuggee.elf", &debuggee, 0o644)?);
    vm::initramfs_with_timeout(
        &initrd,
        &cross_out("accel-vm-init"),
        files,
        &[("ACCEL_PLUGIN_PATH", "/lib/accel")],
        240,
        &jobs,
    )?;
    println!("xtask: real gdb against accel-host in the nested VM (-cpu max)");
    let gdb_out: std::sync::Mutex<Option<std::thread::JoinHandle<String>>> = std::sync::Mutex::new(None);
    let run = vm::boot(kernel, &initrd, "max", VM_TIMEOUT, &vm::gdb_channel(port), &|line| {
        println!("  vm[gdb]| {line}");
        if line.contains("gdb stub ready on /dev/vport0p1") {
            // A client that sends malformed packets and hangs up must not hurt the stub.
            if let Ok(mut junk) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::Write;
                let _ = junk.write_all(b"$garbage#zz$qNonsense#00+-$m0,#1f");
                let _ = junk.shutdown(std::net::Shutdown::Both);
                std::thread::sleep(Duration::from_millis(500));
            }
            let (script, debuggee) = (script.clone(), debuggee.clone());
            if let Ok(mut slot) = gdb_out.lock() {
                if slot.is_none() {
                    *slot = Some(std::thread::spawn(move || run_gdb(&script, &debuggee)));
                }
            }
        }
    })?;
    let out = gdb_out.lock().ok().and_then(|mut s| s.take()).and_then(|h| h.join().ok()).unwrap_or_default();
    for line in out.lines() {
        println!("  gdb| {line}");
    }
    let job = run.job("gdb-e2e").cloned().unwrap_or_default();
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
    Ok(())
}

/// Runs gdb-multiarch in batch mode with `script` on `elf`, for at most 200 s. When the script
/// prints `READY-FOR-CTRL-C` and continues the guest, gdb gets a SIGINT three seconds later, as
/// from a Ctrl-C at its terminal.
fn run_gdb(script: &Path, elf: &Path) -> String {
    use std::io::{BufRead, BufReader};
    let child = Command::new("timeout")
        .args(["200", "gdb-multiarch", "-nx", "-batch", "-x"])
        .arg(script)
        .arg(elf)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return format!("could not run gdb-multiarch: {e}"),
    };
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
            s
        })
    });
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(std::result::Result::ok) {
            if line.contains("READY-FOR-CTRL-C") {
                let pid = child.id();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(3));
                    // `timeout` forwards the signal to gdb.
                    let _ = Command::new("kill").args(["-INT", &pid.to_string()]).status();
                });
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    let _ = child.wait();
    if let Some(err) = stderr.and_then(|h| h.join().ok()) {
        out.push_str(&err);
    }
    out
}
