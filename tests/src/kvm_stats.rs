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
pub fn mount_debugfs() -> Result<(), String> {
    mount_unless("debugfs", DEBUGFS, "kvm")
}

/// Mounts the pseudo file system `kind` at `target` unless `target/sign` is already there.
#[cfg(target_os = "linux")]
fn mount_unless(kind: &str, target: &str, sign: &str) -> Result<(), String> {
    if Path::new(target).join(sign).exists() {
        return Ok(());
    }
    let c = |s: &str| std::ffi::CString::new(s).unwrap_or_default();
    let (source, at) = (c(kind), c(target));
    // SAFETY: the three strings are valid and NUL-terminated for the call; no data is passed.
    let rc = unsafe { libc::mount(source.as_ptr(), at.as_ptr(), source.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 && Path::new(target).join(sign).exists() {
        Ok(())
    } else {
        Err(format!(
            "{target}/{sign} is not there, and mounting {kind} at {target} failed: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// KVM's counters and tracepoints live in Linux's debugfs and tracefs.
#[cfg(not(target_os = "linux"))]
fn mount_unless(kind: &str, _: &str, _: &str) -> Result<(), String> {
    Err(format!("{kind} is Linux's; this is not Linux"))
}

/// Where tracefs is mounted.
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// The histogram trigger on KVM's `kvm_exit` tracepoint: exits by exception kind (`ret`) and, for
/// traps, the ESR_EL2.EC of what trapped.
const EXIT_HIST: &str = "hist:keys=ret,esr_ec";

/// KVM's exits by kind since [`ExitKinds::arm`], from the `kvm_exit` tracepoint's histogram: the
/// breakdown behind [`Counters::other`].
pub struct ExitKinds;

impl ExitKinds {
    fn trigger() -> std::path::PathBuf {
        Path::new(TRACEFS).join("events/kvm/kvm_exit/trigger")
    }

    /// Starts (or restarts) counting: mounts tracefs if needed and installs a fresh histogram.
    pub fn arm() -> Result<(), String> {
        mount_tracefs()?;
        let trigger = Self::trigger();
        // Removing a trigger that is not there fails harmlessly.
        let _ = std::fs::write(&trigger, format!("!{EXIT_HIST}"));
        std::fs::write(&trigger, EXIT_HIST).map_err(|e| format!("installing {EXIT_HIST} on kvm_exit: {e}"))
    }

    /// The counts so far, largest first, each with its kind's name.
    pub fn read() -> Result<Vec<(String, u64)>, String> {
        let path = Path::new(TRACEFS).join("events/kvm/kvm_exit/hist");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        Ok(parse_hist(&text))
    }

    /// The counts as one line: `IRQ 1234, trap EC 0x18 (system register) 56, ...`.
    pub fn describe(kinds: &[(String, u64)]) -> String {
        kinds.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
    }
}

/// The kind of a `kvm_exit`: its exception index (`ARM_EXCEPTION_*` in Linux's `kvm_asm.h`) and,
/// for a trap, the exception class, by its Arm ARM name.
fn exit_kind(ret: u64, ec: u64) -> String {
    match ret {
        0 => "IRQ".into(),
        1 => "SError".into(),
        2 => {
            let name = match ec {
                0x01 => "WFx",
                0x07 => "FP/SIMD access",
                0x16 => "HVC",
                0x17 => "SMC",
                0x18 => "system register",
                0x19 => "SVE access",
                0x20 => "instruction abort",
                0x24 => "data abort",
                0x30..=0x3c => "debug",
                _ => "other class",
            };
            format!("trap EC {ec:#04x} ({name})")
        }
        3 => "illegal exception return".into(),
        other => format!("exception index {other}"),
    }
}

/// Parses a histogram's entries: `{ ret: 2, esr_ec: 24 } hitcount: 500`.
fn parse_hist(text: &str) -> Vec<(String, u64)> {
    let field = |line: &str, name: &str| -> Option<u64> {
        let rest = &line[line.find(name)? + name.len()..];
        rest.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let mut kinds: Vec<(String, u64)> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| Some((exit_kind(field(l, "ret:")?, field(l, "esr_ec:")?), field(l, "hitcount:")?)))
        .collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    kinds
}

fn mount_tracefs() -> Result<(), String> {
    mount_unless("tracefs", TRACEFS, "events")
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
    fn histogram_entries_are_named_and_sorted() {
        let text = "# event histogram\n#\n{ ret:          0, esr_ec:          0 } hitcount:        120\n\
                    { ret:          2, esr_ec:         36 } hitcount:        500\n\
                    { ret:          2, esr_ec:         24 } hitcount:         30\n\
                    { ret:          2, esr_ec:         24 } hitcount:          bad\n\nTotals:\n    Hits: 650\n";
        // The histogram prints its keys in decimal: EC 36 is 0x24, 24 is 0x18.
        assert_eq!(
            parse_hist(text),
            vec![
                ("trap EC 0x24 (data abort)".to_string(), 500),
                ("IRQ".to_string(), 120),
                ("trap EC 0x18 (system register)".to_string(), 30)
            ]
        );
    }

    #[test]
    fn since_subtracts_and_never_wraps() {
        let a = Counters { values: [10, 1, 1, 1, 1, 1, 1] };
        let b = Counters { values: [15, 3, 1, 1, 1, 1, 0] };
        assert_eq!(b.since(&a).values, [5, 2, 0, 0, 0, 0, 0]);
    }
}
