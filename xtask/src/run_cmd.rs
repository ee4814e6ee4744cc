//! `cargo xtask run`: Linux to a busybox shell, or a bare-metal image, on the KVM backend with
//! the console on this terminal, natively on an arm64 Linux host with usable KVM, otherwise
//! inside the nested VM.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{
    build::cross_build,
    cmd::{self, cargo},
    error::{Error, Result},
    guests,
    layout::{cross_out, root, work_dir},
    matrix::Boot,
    payload::vm_files,
    provision::{
        host,
        initramfs::VmFile,
        kernel::{self, KernelVersion},
        linux_guest,
    },
    vm::{self, Job},
    vm_cmd::run_in_vm,
};

fn native_kvm_usable(host: &Path, plugin: &Path) -> bool {
    cfg!(all(target_os = "linux", target_arch = "aarch64"))
        && Command::new(host).args(["probe", "--accel"]).arg(plugin).output().is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("available        yes")
        })
}

/// Runs accel-host with the KVM plugin on `image`, or on the demo guest when there is none.
pub fn run(image: Option<PathBuf>) -> Result<i32> {
    let image = match image {
        Some(i) => std::fs::canonicalize(&i).map_err(|e| Error(format!("{}: {e}", i.display())))?,
        None => {
            if cfg!(target_arch = "aarch64") {
                host::rust_targets()?;
            }
            guests::demo()
        }
    };
    if cfg!(all(target_os = "linux", target_arch = "aarch64")) {
        cmd::run(cargo().args(["build", "--release", "-p", "accel-host", "-p", "accel-kvm"]))?;
        if image == guests::demo() {
            guests::build()?;
        }
        let release = root().join("target/release");
        let (host, plugin) = (release.join("accel-host"), release.join("libaccel_kvm.so"));
        if native_kvm_usable(&host, &plugin) {
            let status = Command::new(&host)
                .args(["run", "--accel"])
                .arg(&plugin)
                .arg(&image)
                .status()
                .map_err(|e| Error(format!("running {}: {e}", host.display())))?;
            return Ok(status.code().unwrap_or(1));
        }
        println!("xtask: KVM is not usable natively here; using the nested VM");
    }
    run_in_vm(
        &Boot::new(KernelVersion::default(), "max"),
        &[("/guests/image", image.as_path())],
        &["/bin/accel-host", "run", "--accel", "kvm", "/guests/image"],
    )
}

/// Where `cargo xtask run` puts the Linux guest's files in the nested VM.
const SHELL_KERNEL: &str = "/guests/linux/Image";
const SHELL_INITRD: &str = "/guests/linux/shell.cpio";

/// Boots Linux to a busybox shell on this terminal: natively when this is an arm64 host with a
/// usable `/dev/kvm`, otherwise inside the nested VM, whose console is this terminal too.
pub fn run_linux(cpus: u32) -> Result<i32> {
    let kernel = kernel::default_image()?;
    let busybox = linux_guest::busybox()?;
    let work = work_dir();
    std::fs::create_dir_all(&work).map_err(|e| Error(format!("creating {}: {e}", work.display())))?;
    let shell = work.join("linux-shell.cpio");
    linux_guest::initramfs(&shell, &busybox, &linux_guest::shell_init(), Vec::new())?;
    let cpus = cpus.to_string();
    let args = |kernel: &str, initrd: &str| -> Vec<String> {
        ["run", "--accel", "kvm", "--kernel", kernel, "--initrd", initrd, "--append", "console=ttyAMA0 quiet"]
            .into_iter()
            .chain(["--cpus", &cpus, "--mem", "256M"])
            .map(str::to_string)
            .collect()
    };
    if cfg!(all(target_os = "linux", target_arch = "aarch64")) {
        cmd::run(cargo().args(["build", "--release", "-p", "accel-host", "-p", "accel-kvm"]))?;
        let release = root().join("target/release");
        let (host, plugin) = (release.join("accel-host"), release.join("libaccel_kvm.so"));
        if native_kvm_usable(&host, &plugin) {
            let mut argv = args(&kernel.to_string_lossy(), &shell.to_string_lossy());
            argv[2] = plugin.to_string_lossy().into_owned();
            let status = Command::new(&host)
                .args(&argv)
                .status()
                .map_err(|e| Error(format!("running {}: {e}", host.display())))?;
            return Ok(status.code().unwrap_or(1));
        }
        println!("xtask: KVM is not usable natively here; using the nested VM");
    }
    host::tools()?;
    host::rust_targets()?;
    cross_build()?;
    let initrd = work.join("shell-initrd.cpio");
    let mut files = vm_files()?;
    files.push(VmFile::from_host(SHELL_KERNEL, &kernel, 0o644)?);
    files.push(VmFile::from_host(SHELL_INITRD, &shell, 0o644)?);
    let mut argv = vec!["/bin/accel-host".to_string()];
    argv.extend(args(SHELL_KERNEL, SHELL_INITRD));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    vm::initramfs_with_timeout(
        &initrd,
        &cross_out("accel-vm-init"),
        files,
        &[("ACCEL_PLUGIN_PATH", "/lib/accel")],
        7 * 24 * 3600,
        &[Job::new("shell", &argv).on_console()],
    )?;
    println!(
        "xtask: booting the nested arm64 VM (-cpu max), then Linux on accel-host with {cpus} vCPUs; \
         poweroff in the guest ends it, or Ctrl-A x (accel-host's escape)"
    );
    vm::boot_interactive(&kernel, &initrd, "max")
}
