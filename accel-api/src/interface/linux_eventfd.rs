//! Linux eventfds wired to a VM: irqfd raises an SPI, ioeventfd completes MMIO writes.

use std::sync::Arc;

use accel_api_macros::interface;

use crate::error::Result;

/// Linux eventfds wired to a VM.
#[interface(abi = EventFdOps, boxed = EventFdBox, client = EventFds, bounds(Send + Sync), holds = Arc<dyn BackendLinuxEventFd>)]
pub trait BackendLinuxEventFd: Send + Sync + 'static {
    /// Raises SPI `spi` whenever the eventfd `fd` is written; the backend keeps its own duplicate
    /// of the descriptor. Works as soon as the GIC and every vCPU exist, before any vCPU has run;
    /// the backend may complete the GIC's set-up here, after which no vCPU can be added.
    fn register_irqfd(&self, fd: i32, spi: u32) -> Result<()>;

    /// Undoes [`BackendLinuxEventFd::register_irqfd`].
    fn unregister_irqfd(&self, fd: i32, spi: u32) -> Result<()>;

    /// Completes guest writes of `len` bytes to `addr` (matching `datamatch` if given) in the
    /// backend and signals `fd` instead of exiting.
    fn register_ioeventfd(&self, fd: i32, addr: u64, len: u32, datamatch: Option<u64>) -> Result<()>;

    /// Undoes [`BackendLinuxEventFd::register_ioeventfd`].
    #[abi(last)]
    fn unregister_ioeventfd(&self, fd: i32, addr: u64, len: u32, datamatch: Option<u64>) -> Result<()>;
}
