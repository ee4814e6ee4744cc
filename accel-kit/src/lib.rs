//! The backend kit: logic that accel backends may share, so that each writes only what is its own.
//!
//! Nothing here is part of the plugin contract (`accel-api`): a plugin author may use any of it,
//! or none. It calls no hypervisor and builds on every host, so it is tested everywhere.
//!
//! - Puts that write only what changed: [`put`].
//! - Guest debug: the debug-register encodings ([`debug_regs`]), the per-VM pool
//!   ([`debug_pool`]), the backend's `BackendDebug` over it ([`pool_debug`]), the guest
//!   instructions it plants software breakpoints in ([`guest_text`]), and a guest's own debug
//!   exceptions ([`guest_debug`]).
//! - For hypervisors that hand traps to user space: PSCI and SMCCC ([`psci`]), MMIO data aborts
//!   ([`mmio`]), trapped system registers ([`systrap`]), the generic timer ([`timer`]),
//!   exception entry ([`exception`]) and dirty-page bitmaps ([`dirty`]).
//! - Bookkeeping of guest memory slots ([`memory_map`]), and Hypervisor.framework's register
//!   numbering ([`hvf_regs`]).
//! - A value on a thread of its own, driven by calls sent to it ([`thread_proxy`]), for vCPUs
//!   bound to the thread that created them.
//! - Who is inside a vCPU's `run`, for kickers, forgotten also when the run unwinds
//!   ([`inside_run`]).

#![deny(missing_docs)]

pub mod debug_pool;
pub mod debug_regs;
pub mod dirty;
pub mod exception;
pub mod guest_debug;
pub mod guest_text;
pub mod hvf_regs;
pub mod inside_run;
pub mod memory_map;
pub mod mmio;
pub mod pool_debug;
pub mod psci;
pub mod put;
pub mod systrap;
pub mod thread_proxy;
pub mod timer;
