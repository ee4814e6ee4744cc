//! The KVM backend on hosts that are not Linux on aarch64: it loads, and says it cannot run.

/// Why KVM arm64 cannot run here.
pub fn reason() -> String {
    format!(
        "KVM arm64 needs a Linux aarch64 host; this is {} on {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}
