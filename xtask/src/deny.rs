//! `cargo deny` over the workspace and the fuzz crate, by the policy in `deny.toml`: licenses and
//! sources on every run; advisories against the RustSec database, fetched when the machine can
//! reach it, and otherwise reported as not run with the reason.

use std::process::Command;

use crate::{
    cmd,
    error::{Error, Result},
    layout::root,
    report::Tally,
};

/// The cargo-deny release `cargo xtask` installs when none is present.
pub const VERSION: &str = "0.20.2";

/// The manifests checked: the workspace, and the fuzz crate (a workspace of its own).
const MANIFESTS: [&str; 2] = ["Cargo.toml", "fuzz/Cargo.toml"];

fn deny() -> Command {
    let mut c = Command::new("cargo");
    c.arg("deny").current_dir(root());
    c
}

/// `cargo deny` on `manifest` by the policy in `deny.toml`, fetching nothing.
fn deny_on(manifest: &str) -> Command {
    let mut c = deny();
    c.args(["--manifest-path", manifest, "--config"]).arg(root().join("deny.toml")).arg("--offline");
    c
}

/// Installs cargo-deny if it is missing.
pub fn provision() -> Result<()> {
    if deny().arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-deny {VERSION}");
    cmd::run(Command::new("cargo").args(["install", "--locked", "cargo-deny", "--version", VERSION]))
}

/// The first line of what a failed cargo-deny run printed on standard error that says why.
fn why(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .map(str::trim)
        .find(|l| ["error", "ERROR", "fatal"].iter().any(|w| l.contains(w)))
        .or_else(|| text.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or("no output")
        .to_string()
}

/// Runs the checks and tallies them.
pub fn check(tally: &mut Tally) -> Result<()> {
    provision()?;
    for manifest in MANIFESTS {
        let out = deny_on(manifest)
            .args(["check", "licenses", "sources"])
            .output()
            .map_err(|e| Error(format!("running cargo deny: {e}")))?;
        if !out.status.success() {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
        tally.check(&format!("cargo deny: licenses and sources of {manifest}"), out.status.success(), || {
            why(&out.stderr)
        });
    }
    let fetched = deny()
        .arg("--config")
        .arg(root().join("deny.toml"))
        .args(["fetch", "db"])
        .output()
        .map_err(|e| Error(format!("running cargo deny fetch: {e}")))?;
    if !fetched.status.success() {
        println!(
            "xtask: NOT RUN cargo deny advisories: the RustSec advisory database could not be fetched \
             from github.com ({}); deny.toml records the advisories accepted",
            why(&fetched.stderr)
        );
        return Ok(());
    }
    for manifest in MANIFESTS {
        let out = deny_on(manifest)
            .args(["check", "advisories"])
            .output()
            .map_err(|e| Error(format!("running cargo deny: {e}")))?;
        if !out.status.success() {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
        tally.check(&format!("cargo deny: advisories of {manifest}"), out.status.success(), || {
            why(&out.stderr)
        });
    }
    Ok(())
}
