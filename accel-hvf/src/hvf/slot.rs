//! The process's one VM slot: Hypervisor.framework allows one VM per process, so a VM (or the
//! probe's scratch VM) holds the slot while it exists, and a second is refused as no resource.

use std::sync::atomic::{AtomicBool, Ordering};

use accel_api::{AccelError, ErrorKind, Result};

/// Whether this process holds its one HVF VM.
static VM_HELD: AtomicBool = AtomicBool::new(false);

/// The process's one VM slot, held while a VM (or the probe's scratch VM) exists.
pub struct VmSlot(());

impl VmSlot {
    /// Claims the slot, or refuses as no resource: HVF allows one VM per process.
    pub fn claim() -> Result<Self> {
        if VM_HELD.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return Err(AccelError::new(
                ErrorKind::NO_RESOURCE,
                "Hypervisor.framework allows one VM per process, and this process has one already",
            ));
        }
        Ok(Self(()))
    }
}

impl Drop for VmSlot {
    fn drop(&mut self) {
        VM_HELD.store(false, Ordering::SeqCst);
    }
}
