//! The Linux guest's initramfs: a static busybox from Debian's arm64 `busybox-static`, and its
//! `/init` script: an interactive shell for a person, or checks that print markers for a test.

use std::path::{Path, PathBuf};

use crate::{
    error::{Error, Result},
    provision::{
        debian,
        initramfs::{Initramfs, VmFile},
    },
};

/// The Debian package that holds a static busybox.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// What every marker line of [`check_init`] starts with.
pub const MARKER: &str = "@@linux";
/// Mount points, and the directories `busybox --install -s` puts its applets in.
const DIRS: &[&str] = &["/dev", "/proc", "/sys", "/tmp", "/root", "/bin", "/sbin", "/usr/bin", "/usr/sbin"];

/// The start of every init script: busybox's applets as symlinks, a `PATH`, and the kernel's
/// filesystems (the kernel does not mount devtmpfs for an initramfs).
const PROLOGUE: &str = "#!/bin/sh\n\
/bin/busybox --install -s\n\
export PATH=/bin:/sbin:/usr/bin:/usr/sbin\n\
mount -t proc proc /proc\n\
mount -t sysfs sysfs /sys\n\
mount -t devtmpfs devtmpfs /dev\n";

/// Waits until the console has sent everything written to it: the machine stops at once on a
/// forced poweroff or reboot, and lines still in the UART would be lost. Setting the terminal's
/// own settings again does it, because stty applies them with TCSADRAIN.
const DRAIN: &str = "stty -F /dev/console \"$(stty -F /dev/console -g)\" 2>/dev/null\n";

/// The static arm64 busybox, fetched and cached on first use.
pub fn busybox() -> Result<PathBuf> {
    let package = debian::fetch(&[BUSYBOX_PACKAGE])?
        .pop()
        .ok_or_else(|| Error(format!("{BUSYBOX_PACKAGE} was not fetched")))?;
    let path = package.root.join("bin/busybox");
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error(format!("{} is missing", path.display())))
    }
}

/// Writes a newc initramfs to `out` holding `busybox` as `/bin/busybox` (with `/bin/sh` linked
/// to it), the usual directories, `init` as `/init`, and `files`. Returns its size in bytes.
pub fn initramfs(out: &Path, busybox: &Path, init: &str, files: Vec<VmFile>) -> Result<u64> {
    let mut image = Initramfs::with_dirs(DIRS);
    image.add(VmFile::from_host("/bin/busybox", busybox, 0o755)?)?;
    image.symlink("/bin/sh", "busybox")?;
    image.add(VmFile { path: "/init".into(), data: init.as_bytes().to_vec(), perm: 0o755 })?;
    image.add_all(files)?;
    image.write(out)
}

/// An init script: the common prologue, then `body`.
pub fn init_script(body: &str) -> String {
    format!("{PROLOGUE}{body}")
}

/// How the guest ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestEnd {
    /// `poweroff -f`: PSCI SYSTEM_OFF.
    PowerOff,
    /// `reboot -f`: PSCI SYSTEM_RESET.
    Reboot,
}

impl GuestEnd {
    fn command(self) -> &'static str {
        match self {
            Self::PowerOff => "poweroff",
            Self::Reboot => "reboot",
        }
    }
}

/// An interactive shell on the console, with job control (`cttyhack` makes the console its
/// controlling terminal). `poweroff`, `reboot`, or leaving the shell ends the guest.
pub fn shell_init() -> String {
    init_script(&format!(
        "# Without -f, busybox's poweroff, reboot and halt signal PID 1 as its own init expects.\n\
         trap '{DRAIN}poweroff -f' USR2\n\
         trap '{DRAIN}reboot -f' TERM\n\
         trap '{DRAIN}halt -f' USR1\n\
         echo \"accel Linux guest: $(uname -r), $(nproc) CPU(s); poweroff or exit to leave\"\n\
         setsid cttyhack sh &\n\
         wait\n\
         {DRAIN}poweroff -f\n"
    ))
}

/// What [`check_init`] does.
#[derive(Debug, Clone, Copy)]
pub struct CheckInit {
    /// Seconds between the two readings of the timer interrupt count.
    pub delay_secs: u32,
    /// How long to wait for a line on the console.
    pub read_timeout_secs: u32,
    /// How the guest ends afterwards.
    pub end: GuestEnd,
}

/// An init that reports for a test, each line starting with [`MARKER`]:
/// - `cpus N online LIST`: the online CPU count (`nproc`) and `/sys/devices/system/cpu/online`;
/// - `timer LINE`, twice, `delay_secs` apart: the `arch_timer` line of `/proc/interrupts` with
///   single blanks (`11: 343 350 GICv3 27 Level arch_timer`: the IRQ, then one count per CPU);
/// - `read`: it now waits for a line on the console, then `echo LINE` with what it read (or
///   `echo-timeout` if none came);
/// - `end poweroff` or `end reboot`, before it does so with `-f`.
pub fn check_init(check: &CheckInit) -> String {
    let end = check.end.command();
    init_script(&format!(
        "echo \"{MARKER} cpus $(nproc) online $(cat /sys/devices/system/cpu/online)\"\n\
         echo {MARKER} timer $(grep arch_timer /proc/interrupts)\n\
         sleep {delay}\n\
         echo {MARKER} timer $(grep arch_timer /proc/interrupts)\n\
         echo \"{MARKER} read\"\n\
         if read -r -t {timeout} line; then echo \"{MARKER} echo $line\"; else echo \"{MARKER} echo-timeout\"; fi\n\
         echo \"{MARKER} end {end}\"\n\
         {DRAIN}{end} -f\n",
        delay = check.delay_secs,
        timeout = check.read_timeout_secs,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_start_with_the_prologue() {
        for script in [
            shell_init(),
            check_init(&CheckInit { delay_secs: 1, read_timeout_secs: 5, end: GuestEnd::PowerOff }),
        ] {
            assert!(script.starts_with("#!/bin/sh\n/bin/busybox --install -s\n"));
            assert!(script.contains("mount -t devtmpfs devtmpfs /dev\n"));
        }
    }

    #[test]
    fn the_shell_runs_with_a_controlling_tty_and_ends_the_guest() {
        let script = shell_init();
        assert!(script.contains("setsid cttyhack sh &\nwait\n"));
        assert!(script.ends_with("poweroff -f\n"));
        assert!(script.contains("trap 'stty"));
    }

    #[test]
    fn check_script_reports_and_ends_as_asked() {
        let script = check_init(&CheckInit { delay_secs: 3, read_timeout_secs: 60, end: GuestEnd::Reboot });
        assert!(
            script.contains("echo \"@@linux cpus $(nproc) online $(cat /sys/devices/system/cpu/online)\"\n")
        );
        assert_eq!(script.matches("echo @@linux timer $(grep arch_timer /proc/interrupts)\n").count(), 2);
        assert!(script.contains("\nsleep 3\n"));
        assert!(script.contains("read -r -t 60 line"));
        assert!(script.contains("echo \"@@linux end reboot\"\n"));
        assert!(script.ends_with("reboot -f\n"));
        assert!(!script.contains("poweroff"));
    }
}
