//! `cargo xtask soak`: the whole conformance suite, many rounds in one boot of the nested VM per
//! kernel and CPU model, with the failures counted per case. An intermittent failure shows up here as a
//! count over the rounds rather than as one unlucky run.

use std::collections::BTreeMap;

use crate::{
    error::{Error, Result},
    layout::{cross_out, work_dir},
    matrix::Boot,
    payload::vm_files,
    provision::{host, kernel},
    vm::{self, Job},
};

/// Failures per case over the rounds of one boot.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SoakReport {
    /// Rounds that ran to their summary line.
    pub rounds: u32,
    /// Cases that failed, with how many rounds each failed in and the first reason.
    pub failures: BTreeMap<String, (u32, String)>,
}

/// Reads the runner's output of a `--repeat` run: `round N` lines, `FAIL    case: why` lines and
/// one `N passed, N failed` summary per round.
pub fn parse(lines: &[String]) -> SoakReport {
    let mut report = SoakReport::default();
    for line in lines {
        if let Some(rest) = line.strip_prefix("FAIL    ") {
            let (case, why) = rest.split_once(": ").unwrap_or((rest, ""));
            let entry = report.failures.entry(case.to_string()).or_insert((0, why.to_string()));
            entry.0 += 1;
        } else if line.ends_with(" failed") && line.contains(" passed, ") {
            report.rounds += 1;
        }
    }
    report
}

/// Runs `rounds` rounds of the suite in each boot; true when every round of every boot ran and
/// passed.
pub fn soak(boots: &[Boot], rounds: u32) -> Result<bool> {
    host::tools()?;
    host::rust_targets()?;
    crate::build::cross_build()?;
    let work = work_dir();
    std::fs::create_dir_all(&work).map_err(|e| Error(format!("creating {}: {e}", work.display())))?;
    let initrd = work.join("soak-initrd.cpio");
    let repeat = rounds.to_string();
    // A job is stopped only once it prints nothing for this long: a case prints its line when
    // it ends, and none stands still for longer than the runner's stall bound.
    let limit = 600;
    vm::initramfs_with_timeout(
        &initrd,
        &cross_out("accel-vm-init"),
        vm_files()?,
        &[("ACCEL_PLUGIN_PATH", "/lib/accel")],
        limit,
        &[Job::new(
            "soak",
            &[
                "/bin/accel-conformance",
                "--plugin",
                "/lib/accel/libaccel_kvm.so",
                "--fixtures",
                "/lib/accel",
                "--repeat",
                &repeat,
            ],
        )],
    )?;
    let mut all_ok = true;
    for boot in boots {
        let kernel = kernel::kernel(boot.kernel)?.image;
        println!("xtask: soak, {rounds} rounds of the suite in [{boot}]");
        let run = vm::boot(&kernel, &initrd, &boot.cpu, vm::SILENCE, &[], &|line| {
            if line.starts_with("round ") || line.starts_with("FAIL") || line.starts_with("AGAIN") {
                println!("  vm[{boot}]| {line}");
            }
        })?;
        let output = run.job("soak").map(|j| j.output.clone()).unwrap_or_default();
        let report = parse(&output);
        println!(
            "xtask: [{boot}] {} of {rounds} rounds ran in {:.0} s; {} case(s) failed",
            report.rounds,
            run.elapsed.as_secs_f64(),
            report.failures.len()
        );
        for (case, (count, why)) in &report.failures {
            println!("xtask: [{boot}]   {case}: failed in {count} of {} rounds; first: {why}", report.rounds);
        }
        all_ok &= report.rounds == rounds && report.failures.is_empty();
    }
    Ok(all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_failures_per_case_over_rounds() {
        let lines: Vec<String> = [
            "round 1",
            "PASS    a::b (3 ms)",
            "FAIL    run::x: expected 1, got 2",
            "AGAIN   run::x: passed when run again: an intermittent failure",
            "1 passed, 1 failed",
            "round 2",
            "FAIL    run::x: expected 1, got 3",
            "FAIL    vm::y: boom",
            "0 passed, 2 failed",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let r = parse(&lines);
        assert_eq!(r.rounds, 2);
        assert_eq!(r.failures.get("run::x"), Some(&(2, "expected 1, got 2".to_string())));
        assert_eq!(r.failures.get("vm::y"), Some(&(1, "boom".to_string())));
    }
}
