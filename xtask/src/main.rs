//! `cargo xtask`: the command line that builds, provisions and tests accel, each command's work
//! in a module of its own.
//!
//! - `cargo xtask test [--matrix] [--kernel VERSION]... [--cpu MODEL]...`: host unit tests, cross
//!   build for aarch64, then the conformance suite and the host end-to-end checks on real KVM
//!   inside a nested arm64 VM, one boot per kernel and CPU model ([`test_cmd`], [`matrix`]). Ends with
//!   `N passed, N failed`; fails if the KVM suite did not run.
//!   On macOS on Apple silicon it runs the lints, the unit tests and the conformance suite
//!   natively against the HVF plugin instead ([`macos`]).
//! - `cargo xtask bench [--cpu MODEL]... [--rounds N]`: accel-bench alone in the nested VM, one
//!   boot per CPU model, with more rounds than `test` gives it ([`mod@bench`]).
//! - `cargo xtask run [IMAGE]`: runs the host with the KVM plugin on the demo guest (or IMAGE),
//!   natively on an arm64 Linux host with usable KVM, otherwise inside the nested VM ([`run_cmd`]).
//! - `cargo xtask fuzz [--runs N] [--target NAME]`: the cargo-fuzz targets ([`fuzz`]); `test`
//!   runs each of them briefly.

mod bench;
mod build;
mod checks;
mod cmd;
mod compat;
mod deny;
mod e2e;
mod edges;
mod error;
mod fuzz;
mod guests;
mod host_checks;
mod layout;
mod macos;
mod matrix;
mod payload;
mod provision;
mod report;
mod run_cmd;
mod soak;
mod test_cmd;
mod tracked;
mod vm;
mod vm_cmd;

use std::{path::PathBuf, process::ExitCode};

use error::Error;
use matrix::Boot;
use provision::{fetch_debian, kernel::KernelVersion};

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
        Cli::Test { matrix, kernels, cpus } => {
            test_cmd::test(&matrix::select(&kernels, &cpus, matrix)).map(exit_code)
        }
        Cli::Run { image, demo, cpus } => match (image, demo) {
            (None, false) => run_cmd::run_linux(cpus),
            (image, _) => run_cmd::run(image),
        },
        Cli::GdbE2e { sessions, rounds } => e2e::gdb::command(&sessions, rounds).map(exit_code),
        Cli::Bench { rounds, cpus } => bench::bench(&default_cpus(cpus), rounds).map(exit_code),
        Cli::BootBench { rounds, cpus, kernel } => {
            e2e::boot_bench::run(&default_cpus(cpus), rounds, kernel).map(exit_code)
        }
        Cli::Soak { rounds, matrix, kernels, cpus } => {
            soak::soak(&matrix::select(&kernels, &cpus, matrix), rounds).map(exit_code)
        }
        Cli::Vm { cpu, kernel, argv } => {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            vm_cmd::run_in_vm(&Boot::new(kernel, &cpu), &[], &argv)
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
