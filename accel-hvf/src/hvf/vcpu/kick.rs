//! Kicking an HVF vCPU: what its handle, its kickers and its VM share with its worker thread. A
//! kick is `hv_vcpus_exit` for a vCPU in the guest, and a wake-up for one asleep in WFI or
//! waiting on the power board.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Condvar, Mutex,
};

use accel_api::backend::Kick;

use accel_kit::psci::PowerBoard;
use applevisor_sys::{hv_vcpu_t, hv_vcpus_exit};

use crate::hvf::sync::locked;

/// What a vCPU's handle, kickers and VM share with its worker thread.
pub struct KickState {
    /// A host kick not yet reported.
    pub(super) requested: AtomicBool,
    /// The plugin's own wake-up: PPIs queued, an SPI raised, a power state changed.
    pub(super) nudged: AtomicBool,
    /// The framework's vCPU while it exists.
    pub(super) vcpu: Mutex<Option<hv_vcpu_t>>,
    /// A WFI sleeps on these.
    pub(super) sleep: Mutex<()>,
    pub(super) wake: Condvar,
    /// PPI levels to apply on the vCPU's thread.
    pub(super) ppis: Mutex<Vec<(u32, bool)>>,
    /// The VM's power board, on which a stopped vCPU waits.
    board: Arc<PowerBoard>,
}

impl KickState {
    pub(super) fn new(board: Arc<PowerBoard>) -> Self {
        Self {
            requested: AtomicBool::new(false),
            nudged: AtomicBool::new(false),
            vcpu: Mutex::new(None),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            ppis: Mutex::new(Vec::new()),
            board,
        }
    }

    /// Makes the vCPU leave the guest, or its next entry return at once (`CANCELED`).
    fn exit_guest(&self) {
        let vcpu = locked(&self.vcpu);
        if let Some(id) = *vcpu {
            // SAFETY: `id` is a live vCPU: the worker clears it under this lock before the vCPU
            // is destroyed. The array holds one element.
            let rc = unsafe { hv_vcpus_exit(&id, 1) };
            if rc != 0 {
                log::warn!("hv_vcpus_exit failed ({rc:#x})");
            }
        }
    }

    fn notify(&self) {
        let _guard = locked(&self.sleep);
        self.wake.notify_all();
    }

    /// A host kick: the current or next `run` returns interrupted.
    fn kick(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.exit_guest();
        self.notify();
        self.board.wake_all();
    }

    /// Brings the worker back to the top of its run loop, without an exit for the host.
    pub(super) fn nudge(&self) {
        self.nudged.store(true, Ordering::SeqCst);
        self.exit_guest();
        self.notify();
        self.board.wake_all();
    }

    /// Wakes a WFI sleep, to look again.
    pub fn wake_sleeper(&self) {
        self.nudged.store(true, Ordering::SeqCst);
        self.notify();
    }

    /// Queues a PPI level for the vCPU's thread, which applies it before it next enters.
    pub fn queue_ppi(&self, intid: u32, level: bool) {
        locked(&self.ppis).push((intid, level));
        self.nudge();
    }

    pub(super) fn interrupted(&self) -> bool {
        self.requested.load(Ordering::SeqCst) || self.nudged.load(Ordering::SeqCst)
    }
}

/// A kicker handed to the host.
pub(super) struct HvfKicker(pub(super) Arc<KickState>);

impl Kick for HvfKicker {
    fn kick(&self) {
        self.0.kick();
    }
}
