//! `cargo xtask fuzz`: the cargo-fuzz targets in `fuzz/`, built with the nightly toolchain and
//! run for a given number of runs each, with what each run did; and the short smoke run of every
//! target that `cargo xtask test` makes, so that the targets keep building and running, with
//! rustfmt and clippy on the fuzz crate, which the workspace's lint step does not see.
//!
//! Nightly and cargo-fuzz are installed when missing (rustup, `cargo install --locked`). Each
//! target's corpus grows in `fuzz/corpus/NAME`, starting from the seeds in `fuzz/seeds/NAME` if
//! there are any; a crash is written to `fuzz/artifacts/NAME`, and libFuzzer's output to
//! `target/fuzz-logs/NAME.log`. All three are ignored by git.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use crate::{
    cmd,
    error::{Error, Result},
    layout::root,
    report::Tally,
};

/// A fuzz target and how to run it.
pub struct Target {
    /// The cargo-fuzz target (a `[[bin]]` of `fuzz/Cargo.toml`).
    pub name: &'static str,
    /// A libFuzzer dictionary in `fuzz/dicts/`, if the target has one.
    dict: Option<&'static str>,
    /// More libFuzzer options.
    options: &'static [&'static str],
}

/// Every target, in the order they run.
pub const TARGETS: &[Target] = &[
    Target { name: "exit_decode", dict: None, options: &[] },
    Target { name: "watchpoints", dict: None, options: &[] },
    Target { name: "snapshot", dict: Some("snapshot.dict"), options: &[] },
    Target { name: "image_loader", dict: Some("image_loader.dict"), options: &[] },
    Target { name: "stage1_walk", dict: None, options: &[] },
    Target { name: "gdb_packets", dict: None, options: &[] },
    // The vCPU threads of one run may still be freeing what they held when libFuzzer looks for
    // leaks after it, which LeakSanitizer reports at random: leaks are not looked for here.
    Target { name: "gdb_session", dict: Some("gdb_session.dict"), options: &["-detect_leaks=0"] },
];

/// How many runs each target makes in `cargo xtask test`.
pub const SMOKE_RUNS: u64 = 2000;

/// What one target's run came to.
pub struct Outcome {
    /// The target.
    pub name: &'static str,
    /// Runs done (libFuzzer's count).
    pub runs: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Crashes, leaks, timeouts and out-of-memory inputs found (libFuzzer stops at the first).
    pub crashes: usize,
    /// Where libFuzzer's output went.
    pub log: PathBuf,
}

fn fuzz_dir() -> PathBuf {
    root().join("fuzz")
}

/// `cargo +nightly ...`, through rustup's proxy (not the `cargo` running xtask).
fn nightly_cargo() -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly").current_dir(root()).env_remove("RUSTUP_TOOLCHAIN").env_remove("RUSTC");
    c
}

/// Installs the nightly toolchain and cargo-fuzz if they are missing.
pub fn provision() -> Result<()> {
    let toolchains =
        cmd::output(Command::new("rustup").args(["toolchain", "list"])).map_err(|Error(e)| {
            Error(format!("{e}; rustup is needed for the nightly toolchain cargo-fuzz uses"))
        })?;
    if !toolchains.lines().any(|l| l.starts_with("nightly-")) {
        eprintln!("xtask: installing the nightly toolchain for cargo-fuzz");
        cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "clippy",
        ]))?;
    }
    let components = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))?;
    if !components.lines().any(|l| l.starts_with("clippy-")) {
        cmd::run(Command::new("rustup").args(["component", "add", "clippy", "--toolchain", "nightly"]))?;
    }
    let have_fuzz = nightly_cargo().args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if !have_fuzz {
        eprintln!("xtask: installing cargo-fuzz");
        cmd::run(
            Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]).env_remove("RUSTUP_TOOLCHAIN"),
        )?;
    }
    Ok(())
}

/// Builds every target (with the address sanitizer, cargo-fuzz's default).
pub fn build() -> Result<()> {
    cmd::run(nightly_cargo().args(["fuzz", "build"]))
}

fn artifacts(name: &str) -> usize {
    std::fs::read_dir(fuzz_dir().join("artifacts").join(name)).map_or(0, |d| d.filter_map(|e| e.ok()).count())
}

/// libFuzzer's count of runs: `Done N runs` at the end, or the last `#N` status line.
fn runs_done(log: &str) -> u64 {
    let done = log.lines().find_map(|l| l.strip_prefix("Done ")?.split(' ').next()?.parse().ok());
    done.unwrap_or_else(|| {
        log.lines()
            .filter_map(|l| l.strip_prefix('#')?.split_whitespace().next()?.parse().ok())
            .max()
            .unwrap_or(0)
    })
}

