//! `cargo xtask`: builds, provisions and tests accel.
//!
//! - `cargo xtask test [--cpu MODEL]...`: host unit tests, cross build for aarch64, then the
//!   conformance suite and the host end-to-end checks on real KVM inside a nested arm64 VM (one
//!   boot per CPU model). Ends with `N passed, N failed`; fails if the KVM suite did not run.
//! - `cargo xtask run [IMAGE]`: runs the host with the KVM plugin on the demo guest (or IMAGE),
//!   natively on an arm64 Linux host with usable KVM, otherwise inside the nested VM.

mod cmd;
mod provision;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use vm::{Job, VmFile, VmRun};

/// An xtask failure, printed as one message.
#[derive(Debug)]
pub struct Error(pub String);

/// The result type of xtask steps.
pub type Result<T, E = Error> = std::result::Result<T, E>;

const CROSS_TARGET: &str = "aarch64-unknown-linux-gnu";
const GUEST_TARGET: &str = "aarch64-unknown-none";
/// The HVF backend's target: type-checked and linted here, never linked or run.
const MAC_TARGET: &str = "aarch64-apple-darwin";
/// The CPU models `cargo xtask test` boots by default: the newest (VHE, SVE, pointer auth) and a
/// Cortex-A72 (nVHE, no SVE, no pointer auth).
const DEFAULT_CPUS: &[&str] = &["max", "cortex-a72"];
const VM_TIMEOUT: Duration = Duration::from_secs(20 * 60);
const DEMO_LINE: &str = "Hello from an accel guest";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// Builds everything that runs inside the VM, and the demo guest.
fn cross_build() -> Result<()> {
    cmd::run(cargo().args(["build", "--release", "--target", CROSS_TARGET]).args([
        "-p",
        "accel-host",
        "-p",
        "accel-kvm",
        "-p",
        "accel-hvf",
        "-p",
        "accel-conformance",
        "-p",
        "accel-fixture-wrong-abi",
        "-p",
        "accel-fixture-wrong-layout",
        "-p",
        "accel-vm-init",
    ]))?;
    cross_build_guest()
}

fn cross_out(name: &str) -> PathBuf {
    root().join("target").join(CROSS_TARGET).join("release").join(name)
}

fn demo_guest() -> PathBuf {
    root().join("target/guests").join(GUEST_TARGET).join("release/demo")
}

/// The files every VM gets: our aarch64 binaries, plugins, fixtures and the demo guest.
fn vm_files() -> Result<Vec<VmFile>> {
    let mut files = vec![
        VmFile::from_host("/bin/accel-host", &cross_out("accel-host"), 0o755)?,
        VmFile::from_host("/bin/accel-conformance", &cross_out("accel-conformance"), 0o755)?,
        VmFile::from_host("/bin/accel-bench", &cross_out("accel-bench"), 0o755)?,
        VmFile::from_host("/guests/demo.elf", &demo_guest(), 0o644)?,
        VmFile {
            path: "/lib/accel/not-a-plugin.so".into(),
            data: b"this file is not a shared library\n".to_vec(),
            perm: 0o644,
        },
    ];
    for lib in [
        "libaccel_kvm.so",
        "libaccel_hvf.so",
        "libaccel_fixture_wrong_abi.so",
        "libaccel_fixture_wrong_layout.so",
    ] {
        files.push(VmFile::from_host(&format!("/lib/accel/{lib}"), &cross_out(lib), 0o755)?);
    }
    Ok(files)
}

fn job(name: &str, argv: &[&str]) -> Job {
    Job { name: name.into(), argv: argv.iter().map(|s| s.to_string()).collect() }
}

/// Tallies of a test run.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    failures: Vec<String>,
}

impl Tally {
    fn check(&mut self, name: &str, ok: bool, why: impl FnOnce() -> String) {
        if ok {
            self.passed += 1;
            println!("xtask: PASS {name}");
        } else {
            self.failed += 1;
            let why = why();
            println!("xtask: FAIL {name}: {why}");
            self.failures.push(format!("{name}: {why}"));
        }
    }
}

