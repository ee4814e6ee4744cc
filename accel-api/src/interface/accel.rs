//! The accelerator a plugin opens: the factory of VMs.

use accel_api_macros::interface;

use super::vm::{BackendVm, Vm, VmBox};
use crate::{
    abi::{
        cross::IntoAbi,
        records::{ProbeRecord, VmConfigRecord},
    },
    config::{ProbeInfo, VmConfig},
    error::Result,
};

/// An opened accelerator: the factory of VMs.
#[interface(abi = AccelOps, boxed = AccelBox, client = Accelerator, bounds(Send + Sync), holds = own)]
pub trait Backend: Send + Sync + 'static {
    /// The backend's VM type.
    type Vm: BackendVm;

    /// Probes the host through the opened accelerator.
    #[abi(ret = ProbeRecord, or_else = |e: crate::AccelError| ProbeInfo::unavailable(e.message.to_string()))]
    fn probe(&self) -> ProbeInfo;

    /// Creates a VM. A backend that holds one VM per process refuses a second one as
    /// [`ErrorKind::NO_RESOURCE`](crate::ErrorKind::NO_RESOURCE), saying why. A configuration
    /// it cannot honour (an IPA size too large, [`VmConfig::userspace_psci`] where the plugin
    /// cannot answer PSCI itself) is refused as unsupported, naming it.
    #[abi(ret = VmBox, client = Vm, last)]
    fn create_vm(&self, #[abi(&VmConfigRecord)] config: &VmConfig) -> Result<Self::Vm>;
}

/// Runs a plugin's open function and wraps the backend for the ABI.
pub fn guarded_open<B: Backend>(
    open: fn() -> Result<B>,
) -> abi_stable::std_types::RResult<AccelBox, crate::AccelError> {
    crate::glue::guard("open", || open().map(IntoAbi::into_abi))
}
