//! `cargo xtask test` on Linux: the host checks, the fuzz smoke runs, the ABI compatibility
//! builds, then one boot of the nested VM per kernel and CPU model with the conformance suite,
//! the benchmarks and the end-to-end jobs, each boot checked, and the gdb sessions last.

use std::time::Instant;

use crate::{
    bench,
    build::cross_build,
    checks, compat, deny, e2e, edges,
    error::{Error, Result},
    fuzz, guests,
    host_checks::{lint, unit_tests},
    layout::{cross_out, work_dir, CROSS_TARGET},
    matrix::{self, Boot, KERNEL_LOG_JOB},
    payload::vm_files,
    provision::{
        host,
        kernel::{self, KernelVersion},
    },
    report::Tally,
    vm::{self, Job},
};

/// The kernel of each series among `boots`, fetched once each, with its release. `ACCEL_KERNEL`
/// names one image, which cannot stand for two series.
fn kernels_for(boots: &[Boot]) -> Result<Vec<(KernelVersion, kernel::Kernel)>> {
    let mut kernels: Vec<(KernelVersion, kernel::Kernel)> = Vec::new();
    for boot in boots {
        if !kernels.iter().any(|(v, _)| *v == boot.kernel) {
            kernels.push((boot.kernel, kernel::kernel(boot.kernel)?));
        }
    }
    if kernels.len() > 1 && std::env::var_os("ACCEL_KERNEL").is_some() {
        return Err(Error(
            "ACCEL_KERNEL names one kernel image, but the boots asked for need several kernel series; \
             pick one with --kernel, or unset ACCEL_KERNEL"
                .into(),
        ));
    }
    Ok(kernels)
}

/// Runs everything on the `boots` asked for; true when every check passed.
pub fn test(boots: &[Boot]) -> Result<bool> {
    let start = Instant::now();
    host::tools()?;
    host::rust_targets()?;
    let mut tally = Tally::default();
    println!("xtask: formatting and lints");
    lint(&mut tally);

    println!("xtask: dependency policy (cargo deny)");
    deny::check(&mut tally)?;

    println!("xtask: host unit tests");
    unit_tests(&mut tally, &[])?;

    println!("xtask: the hardened edges on this host");
    edges::host(&mut tally)?;

    println!("xtask: fuzz targets, {} runs each", fuzz::SMOKE_RUNS);
    fuzz::smoke(&mut tally);

    println!("xtask: cross build for {CROSS_TARGET} and the demo guest");
    cross_build()?;
    for release in compat::RELEASES {
        compat::build(release)?;
        compat::check_old_decoding(&mut tally, release)?;
    }
    let kernels = kernels_for(boots)?;
    // The Linux that accel-host boots in every VM (the nested guest), whatever the VM's own.
    let kernel = kernel::default_image()?;
    let work = work_dir();
    std::fs::create_dir_all(&work).map_err(|e| Error(format!("creating {}: {e}", work.display())))?;
    let initrd = work.join("test-initrd.cpio");
    let mut jobs = vec![
        Job::new(KERNEL_LOG_JOB, &["@kmsg"]),
        Job::new(
            "conformance",
            &["/bin/accel-conformance", "--plugin", "/lib/accel/libaccel_kvm.so", "--fixtures", "/lib/accel"],
        ),
        bench::job(bench::TEST_ROUNDS),
        Job::new(
            "example-plugin",
            &["/bin/accel-conformance", "--plugin", "/lib/accel/libaccel_example.so", "--allow-not-run"],
        ),
        edges::job(),
        Job::new("host-list", &["/bin/accel-host", "list"]),
        Job::new("host-probe", &["/bin/accel-host", "probe", "--accel", "kvm"]),
        Job::new("host-probe-json", &["/bin/accel-host", "probe", "--accel", "kvm", "--json"]),
        Job::new("host-demo", &["/bin/accel-host", "run", "--accel", "kvm", "/guests/demo.elf"]),
        Job::new(
            "host-demo-2cpus",
            &["/bin/accel-host", "run", "--accel", "kvm", "--cpus", "2", "--mem", "64M", "/guests/demo.elf"],
        ),
        Job::new(
            "host-not-a-plugin",
            &["/bin/accel-host", "run", "--accel", "/lib/accel/not-a-plugin.so", "/guests/demo.elf"],
        ),
    ];
    for release in compat::RELEASES {
        jobs.extend(compat::jobs(release));
    }
    jobs.extend(e2e::linux::jobs());
    jobs.push(e2e::boot_bench::job());
    let mut files = vm_files()?;
    for release in compat::RELEASES {
        files.extend(compat::vm_files(release)?);
    }
    files.extend(e2e::linux::files(&work, &kernel, &guests::out("dtbinfo"))?);
    files.extend(e2e::boot_bench::files(&work)?);
    vm::initramfs(
        &initrd,
        &cross_out("accel-vm-init"),
        files,
        &[("ACCEL_PLUGIN_PATH", "/lib/accel")],
        &jobs,
    )?;
    let mut recap = Vec::new();
    for boot in boots {
        let (_, l1) = kernels
            .iter()
            .find(|(v, _)| *v == boot.kernel)
            .ok_or_else(|| Error(format!("no kernel {} was fetched", boot.kernel)))?;
        println!(
            "xtask: booting the nested arm64 VM [{boot}]: kernel {} ({}), -cpu {}",
            l1.release,
            l1.package().unwrap_or_else(|| "ACCEL_KERNEL".into()),
            boot.cpu
        );
        let run = vm::boot(&l1.image, &initrd, &boot.cpu, vm::SILENCE, &[], &|line| {
            println!("  vm[{boot}]| {line}")
        })?;
        println!("xtask: [{boot}] VM finished in {:.1} s", run.elapsed.as_secs_f64());
        let tag = boot.to_string();
        matrix::check(&mut tally, boot, &run, &l1.release);
        recap.push(format!(
            "[{boot}] conformance on real KVM: {} (VM {:.0} s)",
            checks::check_vm(&mut tally, &tag, &run),
            run.elapsed.as_secs_f64()
        ));
        for release in compat::RELEASES {
            compat::check(&mut tally, &tag, &run, release);
        }
        e2e::linux::check(&mut tally, &tag, &boot.file_stem(), &run, &work)?;
        e2e::boot_bench::check(&mut tally, &tag, &run);
        edges::check(&mut tally, &tag, &run);
    }
    e2e::gdb::gdb_end_to_end(&mut tally, &kernel)?;
    println!("xtask: total time {:.1} s", start.elapsed().as_secs_f64());
    for line in &recap {
        println!("xtask: {line}");
    }
    if !tally.failures.is_empty() {
        println!("xtask: failures:");
        for f in &tally.failures {
            println!("  {f}");
        }
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(tally.failed == 0 && tally.failures.is_empty())
}
