//! Hardware memory errors in guest RAM, as the kernel reports them with `SIGBUS`
//! (`BUS_MCEERR_AR`: the vCPU touched a poisoned page; `BUS_MCEERR_AO`: a page went bad in the
//! background), and their delivery to the guest as a synchronous external abort, as QEMU's
//! `kvm_arch_on_sigbus_vcpu` does.
//!
//! The handler only records the error in the thread that received it; the vCPU loop, whose
//! `run` the signal interrupts, decides what to do. Any other `SIGBUS` keeps its default action.

use std::{cell::Cell, sync::Once};

use accel_api::{client::Vcpu, sysreg::VBAR_EL1, PutLevel, Result};

use accel_kit::exception::{enter_el1, Exception, ExceptionType};

/// The kind of a memory error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryErrorKind {
    /// Action required: this thread consumed the bad data.
    ActionRequired,
    /// Action optional: the page is bad but nothing consumed it yet.
    ActionOptional,
}

/// A memory error the kernel signalled to this thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryError {
    /// Its kind.
    pub kind: MemoryErrorKind,
    /// The host virtual address of the poisoned data.
    pub host_addr: u64,
}

thread_local! {
    static PENDING: Cell<Option<MemoryError>> = const { Cell::new(None) };
}

extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as u64) };
    let kind = match memory_error_kind(code) {
        Some(kind) => kind,
        None => {
            // Not a memory error: fall back to the default action, which the faulting
            // instruction triggers again when this handler returns.
            // SAFETY: signal(2) is async-signal-safe.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
            return;
        }
    };
    // A const-initialised thread-local without a destructor needs no allocation here.
    PENDING.with(|p| p.set(Some(MemoryError { kind, host_addr: addr })));
}

/// The kind of memory error a `SIGBUS` code names, if it names one.
#[cfg(target_os = "linux")]
fn memory_error_kind(code: libc::c_int) -> Option<MemoryErrorKind> {
    match code {
        libc::BUS_MCEERR_AR => Some(MemoryErrorKind::ActionRequired),
        libc::BUS_MCEERR_AO => Some(MemoryErrorKind::ActionOptional),
        _ => None,
    }
}

/// Only Linux reports memory errors through `SIGBUS`: elsewhere no code names one.
#[cfg(not(target_os = "linux"))]
fn memory_error_kind(_: libc::c_int) -> Option<MemoryErrorKind> {
    None
}

/// Installs the `SIGBUS` handler, once per process.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction is a valid starting point; the handler is async-signal-safe
        // (it writes a thread-local Cell or resets the disposition), and sigaction is called with
        // valid pointers.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) != 0 {
                log::warn!("installing the SIGBUS handler failed: {}", std::io::Error::last_os_error());
            }
        }
    });
}

/// The memory error this thread received since the last call, if any.
pub fn take_pending() -> Option<MemoryError> {
    PENDING.with(Cell::take)
}

/// The syndrome of a synchronous external abort on a data access with FAR not valid: EC 0x25
/// (or 0x24 from EL0), IL, ISS.FnV and DFSC 0b010000.
pub fn sea_syndrome(pstate: u64) -> u64 {
    let from_el0 = pstate & 0b1_1111 == 0;
    let ec: u64 = if from_el0 { 0x24 } else { 0x25 };
    ec << 26 | 1 << 25 | 1 << 10 | 0x10
}

/// Delivers a synchronous external abort to the guest at EL1, for the instruction at the PC
/// (the access that consumed the poisoned data and did not complete).
pub fn inject_sea(vcpu: &mut Vcpu) -> Result<()> {
    let mut core = vcpu.get_core()?;
    let vbar = vcpu.get_reg(VBAR_EL1)?;
    let exception = Exception {
        kind: ExceptionType::Synchronous,
        esr: sea_syndrome(core.pstate),
        far: None,
        return_address: core.pc,
    };
    let sys = enter_el1(&mut core, vbar, &exception);
    vcpu.put_core(&core, PutLevel::RUNTIME)?;
    vcpu.put_regs(&sys, PutLevel::RUNTIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sea_syndromes() {
        assert_eq!(sea_syndrome(0x3c5), 0x9600_0410);
        assert_eq!(sea_syndrome(0x0), 0x9200_0410);
    }
}
