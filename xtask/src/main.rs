//! `cargo xtask`: builds, provisions and tests accel.
//!
//! - `cargo xtask test [--matrix] [--kernel VERSION]... [--cpu MODEL]...`: host unit tests, cross
//!   build for aarch64, then the conformance suite and the host end-to-end checks on real KVM
//!   inside a nested arm64 VM, one boot per kernel and CPU model ([`matrix`]). Ends with
//!   `N passed, N failed`; fails if the KVM suite did not run.
//!   On macOS on Apple silicon it runs the lints, the unit tests and the conformance suite
//!   natively against the HVF plugin instead ([`macos`]).
//! - `cargo xtask bench [--cpu MODEL]... [--rounds N]`: accel-bench alone in the nested VM, one
//!   boot per CPU model, with more rounds than `test` gives it ([`mod@bench`]).
//! - `cargo xtask run [IMAGE]`: runs the host with the KVM plugin on the demo guest (or IMAGE),
//!   natively on an arm64 Linux host with usable KVM, otherwise inside the nested VM.
//! - `cargo xtask fuzz [--runs N] [--target NAME]`: the cargo-fuzz targets ([`fuzz`]); `test`
//!   runs each of them briefly.

mod bench;
mod boot_bench;
mod checks;
mod cmd;
mod compat;
mod debian;
mod fetch_debian;
mod fuzz;
mod gdb_e2e;
mod guest_qemu;
mod initramfs;
mod kernel;
mod linux_e2e;
mod linux_guest;
mod macos;
mod matrix;
mod provision;
mod report;
mod shlibs;
mod soak;
mod tracked;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use gdb_e2e::gdb_end_to_end;
use kernel::KernelVersion;
use matrix::Boot;
use report::{libtest_counts, Tally};
use vm::{Job, VmFile};

/// An xtask failure, printed as one message.
#[derive(Debug)]
pub struct Error(pub String);

/// The result type of xtask steps.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) const CROSS_TARGET: &str = "aarch64-unknown-linux-gnu";
pub(crate) const GUEST_TARGET: &str = "aarch64-unknown-none";
/// The HVF backend's target: type-checked and linted here, never linked or run.
const MAC_TARGET: &str = "aarch64-apple-darwin";
/// The test VM's job that prints the nested VM's kernel log.
pub(crate) const KERNEL_LOG_JOB: &str = "kernel-log";
/// How long a nested VM's console may stay silent before the VM is stopped as stuck. No VM is
/// judged by its total time: a slower machine takes longer and passes.
pub(crate) const VM_SILENCE: Duration = Duration::from_secs(20 * 60);
pub(crate) const DEMO_LINE: &str = "Hello from an accel guest";

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// Builds everything that runs inside the VM, and the demo guest.
pub(crate) fn cross_build() -> Result<()> {
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
        "accel-fixture-panicking",
        "-p",
        "accel-fixture-segfaulting",
        "-p",
        "accel-vm-init",
        "-p",
        "accel-example-minimal-kvm",
    ]))?;
    cross_build_guest()
}

pub(crate) fn cross_out(name: &str) -> PathBuf {
    root().join("target").join(CROSS_TARGET).join("release").join(name)
}

/// A bare-metal guest program built from `tests/guests/demo`.
pub(crate) fn guest_out(name: &str) -> PathBuf {
    root().join("target/guests").join(GUEST_TARGET).join("release").join(name)
}

fn demo_guest() -> PathBuf {
    guest_out("demo")
}

/// The files every VM gets: our aarch64 binaries, plugins, fixtures and the demo guest.
pub(crate) fn vm_files() -> Result<Vec<VmFile>> {
    let mut files = vec![
        VmFile::from_host("/bin/accel-host", &cross_out("accel-host"), 0o755)?,
        VmFile::from_host("/bin/accel-conformance", &cross_out("accel-conformance"), 0o755)?,
        VmFile::from_host("/bin/accel-bench", &cross_out("accel-bench"), 0o755)?,
        VmFile::from_host("/bin/accel-boot-bench", &cross_out("accel-boot-bench"), 0o755)?,
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
        "libaccel_fixture_panicking.so",
        "libaccel_fixture_segfaulting.so",
        "libaccel_example.so",
    ] {
        files.push(VmFile::from_host(&format!("/lib/accel/{lib}"), &cross_out(lib), 0o755)?);
    }
    Ok(files)
}

