//! The build host made ready for the nested VM: its tools (an outer QEMU recent enough to trust),
//! the Rust targets and the rustup components. Missing tools are installed when this user can
//! (root with apt-get); otherwise the exact command is printed.

use std::{path::Path, process::Command};

use crate::{
    cmd,
    error::{Error, Result},
    provision::apt_sources::{backports_entry, system_debian_sources},
};

/// Debian packages the nested VM needs on the build host.
pub const APT_PACKAGES: &[&str] = &[
    "qemu-system-arm",
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "gdb-multiarch",
    "device-tree-compiler",
];
/// The oldest outer QEMU trusted to emulate the nested VM's host. QEMU 7.2's TCG sometimes runs
/// a stale translation of a page the nested kernel has reused when the CPU has SVE (`-cpu max`),
/// so a guest of the nested KVM executes the previous VM's code; 10.0 does not.
pub const QEMU_MIN_MAJOR: u32 = 10;
/// Rust targets: plugins and tools for the VM, the bare-metal demo guest, and macOS on Apple
/// silicon for checking the HVF backend.
pub const RUST_TARGETS: &[&str] =
    &["aarch64-unknown-linux-gnu", "aarch64-unknown-none", "aarch64-apple-darwin"];
/// rustup components the lint step needs.
pub const RUST_COMPONENTS: &[&str] = &["clippy", "rustfmt"];
/// Where the cross glibc lives.
pub const CROSS_LIB: &str = "/usr/aarch64-linux-gnu/lib";

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Makes sure the host tools are there, installing them when possible.
pub fn tools() -> Result<()> {
    let missing: Vec<&str> = [
        ("qemu-system-aarch64", "qemu-system-arm"),
        ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
        ("gdb-multiarch", "gdb-multiarch"),
        ("dtc", "device-tree-compiler"),
    ]
    .iter()
    .filter(|(program, _)| !have(program))
    .map(|(_, package)| *package)
    .chain((!Path::new(CROSS_LIB).join("libc.so.6").exists()).then_some("libc6-dev-arm64-cross"))
    .collect();
    if !missing.is_empty() {
        let install = format!("apt-get install -y --no-install-recommends {}", APT_PACKAGES.join(" "));
        if is_root() && have("apt-get") {
            eprintln!("xtask: installing {}", missing.join(", "));
            cmd::run(Command::new("apt-get").args(["update", "-qq"]))?;
            cmd::run(
                Command::new("sh").args(["-c", &format!("DEBIAN_FRONTEND=noninteractive {install} -qq")]),
            )?;
        } else {
            return Err(Error(format!(
                "missing host tools ({}); install them with:\n  sudo {install}",
                missing.join(", ")
            )));
        }
    }
    outer_qemu()
}

/// The outer QEMU's version, as `(major, minor, micro)`.
pub fn qemu_version() -> Result<(u32, u32, u32)> {
    let text = cmd::output(Command::new("qemu-system-aarch64").arg("--version"))?;
    parse_qemu_version(&text)
        .ok_or_else(|| Error(format!("cannot read the version of qemu-system-aarch64 from {text:?}")))
}

fn parse_qemu_version(text: &str) -> Option<(u32, u32, u32)> {
    let rest = text.lines().next()?.strip_prefix("QEMU emulator version ")?;
    let number = rest.split(|c: char| !(c.is_ascii_digit() || c == '.')).next()?;
    let mut parts = number.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next().flatten().unwrap_or(0), parts.next().flatten().unwrap_or(0)))
}

fn debian_codename() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines().find_map(|l| l.strip_prefix("VERSION_CODENAME=")).map(|c| c.trim_matches('"').to_string())
}

/// Makes sure the outer QEMU is one that emulates the nested host faithfully: on Debian bookworm
/// as root, QEMU 10 comes from bookworm-backports; otherwise an older one is used with a warning.
fn outer_qemu() -> Result<()> {
    let (major, minor, micro) = qemu_version()?;
    if major >= QEMU_MIN_MAJOR {
        return Ok(());
    }
    let bookworm = debian_codename().as_deref() == Some("bookworm");
    if bookworm && is_root() && have("apt-get") {
        eprintln!("xtask: QEMU {major}.{minor}.{micro} is too old for the nested VM; installing QEMU 10 from bookworm-backports");
        let list = "/etc/apt/sources.list.d/accel-bookworm-backports.sources";
        if !Path::new(list).exists() {
            let entry = backports_entry(&system_debian_sources()).ok_or_else(|| {
                Error(
                    "no apt source names Debian's bookworm suite, so bookworm-backports cannot be added \
                     from the same archive; add it by hand and install qemu-system-arm from it"
                        .into(),
                )
            })?;
            std::fs::write(list, entry).map_err(|e| Error(format!("writing {list}: {e}")))?;
        }
        cmd::run(Command::new("apt-get").args(["update", "-qq"]))?;
        cmd::run(Command::new("sh").args([
            "-c",
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
             -t bookworm-backports qemu-system-arm",
        ]))?;
        return Ok(());
    }
    let fix = if bookworm {
        "add bookworm-backports to apt's sources and run `apt-get install -t bookworm-backports qemu-system-arm`"
    } else {
        "install qemu-system-arm 10 or later"
    };
    eprintln!(
        "xtask: WARNING: the outer QEMU is {major}.{minor}.{micro}. QEMU 7.2 is known to run stale code in \
         nested guests on -cpu max (a TCG bug), which makes cases fail at random, and QEMU before 10.0 \
         leaves the destination of an MRS from MDCCINT_EL1 unchanged, which KVM saves as the \
         guest's MDCCINT_EL1 while the host debugs it (a host kernel pointer then reads back); \
         versions before {QEMU_MIN_MAJOR} are not verified. To fix: {fix}."
    );
    Ok(())
}

/// Makes sure the Rust cross targets are installed.
pub fn rust_targets() -> Result<()> {
    let installed =
        cmd::output(Command::new("rustup").args(["target", "list", "--installed"])).map_err(|Error(e)| {
            Error(format!("{e}; rustup is needed to add the targets {}", RUST_TARGETS.join(" ")))
        })?;
    let missing: Vec<&str> =
        RUST_TARGETS.iter().copied().filter(|t| !installed.lines().any(|l| l.trim() == *t)).collect();
    if !missing.is_empty() {
        eprintln!("xtask: adding Rust targets {}", missing.join(", "));
        cmd::run(Command::new("rustup").arg("target").arg("add").args(&missing))?;
    }
    let components = cmd::output(Command::new("rustup").args(["component", "list", "--installed"]))?;
    let missing: Vec<&str> = RUST_COMPONENTS
        .iter()
        .copied()
        .filter(|c| !components.lines().any(|l| l.starts_with(&format!("{c}-"))))
        .collect();
    if !missing.is_empty() {
        eprintln!("xtask: adding rustup components {}", missing.join(", "));
        cmd::run(Command::new("rustup").arg("component").arg("add").args(&missing))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_versions_parse() {
        let v = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright";
        assert_eq!(parse_qemu_version(v), Some((10, 0, 2)));
        assert_eq!(
            parse_qemu_version("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u18)"),
            Some((7, 2, 15))
        );
        assert_eq!(parse_qemu_version("qemu 9"), None);
    }
}
