//! The checks of a test VM's jobs: the conformance suite on real KVM, the benchmark's figures,
//! accel-host's own commands, and the example plugin.

use crate::{
    guests::DEMO_LINE,
    report::{summary_line, Tally},
    vm::VmRun,
};

/// Checks the jobs of one boot, named `boot` (such as `6.1/a64fx`) in the tally; returns the
/// conformance suite's summary line, or why there is none.
pub fn check_vm(tally: &mut Tally, boot: &str, run: &VmRun) -> String {
    let tag = |what: &str| format!("[{boot}] {what}");
    tally.check(&tag("vm boot"), run.all_done && run.qemu_status == Some(0), || {
        format!(
            "the VM did not finish its jobs (all-done: {}, QEMU status {:?})",
            run.all_done, run.qemu_status
        )
    });

    let summary = match run.job("conformance") {
        Some(job) => match summary_line(&job.output) {
            Some((passed, failed)) => {
                let not_run = job.output.iter().filter(|l| l.starts_with("NOT RUN")).count();
                let line = format!("{passed} passed, {failed} failed, {not_run} not run");
                println!("xtask: [{boot}] conformance on real KVM: {line}");
                tally.passed += passed;
                tally.failed += failed;
                let reported = ["FAIL", "AGAIN", "NOT RUN"];
                for line in job.output.iter().filter(|l| reported.iter().any(|r| l.starts_with(r))) {
                    tally.failures.push(format!("[{boot}] {line}"));
                }
                tally.check(
                    &tag("KVM conformance suite ran completely"),
                    job.status == Some(0) && passed > 0,
                    || format!("the runner exited with {:?} (cases failed or were not run)", job.status),
                );
                line
            }
            None => {
                tally.check(&tag("KVM conformance suite ran"), false, || {
                    "no summary line in its output".into()
                });
                "no summary line".to_string()
            }
        },
        None => {
            tally.check(&tag("KVM conformance suite ran"), false, || "the job did not run".into());
            "the job did not run".to_string()
        }
    };

    let output_of = |name: &str| run.job(name).map(|j| (j.status, j.output.clone()));
    crate::bench::show(boot, run);
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
    tally.check(
        &tag("accel-host list names a plugin that aborts and one that crashes, and goes on"),
        status == Some(0)
            && out.iter().any(|l| l.contains("libaccel_fixture_panicking.so") && l.contains("SIGABRT"))
            && out.iter().any(|l| l.contains("libaccel_fixture_segfaulting.so") && l.contains("SIGSEGV")),
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
    check_example(tally, boot, run);
    summary
}

/// The example plugin: today's suite against it, on real KVM.
fn check_example(tally: &mut Tally, boot: &str, run: &VmRun) {
    let job = run.job("example-plugin");
    let summary = job.and_then(|j| summary_line(&j.output));
    let not_run = job.map_or(0, |j| j.output.iter().filter(|l| l.starts_with("NOT RUN")).count());
    for line in job.iter().flat_map(|j| &j.output).filter(|l| l.starts_with("FAIL")) {
        println!("xtask: [{boot}] example plugin: {line}");
    }
    tally.check(
        &format!("[{boot}] the example plugin runs the conformance cases that apply to it; nothing fails"),
        job.is_some_and(|j| j.status == Some(0))
            && summary.is_some_and(|(passed, failed)| passed > 0 && failed == 0),
        || format!("summary {summary:?}, status {:?}", job.map(|j| j.status)),
    );
    if let Some((passed, _)) = summary {
        println!("xtask: [{boot}] example plugin: {passed} passed, {not_run} not run (extensions it does not offer)");
    }
}
