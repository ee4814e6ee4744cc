//! The Hypervisor.framework backend of accel, exported as a plugin named `hvf`.
//!
//! The backend itself is not written yet. On every host this plugin loads and reports that it
//! cannot run: on macOS/aarch64 because the backend is not implemented, elsewhere because
//! Hypervisor.framework exists only there. It never pretends to create a VM.

use accel_api::{backend::NoBackend, AccelError, ErrorKind, ProbeInfo, Result};

fn reason() -> String {
    if cfg!(all(target_os = "macos", target_arch = "aarch64")) {
        "the HVF backend is not implemented in this version of accel".to_string()
    } else {
        format!(
            "HVF needs macOS on Apple silicon; this is {} on {}",
            std::env::consts::OS,
            std::env::consts::ARCH
        )
    }
}

/// Reports the backend unavailable, with the reason.
pub fn probe() -> ProbeInfo {
    ProbeInfo::unavailable(reason())
}

/// Always fails, with the reason.
pub fn open() -> Result<NoBackend> {
    Err(AccelError::new(ErrorKind::UNAVAILABLE, reason()))
}

accel_api::export_plugin! {
    name: "hvf",
    probe: probe,
    open: open,
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_unavailable_with_a_reason() {
        let info = super::probe();
        assert!(!info.available);
        assert!(info.reason.contains("HVF"), "{}", info.reason);
        assert_eq!(super::open().err().map(|e| e.kind), Some(accel_api::ErrorKind::UNAVAILABLE));
    }
}
