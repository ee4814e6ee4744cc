//! Pending vCPU events (SError, external data abort) and multiprocessing states.

use abi_stable::StableAbi;

/// Exceptions pending delivery to a vCPU, as `KVM_GET/SET_VCPU_EVENTS` describe them.
///
/// On a put, a pending SError or external data abort is injected: the guest takes it when it
/// next runs (the SError when PSTATE.A allows).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuEvents {
    /// An SError interrupt is pending.
    pub serror_pending: bool,
    /// `serror_esr` gives the syndrome (needs the backend's SError-ESR capability).
    pub serror_has_esr: bool,
    /// The ISS of ESR_EL1 for the SError (bits `[24:0]`).
    pub serror_esr: u64,
    /// Inject a synchronous external data abort (put only; reads as false).
    pub ext_dabt_pending: bool,
}

crate::numbered! {
    /// A vCPU's multiprocessing state, with KVM's `KVM_MP_STATE_*` numbering.
    #[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct MpState(u32) {
        /// Running or ready to run.
        RUNNABLE = 0 => "runnable",
        /// Powered off (PSCI CPU_OFF, or created powered off); waits for CPU_ON.
        STOPPED = 5 => "stopped",
        /// Suspended (PSCI CPU_SUSPEND, WFI-like); waits for a wakeup event.
        SUSPENDED = 10 => "suspended",
    }
}
