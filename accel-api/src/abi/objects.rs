//! The objects a plugin hands to a host: `#[sabi_trait]` interfaces for the accelerator, the VM,
//! the vCPU, the kicker and the optional extensions, and the boxes they cross the boundary in.
//! Each is generated from its declaration in [`crate::interface`].
//!
//! Each interface's methods up to its `#[sabi(last_prefix_field)]` are those of ABI 2.0 and never
//! change. A method added in a later 2.x version goes after them, with a default body: a host
//! calling it on an older plugin's object runs the default, which reports `unsupported` (or
//! `None` for an extension), because the older plugin's table does not have the method.

pub use crate::interface::{
    accel::{AccelBox, AccelOps, AccelOps_TO},
    debug::{DebugBox, DebugOps, DebugOps_TO},
    dirty_log::{DirtyLogBox, DirtyLogOps, DirtyLogOps_TO},
    events::{EventsBox, EventsOps, EventsOps_TO},
    gic::{GicBox, GicOps, GicOps_TO},
    kick::{KickOps, KickOps_TO, KickerBox},
    linux_eventfd::{EventFdBox, EventFdOps, EventFdOps_TO},
    sve::{SveBox, SveOps, SveOps_TO},
    vcpu::{VcpuBox, VcpuOps, VcpuOps_TO},
    vm::{VmBox, VmOps, VmOps_TO},
};
