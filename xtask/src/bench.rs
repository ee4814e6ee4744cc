//! accel-bench in the nested VM: a short run in every `cargo xtask test` VM, so that the table
//! shows with each test, and `cargo xtask bench`, a longer run alone in one boot per CPU model,
//! for the figures to quote. Figures, not verdicts: a benchmark that does not finish is
//! reported, not counted.

use crate::{
    error::{Error, Result},
    layout::{cross_out, work_dir},
    payload::vm_files,
    provision::{host, kernel},
    vm::{self, Job, VmRun},
};

/// The job's name.
pub const JOB: &str = "bench";
/// Rounds of interleaved blocks in `cargo xtask test`: enough for stable medians, short enough
/// not to lengthen the test much.
pub const TEST_ROUNDS: u32 = 21;

/// accel-bench on the KVM plugin with `rounds` rounds.
pub fn job(rounds: u32) -> Job {
    let rounds = rounds.to_string();
    Job::new(JOB, &["/bin/accel-bench", "--plugin", "/lib/accel/libaccel_kvm.so", "--rounds", &rounds])
}

/// Prints the bench job's table of a VM run, or why there is none.
pub fn show(cpu: &str, run: &VmRun) {
    match run.job(JOB) {
        Some(bench) if bench.status == Some(0) => {
            println!(
                "xtask: [{cpu}] figures from accel-bench (nested VM under TCG: compare ratios, not times):"
            );
            for line in &bench.output {
                println!("  {line}");
            }
        }
        Some(bench) => println!(
            "xtask: [{cpu}] accel-bench did not complete (status {:?}); its output: {:?}",
            bench.status, bench.output
        ),
        None => println!("xtask: [{cpu}] accel-bench did not run"),
    }
}

/// `cargo xtask bench`: accel-bench with `rounds` rounds, alone in one VM boot per CPU model;
/// true when every run completed.
pub fn bench(cpus: &[String], rounds: u32) -> Result<bool> {
    host::tools()?;
    host::rust_targets()?;
    crate::build::cross_build()?;
    let kernel = kernel::default_image()?;
    let work = work_dir();
    std::fs::create_dir_all(&work).map_err(|e| Error(format!("creating {}: {e}", work.display())))?;
    let initrd = work.join("bench-initrd.cpio");
    vm::initramfs(
        &initrd,
        &cross_out("accel-vm-init"),
        vm_files()?,
        &[("ACCEL_PLUGIN_PATH", "/lib/accel")],
        &[job(rounds)],
    )?;
    let mut all_ok = true;
    for cpu in cpus {
        println!("xtask: accel-bench, {rounds} rounds, on -cpu {cpu}");
        let run = vm::boot(&kernel, &initrd, cpu, vm::SILENCE, &[], &|_| {})?;
        println!("xtask: [{cpu}] VM finished in {:.0} s", run.elapsed.as_secs_f64());
        show(cpu, &run);
        all_ok &= run.job(JOB).is_some_and(|j| j.status == Some(0));
    }
    Ok(all_ok)
}
