//! A virtual machine: guest memory, vCPUs, and the getters of its optional extensions.

use std::sync::Arc;

use accel_api_macros::interface;

use super::{
    debug::{BackendDebug, Debug, DebugBox},
    dirty_log::{BackendDirtyLog, DirtyLog, DirtyLogBox},
    gic::{BackendGic, Gic, GicBox},
    linux_eventfd::{BackendLinuxEventFd, EventFdBox, EventFds},
    vcpu::{BackendVcpu, Vcpu, VcpuBox},
};
use crate::{
    abi::records::{MemoryRegionRecord, VcpuConfigRecord},
    config::{MemoryRegion, VcpuConfig},
    error::Result,
};

/// A backend's VM: guest memory, vCPUs and its optional extensions.
#[interface(abi = VmOps, boxed = VmBox, client = Vm, bounds(Send + Sync), holds = own)]
pub trait BackendVm: Send + Sync + 'static {
    /// The backend's vCPU type.
    type Vcpu: BackendVcpu;

    /// Maps host memory into the guest; returns the slot. A region that is not aligned to the
    /// backend's page size, overlaps another, or asks for read-only memory the backend lacks is
    /// refused.
    ///
    /// # Safety
    /// `region.host_addr .. + region.size` must be memory of this process that stays mapped until
    /// the region is removed or the VM is dropped; the guest may write it whenever a vCPU runs.
    unsafe fn add_memory(&self, #[abi(&MemoryRegionRecord)] region: &MemoryRegion) -> Result<u32>;

    /// Unmaps the region in `slot`.
    fn remove_memory(&self, slot: u32) -> Result<()>;

    /// Creates and initialises a vCPU with the given features; a feature the backend lacks is
    /// refused by name.
    #[abi(ret = VcpuBox, client = Vcpu)]
    fn create_vcpu(&self, #[abi(&VcpuConfigRecord)] config: &VcpuConfig) -> Result<Self::Vcpu>;

    /// The in-kernel GICv3, if the backend has one.
    #[abi(name = gic, ret = abi_stable::std_types::ROption<GicBox>, client = Option<Gic>)]
    fn support_gic(&self) -> Option<Arc<dyn BackendGic>> {
        None
    }

    /// The VM's guest-debug pool, if the backend supports guest debug.
    #[abi(name = debug, ret = abi_stable::std_types::ROption<DebugBox>, client = Option<Debug>)]
    fn support_debug(&self) -> Option<Arc<dyn BackendDebug>> {
        None
    }

    /// Dirty-page logging, if the backend supports it.
    #[abi(name = dirty_log, ret = abi_stable::std_types::ROption<DirtyLogBox>, client = Option<DirtyLog>)]
    fn support_dirty_log(&self) -> Option<Arc<dyn BackendDirtyLog>> {
        None
    }

    /// irqfd and ioeventfd on Linux eventfds, if the backend offers them.
    #[abi(name = linux_eventfd, ret = abi_stable::std_types::ROption<EventFdBox>, client = Option<EventFds>, last)]
    fn support_linux_eventfd(&self) -> Option<Arc<dyn BackendLinuxEventFd>> {
        None
    }
}