/// Runs `target` for `runs` runs.
pub fn run(target: &Target, runs: u64) -> Result<Outcome> {
    let dir = fuzz_dir();
    let corpus = dir.join("corpus").join(target.name);
    std::fs::create_dir_all(&corpus).map_err(|e| Error(format!("creating {}: {e}", corpus.display())))?;
    let logs = root().join("target/fuzz-logs");
    std::fs::create_dir_all(&logs).map_err(|e| Error(format!("creating {}: {e}", logs.display())))?;
    let log = logs.join(format!("{}.log", target.name));
    let file = std::fs::File::create(&log).map_err(|e| Error(format!("creating {}: {e}", log.display())))?;
    let errors = file.try_clone().map_err(|e| Error(format!("{}: {e}", log.display())))?;

    let mut c = nightly_cargo();
    c.args(["fuzz", "run", target.name]).arg(&corpus);
    let seeds = dir.join("seeds").join(target.name);
    if seeds.is_dir() {
        c.arg(&seeds);
    }
    c.args(["--", &format!("-runs={runs}"), "-timeout=30"]);
    if let Some(dict) = target.dict {
        c.arg(format!("-dict={}", dir.join("dicts").join(dict).display()));
    }
    c.args(target.options).stdout(Stdio::from(file)).stderr(Stdio::from(errors));

    let before = artifacts(target.name);
    let start = Instant::now();
    let status = c.status().map_err(|e| Error(format!("running cargo fuzz: {e}")))?;
    let seconds = start.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut crashes = artifacts(target.name).saturating_sub(before);
    if !status.success() && crashes == 0 {
        // A failure that left no input behind (a build error, say) counts too.
        crashes = 1;
    }
    Ok(Outcome { name: target.name, runs: runs_done(&text), seconds, crashes, log })
}

fn selected(only: Option<&str>) -> Result<Vec<&'static Target>> {
    match only {
        None => Ok(TARGETS.iter().collect()),
        Some(name) => TARGETS.iter().find(|t| t.name == name).map(|t| vec![t]).ok_or_else(|| {
            let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
            Error(format!("no fuzz target {name}; the targets are {}", names.join(", ")))
        }),
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `cargo xtask fuzz`: every target (or `only`) for `runs` runs; true when none crashed.
pub fn fuzz(runs: u64, only: Option<&str>) -> Result<bool> {
    let targets = selected(only)?;
    provision()?;
    build()?;
    let mut outcomes = Vec::new();
    for target in targets {
        println!("xtask: fuzzing {} for {runs} runs", target.name);
        let o = run(target, runs)?;
        println!(
            "xtask: {}: {} runs in {:.1} s, {} crashes (log: {})",
            o.name,
            o.runs,
            o.seconds,
            o.crashes,
            o.log.display()
        );
        if o.crashes > 0 {
            println!("{}", tail(&o.log));
        }
        outcomes.push(o);
    }
    println!("{:<14} {:>10} {:>10} {:>8}", "target", "runs", "seconds", "crashes");
    for o in &outcomes {
        println!("{:<14} {:>10} {:>10.1} {:>8}", o.name, o.runs, o.seconds, o.crashes);
    }
    Ok(outcomes.iter().all(|o| o.crashes == 0 && o.runs >= runs))
}

/// The smoke run of `cargo xtask test`: every target builds and runs [`SMOKE_RUNS`] runs without
/// a crash, one tally line each.
pub fn smoke(tally: &mut Tally) {
    let start = Instant::now();
    if let Err(Error(e)) = provision().and_then(|()| build()) {
        tally.check("fuzz targets build (nightly, cargo-fuzz)", false, || e);
        return;
    }
    // The fuzz crate is outside the workspace that the lint step checks.
    let manifest = fuzz_dir().join("Cargo.toml");
    let fmt = cmd::run(
        Command::new("cargo").args(["fmt", "--manifest-path"]).arg(&manifest).args(["--", "--check"]),
    );
    tally.check("cargo fmt --check (fuzz crate)", fmt.is_ok(), || "see the output above".into());
    let clippy =
        cmd::run(nightly_cargo().args(["clippy", "--quiet", "--manifest-path"]).arg(&manifest).args([
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]));
    tally.check("clippy (fuzz crate, nightly)", clippy.is_ok(), || "see the output above".into());
    for target in TARGETS {
        match run(target, SMOKE_RUNS) {
            Ok(o) => tally.check(
                &format!("fuzz smoke: {} ({} runs, {:.1} s)", o.name, o.runs, o.seconds),
                o.crashes == 0 && o.runs >= SMOKE_RUNS,
                || {
                    format!(
                        "{} crashes, {} runs; see {}\n{}",
                        o.crashes,
                        o.runs,
                        o.log.display(),
                        tail(&o.log)
                    )
                },
            ),
            Err(Error(e)) => tally.check(&format!("fuzz smoke: {}", target.name), false, || e),
        }
    }
    println!("xtask: fuzz smoke runs took {:.1} s", start.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_read_from_the_log() {
        assert_eq!(
            runs_done("#2\tINITED cov: 3\n#300000\tDONE   cov: 5\nDone 300000 runs in 5 second(s)\n"),
            300000
        );
        assert_eq!(
            runs_done("#2\tINITED cov: 3\n#4572\tNEW    cov: 531\n==1== ERROR: libFuzzer: deadly signal\n"),
            4572
        );
        assert_eq!(runs_done("error: could not compile\n"), 0);
    }

    #[test]
    fn every_target_is_a_bin_of_the_fuzz_crate() {
        let manifest =
            std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("reading fuzz/Cargo.toml");
        for t in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{}\"", t.name)),
                "{} is not in fuzz/Cargo.toml",
                t.name
            );
            if let Some(dict) = t.dict {
                assert!(fuzz_dir().join("dicts").join(dict).is_file(), "{dict} is missing");
            }
        }
        assert!(selected(Some("nothing")).is_err());
    }
}
