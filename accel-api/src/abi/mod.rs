//! The binary interface between a host and a plugin, and the promise that keeps it stable.
//!
//! # The compatibility contract
//!
//! - A host of ABI 2.y loads every plugin of ABI 2.0 up to 2.y, and plugins of later 2.x too.
//! - What an older plugin lacks reaches the host as a clean `unsupported` error (or `None` for an
//!   optional extension): never a panic, an abort, or a refusal to load.
//! - A newer plugin in an older host works for everything the older host knows.
//! - A change that would break a published plugin is a new major version (3.0), never a 2.x.
//!
//! # How it is kept
//!
//! The interface is `abi_stable`'s: a prefix-type root module ([`Plugin`]) and `#[sabi_trait]`
//! objects ([`objects`]) whose method tables are prefix types as well. Growth comes in three
//! shapes, each one a place where a later version adds and nothing ever changes:
//!
//! - **Trailing methods and fields.** Every interface ends its 2.0 part with
//!   `#[sabi(last_prefix_field)]`. A method added after it has a default body; on an older
//!   plugin, whose table is shorter, the host runs that default, which reports `unsupported`.
//!   A field added to the root module is read as `Option` (`missing_field(option)`).
//! - **Optional extensions, one pattern.** What a backend may lack is an extension object that it
//!   offers or not, as gdbstub's `support_*() -> Option<…>`: on a VM the GIC, guest debug, dirty
//!   logging and Linux eventfds; on a vCPU SVE and pending events. A new capability is a new
//!   extension getter, added as a trailing method whose default is `None`.
//! - **Open records.** Data crosses in [`records`]: exits, debug events, probe facts and
//!   configurations carry numbered kinds, facts and options rather than exhaustive enums and
//!   fixed structs. An exit kind a host does not know arrives as "unknown N"; a fact it does not
//!   know is ignored; an option or flag a plugin does not know is refused by name. Kinds, classes,
//!   events, features and error kinds are numbers (`ErrorKind(u32)`, `RegClass(u32)`, …), never
//!   Rust enums.
//!
//! abi_stable's own layout check lets the loaded library's prefix types be *longer* than the
//! host's, never shorter: it protects a library's users from a library that is too old. A
//! plugin host needs the other direction too, since hosts are upgraded under the plugins people
//! already ship. So the loader (`accel-host`'s `loader`) runs abi_stable's check in the direction
//! the versions call for: the plugin's layout against the host's when the plugin is the newer, and
//! the host's against the plugin's when the plugin is the older. Everything but trailing prefix
//! fields must match exactly either way, so a change that is not an addition (a field added to a
//! fixed struct, a changed argument) is refused, naming the type. The plugins built from the first
//! 2.0 release are loaded and run by `cargo xtask test` to prove it.
//!
//! Two shapes were weighed and not taken: a frozen copy of every published interface for the host
//! to adapt (a copy per release, forever), and CLAP's extensions fetched by string id (type-erased
//! tables that abi_stable could not check). Prefix types, open records and typed extension
//! getters give the same growth with one copy of each interface, all of it checked on load.
//!
//! Plugin authors do not implement these traits by hand: they implement [`crate::backend`]'s
//! traits and export them with [`crate::export_plugin!`], which converts the records and contains
//! panics. Hosts use them through [`crate::client`].

pub mod cross;
pub mod objects;
pub mod records;

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    sabi_types::VersionStrings,
    std_types::{RResult, RStr},
    StableAbi,
};

pub use objects::*;
pub use records::*;

use crate::{error::AccelError, logging::LogSink};

/// The ABI version of this crate's interface, checked when a plugin loads: a host accepts plugins
/// of the same major version, older and newer (see the module documentation).
///
/// - 2.0: the first release of the growable interface.
/// - 2.1: the GIC's ITS (a GIC option, and a probe fact).
/// - 2.2: what a debug pool has programmed (`DebugOps::program`, a trailing method); PSCI and
///   SMCCC answered inside the plugin (a VM option, and a probe fact).
/// - 2.3: registers read by id (`VcpuOps::get_named`, a trailing method).
pub const ABI_VERSION: &str = "2.3.0";

/// The root module every plugin exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginRef)))]
#[sabi(missing_field(option))]
pub struct Plugin {
    /// The backend's short name (`kvm`, `hvf`, …), used to pick it on the command line.
    pub name: extern "C" fn() -> RStr<'static>,
    /// Routes the plugin's `log` records to the host. Called once, right after loading.
    pub set_logger: extern "C" fn(sink: LogSink),
    /// Whether the backend can run here, and why not.
    pub probe: extern "C" fn() -> ProbeRecord,
    /// Opens the accelerator.
    #[sabi(last_prefix_field)]
    pub open: extern "C" fn() -> RResult<AccelBox, AccelError>,
}

impl RootModule for PluginRef {
    declare_root_module_statics! {PluginRef}
    const BASE_NAME: &'static str = "accel_plugin";
    const NAME: &'static str = "accel plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(ABI_VERSION);
}
