//! The Hypervisor.framework backend of accel, exported as a plugin named `hvf`.
//!
//! The backend is compiled on macOS on Apple silicon only, where Hypervisor.framework exists; on
//! every other host the plugin still builds and loads, and its probe says why it cannot run.
//!
//! Everything that does not need the framework lives in the backend kit, `accel-kit`, tested
//! on every host: the MMIO syndrome decode ([`accel_kit::mmio`]), PSCI ([`accel_kit::psci`]),
//! trapped system registers ([`accel_kit::systrap`]), the WFI deadline ([`accel_kit::timer`]),
//! the dirty bitmap ([`accel_kit::dirty`]) and the framework's register numbers
//! ([`accel_kit::hvf_regs`]). This crate is the thin layer that calls the framework through the
//! `applevisor` crates. It was written and type-checked for `aarch64-apple-darwin`; it has not
//! run on a Mac yet.

#[cfg(all(target_os = "macos", target_arch = "aarch64"))]
mod hvf;

#[cfg(all(target_os = "macos", target_arch = "aarch64"))]
pub use hvf::{open, probe, HvfBackend, HvfVcpu, HvfVm};

#[cfg(all(target_os = "macos", target_arch = "aarch64"))]
accel_api::export_plugin! {
    name: "hvf",
    probe: probe,
    open: open,
}

/// Why this plugin cannot run here.
#[cfg(not(all(target_os = "macos", target_arch = "aarch64")))]
fn reason() -> String {
    format!(
        "HVF needs macOS on Apple silicon; this is {} on {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

#[cfg(not(all(target_os = "macos", target_arch = "aarch64")))]
accel_api::export_plugin! {
    name: "hvf",
    unavailable: reason,
}

#[cfg(all(test, not(all(target_os = "macos", target_arch = "aarch64"))))]
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
