//! An HVF vCPU as the host holds it. The framework binds a vCPU to the thread that creates it, so
//! each vCPU has a thread of its own (the worker, behind the kit's [`ThreadProxy`]) that creates
//! it, owns it and destroys it; the handle here sends each ABI call to that thread as one message
//! and waits for the answer. The index, the counters and the kicker need no message, and the
//! kick is `hv_vcpus_exit`.
//!
//! The worker's state and registers are in [`registers`], its run loop in [`exits`], and what
//! kickers share with it in [`kick`].

mod exits;
pub(super) mod kick;
mod registers;

use std::sync::{atomic::Ordering, Arc};

use accel_api::{
    backend::{BackendEvents, BackendVcpu, Kick},
    CoreRegs, FpRegs, MpState, PutLevel, RegClass, RegValue, Result, SyncCounters, VcpuConfig, VcpuEvents,
    VcpuExit, VcpuFeatures,
};

use accel_kit::thread_proxy::ThreadProxy;

use crate::hvf::shared::VmShared;
use kick::{HvfKicker, KickState};
use registers::{Counters, Worker};

/// An HVF vCPU, as the host holds it: a handle to its thread.
pub struct HvfVcpu {
    index: u32,
    worker: ThreadProxy<Worker>,
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
        let (worker_vm, worker_kick, worker_counters) =
            (Arc::clone(&vm), Arc::clone(&kick), Arc::clone(&counters));
        let worker = ThreadProxy::spawn(format!("hvf-vcpu-{index}"), move || {
            Worker::new(worker_vm, index, worker_kick, worker_counters, on)
        });
        match worker {
            Ok(worker) => Ok(Self { index, worker, kick, counters }),
            Err(e) => {
                vm.remove_vcpu(index);
                Err(e.context(format!("creating vCPU {index}")))
            }
        }
    }

    /// Runs `f` on the vCPU's thread: one message there, one answer back.
    fn call<R: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Worker) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.worker.call(f).map_err(|e| e.context(format!("{op} of vCPU {}", self.index)))?
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
