//! `cargo xtask vm`: one command line in the nested VM, with the usual files and the console on
//! this terminal, and its exit status as xtask's.

use std::path::Path;

use crate::{
    build::cross_build,
    error::{Error, Result},
    layout::{cross_out, work_dir},
    matrix::Boot,
    payload::vm_files,
    provision::{host, initramfs::VmFile, kernel},
    vm::{self, Job},
};

/// Boots the nested VM (`boot`'s kernel and CPU model) with the usual files and `extra` host
/// files, runs one command line in it with the console on this terminal, and returns its exit
/// status.
pub fn run_in_vm(boot: &Boot, extra: &[(&str, &Path)], argv: &[&str]) -> Result<i32> {
    host::tools()?;
    host::rust_targets()?;
    cross_build()?;
    let kernel = kernel::kernel(boot.kernel)?.image;
    let work = work_dir();
    std::fs::create_dir_all(&work).map_err(|e| Error(format!("creating {}: {e}", work.display())))?;
    let initrd = work.join("command-initrd.cpio");
    let mut files = vm_files()?;
    for (path, host) in extra {
        files.push(VmFile::from_host(path, host, 0o644)?);
    }
    // The command logs as asked here, so a case's info lines (its measured figures) can be read.
    let log = std::env::var("RUST_LOG").ok();
    let mut env = vec![("ACCEL_PLUGIN_PATH", "/lib/accel")];
    if let Some(log) = &log {
        env.push(("RUST_LOG", log));
    }
    vm::initramfs(&initrd, &cross_out("accel-vm-init"), files, &env, &[Job::new("command", argv)])?;
    println!("xtask: booting the nested arm64 VM [{boot}]; its console follows");
    let result = vm::boot(&kernel, &initrd, &boot.cpu, vm::SILENCE, &[], &|line| {
        if !line.starts_with("@@accel") {
            println!("{line}");
        }
    })?;
    result
        .job("command")
        .and_then(|j| j.status)
        .ok_or_else(|| Error("the VM ended before the command finished".into()))
}
