//! The interfaces between a host and a plugin, one to a file, each declared once.
//!
//! Every file holds one `#[interface]` declaration: the plain trait a backend implements. The
//! `#[sabi_trait]` interface that crosses the boundary, the adapter that runs a backend's
//! methods under the panic guard with the records converted, the host's client handle and the
//! box the object crosses in all come from that declaration (see `accel-api-macros`). Adding a
//! method to an interface, or an optional extension, is an edit to one file here and to the
//! backends that implement it.
//!
//! The contract these traits state is in [`crate::backend`]; how the ABI grows is in
//! [`crate::abi`].

// The `#[sabi_trait]` expansion places trait impls inside generated modules.
#![allow(non_local_definitions)]

pub mod accel;
pub mod debug;
pub mod dirty_log;
pub mod events;
pub mod gic;
pub mod kick;
pub mod linux_eventfd;
pub mod sve;
pub mod vcpu;
// The `#[sabi_trait]` expansion calls `VmOps::add_memory` from unsafe blocks of its own, which
// cannot carry a comment; the caller's obligation is that method's `# Safety` section.
#[allow(clippy::undocumented_unsafe_blocks)]
pub mod vm;
