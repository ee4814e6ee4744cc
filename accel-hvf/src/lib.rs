//! The Hypervisor.framework backend of accel, exported as a plugin named `hvf`.
//!
//! The backend itself is not written yet. On every host this plugin loads and reports that it
//! cannot run: on macOS/aarch64 because the backend is not implemented, elsewhere because
//! Hypervisor.framework exists only there. It never pretends to create a VM.

/// Why this plugin cannot run here.
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

accel_api::export_plugin! {
    name: "hvf",
    unavailable: reason,
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_unavailable_with_a_reason() {
        let root = super::accel_plugin_root();
        let info = accel_api::ProbeInfo::from(&(root.probe())());
        assert!(!info.available);
        assert!(info.reason.contains("HVF"), "{}", info.reason);
        let opened = (root.open())().into_result();
        assert_eq!(opened.err().map(|e| e.kind), Some(accel_api::ErrorKind::UNAVAILABLE));
    }
}
