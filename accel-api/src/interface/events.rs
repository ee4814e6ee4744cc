//! A vCPU's pending events (SError, external data abort), borrowed from the vCPU.

use accel_api_macros::interface;

use crate::{error::Result, events::VcpuEvents};

/// A vCPU's pending events.
#[interface(abi = EventsOps, boxed = EventsBox, client = Events, borrowed, holds = &'a mut dyn BackendEvents)]
pub trait BackendEvents {
    /// Reads the pending events.
    #[abi(name = get)]
    fn get_events(&mut self) -> Result<VcpuEvents>;

    /// Sets the pending events: a pending SError or external data abort is injected, or refused
    /// as unsupported by name where the backend cannot.
    #[abi(name = put, last)]
    fn put_events(&mut self, events: &VcpuEvents) -> Result<()>;
}
