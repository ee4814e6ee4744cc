//! The KVM arm64 backend of accel, exported as a plugin named `kvm`.
//!
//! The ioctl code is compiled on `linux`/`aarch64` only. On other hosts the plugin still builds
//! and loads, and its probe says why it is unavailable.

pub mod reg_ids;

#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
mod kvm;

#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
pub use kvm::{open, probe, KvmBackend, KvmVcpu, KvmVm};

#[cfg(not(all(target_os = "linux", target_arch = "aarch64")))]
mod unavailable;

#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
accel_api::export_plugin! {
    name: "kvm",
    probe: probe,
    open: open,
}

#[cfg(not(all(target_os = "linux", target_arch = "aarch64")))]
accel_api::export_plugin! {
    name: "kvm",
    unavailable: unavailable::reason,
}
