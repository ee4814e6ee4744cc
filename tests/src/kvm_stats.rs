//! KVM's exit counters as Linux's debugfs sums them over the live VMs (`/sys/kernel/debug/kvm`),
//! by reason: what the boot benchmark and the stress cases quote beside their own counts, so that
//! exits the host never sees (taken and answered inside KVM) are counted too.

use std::path::Path;

/// The counters read, in the order of [`Counters::values`]: every exit, MMIO exits answered in
/// user space and in the kernel, HVCs, WFIs, WFEs, and runs ended by a signal.
pub const NAMES: [&str; 7] = [
    "exits",
    "mmio_exit_user",
    "mmio_exit_kernel",
    "hvc_exit_stat",
    "wfi_exit_stat",
    "wfe_exit_stat",
    "signal_exits",
];

/// Where debugfs is mounted.
pub const DEBUGFS: &str = "/sys/kernel/debug";

/// One reading of [`NAMES`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// The values, in the order of [`NAMES`].
    pub values: [u64; NAMES.len()],
}

impl Counters {
    /// Reads the counters; one that is missing or unreadable reads as zero.
    pub fn read() -> Self {
        let mut values = [0; NAMES.len()];
        for (value, name) in values.iter_mut().zip(NAMES) {
            *value = std::fs::read_to_string(Path::new(DEBUGFS).join("kvm").join(name))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
        }
        Self { values }
    }

    /// What each counter gained since `earlier`.
    pub fn since(&self, earlier: &Counters) -> Counters {
        let mut values = [0; NAMES.len()];
        for (i, v) in values.iter_mut().enumerate() {
            *v = self.values[i].saturating_sub(earlier.values[i]);
        }
        Counters { values }
    }

    /// Every exit.
    pub fn exits(&self) -> u64 {
        self.values[0]
    }

    /// Exits for none of the named reasons: interrupts to the host, trapped system registers and
    /// the like, which KVM answers itself.
    pub fn other(&self) -> u64 {
        self.values[0].saturating_sub(self.values[1..].iter().sum())
    }

    /// One line: `exits N (mmio_exit_user N, ..., other N)`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> =
            NAMES[1..].iter().zip(&self.values[1..]).map(|(n, v)| format!("{n} {v}")).collect();
        format!("exits {} ({}, other {})", self.exits(), parts.join(", "), self.other())
    }
}

/// Makes the counters readable: mounts debugfs at [`DEBUGFS`] unless KVM's directory is there.
#[cfg(target_os = "linux")]
pub fn mount_debugfs() -> Result<(), String> {
    if Path::new(DEBUGFS).join("kvm").is_dir() {
        return Ok(());
    }
    let c = |s: &str| std::ffi::CString::new(s).unwrap_or_default();
    let (source, target, kind) = (c("debugfs"), c(DEBUGFS), c("debugfs"));
    // SAFETY: the three strings are valid and NUL-terminated for the call; no data is passed.
    let rc = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), kind.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 && Path::new(DEBUGFS).join("kvm").is_dir() {
        Ok(())
    } else {
        Err(format!(
            "KVM's counters are not in {DEBUGFS}/kvm, and mounting debugfs there failed: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// KVM's counters live in Linux's debugfs.
#[cfg(not(target_os = "linux"))]
pub fn mount_debugfs() -> Result<(), String> {
    Err("KVM's counters live in Linux's debugfs; this is not Linux".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_is_what_no_named_reason_counts() {
        let c = Counters { values: [100, 40, 5, 3, 10, 2, 1] };
        assert_eq!(c.other(), 39);
        assert_eq!(
            c.describe(),
            "exits 100 (mmio_exit_user 40, mmio_exit_kernel 5, hvc_exit_stat 3, wfi_exit_stat 10, \
             wfe_exit_stat 2, signal_exits 1, other 39)"
        );
    }

    #[test]
    fn since_subtracts_and_never_wraps() {
        let a = Counters { values: [10, 1, 1, 1, 1, 1, 1] };
        let b = Counters { values: [15, 3, 1, 1, 1, 1, 0] };
        assert_eq!(b.since(&a).values, [5, 2, 0, 0, 0, 0, 0]);
    }
}
