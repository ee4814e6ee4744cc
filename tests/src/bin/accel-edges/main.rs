//! `accel-edges`: drives `accel-host` as a hostile local user or a careless operator would, with
//! plugins, gdb clients, files and arguments that must be refused in one line or handled safely.
//! Prints `PASS name` or `FAIL name: why` per check and ends with `N passed, N failed`; exits 0
//! only when every check ran and passed.
//!
//! On a build host without KVM (`--place host`) it runs the checks that need no guest; in the
//! nested VM (`--place kvm`) it runs them all, against real KVM.

mod check;
mod files;
mod gdb;
mod memory;
mod plugins;

use std::{path::PathBuf, process::ExitCode};

use check::{Check, Env, Place};
use clap::Parser;

#[derive(Parser)]
#[command(name = "accel-edges", version, about = "Check accel-host's edges against bad input")]
struct Cli {
    /// Where this runs: `host` (no guest can run) or `kvm` (real KVM: every check).
    #[arg(long)]
    place: Place,
    /// The accel-host executable under test.
    #[arg(long)]
    accel_host: PathBuf,
    /// The directory holding the plugins and the fixture plugins.
    #[arg(long)]
    plugins: PathBuf,
    /// A bare-metal guest image that runs to its end (the demo guest); needed with `--place kvm`.
    #[arg(long)]
    guest: Option<PathBuf>,
    /// Run only the checks whose names contain this text.
    #[arg(long)]
    filter: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = match Env::new(cli.place, cli.accel_host, cli.plugins, cli.guest) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("accel-edges: error: {e}");
            return ExitCode::from(2);
        }
    };
    let all: Vec<Check> =
        [plugins::checks(), gdb::checks(), files::checks(), memory::checks()].into_iter().flatten().collect();
    let (mut passed, mut failed) = (0, 0);
    for check in all.iter().filter(|c| cli.filter.as_deref().is_none_or(|f| c.name.contains(f))) {
        if check.needs_kvm && env.place != Place::Kvm {
            continue;
        }
        match (check.run)(&env) {
            Ok(()) => {
                passed += 1;
                println!("PASS {}", check.name);
            }
            Err(why) => {
                failed += 1;
                println!("FAIL {}: {}", check.name, why.lines().next().unwrap_or(""));
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
