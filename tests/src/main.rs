//! `accel-conformance`: runs the conformance suite against one plugin file and ends with the line
//! `N passed, N failed`. Exits 0 only when every case ran and passed (or, with `--allow-not-run`,
//! none failed).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use accel_conformance::{cases, pace::Pace, run_all, serve_child, Context};
use accel_host::loader;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "accel-conformance",
    version,
    about = "Check an accel backend plugin against the conformance suite"
)]
struct Cli {
    /// The plugin file under test.
    #[arg(long)]
    plugin: PathBuf,
    /// Run only the cases whose names contain this text.
    #[arg(long)]
    filter: Option<String>,
    /// The directory holding test fixtures (libaccel_fixture_wrong_abi.so); defaults to the
    /// plugin's directory.
    #[arg(long)]
    fixtures: Option<PathBuf>,
    /// List the cases and exit.
    #[arg(long)]
    list: bool,
    /// Run the selected cases this many times (to hunt intermittent failures).
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Exit 0 even when cases were not run (a backend without some optional extension); they
    /// are still listed and counted.
    #[arg(long)]
    allow_not_run: bool,
    /// Run this one case and print its progress and verdict for the runner that started this
    /// process (a case that runs in a process of its own).
    #[arg(long = "child-case", hide = true)]
    child_case: Option<String>,
    /// The pace the starting runner measured, in nanoseconds an MMIO round trip.
    #[arg(long = "pace-ns", hide = true)]
    pace_ns: Option<u64>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    if cli.list {
        for case in cases::all() {
            println!("{}", case.name);
        }
        return ExitCode::SUCCESS;
    }
    let plugin = match loader::load(&cli.plugin) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("accel-conformance: error: {e}");
            return ExitCode::from(2);
        }
    };
    let fixtures = cli.fixtures.or_else(|| cli.plugin.parent().map(PathBuf::from));
    if let Some(name) = &cli.child_case {
        let ctx: &'static Context = Box::leak(Box::new(Context::new(plugin, cli.plugin, fixtures)));
        if let Some(ns) = cli.pace_ns {
            ctx.set_pace(Pace { round_trip: Duration::from_nanos(ns) });
        }
        std::process::exit(serve_child(ctx, name));
    }
    let info = plugin.probe();
    println!(
        "plugin {} ({}): {}",
        plugin.name(),
        cli.plugin.display(),
        if info.available {
            format!("available, {}", info.reason)
        } else {
            format!("unavailable, {}", info.reason)
        }
    );
    let ctx: &'static Context = Box::leak(Box::new(Context::new(plugin, cli.plugin, fixtures)));
    let mut ok = true;
    for round in 0..cli.repeat.max(1) {
        if cli.repeat > 1 {
            println!("round {}", round + 1);
        }
        let summary = run_all(ctx, cli.filter.as_deref());
        ok &= summary.failed == 0 && (summary.not_run == 0 || cli.allow_not_run) && summary.passed > 0;
    }
    let code = if ok { 0 } else { 1 };
    // Cases that timed out may have left threads inside a guest: end the process here.
    std::process::exit(code)
}