pub(crate) fn job(name: &str, argv: &[&str]) -> Job {
    Job::new(name, argv)
}

/// rustfmt, and clippy with `-D warnings` on every target accel builds for.
pub(crate) fn lint(tally: &mut Tally) {
    let checks: [(&str, Vec<&str>); 4] = [
        ("cargo fmt --check", vec!["fmt", "--all", "--", "--check"]),
        ("clippy (host)", vec!["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]),
        (
            "clippy (aarch64-unknown-linux-gnu)",
            vec!["clippy", "--workspace", "--all-targets", "--target", CROSS_TARGET, "--", "-D", "warnings"],
        ),
        (
            // Everything that runs on a Mac: all but the nested VM's init. HVF's backend is
            // checked against the real applevisor crates here; linking needs the macOS SDK.
            "clippy (aarch64-apple-darwin: the workspace but accel-vm-init)",
            vec![
                "clippy",
                "--workspace",
                "--exclude",
                "accel-vm-init",
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
    let docs = cmd::run(
        cargo().args(["doc", "--workspace", "--no-deps", "--quiet"]).env("RUSTDOCFLAGS", "-D warnings"),
    );
    tally.check("cargo doc without warnings", docs.is_ok(), || "see the output above".into());
    tracked::check(tally);
    // A plugin built with panic = "abort" would take the host down on its first panic:
    // export_plugin! must refuse to build one.
    let refused = cargo()
        .args(["check", "--quiet", "-p", "accel-hvf", "--target-dir"])
        .arg(root().join("target/panic-abort"))
        .env("CARGO_PROFILE_DEV_PANIC", "abort")
        .output();
    let (failed, message) = match &refused {
        Ok(out) => (!out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned()),
        Err(e) => (false, e.to_string()),
    };
    tally.check(
        "export_plugin! refuses to build a plugin with panic = \"abort\"",
        failed && message.contains("must be built with panic = \"unwind\""),
        || format!("the build did not fail with the refusal: {message}"),
    );
}

/// The kernel of each series among `boots`, fetched once each, with its release. `ACCEL_KERNEL`
/// names one image, which cannot stand for two series.
fn kernels_for(boots: &[Boot]) -> Result<Vec<(KernelVersion, kernel::Kernel)>> {
    let mut kernels: Vec<(KernelVersion, kernel::Kernel)> = Vec::new();
    for boot in boots {
        if !kernels.iter().any(|(v, _)| *v == boot.kernel) {
            kernels.push((boot.kernel, kernel::kernel(boot.kernel)?));
        }
    }
    if kernels.len() > 1 && std::env::var_os("ACCEL_KERNEL").is_some() {
        return Err(Error(
            "ACCEL_KERNEL names one kernel image, but the boots asked for need several kernel series; \
             pick one with --kernel, or unset ACCEL_KERNEL"
                .into(),
        ));
    }
    Ok(kernels)
}

fn test(boots: &[Boot]) -> Result<bool> {
    let start = Instant::now();
    provision::host_tools()?;
    provision::rust_targets()?;
    let mut tally = Tally::default();
    println!("xtask: formatting and lints");
    lint(&mut tally);

    println!("xtask: host unit tests");
    unit_tests(&mut tally, &[])?;

    println!("xtask: fuzz targets, {} runs each", fuzz::SMOKE_RUNS);
    fuzz::smoke(&mut tally);

    println!("xtask: cross build for {CROSS_TARGET} and the demo guest");
    cross_build()?;
    for release in compat::RELEASES {
        compat::build(release)?;
        compat::check_old_decoding(&mut tally, release)?;
    }
    let kernels = kernels_for(boots)?;
    // The Linux that accel-host boots in every VM (the nested guest), whatever the VM's own.
    let kernel = provision::kernel()?;
    let work = vm::work_dir(&root());
    std::fs::create_dir_all(&work).map_err(|e| Error(format!("creating {}: {e}", work.display())))?;
    let initrd = work.join("test-initrd.cpio");
    let mut jobs = vec![
        job(KERNEL_LOG_JOB, &["@kmsg"]),
        job(
            "conformance",
            &["/bin/accel-conformance", "--plugin", "/lib/accel/libaccel_kvm.so", "--fixtures", "/lib/accel"],
        ),
        bench::job(bench::TEST_ROUNDS),
        job(
            "example-plugin",
            &["/bin/accel-conformance", "--plugin", "/lib/accel/libaccel_example.so", "--allow-not-run"],
        ),
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
    for release in compat::RELEASES {
        jobs.extend(compat::jobs(release));
    }
    jobs.extend(linux_e2e::jobs());
    jobs.push(boot_bench::job());
    let mut files = vm_files()?;
    for release in compat::RELEASES {
        files.extend(compat::vm_files(release)?);
    }
    files.extend(linux_e2e::files(&work, &kernel, &guest_out("dtbinfo"))?);
    files.extend(boot_bench::files(&work)?);
    vm::initramfs(
        &initrd,
        &cross_out("accel-vm-init"),
        files,
        &[("ACCEL_PLUGIN_PATH", "/lib/accel")],
        &jobs,
    )?;
    let mut recap = Vec::new();
    for boot in boots {
        let (_, l1) = kernels
            .iter()
            .find(|(v, _)| *v == boot.kernel)
            .ok_or_else(|| Error(format!("no kernel {} was fetched", boot.kernel)))?;
        println!(
            "xtask: booting the nested arm64 VM [{boot}]: kernel {} ({}), -cpu {}",
            l1.release,
            l1.package().unwrap_or_else(|| "ACCEL_KERNEL".into()),
            boot.cpu
        );
        let run = vm::boot(&l1.image, &initrd, &boot.cpu, VM_SILENCE, &[], &|line| {
            println!("  vm[{boot}]| {line}")
        })?;
        println!("xtask: [{boot}] VM finished in {:.1} s", run.elapsed.as_secs_f64());
        let tag = boot.to_string();
        matrix::check(&mut tally, boot, &run, &l1.release);
        recap.push(format!(
            "[{boot}] conformance on real KVM: {} (VM {:.0} s)",
            checks::check_vm(&mut tally, &tag, &run),
            run.elapsed.as_secs_f64()
        ));
        for release in compat::RELEASES {
            compat::check(&mut tally, &tag, &run, release);
        }
        linux_e2e::check(&mut tally, &tag, &boot.file_stem(), &run, &work)?;
        boot_bench::check(&mut tally, &tag, &run);
    }
    gdb_end_to_end(&mut tally, &kernel)?;
    println!("xtask: total time {:.1} s", start.elapsed().as_secs_f64());
    for line in &recap {
        println!("xtask: {line}");
    }
    if !tally.failures.is_empty() {
        println!("xtask: failures:");
        for f in &tally.failures {
            println!("  {f}");
        }
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(tally.failed == 0 && tally.failures.is_empty())
}

/// The workspace's unit tests on this host (`extra` arguments to `cargo test --workspace`).
pub(crate) fn unit_tests(tally: &mut Tally, extra: &[&str]) -> Result<()> {
    let (lines, ok) = cmd::tee(cargo().args(["test", "--workspace", "--color", "never"]).args(extra))?;
    let (unit_passed, unit_failed) = libtest_counts(&lines);
    tally.passed += unit_passed;
    tally.failed += unit_failed;
    if !ok && unit_failed == 0 {
        tally.check("host unit tests build and run", false, || "cargo test failed".into());
    }
    println!("xtask: host unit tests: {unit_passed} passed, {unit_failed} failed");
    Ok(())
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
        &Boot::new(KernelVersion::default(), "max"),
        &[("/guests/image", image.as_path())],
        &["/bin/accel-host", "run", "--accel", "kvm", "/guests/image"],
    )
}

/// Where `cargo xtask run` puts the Linux guest's files in the nested VM.
const SHELL_KERNEL: &str = "/guests/linux/Image";
const SHELL_INITRD: &str = "/guests/linux/shell.cpio";

/// Boots Linux to a busybox shell on this terminal: natively when this is an arm64 host with a
/// usable `/dev/kvm`, otherwise inside the nested VM, whose console is this terminal too.
fn run_linux(cpus: u32) -> Result<i32> {
    let kernel = provision::kernel()?;
    let busybox = linux_guest::busybox()?;
    let work = vm::work_dir(&root());
    std::fs::create_dir_all(&work).map_err(|e| Error(format!("creating {}: {e}", work.display())))?;
    let shell = work.join("linux-shell.cpio");
    linux_guest::initramfs(&shell, &busybox, &linux_guest::shell_init(), Vec::new())?;
    let cpus = cpus.to_string();
    let args = |kernel: &str, initrd: &str| -> Vec<String> {
        ["run", "--accel", "kvm", "--kernel", kernel, "--initrd", initrd, "--append", "console=ttyAMA0 quiet"]
            .into_iter()
            .chain(["--cpus", &cpus, "--mem", "256M"])
            .map(str::to_string)
            .collect()
    };
    if cfg!(all(target_os = "linux", target_arch = "aarch64")) {
        cmd::run(cargo().args(["build", "--release", "-p", "accel-host", "-p", "accel-kvm"]))?;
        let release = root().join("target/release");
        let (host, plugin) = (release.join("accel-host"), release.join("libaccel_kvm.so"));
        if native_kvm_usable(&host, &plugin) {
            let mut argv = args(&kernel.to_string_lossy(), &shell.to_string_lossy());
            argv[2] = plugin.to_string_lossy().into_owned();
            let status = Command::new(&host)
                .args(&argv)
                .status()
                .map_err(|e| Error(format!("running {}: {e}", host.display())))?;
            return Ok(status.code().unwrap_or(1));
        }
        println!("xtask: KVM is not usable natively here; using the nested VM");
    }
    provision::host_tools()?;
    provision::rust_targets()?;
    cross_build()?;
    let initrd = work.join("shell-initrd.cpio");
    let mut files = vm_files()?;
    files.push(VmFile::from_host(SHELL_KERNEL, &kernel, 0o644)?);
    files.push(VmFile::from_host(SHELL_INITRD, &shell, 0o644)?);
    let mut argv = vec!["/bin/accel-host".to_string()];
    argv.extend(args(SHELL_KERNEL, SHELL_INITRD));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    vm::initramfs_with_timeout(
        &initrd,
        &cross_out("accel-vm-init"),
        files,
        &[("ACCEL_PLUGIN_PATH", "/lib/accel")],
        7 * 24 * 3600,
        &[job("shell", &argv).on_console()],
    )?;
    println!(
        "xtask: booting the nested arm64 VM (-cpu max), then Linux on accel-host with {cpus} vCPUs; \
         poweroff in the guest ends it, or Ctrl-A x (accel-host's escape)"
    );
    vm::boot_interactive(&kernel, &initrd, "max")
}

pub(crate) fn cross_build_guest() -> Result<()> {
    cmd::run(
        cargo()
            .args(["build", "--release", "--target", GUEST_TARGET, "--manifest-path"])
            .arg(root().join("tests/guests/demo/Cargo.toml"))
            .arg("--target-dir")
            .arg(root().join("target/guests")),
    )
}

/// Boots the nested VM (`boot`'s kernel and CPU model) with the usual files and `extra` host
/// files, runs one command line in it with the console on this terminal, and returns its exit
/// status.
fn run_in_vm(boot: &Boot, extra: &[(&str, &Path)], argv: &[&str]) -> Result<i32> {
    provision::host_tools()?;
    provision::rust_targets()?;
    cross_build()?;
    let kernel = kernel::kernel(boot.kernel)?.image;
    let work = vm::work_dir(&root());
    std::fs::create_dir_all(&work).map_err(|e| Error(format!("creating {}: {e}", work.display())))?;
    let initrd = work.join("command-initrd.cpio");
    let mut files = vm_files()?;
    for (path, host) in extra {
        files.push(VmFile::from_host(path, host, 0o644)?);
    }
    // The command logs as asked here, so a case's info lines (its measured figures) can be read.
    let log = std::env::var("RUST_LOG").ok();
    let mut env = vec![("ACCEL_PLUGIN_PATH", "/lib/accel")];
    if let Some(log) = &log {
        env.push(("RUST_LOG", log));
    }
    vm::initramfs(&initrd, &cross_out("accel-vm-init"), files, &env, &[job("command", argv)])?;
    println!("xtask: booting the nested arm64 VM [{boot}]; its console follows");
    let result = vm::boot(&kernel, &initrd, &boot.cpu, VM_SILENCE, &[], &|line| {
        if !line.starts_with("@@accel") {
            println!("{line}");
        }
    })?;
    result
        .job("command")
        .and_then(|j| j.status)
        .ok_or_else(|| Error("the VM ended before the command finished".into()))
}

#[derive(clap::Parser)]
#[command(name = "cargo xtask", about = "Build, provision and test accel")]
enum Cli {
    /// Lints, unit tests, and the conformance suite and end-to-end checks on real KVM in the
    /// nested VM, once per kernel and CPU model. With no selection: 6.12 on max and on
    /// cortex-a72, and 6.1 on a64fx.
    Test {
        /// Every kernel on every CPU model of the matrix (max, cortex-a72, neoverse-n1, a64fx);
        /// --kernel and --cpu narrow it.
        #[arg(long)]
        matrix: bool,
        /// The nested VM's kernel series, 6.12 or 6.1 (repeatable); default: 6.12 when --cpu is
        /// given.
        #[arg(long = "kernel", value_name = "VERSION")]
        kernels: Vec<KernelVersion>,
        /// A QEMU CPU model to boot (repeatable); default: max and cortex-a72 when --kernel is
        /// given.
        #[arg(long = "cpu", value_name = "MODEL")]
        cpus: Vec<String>,
    },
    /// Boots the Debian arm64 kernel to a busybox shell on this terminal, on the KVM backend,
    /// natively on an arm64 KVM host and in the nested VM elsewhere; `poweroff` ends it. With an
    /// image or `--demo`, runs that bare-metal program instead.
    Run {
        /// An AArch64 ELF or raw image to run instead of Linux.
        image: Option<PathBuf>,
        /// Run the demo guest (a bare-metal hello) instead of Linux.
        #[arg(long, conflicts_with = "image")]
        demo: bool,
        /// vCPUs of the Linux guest.
        #[arg(long, default_value_t = 2)]
        cpus: u32,
    },
    /// Only the real-gdb end-to-end tests.
    GdbE2e {
        /// Only these sessions (gdb-debuggee, gdb-smp, gdb-linux; repeatable); default: all three.
        /// `gdb-packets` prints the packets gdb sends around each kind of stop.
        #[arg(long = "session", value_name = "NAME")]
        sessions: Vec<String>,
        /// Runs each session this many times in the one boot of the VM, each round checked,
        /// and reports how many rounds passed.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        rounds: u32,
    },
    /// accel-bench alone in one VM boot per CPU model, with more rounds than in `test`: the
    /// figures to quote (accel against raw KVM, linked in against loaded, gdb's view).
    Bench {
        /// Rounds of interleaved blocks per operation.
        #[arg(long, default_value_t = 101)]
        rounds: u32,
        /// A QEMU CPU model (repeatable); default: max and cortex-a72.
        #[arg(long = "cpu", value_name = "MODEL")]
        cpus: Vec<String>,
    },
    /// The boot benchmark alone: Linux booted to its init by accel-host and by QEMU's own KVM
    /// support, alternately, in one VM boot per CPU model.
    BootBench {
        /// Boots per VMM and vCPU count.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// A QEMU CPU model (repeatable); default: max and cortex-a72.
        #[arg(long = "cpu", value_name = "MODEL")]
        cpus: Vec<String>,
        /// The nested VM's own kernel series, 6.12 or 6.1 (the KVM measured).
        #[arg(long, value_name = "VERSION", default_value_t = KernelVersion::default())]
        kernel: KernelVersion,
    },
    /// The conformance suite many times in one VM boot per kernel and CPU model, failures
    /// counted per case. The boots are chosen as `test` chooses them.
    Soak {
        /// Rounds of the whole suite per boot.
        #[arg(long, default_value_t = 100)]
        rounds: u32,
        /// Every kernel on every CPU model of the matrix.
        #[arg(long)]
        matrix: bool,
        /// The nested VM's kernel series, 6.12 or 6.1 (repeatable).
        #[arg(long = "kernel", value_name = "VERSION")]
        kernels: Vec<KernelVersion>,
        /// A QEMU CPU model (repeatable).
        #[arg(long = "cpu", value_name = "MODEL")]
        cpus: Vec<String>,
    },
    /// Runs one command in the nested VM (programs: /bin/accel-host, /bin/accel-conformance,
    /// /bin/accel-bench; plugins in /lib/accel).
    Vm {
        /// The QEMU CPU model.
        #[arg(long, default_value = "max")]
        cpu: String,
        /// The nested VM's kernel series, 6.12 or 6.1.
        #[arg(long, value_name = "VERSION", default_value_t = KernelVersion::default())]
        kernel: KernelVersion,
        /// The program and its arguments.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Builds the cargo-fuzz targets in fuzz/ (installing nightly and cargo-fuzz if missing) and
    /// runs each for a number of runs, reporting runs, time and crashes per target.
    Fuzz {
        /// Runs per target.
        #[arg(long, default_value_t = 100_000)]
        runs: u64,
        /// Only this target.
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
    },
    /// Fetches the Debian arm64 pieces (the 6.12 and 6.1 kernels with their System.map,
    /// busybox, QEMU and its libraries), writes the Linux guest's initramfs images, and prints
    /// their paths and sizes.
    FetchDebian,
}

fn exit_code(ok: bool) -> i32 {
    if ok {
        0
    } else {
        1
    }
}

/// The CPU models a benchmark command boots: those given, else `max` and `cortex-a72`.
fn default_cpus(cpus: Vec<String>) -> Vec<String> {
    if cpus.is_empty() {
        ["max", "cortex-a72"].map(String::from).to_vec()
    } else {
        cpus
    }
}

fn main() -> ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    let result = match cli {
        // On a Mac the suite runs natively against the HVF plugin; elsewhere on KVM in the VM.
        Cli::Test { matrix, kernels, cpus } if cfg!(all(target_os = "macos", target_arch = "aarch64")) => {
            if matrix || !kernels.is_empty() || !cpus.is_empty() {
                eprintln!(
                    "xtask: --matrix, --kernel and --cpu pick boots of the nested KVM VM; on a Mac they are ignored"
                );
            }
            macos::test().map(exit_code)
        }
        Cli::Test { matrix, kernels, cpus } => test(&matrix::select(&kernels, &cpus, matrix)).map(exit_code),
        Cli::Run { image, demo, cpus } => match (image, demo) {
            (None, false) => run_linux(cpus),
            (image, _) => run(image),
        },
        Cli::GdbE2e { sessions, rounds } => (|| {
            provision::host_tools()?;
            provision::rust_targets()?;
            cross_build()?;
            let kernel = provision::kernel()?;
            let mut tally = Tally::default();
            let only: Vec<&str> = if sessions.is_empty() {
                gdb_e2e::SESSIONS.to_vec()
            } else {
                sessions.iter().map(String::as_str).collect()
            };
            gdb_e2e::gdb_sessions(&mut tally, &kernel, &only, rounds)?;
            println!("{} passed, {} failed", tally.passed, tally.failed);
            Ok(exit_code(tally.failed == 0))
        })(),
        Cli::Bench { rounds, cpus } => bench::bench(&default_cpus(cpus), rounds).map(exit_code),
        Cli::BootBench { rounds, cpus, kernel } => {
            boot_bench::run(&default_cpus(cpus), rounds, kernel).map(exit_code)
        }
        Cli::Soak { rounds, matrix, kernels, cpus } => {
            soak::soak(&matrix::select(&kernels, &cpus, matrix), rounds).map(exit_code)
        }
        Cli::Vm { cpu, kernel, argv } => {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            run_in_vm(&Boot::new(kernel, &cpu), &[], &argv)
        }
        Cli::Fuzz { runs, target } => fuzz::fuzz(runs, target.as_deref()).map(exit_code),
        Cli::FetchDebian => fetch_debian::fetch_debian().map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(Error(message)) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}
