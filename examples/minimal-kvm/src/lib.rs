//! A minimal KVM arm64 backend for accel, exported as the plugin `example`: the plugin to copy
//! when you write your own.
//!
//! A plugin implements three traits from [`accel_api::backend`] and exports them with one macro:
//!
//! - [`Backend`](accel_api::backend::Backend), the opened accelerator (`backend::MinimalKvm`);
//! - [`BackendVm`](accel_api::backend::BackendVm), a VM: memory and vCPUs (`backend::MinimalVm`);
//! - [`BackendVcpu`](accel_api::backend::BackendVcpu), a vCPU: registers and `run`
//!   (`vcpu::MinimalVcpu`).
//!
//! The contract those traits carry is written in [`accel_api::backend`]; each method here says
//! which rule of it the method keeps. Everything optional (an in-kernel GIC, guest debug, dirty
//! logging, eventfds, SVE, event injection) is an extension that this plugin does not offer: it
//! keeps the traits' defaults, which answer `None`, and hosts and the conformance suite see that
//! the extension is absent. Adding one later is adding one `support_*` method.
//!
//! The KVM code builds on Linux/aarch64 only. On any other host the plugin still builds and
//! loads, and its probe says why it cannot run: see the second `export_plugin!` below.

#[cfg(any(test, all(target_os = "linux", target_arch = "aarch64")))]
mod ids;

#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
pub mod backend;
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
mod error;
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
mod kick;
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
pub mod vcpu;

// The plugin's root module: its name, its probe, and how to open it. The macro wraps every call
// so that a panic comes back to the host as an error instead of crossing the boundary.
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
accel_api::export_plugin! {
    name: "example",
    probe: backend::probe,
    open: backend::open,
}

/// Why this plugin cannot run here.
#[cfg(not(all(target_os = "linux", target_arch = "aarch64")))]
fn reason() -> String {
    format!(
        "the example KVM plugin needs a Linux aarch64 host; this is {} on {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

// On other hosts: a plugin that loads, probes as unavailable with the reason, and refuses to open.
#[cfg(not(all(target_os = "linux", target_arch = "aarch64")))]
accel_api::export_plugin! {
    name: "example",
    unavailable: reason,
}
