//! The memory edges: a machine whose build fails after its VM and guest RAM exist.

use std::time::Duration;

use crate::check::{Check, Env};

/// The checks of this area.
pub fn checks() -> Vec<Check> {
    vec![Check::kvm(
        "a guest image that fails to load after the VM and its RAM exist is refused in one line",
        broken_elf_is_refused_after_the_vm_exists,
    )]
}

/// An image with the ELF magic and a zeroed header passes the plan (it is not empty and fits)
/// and fails in the loader, once the VM, its RAM, the GIC and the vCPUs exist: the machine is
/// dropped on that error path, the VM before its RAM.
fn broken_elf_is_refused_after_the_vm_exists(env: &Env) -> Result<(), String> {
    let dir = env.dir("memory");
    let image = dir.join("broken.elf");
    let mut bytes = b"\x7fELF".to_vec();
    bytes.resize(64, 0);
    std::fs::write(&image, &bytes).map_err(|e| format!("{}: {e}", image.display()))?;
    let plugin = env.plugin("libaccel_kvm.so");
    let ran = env.accel_host(
        &[
            "run",
            "--accel",
            &plugin.to_string_lossy(),
            "--mem",
            "16M",
            "--escape",
            "none",
            &image.to_string_lossy(),
        ],
        &[],
        Duration::from_secs(300),
    )?;
    ran.refused_with(1, "ELF")
}
