//! A VM's in-kernel GICv3.

use std::sync::Arc;

use accel_api_macros::interface;

use crate::{
    abi::records::GicConfigRecord,
    error::Result,
    irq::{GicConfig, IrqLine},
};

/// A VM's in-kernel GICv3.
#[interface(abi = GicOps, boxed = GicBox, client = Gic, bounds(Send + Sync), holds = Arc<dyn BackendGic>)]
pub trait BackendGic: Send + Sync + 'static {
    /// Creates the GIC. Comes before the first vCPU is created; the backend finishes its set-up
    /// before the first vCPU runs.
    #[abi(op = "gic create")]
    fn create(&self, #[abi(&GicConfigRecord)] config: &GicConfig) -> Result<()>;

    /// Drives an interrupt line to `level`.
    #[abi(last)]
    fn set_irq(&self, line: IrqLine, level: bool) -> Result<()>;
}
