//! Kicking a vCPU out of `run` from another thread.
//!
//! `KVM_RUN` returns `EINTR` when a signal reaches its thread while the guest runs, and at once,
//! without entering the guest, when the `immediate_exit` byte of the vCPU's shared `kvm_run` page
//! is set (KVM API document, `struct kvm_run`, "immediate_exit"). A signal alone is not enough:
//! one that lands just before the thread enters `KVM_RUN` is handled in user space and the guest
//! runs on. So a kick, under one lock:
//!
//! 1. records that a kick is waiting, which `run` checks before every entry;
//! 2. sets `immediate_exit`, which covers the moment between that check and the entry;
//! 3. signals the thread inside `run`, if there is one, which covers a guest already running.
//!
//! `run` takes the kick (clearing both) when it reports `Interrupted`, so one kick gives one
//! interrupted exit. The signal is the first real-time signal, with a handler that does nothing:
//! its only job is to interrupt `KVM_RUN`.

use std::sync::{Arc, Mutex, MutexGuard, Once};

use accel_api::backend::Kick;
use kvm_bindings::kvm_run;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

extern "C" fn ignore_kick_signal(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the do-nothing handler, once per process. Without a handler, the signal's default
/// action would end the process.
pub fn install_signal_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = register_signal_handler(SIGRTMIN(), ignore_kick_signal) {
            log::warn!(
                "installing the kick signal handler failed ({e}): kicks reach only vCPUs not in the guest"
            );
        }
    });
}

/// What a vCPU shares with its kickers.
pub struct KickState(Mutex<Shared>);

struct Shared {
    /// The vCPU's `kvm_run` page; null once the vCPU is dropped, after which kicks do nothing.
    run: *mut kvm_run,
    /// The thread inside `run`, if any.
    thread: Option<libc::pthread_t>,
    /// A kick is waiting to be reported.
    kicked: bool,
}

// SAFETY: `run` is dereferenced only under the mutex, and only while non-null: the vCPU, which
// owns the mapping, nulls it (`detach`) before the mapping goes away.
unsafe impl Send for Shared {}

impl Shared {
    fn write_immediate_exit(&mut self, on: bool) {
        if !self.run.is_null() {
            // SAFETY: `run` points at the vCPU's mapped `kvm_run` while non-null (see above).
            // `immediate_exit` is a byte the kernel reads on entry; a volatile store makes sure
            // the write is done.
            unsafe { std::ptr::addr_of_mut!((*self.run).immediate_exit).write_volatile(u8::from(on)) };
        }
    }
}

impl KickState {
    /// The shared state of a vCPU whose `kvm_run` page is at `run`.
    pub fn new(run: *mut kvm_run) -> Self {
        install_signal_handler();
        Self(Mutex::new(Shared { run, thread: None, kicked: false }))
    }

    /// The lock. Poisoning cannot leave `Shared` inconsistent (every update is a single store),
    /// so a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the thread about to enter `KVM_RUN`, or none once it has left.
    pub fn set_thread(&self, thread: Option<libc::pthread_t>) {
        self.lock().thread = thread;
    }

    /// Takes a waiting kick: true if there was one; `immediate_exit` is cleared with it.
    pub fn take(&self) -> bool {
        let mut shared = self.lock();
        let kicked = std::mem::take(&mut shared.kicked);
        shared.write_immediate_exit(false);
        kicked
    }

    /// Sets `immediate_exit` for a `KVM_RUN` that must not enter the guest; `false` restores it
    /// to whether a kick is waiting.
    pub fn force_immediate_exit(&self, on: bool) {
        let mut shared = self.lock();
        let value = on || shared.kicked;
        shared.write_immediate_exit(value);
    }

    /// Forgets the vCPU, which is going away.
    pub fn detach(&self) {
        let mut shared = self.lock();
        shared.run = std::ptr::null_mut();
        shared.thread = None;
    }
}

/// The handle `BackendVcpu::kicker` hands out. It may outlive the vCPU; it then does nothing.
pub struct Kicker(pub Arc<KickState>);

impl Kick for Kicker {
    /// Contract: the vCPU's current `run` returns `Interrupted` soon, or its next one at once.
    fn kick(&self) {
        let mut shared = self.0.lock();
        if shared.run.is_null() {
            return;
        }
        shared.kicked = true;
        shared.write_immediate_exit(true);
        if let Some(thread) = shared.thread {
            // SAFETY: `thread` is alive: it is inside `run`, and it clears itself under this lock
            // before leaving. The signal's handler does nothing.
            unsafe { libc::pthread_kill(thread, SIGRTMIN()) };
        }
    }
}
