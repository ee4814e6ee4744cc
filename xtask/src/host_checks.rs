//! The checks that run on the build host itself: rustfmt, clippy on every target accel builds
//! for, the docs, the tracked files, the refusal of a `panic = "abort"` plugin, and the
//! workspace's unit tests.

use crate::{
    cmd::{self, cargo},
    error::Result,
    layout::{root, CROSS_TARGET},
    report::{libtest_counts, Tally},
    tracked,
};

/// The HVF backend's target: type-checked and linted here, never linked or run.
const MAC_TARGET: &str = "aarch64-apple-darwin";

/// rustfmt, and clippy with `-D warnings` on every target accel builds for.
pub fn lint(tally: &mut Tally) {
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

/// The workspace's unit tests on this host (`extra` arguments to `cargo test --workspace`).
pub fn unit_tests(tally: &mut Tally, extra: &[&str]) -> Result<()> {
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
