//! The hardened edges (`accel-edges`): accel-host driven with hostile plugins, gdb clients, files
//! and arguments, on the build host (the checks that need no guest) and in every nested VM boot
//! (all of them, on real KVM).

use crate::{
    cmd::{self, cargo},
    error::Result,
    layout::root,
    report::{summary_line, Tally},
    vm::{Job, VmRun},
};

/// The job's name in the nested VM.
const JOB: &str = "edges";

/// Tallies one `accel-edges` output: each check, and that it ran to its summary.
fn tally_output(tally: &mut Tally, place: &str, status: Option<i32>, output: &[String]) {
    for line in output {
        if let Some(name) = line.strip_prefix("PASS ") {
            tally.check(&format!("[{place}] edges: {name}"), true, String::new);
        } else if let Some(rest) = line.strip_prefix("FAIL ") {
            let (name, why) = rest.split_once(": ").unwrap_or((rest, ""));
            tally.check(&format!("[{place}] edges: {name}"), false, || why.to_string());
        }
    }
    let summary = summary_line(output);
    tally.check(
        &format!("[{place}] accel-edges ran every check to its summary"),
        status == Some(0) && summary.is_some_and(|(passed, _)| passed > 0),
        || format!("exit status {status:?}, summary {summary:?}"),
    );
}

/// Builds and runs the host's checks against this host's debug build of accel-host and the
/// fixture plugins.
pub fn host(tally: &mut Tally) -> Result<()> {
    let built = cmd::run(cargo().args(["build", "--quiet", "--workspace", "--bins", "--lib"]));
    tally.check("the workspace's binaries and plugins build for the edge checks", built.is_ok(), || {
        "see the output above".into()
    });
    let debug = root().join("target/debug");
    let (lines, ok) = cmd::tee(
        cargo()
            .args([
                "run",
                "--quiet",
                "-p",
                "accel-conformance",
                "--bin",
                "accel-edges",
                "--",
                "--place",
                "host",
            ])
            .arg("--accel-host")
            .arg(debug.join("accel-host"))
            .arg("--plugins")
            .arg(&debug),
    )?;
    tally_output(tally, "host", Some(if ok { 0 } else { 1 }), &lines);
    Ok(())
}

/// The job every nested VM boot runs.
pub fn job() -> Job {
    Job::new(
        JOB,
        &[
            "/bin/accel-edges",
            "--place",
            "kvm",
            "--accel-host",
            "/bin/accel-host",
            "--plugins",
            "/lib/accel",
            "--guest",
            "/guests/demo.elf",
        ],
    )
}

/// Checks the job of one boot.
pub fn check(tally: &mut Tally, boot: &str, run: &VmRun) {
    match run.job(JOB) {
        Some(job) => tally_output(tally, boot, job.status, &job.output),
        None => tally.check(&format!("[{boot}] accel-edges ran"), false, || "the job did not run".into()),
    }
}
