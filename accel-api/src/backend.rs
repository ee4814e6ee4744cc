//! The traits a backend implements, in plain Rust: the contract every plugin fulfils. Each is
//! declared in its own file under [`crate::interface`].
//!
//! A plugin implements [`Backend`], [`BackendVm`] and [`BackendVcpu`] (and the optional
//! extensions it has) and exports them with [`crate::export_plugin!`]. The export glue converts
//! between these types and the ABI's records, and runs every call under `catch_unwind`, so a
//! panic comes back to the host as an [`ErrorKind::PANIC`](crate::ErrorKind::PANIC) error.
//!
//! # The contract
//!
//! - **Threads.** An accelerator and a VM are used from any thread at once (`Send + Sync`). A
//!   vCPU is driven from one thread at a time, but that thread may change from call to call
//!   (`Send`); only its kicker and its debug pool are used from other threads while it runs. A
//!   backend whose vCPUs are bound to one OS thread (Hypervisor.framework) hides that inside the
//!   plugin, with a thread per vCPU that the calls are sent to.
//! - **Puts write only what changed.** A `put_*` at [`PutLevel::RUNTIME`](crate::PutLevel::RUNTIME) or
//!   [`PutLevel::RESET`](crate::PutLevel::RESET) writes only the registers whose value differs from the backend's last
//!   get of them, and registers above the level are left alone. At [`PutLevel::FULL`](crate::PutLevel::FULL) (or with
//!   no earlier get, or after a failed put) it writes everything. A register the backend refuses
//!   is an error naming the register and the errno.
//! - **Kicks.** After [`Kick::kick`], the vCPU's current `run` returns
//!   [`VcpuExit::Interrupted`](crate::VcpuExit::Interrupted) soon, or its next `run` does so at once if it was not in the
//!   guest. One kick is consumed by one interrupted exit.
//! - **MMIO.** After an MMIO read exit, the host supplies the value with
//!   [`BackendVcpu::set_mmio_read_data`] before any register access or the next `run`; the
//!   access completes (the destination register written, the PC advanced) before registers are
//!   read or the guest continues. A register read after an MMIO write exit sees the PC after the
//!   access.
//! - **Optional extensions.** What a backend may lack is an extension: a `support_*` method that
//!   returns `None` by default. A backend returns `Some` only when the operation works here.
//!   Anything else the host asks that the backend cannot do is an
//!   [`ErrorKind::UNSUPPORTED`](crate::ErrorKind::UNSUPPORTED) error that names it.

pub use crate::interface::{
    accel::Backend, debug::BackendDebug, dirty_log::BackendDirtyLog, events::BackendEvents, gic::BackendGic,
    kick::Kick, linux_eventfd::BackendLinuxEventFd, sve::BackendSve, vcpu::BackendVcpu, vm::BackendVm,
};
