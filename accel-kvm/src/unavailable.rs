//! The KVM backend on hosts that are not Linux on aarch64: it loads, and says it cannot run.

use accel_api::{backend::NoBackend, AccelError, ErrorKind, ProbeInfo, Result};

fn reason() -> String {
    format!(
        "KVM arm64 needs a Linux aarch64 host; this is {} on {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// Reports the backend unavailable on this host.
pub fn probe() -> ProbeInfo {
    log::debug!("probe: {}", reason());
    ProbeInfo::unavailable(reason())
}

/// Always fails: there is no KVM arm64 on this host.
pub fn open() -> Result<NoBackend> {
    Err(AccelError::new(ErrorKind::UNAVAILABLE, reason()))
}
