//! `cargo xtask test` on macOS on Apple silicon: the lints and unit tests, then the conformance
//! suite run natively against the HVF plugin, and the demo guest on `accel-host`.
//!
//! A program that uses Hypervisor.framework must carry the `com.apple.security.hypervisor`
//! entitlement, so `accel-host` and `accel-conformance` are signed ad hoc with it (`codesign`)
//! before they run. This path is written and type-checked on Linux; it has not run on a Mac yet.

use std::{path::PathBuf, process::Command, time::Instant};

use crate::{
    cmd::{self, cargo},
    error::{Error, Result},
    guests::{self, DEMO_LINE},
    host_checks::{lint, unit_tests},
    layout::root,
    provision::host,
    report::{summary_line, Tally},
};

/// The entitlements the two programs are signed with.
const ENTITLEMENTS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
    <key>com.apple.security.hypervisor</key>
    <true/>
</dict>
</plist>
"#;

fn release(name: &str) -> PathBuf {
    root().join("target/release").join(name)
}

/// Signs `binary` ad hoc with the hypervisor entitlement.
fn sign(binary: &PathBuf, entitlements: &PathBuf) -> Result<()> {
    cmd::run(
        Command::new("codesign")
            .args(["--force", "--sign", "-", "--entitlements"])
            .arg(entitlements)
            .arg(binary),
    )
}

/// The whole macOS test; true when everything passed.
pub fn test() -> Result<bool> {
    let start = Instant::now();
    host::rust_targets()?;
    let mut tally = Tally::default();
    println!("xtask: formatting and lints");
    lint(&mut tally);
    println!("xtask: unit tests");
    unit_tests(&mut tally, &["--exclude", "accel-vm-init"])?;

    println!("xtask: building accel-host, accel-conformance and the HVF plugin");
    cmd::run(cargo().args([
        "build",
        "--release",
        "-p",
        "accel-host",
        "-p",
        "accel-conformance",
        "-p",
        "accel-hvf",
    ]))?;
    guests::build()?;
    let entitlements = root().join("target/hypervisor.entitlements");
    std::fs::write(&entitlements, ENTITLEMENTS)
        .map_err(|e| Error(format!("writing {}: {e}", entitlements.display())))?;
    let (host, runner) = (release("accel-host"), release("accel-conformance"));
    for binary in [&host, &runner] {
        let signed = sign(binary, &entitlements);
        tally.check(
            &format!("{} is signed with com.apple.security.hypervisor", binary.display()),
            signed.is_ok(),
            || format!("{signed:?}"),
        );
    }
    let plugin = release("libaccel_hvf.dylib");

    println!("xtask: the conformance suite on Hypervisor.framework");
    let (lines, ok) = cmd::tee(Command::new(&runner).arg("--plugin").arg(&plugin).arg("--allow-not-run"))?;
    match summary_line(&lines) {
        Some((passed, failed)) => {
            println!("xtask: conformance on HVF: {passed} passed, {failed} failed");
            tally.passed += passed;
            tally.failed += failed;
            for line in lines.iter().filter(|l| ["FAIL", "AGAIN", "NOT RUN"].iter().any(|r| l.starts_with(r)))
            {
                tally.failures.push(format!("[hvf] {line}"));
            }
            tally.check("HVF conformance suite ran", ok && passed > 0, || {
                "the runner failed or passed nothing".into()
            });
        }
        None => tally.check("HVF conformance suite ran", false, || "no summary line in its output".into()),
    }

    let demo = root().join("target/guests/aarch64-unknown-none/release/demo");
    let out = Command::new(&host).args(["run", "--accel"]).arg(&plugin).arg(&demo).output();
    let text = out.as_ref().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    tally.check(
        "accel-host runs the demo guest on HVF",
        out.as_ref().is_ok_and(|o| o.status.success()) && text.contains(DEMO_LINE),
        || format!("{:?}: {text}", out.map(|o| o.status)),
    );

    println!("xtask: total time {:.1} s", start.elapsed().as_secs_f64());
    if !tally.failures.is_empty() {
        println!("xtask: failures and cases not run:");
        for f in &tally.failures {
            println!("  {f}");
        }
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(tally.failed == 0)
}
