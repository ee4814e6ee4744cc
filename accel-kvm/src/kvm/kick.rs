//! Kicking a vCPU out of `KVM_RUN` from another thread: `immediate_exit` in the shared `kvm_run`
//! page covers a vCPU about to enter, and a signal covers one inside the guest.
//!
//! The first real-time signal (`SIGRTMIN`) is used, with a handler that does nothing: its only
//! job is to make `KVM_RUN` return `EINTR`.
//!
//! A kick sets its flag and `immediate_exit` together, and the vCPU takes the flag and clears
//! `immediate_exit` together, both under one lock: so no `immediate_exit` outlives the kick that
//! set it, and one kick makes exactly one interrupted `run`.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Mutex, MutexGuard, Once, PoisonError,
};

use accel_api::backend::Kick;

use accel_kit::{inside_run::Inside, psci::PowerBoard};
use kvm_bindings::kvm_run;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

/// The signal that interrupts `KVM_RUN`.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the no-op handler once per process.
pub fn install_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = register_signal_handler(kick_signal(), on_kick) {
            log::warn!(
                "installing the vCPU kick signal handler failed: {e}; kicks reach only vCPUs about to enter"
            );
        }
    });
}

/// What a vCPU and its kickers share.
pub struct KickShared {
    /// Set by a kick, cleared when `run` reports the interruption; written under `inner`'s lock.
    requested: AtomicBool,
    /// Set by the plugin's own nudge, which brings the vCPU out of `KVM_RUN` without an exit;
    /// written under `inner`'s lock.
    nudged: AtomicBool,
    inner: Mutex<Inner>,
    /// With PSCI in the plugin, the VM's power board, on which a stopped vCPU's `run` waits.
    board: Option<Arc<PowerBoard>>,
}

/// What a vCPU and its kickers share under the lock.
pub struct Inner {
    /// The vCPU's `kvm_run`, or null once the vCPU is gone.
    run: *mut kvm_run,
    /// The thread inside `KVM_RUN`, if any.
    thread: Option<libc::pthread_t>,
}

// SAFETY: `run` is only dereferenced under the mutex while the vCPU (which owns the mapping)
// exists; the vCPU clears it before the mapping goes away.
unsafe impl Send for Inner {}

/// Why `KVM_RUN` returned `EINTR`, as [`KickShared::leave`] found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interruption {
    /// A kick asked for it: `run` reports it.
    pub kicked: bool,
    /// The plugin's own nudge asked for it.
    pub nudged: bool,
}

impl KickShared {
    /// Shared state for a vCPU whose `kvm_run` is at `run`, and the power board of the VM's PSCI
    /// in the plugin.
    pub fn new(run: *mut kvm_run, board: Option<Arc<PowerBoard>>) -> Self {
        Self {
            requested: AtomicBool::new(false),
            nudged: AtomicBool::new(false),
            inner: Mutex::new(Inner { run, thread: None }),
            board,
        }
    }

    /// The lock; what it guards stays consistent even if a holder panicked.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a kick is waiting to be reported.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Takes a waiting kick, clearing `immediate_exit` with it; true if there was one.
    pub fn take(&self) -> bool {
        let inner = self.lock();
        let kicked = self.requested.swap(false, Ordering::SeqCst);
        if kicked {
            set_immediate_exit(&inner, 0);
        }
        kicked
    }

    /// Before `KVM_RUN`: takes a waiting kick (`None`: report it instead of entering), or
    /// records the calling thread as the one a kick signals, until the returned stay is left
    /// ([`KickShared::leave`]) or dropped, as when the run unwinds.
    pub fn enter(&self) -> Option<Inside<'_, Inner>> {
        let mut inner = self.lock();
        if self.requested.swap(false, Ordering::SeqCst) {
            set_immediate_exit(&inner, 0);
            return None;
        }
        // SAFETY: pthread_self has no preconditions.
        inner.thread = Some(unsafe { libc::pthread_self() });
        drop(inner);
        Some(Inside::new(&self.inner, |inner| inner.thread = None))
    }

    /// After `KVM_RUN`: forgets the thread. When it returned `EINTR`, also clears
    /// `immediate_exit` and takes what asked for the interruption.
    pub fn leave(&self, inside: Inside<'_, Inner>, eintr: bool) -> Interruption {
        let inner = inside.leave();
        if !eintr {
            return Interruption { kicked: false, nudged: false };
        }
        set_immediate_exit(&inner, 0);
        Interruption {
            kicked: self.requested.swap(false, Ordering::SeqCst),
            nudged: self.nudged.swap(false, Ordering::SeqCst),
        }
    }

    /// Forgets the vCPU: later kicks do nothing.
    pub fn detach(&self) {
        let mut inner = self.lock();
        inner.run = std::ptr::null_mut();
        inner.thread = None;
    }

    /// Brings the vCPU out of `KVM_RUN` (or keeps it from entering) for the plugin's own
    /// purpose: its `run` looks at the power state again instead of returning.
    pub fn nudge(&self) {
        let inner = self.lock();
        self.nudged.store(true, Ordering::SeqCst);
        signal_out(&inner);
    }
}

/// Writes `immediate_exit` of a vCPU that still exists.
fn set_immediate_exit(inner: &Inner, value: u8) {
    let run = inner.run;
    if run.is_null() {
        return;
    }
    // SAFETY: `run` points at the vCPU's mapped `kvm_run` while non-null (see `Inner`);
    // `immediate_exit` is a byte the kernel reads on entry, written with a volatile store.
    unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(value) };
}

/// Sets `immediate_exit` and signals the thread inside `KVM_RUN`, if any.
fn signal_out(inner: &Inner) {
    if inner.run.is_null() {
        return;
    }
    set_immediate_exit(inner, 1);
    if let Some(thread) = inner.thread {
        // SAFETY: `thread` is the live thread inside `run`: it is cleared under the lock when the
        // thread leaves `run`, by `leave` or, if the run unwinds, by dropping its `Inside`; the
        // signal has a no-op handler.
        unsafe { libc::pthread_kill(thread, kick_signal()) };
    }
}

/// A kicker handed out by a vCPU.
pub struct Kicker(pub Arc<KickShared>);

impl Kick for Kicker {
    fn kick(&self) {
        {
            let inner = self.0.lock();
            self.0.requested.store(true, Ordering::SeqCst);
            signal_out(&inner);
        }
        // A stopped vCPU waits on the power board, not in KVM_RUN.
        if let Some(board) = &self.0.board {
            board.wake_all();
        }
    }
}
