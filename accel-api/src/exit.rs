//! Why `run` returned: the exits a vCPU reports to the monitor.

use abi_stable::StableAbi;

/// An MMIO access the backend could not complete itself.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    /// The guest physical address accessed.
    pub addr: u64,
    /// Access size in bytes: 1, 2, 4 or 8.
    pub len: u32,
    /// For a write, the bytes written (the first `len` are meaningful), in guest memory order.
    pub data: [u8; 8],
}

impl MmioAccess {
    /// The written bytes as a little-endian integer.
    pub fn value(&self) -> u64 {
        let mut bytes = [0u8; 8];
        let n = (self.len as usize).min(8);
        bytes[..n].copy_from_slice(&self.data[..n]);
        u64::from_le_bytes(bytes)
    }
}

crate::numbered! {
    /// The kind of a system event, with KVM's `KVM_SYSTEM_EVENT_*` numbering.
    #[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct SystemEventKind(u32) {
        /// PSCI SYSTEM_OFF.
        SHUTDOWN = 1 => "shutdown",
        /// PSCI SYSTEM_RESET (and SYSTEM_RESET2).
        RESET = 2 => "reset",
        /// The guest reported a crash.
        CRASH = 3 => "crash",
        /// A vCPU in a suspended state is to be woken.
        WAKEUP = 4 => "wakeup",
        /// PSCI SYSTEM_SUSPEND.
        SUSPEND = 5 => "suspend",
    }
}

/// A debug exception trapped to the monitor, as reported by the hardware.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugExit {
    /// The syndrome (ESR_ELx) of the debug exception.
    pub esr: u64,
    /// FAR_ELx; meaningful for watchpoints only.
    pub far: u64,
    /// The PC at the exit: the instruction that hit a breakpoint or watchpoint or is the BRK, or
    /// the next instruction after a step.
    pub pc: u64,
}

/// Why `run` returned.
///
/// This is the Rust view on either side of the boundary; the exit crosses it as an
/// [`ExitRecord`](crate::abi::ExitRecord), so an exit kind that a newer plugin reports and this
/// side does not know arrives as [`VcpuExit::Unknown`] with its number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VcpuExit {
    /// The guest read from an MMIO address. Supply the value with
    /// `set_mmio_read_data` before the next `run`.
    MmioRead(MmioAccess),
    /// The guest wrote to an MMIO address.
    MmioWrite(MmioAccess),
    /// A PSCI system call (off, reset, suspend) or another system-level event.
    SystemEvent {
        /// What happened.
        kind: SystemEventKind,
        /// Event-specific data (for example PSCI SYSTEM_RESET2's reset type).
        data: Vec<u64>,
    },
    /// A debug exception routed to the monitor.
    Debug(DebugExit),
    /// The backend reported an internal error.
    InternalError {
        /// The backend's sub-error code.
        suberror: u32,
        /// Extra data.
        data: Vec<u64>,
    },
    /// The vCPU could not be entered.
    FailEntry {
        /// The hardware entry failure reason.
        reason: u64,
        /// The physical CPU that failed.
        cpu: u32,
    },
    /// A data abort without valid syndrome information (KVM_EXIT_ARM_NISV).
    ArmNisv {
        /// The ISS part of ESR_EL2.
        esr_iss: u64,
        /// The faulting intermediate physical address.
        fault_ipa: u64,
    },
    /// `run` was interrupted by a signal or a kick before or while the guest ran.
    Interrupted,
    /// An exit the backend itself does not know how to classify.
    BackendSpecific {
        /// The backend's own exit code.
        reason: u32,
    },
    /// An exit kind this side of the boundary does not know (from a newer plugin).
    Unknown {
        /// The exit kind's number.
        kind: u32,
        /// Its arguments, uninterpreted.
        args: [u64; 6],
    },
}
