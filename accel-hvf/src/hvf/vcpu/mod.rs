//! An HVF vCPU as the host holds it. The framework binds a vCPU to the thread that creates it, so
//! each vCPU has a thread of its own (the worker) that creates it, owns it and destroys it; the
//! handle here sends each ABI call to that thread as one message and waits for the answer. The
//! index, the counters and the kicker need no message, and the kick is `hv_vcpus_exit`.
//!
//! The worker's state and registers are in [`registers`], its run loop in [`exits`], and what
//! kickers share with it in [`kick`].

mod exits;
mod kick;
mod registers;

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{atomic::Ordering, mpsc, Arc},
    thread::{self, JoinHandle},
};

use accel_api::{
    backend::{BackendEvents, BackendVcpu, Kick},
    AccelError, CoreRegs, ErrorKind, FpRegs, MpState, PutLevel, RegClass, RegValue, Result, SyncCounters,
    VcpuConfig, VcpuEvents, VcpuExit, VcpuFeatures,
};

use crate::hvf::{shared::VmShared, sync::locked};
use kick::HvfKicker;
pub use kick::KickState;
use registers::{Counters, Worker};

/// A call sent to the worker.
type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// Serves the handle's calls until it goes, then destroys the vCPU on this thread.
fn serve(mut worker: Worker, jobs: mpsc::Receiver<Job>) {
    for job in jobs {
        if catch_unwind(AssertUnwindSafe(|| job(&mut worker))).is_err() {
            log::error!("vCPU {}: a call panicked on the vCPU's thread", worker.index);
        }
    }
    *locked(&worker.kick.vcpu) = None;
    worker.vm.remove_vcpu(worker.index);
}

/// An HVF vCPU, as the host holds it: a handle to its thread.
pub struct HvfVcpu {
    index: u32,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    kick: Arc<KickState>,
    counters: Arc<Counters>,
}

impl HvfVcpu {
    /// Starts vCPU `config.index`'s thread, which creates the framework's vCPU.
    pub(super) fn spawn(vm: Arc<VmShared>, config: &VcpuConfig) -> Result<Self> {
        let index = config.index;
        let kick = Arc::new(KickState::new(Arc::clone(&vm.psci)));
        vm.add_vcpu(index, Arc::clone(&kick))?;
        let on = !config.features.contains(VcpuFeatures::POWER_OFF);
        let counters = Arc::new(Counters::default());
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::sync_channel(1);
        let (worker_vm, worker_kick, worker_counters) =
            (Arc::clone(&vm), Arc::clone(&kick), Arc::clone(&counters));
        let spawned =
            thread::Builder::new().name(format!("hvf-vcpu-{index}")).spawn(move || {
                match Worker::new(worker_vm, index, worker_kick, worker_counters, on) {
                    Ok(worker) => {
                        let _ = ready_tx.send(Ok(()));
                        serve(worker, inbox);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        let thread = match spawned {
            Ok(thread) => thread,
            Err(e) => {
                vm.remove_vcpu(index);
                return Err(AccelError::from(e).context(format!("starting the thread of vCPU {index}")));
            }
        };
        let started = ready.recv().unwrap_or_else(|_| {
            Err(AccelError::bad_state(format!("the thread of vCPU {index} ended early")))
        });
        if let Err(e) = started {
            let _ = thread.join();
            vm.remove_vcpu(index);
            return Err(e);
        }
        Ok(Self { index, jobs: Some(jobs), thread: Some(thread), kick, counters })
    }

    /// Runs `f` on the vCPU's thread: one message there, one answer back.
    fn call<R: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Worker) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let gone = || AccelError::bad_state(format!("{op}: the thread of vCPU {} is gone", self.index));
        let jobs = self.jobs.as_ref().ok_or_else(gone)?;
        let (answer, answered) = mpsc::sync_channel(1);
        jobs.send(Box::new(move |w: &mut Worker| {
            let _ = answer.send(f(w));
        }))
        .map_err(|_| gone())?;
        answered.recv().map_err(|_| {
            AccelError::new(
                ErrorKind::PANIC,
                format!("{op} of vCPU {}: the call failed on the vCPU's thread", self.index),
            )
        })?
    }
}

impl Drop for HvfVcpu {
    fn drop(&mut self) {
        // Closing the channel ends the thread, which destroys the framework's vCPU itself.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the thread of vCPU {} panicked while ending", self.index);
            }
        }
    }
}

impl BackendVcpu for HvfVcpu {
    fn index(&self) -> u32 {
        self.index
    }

    fn get_core(&mut self) -> Result<CoreRegs> {
        self.call("get_core", Worker::get_core)
    }

    fn put_core(&mut self, regs: &CoreRegs, level: PutLevel) -> Result<()> {
        let regs = *regs;
        self.call("put_core", move |w| w.put_core(&regs, level))
    }

    fn get_fp(&mut self) -> Result<FpRegs> {
        self.call("get_fp", Worker::get_fp)
    }

    fn put_fp(&mut self, regs: &FpRegs, level: PutLevel) -> Result<()> {
        let regs = *regs;
        self.call("put_fp", move |w| w.put_fp(&regs, level))
    }

    fn get_regs(&mut self, class: RegClass) -> Result<Vec<RegValue>> {
        self.call("get_regs", move |w| w.get_regs(class))
    }

    fn put_regs(&mut self, values: &[RegValue], level: PutLevel) -> Result<()> {
        let values = values.to_vec();
        self.call("put_regs", move |w| w.put_regs(&values, level))
    }

    fn get_mp_state(&mut self) -> Result<MpState> {
        self.call("get_mp_state", |w| w.get_mp_state())
    }

    fn set_mp_state(&mut self, state: MpState) -> Result<()> {
        self.call("set_mp_state", move |w| w.set_mp_state(state))
    }

    fn kicker(&self) -> Box<dyn Kick> {
        Box::new(HvfKicker(Arc::clone(&self.kick)))
    }

    fn counters(&self) -> SyncCounters {
        SyncCounters {
            reg_reads: self.counters.reads.load(Ordering::Relaxed),
            reg_writes: self.counters.writes.load(Ordering::Relaxed),
            runs: self.counters.runs.load(Ordering::Relaxed),
        }
    }

    fn set_mmio_read_data(&mut self, value: u64) -> Result<()> {
        self.call("set_mmio_read_data", move |w| w.set_mmio_read_data(value))
    }

    fn run(&mut self) -> Result<VcpuExit> {
        self.call("run", Worker::run)
    }

    fn support_events(&mut self) -> Option<&mut dyn BackendEvents> {
        Some(self)
    }
}

impl BackendEvents for HvfVcpu {
    /// Nothing is ever pending: an external data abort is entered at once, and there is no
    /// SError injection.
    fn get_events(&mut self) -> Result<VcpuEvents> {
        Ok(VcpuEvents::default())
    }

    fn put_events(&mut self, events: &VcpuEvents) -> Result<()> {
        let events = *events;
        self.call("put_events", move |w| w.put_events(&events))
    }
}
