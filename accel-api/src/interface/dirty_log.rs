//! Dirty-page logging of a VM's memory slots.

use std::sync::Arc;

use accel_api_macros::interface;

use crate::error::Result;

/// Dirty-page logging of a VM's memory slots.
#[interface(abi = DirtyLogOps, boxed = DirtyLogBox, client = DirtyLog, bounds(Send + Sync), holds = Arc<dyn BackendDirtyLog>)]
pub trait BackendDirtyLog: Send + Sync + 'static {
    /// Turns logging of `slot` on or off.
    #[abi(op = "set_dirty_log")]
    fn set(&self, slot: u32, enabled: bool) -> Result<()>;

    /// The pages of `slot` written since the last call (bit `n % 64` of word `n / 64` for page
    /// `n`), and clears the log.
    #[abi(op = "take_dirty_log", last)]
    fn take(&self, slot: u32) -> Result<Vec<u64>>;
}