/// Parses `N passed, N failed` (the conformance runner's summary).
fn summary_line(lines: &[String]) -> Option<(usize, usize)> {
    lines.iter().rev().find_map(|l| {
        let (p, f) = l.trim().split_once(" passed, ")?;
        Some((p.parse().ok()?, f.strip_suffix(" failed")?.parse().ok()?))
    })
}

/// Sums libtest's `test result: ok. N passed; M failed; ...` lines.
fn libtest_counts(lines: &[String]) -> (usize, usize) {
    let mut total = (0, 0);
    for line in lines.iter().filter_map(|l| l.strip_prefix("test result: ")) {
        let number = |word: &str| -> usize {
            line.split(';')
                .find_map(|part| {
                    part.trim().trim_start_matches("ok. ").trim_start_matches("FAILED. ").strip_suffix(word)
                })
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0)
        };
        total.0 += number(" passed");
        total.1 += number(" failed");
    }
    total
}

fn check_vm(tally: &mut Tally, cpu: &str, run: &VmRun) {
    let tag = |what: &str| format!("[{cpu}] {what}");
    tally.check(&tag("vm boot"), run.all_done && run.qemu_status == Some(0), || {
        format!(
            "the VM did not finish its jobs (all-done: {}, QEMU status {:?})",
            run.all_done, run.qemu_status
        )
    });

    match run.job("conformance") {
        Some(job) => match summary_line(&job.output) {
            Some((passed, failed)) => {
                println!("xtask: [{cpu}] conformance on real KVM: {passed} passed, {failed} failed");
                tally.passed += passed;
                tally.failed += failed;
                for line in job.output.iter().filter(|l| l.starts_with("FLAKY")) {
                    println!("xtask: [{cpu}] intermittent: {line}");
                }
                for line in job.output.iter().filter(|l| l.starts_with("FAIL") || l.starts_with("NOT RUN")) {
                    tally.failures.push(format!("[{cpu}] {line}"));
                }
                tally.check(
                    &tag("KVM conformance suite ran completely"),
                    job.status == Some(0) && passed > 0,
                    || format!("the runner exited with {:?} (cases failed or were not run)", job.status),
                );
            }
            None => tally
                .check(&tag("KVM conformance suite ran"), false, || "no summary line in its output".into()),
        },
        None => tally.check(&tag("KVM conformance suite ran"), false, || "the job did not run".into()),
    }

    let output_of = |name: &str| run.job(name).map(|j| (j.status, j.output.clone()));
    // Figures, not a verdict: a benchmark that does not finish is reported, not counted.
    match run.job("bench") {
        Some(bench) if bench.status == Some(0) => {
            println!(
                "xtask: [{cpu}] figures from accel-bench (nested VM under TCG: compare ratios, not times):"
            );
            for line in &bench.output {
                println!("  {line}");
            }
        }
        Some(bench) => println!(
            "xtask: [{cpu}] accel-bench did not complete (status {:?}); its output: {:?}",
            bench.status, bench.output
        ),
        None => println!("xtask: [{cpu}] accel-bench did not run"),
    }
    let (status, out) = output_of("host-probe").unwrap_or_default();
    tally.check(
        &tag("accel-host probe --accel kvm says available"),
        status == Some(0) && out.iter().any(|l| l.starts_with("available") && l.ends_with("yes")),
        || format!("status {status:?}, output {out:?}"),
    );
    let (status, out) = output_of("host-probe-json").unwrap_or_default();
    let text = out.join("\n");
    tally.check(
        &tag("accel-host probe --json lists capabilities, ID registers and decoded fields"),
        status == Some(0)
            && [
                "\"available\": true",
                "\"capabilities\"",
                "\"id_registers\"",
                "\"PARange\"",
                "\"DBGDIDR\"",
                "\"BRPs\"",
            ]
            .iter()
            .all(|k| text.contains(k)),
        || format!("status {status:?}, output {text}"),
    );
    let (status, out) = output_of("host-list").unwrap_or_default();
    tally.check(
        &tag("accel-host list finds the kvm (available) and hvf plugins"),
        status == Some(0)
            && out.iter().any(|l| l.starts_with("kvm") && l.contains(" available"))
            && out.iter().any(|l| l.starts_with("hvf") && l.contains("unavailable")),
        || format!("status {status:?}, output {out:?}"),
    );
    let (status, out) = output_of("host-demo").unwrap_or_default();
    tally.check(
        &tag("accel-host run prints the demo guest's line and exits 0"),
        status == Some(0) && out.iter().any(|l| l.contains(DEMO_LINE)),
        || format!("status {status:?}, output {out:?}"),
    );
    let (status, out) = output_of("host-demo-2cpus").unwrap_or_default();
    tally.check(
        &tag("accel-host run --cpus 2 --mem 64M runs the demo guest"),
        status == Some(0) && out.iter().any(|l| l.contains(DEMO_LINE)),
        || format!("status {status:?}, output {out:?}"),
    );
    let (status, out) = output_of("host-not-a-plugin").unwrap_or_default();
    tally.check(
        &tag("accel-host run with a non-plugin file fails with a one-line reason"),
        status == Some(1)
            && out.len() == 1
            && out[0].starts_with("accel-host: error:")
            && out[0].contains("not a loadable shared library"),
        || format!("status {status:?}, output {out:?}"),
    );
}

