//! Hardware memory errors in guest RAM, as the kernel reports them with `SIGBUS`
//! (`BUS_MCEERR_AR`: the vCPU touched a poisoned page; `BUS_MCEERR_AO`: a page went bad in the
//! background), and their delivery to the guest as a synchronous external abort, as QEMU's
//! `kvm_arch_on_sigbus_vcpu` does.
//!
//! The handler records the error in the thread that received it only where returning from the
//! handler is safe and someone will look: an action-required error on a thread inside a vCPU's
//! `run` ([`in_run`]), whose loop decides what to do, and an action-optional one, which no
//! instruction is waiting on. Any other `SIGBUS` (an action-required error from the host's own
//! access to guest RAM, such as a gdb read or the loader, or a bus error that is no memory error)
//! takes the default action: the process ends with `SIGBUS` rather than re-running the faulting
//! access forever.

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
    /// Whether this thread is inside a vCPU's `run` ([`in_run`]).
    static IN_RUN: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, a vCPU's `run`, with this thread marked as inside it: an action-required memory
/// error it receives meanwhile is recorded for [`take_pending`] instead of ending the process.
/// The mark goes when `f` returns or unwinds. Mark only calls that report such an error as a
/// system call returns (`KVM_RUN`, or `madvise(MADV_HWPOISON)` injecting one), never host code
/// that may touch guest RAM itself: there, returning from the handler would run the faulting
/// access again.
pub fn in_run<T>(f: impl FnOnce() -> T) -> T {
    struct Unmark;
    impl Drop for Unmark {
        fn drop(&mut self) {
            IN_RUN.with(|r| r.set(false));
        }
    }
    IN_RUN.with(|r| r.set(true));
    let _unmark = Unmark;
    f()
}

extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as u64) };
    // Const-initialised thread-locals without a destructor need no allocation here.
    let recorded = match memory_error_kind(code) {
        // KVM signals the error as `KVM_RUN` returns: returning from the handler resumes after
        // the call, not at a faulting access.
        Some(MemoryErrorKind::ActionRequired) if IN_RUN.with(Cell::get) => {
            Some(MemoryErrorKind::ActionRequired)
        }
        // Asynchronous: no access is waiting to run again.
        Some(MemoryErrorKind::ActionOptional) => Some(MemoryErrorKind::ActionOptional),
        _ => None,
    };
    match recorded {
        Some(kind) => PENDING.with(|p| p.set(Some(MemoryError { kind, host_addr: addr }))),
        None => {
            // Returning would run the faulting access again, forever for an action-required
            // error. Take the default action instead: reset it, and raise the signal again, which
            // stays pending (the handler blocks it) until the handler returns and then ends the
            // process. A faulting access that runs again first ends it the same way.
            // SAFETY: signal(2) and raise(3) are async-signal-safe and take no pointers.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
                libc::raise(signal);
            }
        }
    }
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
        // (it writes const-initialised thread-local Cells, or resets the disposition and raises
        // the signal again), and sigaction is called with valid pointers.
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

    /// The child modes of [`sigbus_outside_run_ends_the_process`], chosen by this variable.
    #[cfg(target_os = "linux")]
    const CHILD: &str = "ACCEL_HOST_SIGBUS_CHILD";

    /// Sends this thread a `SIGBUS` with code `code` and address `addr`, as the kernel sends a
    /// memory error (`rt_tgsigqueueinfo` to one's own thread may carry any code).
    #[cfg(target_os = "linux")]
    fn sigbus_self(code: libc::c_int, addr: u64) {
        /// `siginfo_t` on 64-bit Linux, with `si_addr` at its place in the union.
        #[repr(C)]
        struct Info {
            signo: libc::c_int,
            errno: libc::c_int,
            code: libc::c_int,
            _pad: libc::c_int,
            addr: u64,
            _rest: [u64; 13],
        }
        const _: () = assert!(std::mem::size_of::<Info>() == std::mem::size_of::<libc::siginfo_t>());
        let info = Info { signo: libc::SIGBUS, errno: 0, code, _pad: 0, addr, _rest: [0; 13] };
        // SAFETY: `info` is a valid siginfo for the call's duration; the target is this thread.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_tgsigqueueinfo,
                libc::getpid(),
                libc::gettid(),
                libc::SIGBUS,
                &info as *const Info,
            )
        };
        assert_eq!(rc, 0, "rt_tgsigqueueinfo: {}", std::io::Error::last_os_error());
    }

    /// What a child does: raise a memory error or a bus error with the handler installed.
    #[cfg(target_os = "linux")]
    fn child(mode: &str) {
        install();
        match mode {
            // Inside run: recorded, and the process goes on.
            "in-run" => {
                in_run(|| sigbus_self(libc::BUS_MCEERR_AR, 0x1000));
                let pending = take_pending();
                let expected = MemoryError { kind: MemoryErrorKind::ActionRequired, host_addr: 0x1000 };
                assert_eq!(pending, Some(expected));
                assert_eq!(take_pending(), None);
            }
            // Outside run, as from a gdb read of poisoned guest RAM: must not return.
            "outside-run" => sigbus_self(libc::BUS_MCEERR_AR, 0x1000),
            // A bus error that is no memory error: a page of a truncated memfd.
            _ => {
                // SAFETY: memfd_create with a NUL-terminated name; the fd is checked.
                let fd = unsafe { libc::memfd_create(c"sigbus".as_ptr(), 0) };
                assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
                // SAFETY: a shared mapping of one page of the memfd, sized before it is mapped.
                let page = unsafe {
                    assert_eq!(libc::ftruncate(fd, 4096), 0);
                    libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_SHARED, fd, 0)
                };
                assert_ne!(page, libc::MAP_FAILED);
                // SAFETY: truncating the file under the mapping; the read below then faults with
                // SIGBUS (BUS_ADRERR), which is the point.
                let value = unsafe {
                    assert_eq!(libc::ftruncate(fd, 0), 0);
                    page.cast::<u8>().read_volatile()
                };
                println!("read {value} past the end of a truncated file");
            }
        }
    }

    /// A `SIGBUS` on a thread outside a vCPU's `run` ends the process with `SIGBUS` (the test
    /// runs each case in a child process, this test binary run again); one inside `run` is
    /// recorded.
    #[cfg(target_os = "linux")]
    #[test]
    fn sigbus_outside_run_ends_the_process() {
        use std::{os::unix::process::ExitStatusExt, process::Command, time::Duration};

        if let Ok(mode) = std::env::var(CHILD) {
            child(&mode);
            return;
        }
        let me = std::env::current_exe().unwrap();
        for (mode, dies) in [("in-run", false), ("outside-run", true), ("truncated-file", true)] {
            let mut process = Command::new(&me)
                .args([
                    "--exact",
                    "vmm::memory_error::tests::sigbus_outside_run_ends_the_process",
                    "--nocapture",
                ])
                .env(CHILD, mode)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            // A generous limit that only catches the handler re-running a fault forever.
            let mut status = None;
            for _ in 0..600 {
                status = process.try_wait().unwrap();
                if status.is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let Some(status) = status else {
                process.kill().unwrap();
                process.wait().unwrap();
                panic!("{mode}: the child still runs after 60 s: the SIGBUS handler loops");
            };
            if dies {
                assert_eq!(status.signal(), Some(libc::SIGBUS), "{mode}: {status}");
            } else {
                assert!(status.success(), "{mode}: {status}");
            }
        }
    }
}
