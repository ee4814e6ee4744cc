//! `cargo xtask fetch-debian`: fetches every Debian arm64 piece the tests use (both kernels,
//! busybox, QEMU with its libraries), writes the Linux guest's initramfs
//! images, and prints where everything is, how large, and how long each step took.

use std::{path::Path, time::Instant};

use crate::{
    error::{Error, Result},
    layout::work_dir,
    provision::{
        debian::human,
        guest_qemu::{self, QEMU_ARGS},
        kernel::{self, KernelVersion},
        linux_guest::{self, CheckInit, GuestEnd},
    },
};

fn size_of(path: &Path) -> String {
    std::fs::metadata(path).map(|m| human(m.len())).unwrap_or_else(|e| format!("unreadable: {e}"))
}

fn took(start: Instant) -> String {
    format!("{:.1} s", start.elapsed().as_secs_f64())
}

/// Fetches everything and reports it.
pub fn fetch_debian() -> Result<()> {
    let mut shell_kernel = None;
    for version in KernelVersion::ALL {
        let start = Instant::now();
        let k = kernel::kernel(version)?;
        println!(
            "kernel {version}: {} ({}), release {}, from {} [{}]",
            k.image.display(),
            size_of(&k.image),
            k.release,
            k.package().unwrap_or_else(|| "ACCEL_KERNEL".into()),
            took(start)
        );
        shell_kernel.get_or_insert(k.image);
    }

    let start = Instant::now();
    let busybox = linux_guest::busybox()?;
    println!("busybox: {} ({}) [{}]", busybox.display(), size_of(&busybox), took(start));
    let work = work_dir();
    std::fs::create_dir_all(&work).map_err(|e| Error(format!("creating {}: {e}", work.display())))?;
    let images = [
        ("linux-shell.cpio", linux_guest::shell_init()),
        (
            "linux-check-poweroff.cpio",
            linux_guest::check_init(&CheckInit {
                delay_secs: 2,
                read_timeout_secs: 120,
                end: GuestEnd::PowerOff,
            }),
        ),
        (
            "linux-check-reboot.cpio",
            linux_guest::check_init(&CheckInit {
                delay_secs: 2,
                read_timeout_secs: 120,
                end: GuestEnd::Reboot,
            }),
        ),
    ];
    for (name, init) in &images {
        let out = work.join(name);
        let size = linux_guest::initramfs(&out, &busybox, init, Vec::new())?;
        println!("  initramfs: {} ({})", out.display(), human(size));
    }
    if let Some(image) = shell_kernel {
        println!(
            "  try the shell: qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on -smp 2 -m 512 -nographic -nic none \
             -kernel {} -initrd {} -append 'console=ttyAMA0 rdinit=/init quiet'",
            image.display(),
            work.join(images[0].0).display()
        );
    }

    let start = Instant::now();
    let qemu = guest_qemu::guest_qemu()?;
    println!(
        "QEMU for the nested VM: {} files, {} in all, from {} packages [{}]",
        qemu.files.len(),
        human(qemu.size()),
        qemu.packages.len(),
        took(start)
    );
    for file in &qemu.files {
        println!("  {} ({})", file.path, human(file.data.len() as u64));
    }
    println!("  packages: {}", qemu.packages.join(", "));
    println!("  run it in the VM as: {} {}", guest_qemu::QEMU_PATH, QEMU_ARGS.join(" "));
    Ok(())
}