/// rustfmt, and clippy with `-D warnings` on every target accel builds for.
fn lint(tally: &mut Tally) {
    let checks: [(&str, Vec<&str>); 4] = [
        ("cargo fmt --check", vec!["fmt", "--all", "--", "--check"]),
        ("clippy (host)", vec!["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]),
        (
            "clippy (aarch64-unknown-linux-gnu)",
            vec!["clippy", "--workspace", "--all-targets", "--target", CROSS_TARGET, "--", "-D", "warnings"],
        ),
        (
            "clippy (aarch64-apple-darwin: accel-api, accel-hvf)",
            vec![
                "clippy",
                "-p",
                "accel-api",
                "-p",
                "accel-hvf",
                "--all-targets",
                "--target",
                MAC_TARGET,
                "--",
                "-D",
                "warnings",
            ],
        ),
    ];
    for (name, args) in checks {
        let ok = cmd::run(cargo().args(&args)).is_ok();
        tally.check(name, ok, || "see the output above".into());
    }
}

fn test(cpus: &[String]) -> Result<bool> {
    let start = Instant::now();
    provision::host_tools()?;
    provision::rust_targets()?;
    let mut tally = Tally::default();
    println!("xtask: formatting and lints");
    lint(&mut tally);

    println!("xtask: host unit tests");
    let (lines, ok) = cmd::tee(cargo().args(["test", "--workspace", "--color", "never"]))?;
    let (unit_passed, unit_failed) = libtest_counts(&lines);
    tally.passed += unit_passed;
    tally.failed += unit_failed;
    if !ok && unit_failed == 0 {
        tally.check("host unit tests build and run", false, || "cargo test failed".into());
    }
    println!("xtask: host unit tests: {unit_passed} passed, {unit_failed} failed");

    println!("xtask: cross build for {CROSS_TARGET} and the demo guest");
    cross_build()?;
    let kernel = provision::kernel()?;
    let work = vm::work_dir(&root());
    std::fs::create_dir_all(&work).map_err(|e| Error(format!("creating {}: {e}", work.display())))?;
    let initrd = work.join("test-initrd.cpio");
    let jobs = [
        job(
            "conformance",
            &["/bin/accel-conformance", "--plugin", "/lib/accel/libaccel_kvm.so", "--fixtures", "/lib/accel"],
        ),
        job("bench", &["/bin/accel-bench", "--plugin", "/lib/accel/libaccel_kvm.so"]),
        job("host-list", &["/bin/accel-host", "list"]),
        job("host-probe", &["/bin/accel-host", "probe", "--accel", "kvm"]),
        job("host-probe-json", &["/bin/accel-host", "probe", "--accel", "kvm", "--json"]),
        job("host-demo", &["/bin/accel-host", "run", "--accel", "kvm", "/guests/demo.elf"]),
        job(
            "host-demo-2cpus",
            &["/bin/accel-host", "run", "--accel", "kvm", "--cpus", "2", "--mem", "64M", "/guests/demo.elf"],
        ),
        job(
            "host-not-a-plugin",
            &["/bin/accel-host", "run", "--accel", "/lib/accel/not-a-plugin.so", "/guests/demo.elf"],
        ),
    ];
    vm::initramfs(
        &initrd,
        &cross_out("accel-vm-init"),
        vm_files()?,
        &[("ACCEL_PLUGIN_PATH", "/lib/accel")],
        &jobs,
    )?;
    for cpu in cpus {
        println!("xtask: booting the nested arm64 VM (-cpu {cpu})");
        let run = vm::boot(&kernel, &initrd, cpu, VM_TIMEOUT, &[], &|line| println!("  vm[{cpu}]| {line}"))?;
        println!("xtask: [{cpu}] VM finished in {:.1} s", run.elapsed.as_secs_f64());
        check_vm(&mut tally, cpu, &run);
    }
    gdb_end_to_end(&mut tally, &kernel)?;
    println!("xtask: total time {:.1} s", start.elapsed().as_secs_f64());
    if !tally.failures.is_empty() {
        println!("xtask: failures:");
        for f in &tally.failures {
            println!("  {f}");
        }
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(tally.failed == 0 && tally.failures.is_empty())
}

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
fn gdb_end_to_end(tally: &mut Tally, kernel: &Path) -> Result<()> {
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

fn native_kvm_usable(host: &Path, plugin: &Path) -> bool {
    cfg!(all(target_os = "linux", target_arch = "aarch64"))
        && Command::new(host).args(["probe", "--accel"]).arg(plugin).output().is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("available        yes")
        })
}

fn run(image: Option<PathBuf>) -> Result<i32> {
    let image = match image {
        Some(i) => std::fs::canonicalize(&i).map_err(|e| Error(format!("{}: {e}", i.display())))?,
        None => {
            if cfg!(target_arch = "aarch64") {
                provision::rust_targets()?;
            }
            demo_guest()
        }
    };
    if cfg!(all(target_os = "linux", target_arch = "aarch64")) {
        cmd::run(cargo().args(["build", "--release", "-p", "accel-host", "-p", "accel-kvm"]))?;
        if image == demo_guest() {
            cross_build_guest()?;
        }
        let release = root().join("target/release");
        let (host, plugin) = (release.join("accel-host"), release.join("libaccel_kvm.so"));
        if native_kvm_usable(&host, &plugin) {
            let status = Command::new(&host)
                .args(["run", "--accel"])
                .arg(&plugin)
                .arg(&image)
                .status()
                .map_err(|e| Error(format!("running {}: {e}", host.display())))?;
            return Ok(status.code().unwrap_or(1));
        }
        println!("xtask: KVM is not usable natively here; using the nested VM");
    }
    run_in_vm(
        "max",
        &[("/guests/image", image.as_path())],
        &["/bin/accel-host", "run", "--accel", "kvm", "/guests/image"],
    )
}

fn cross_build_guest() -> Result<()> {
    cmd::run(
        cargo()
            .args(["build", "--release", "--target", GUEST_TARGET, "--manifest-path"])
            .arg(root().join("tests/guests/demo/Cargo.toml"))
            .arg("--target-dir")
            .arg(root().join("target/guests")),
    )
}

const USAGE: &str = "usage: cargo xtask test [--cpu MODEL]...\n       cargo xtask run [IMAGE]\n       \
                     cargo xtask gdb-e2e   (only the real-gdb end-to-end test)\n       \
                     cargo xtask vm [--cpu MODEL] -- PROGRAM [ARG]...   (programs in the VM: /bin/accel-host, \
                     /bin/accel-conformance, /bin/accel-bench; plugins in /lib/accel)";

/// Boots the nested VM (CPU model `cpu`) with the usual files and `extra` host files, runs one
/// command line in it with the console on this terminal, and returns its exit status.
fn run_in_vm(cpu: &str, extra: &[(&str, &Path)], argv: &[&str]) -> Result<i32> {
    provision::host_tools()?;
    provision::rust_targets()?;
    cross_build()?;
    let kernel = provision::kernel()?;
    let work = vm::work_dir(&root());
    std::fs::create_dir_all(&work).map_err(|e| Error(format!("creating {}: {e}", work.display())))?;
    let initrd = work.join("command-initrd.cpio");
    let mut files = vm_files()?;
    for (path, host) in extra {
        files.push(VmFile::from_host(path, host, 0o644)?);
    }
    vm::initramfs(
        &initrd,
        &cross_out("accel-vm-init"),
        files,
        &[("ACCEL_PLUGIN_PATH", "/lib/accel")],
        &[job("command", argv)],
    )?;
    println!("xtask: booting the nested arm64 VM (-cpu {cpu}); its console follows");
    let result = vm::boot(&kernel, &initrd, cpu, VM_TIMEOUT, &[], &|line| {
        if !line.starts_with("@@accel") {
            println!("{line}");
        }
    })?;
    result
        .job("command")
        .and_then(|j| j.status)
        .ok_or_else(|| Error("the VM ended before the command finished".into()))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => {
            let mut cpus = Vec::new();
            let mut rest = args[1..].iter();
            let mut bad = None;
            while let Some(a) = rest.next() {
                match (a.as_str(), rest.clone().next()) {
                    ("--cpu", Some(model)) => {
                        cpus.push(model.clone());
                        rest.next();
                    }
                    _ => bad = Some(a.clone()),
                }
            }
            if let Some(bad) = bad {
                Err(Error(format!("unknown argument '{bad}'\n{USAGE}")))
            } else {
                if cpus.is_empty() {
                    cpus = DEFAULT_CPUS.iter().map(|s| s.to_string()).collect();
                }
                test(&cpus).map(|ok| if ok { 0 } else { 1 })
            }
        }
        Some("run") if args.len() <= 2 => run(args.get(1).map(PathBuf::from)),
        Some("gdb-e2e") => (|| {
            provision::host_tools()?;
            provision::rust_targets()?;
            cross_build()?;
            let kernel = provision::kernel()?;
            let mut tally = Tally::default();
            gdb_end_to_end(&mut tally, &kernel)?;
            println!("{} passed, {} failed", tally.passed, tally.failed);
            Ok(if tally.failed == 0 { 0 } else { 1 })
        })(),
        Some("vm") => {
            let (opts, rest) = match args.iter().position(|a| a == "--") {
                Some(i) => (&args[1..i], &args[i + 1..]),
                None => (&args[1..1], &args[1..]),
            };
            let cpu = match opts {
                [flag, model] if flag == "--cpu" => model.as_str(),
                [] => "max",
                _ => "",
            };
            if cpu.is_empty() || rest.is_empty() {
                Err(Error(USAGE.into()))
            } else {
                let argv: Vec<&str> = rest.iter().map(String::as_str).collect();
                run_in_vm(cpu, &[], &argv)
            }
        }
        _ => Err(Error(USAGE.into())),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(Error(message)) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_summaries() {
        let lines: Vec<String> =
            ["PASS x", "3 not run", "17 passed, 2 failed"].iter().map(|s| s.to_string()).collect();
        assert_eq!(summary_line(&lines), Some((17, 2)));
        assert_eq!(summary_line(&["nothing".to_string()]), None);
        let libtest: Vec<String> = [
            "test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(libtest_counts(&libtest), (15, 1));
    }
}
