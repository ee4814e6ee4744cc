//! The boot benchmark in the nested VM: the Debian kernel booted to its init by `accel-host` and
//! by QEMU's own KVM support (Debian's arm64 `qemu-system-aarch64` with its libraries), with 1 and
//! 2 vCPUs, alternately in one run, quoted as the ratio accel / QEMU with the exits each took.
//! A benchmark, not a timed test: what the tally checks is that both booted.

use std::path::Path;

use crate::{
    build::cross_build,
    error::{Error, Result},
    layout::{cross_out, work_dir},
    payload::vm_files,
    provision::{
        guest_qemu, host,
        initramfs::VmFile,
        kernel::{self, KernelVersion},
        linux_guest,
    },
    report::Tally,
    vm::{self, Job, VmRun},
};

/// The job's name.
pub const JOB: &str = "boot-bench";
const KERNEL: &str = "/guests/linux/Image";
const INITRD: &str = "/guests/linux/boot-bench.cpio";
/// The drain of `linux_guest`: the console must have sent everything before a forced poweroff.
const DRAIN: &str = "stty -F /dev/console \"$(stty -F /dev/console -g)\" 2>/dev/null\n";

/// QEMU, its libraries, and the initramfs whose init prints the marker and powers off. The
/// kernel is the one the Linux checks put at the same path.
pub fn files(work: &Path) -> Result<Vec<VmFile>> {
    let qemu = guest_qemu::guest_qemu()?;
    let busybox = linux_guest::busybox()?;
    let init = linux_guest::init_script(&format!("echo \"@@linux booted\"\n{DRAIN}poweroff -f\n"));
    let out = work.join("boot-bench.cpio");
    linux_guest::initramfs(&out, &busybox, &init, Vec::new())?;
    let mut files = qemu.files;
    files.push(VmFile::from_host(INITRD, &out, 0o644)?);
    Ok(files)
}

/// The benchmark's job, with `rounds` boots per VMM and vCPU count.
pub fn job_with(rounds: u32) -> Job {
    let rounds = rounds.to_string();
    let argv = [
        "/bin/accel-boot-bench",
        "--kernel",
        KERNEL,
        "--initrd",
        INITRD,
        "--cpus",
        "1,2",
        "--rounds",
        &rounds,
    ];
    Job::new(JOB, &argv)
}

/// The benchmark's job in `cargo xtask test`: 3 boots each.
pub fn job() -> Job {
    job_with(3)
}

/// `cargo xtask boot-bench`: the benchmark alone, in one VM boot per CPU model, the VM's own
/// kernel of the series `vm_kernel` (the guest that accel-host and QEMU boot is 6.12 always).
pub fn run(cpus: &[String], rounds: u32, vm_kernel: KernelVersion) -> Result<bool> {
    host::tools()?;
    host::rust_targets()?;
    cross_build()?;
    let kernel = kernel::default_image()?;
    let work = work_dir();
    std::fs::create_dir_all(&work).map_err(|e| Error(format!("creating {}: {e}", work.display())))?;
    let mut files = vm_files()?;
    files.push(VmFile::from_host(KERNEL, &kernel, 0o644)?);
    files.extend(self::files(&work)?);
    let initrd = work.join("boot-bench-initrd.cpio");
    let limit = u64::from(rounds) * 4 * 60;
    vm::initramfs_with_timeout(
        &initrd,
        &cross_out("accel-vm-init"),
        files,
        &[("ACCEL_PLUGIN_PATH", "/lib/accel")],
        limit,
        &[job_with(rounds)],
    )?;
    let mut tally = Tally::default();
    for cpu in cpus {
        println!("xtask: booting the nested arm64 VM (-cpu {cpu}) for the boot benchmark");
        let l1 = kernel::kernel(vm_kernel)?.image;
        let run = vm::boot(&l1, &initrd, cpu, std::time::Duration::from_secs(limit + 300), &[], &|_| {})?;
        check(&mut tally, cpu, &run);
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(tally.failed == 0)
}

/// Shows the benchmark's table and checks that every boot reached the init.
pub fn check(tally: &mut Tally, boot: &str, run: &VmRun) {
    let job = run.job(JOB);
    for line in job.iter().flat_map(|j| &j.output) {
        println!("xtask: [{boot}] {JOB}| {line}");
    }
    let ratios = job.map_or(0, |j| j.output.iter().filter(|l| l.starts_with("boot-ratio ")).count());
    tally.check(
        &format!("[{boot}] Linux boots to its init on accel-host and on QEMU, with 1 and 2 vCPUs"),
        job.is_some_and(|j| j.status == Some(0)) && ratios == 2,
        || format!("status {:?}, {ratios} ratio lines", job.and_then(|j| j.status)),
    );
}
