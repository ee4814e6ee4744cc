//! The vCPU threads under the debugger: each vCPU lives on a thread of its own (the backend
//! kit's [`ThreadProxy`]), runs when told, reports why it stopped, and runs register accesses for
//! the session while stopped, since a vCPU is driven from one thread.

use std::{collections::VecDeque, sync::mpsc};

use accel_api::{
    client::{Debug, Kicker, Vcpu},
    debug::DebugEvent,
    AccelError, MpState, Result, VcpuFeatures,
};
use accel_kit::thread_proxy::ThreadProxy;

use super::expedite::{Expedited, ExpeditedSlot};
use crate::vmm::{guest_debug::deliver_to_guest, Outcome, Step};

/// Why a vCPU stopped.
#[derive(Debug)]
pub enum Stop {
    /// A debug exit the host owns.
    Debug(DebugEvent),
    /// Kicked (an interrupt request, or another vCPU stopped first).
    Kicked,
    /// Asked to step while powered off (PSCI CPU_OFF, or never started): it cannot run until
    /// another vCPU starts it with PSCI CPU_ON, so it did not.
    PoweredOff,
    /// The guest ended the machine.
    Exited(Outcome),
    /// Running failed.
    Failed(AccelError),
}

/// What the session waits for.
pub enum Event {
    /// A gdb client connected; what it is sent goes to `writer`.
    Connected {
        /// The connection's number.
        conn: u64,
        /// Its writer.
        writer: Box<dyn std::io::Write + Send>,
    },
    /// Bytes from connection `conn`, as they were read (a few KiB at most).
    Data {
        /// The connection's number.
        conn: u64,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Connection `conn` closed.
    Closed {
        /// The connection's number.
        conn: u64,
    },
    /// The user quit from the console.
    Quit,
    /// vCPU `index` stopped.
    Vcpu(u32, Stop),
}

/// The events of the session, taken from what an earlier wait put aside first.
pub struct Events {
    /// Where the vCPU threads and the connection report.
    pub channel: mpsc::Receiver<Event>,
    /// Events taken off the channel while waiting for something else, in order.
    pub deferred: VecDeque<Event>,
}

impl Events {
    /// The next event, or `None` once every sender is gone.
    pub fn next(&mut self) -> Option<Event> {
        self.deferred.pop_front().or_else(|| self.channel.recv().ok())
    }

    /// The next event, waiting at most `limit`: `Err(true)` when none came in time, `Err(false)`
    /// once every sender is gone.
    pub fn next_within(&mut self, limit: std::time::Duration) -> std::result::Result<Event, bool> {
        if let Some(event) = self.deferred.pop_front() {
            return Ok(event);
        }
        self.channel.recv_timeout(limit).map_err(|e| e == mpsc::RecvTimeoutError::Timeout)
    }
}

/// How a vCPU makes one step of its run: one exit handled (MMIO, system events) by the machine.
pub type StepExit = Box<dyn FnMut(&mut Vcpu) -> Result<Step> + Send>;

/// A vCPU under the debugger, as it lives on its thread.
pub struct Runner {
    vcpu: Vcpu,
    index: u32,
    events: mpsc::SyncSender<Event>,
    debug: Debug,
    step_exit: StepExit,
    expedited: ExpeditedSlot,
}

impl Runner {
    /// A runner for `vcpu`, reporting its stops on `events`, and the expedited registers of a
    /// debug stop in `expedited`.
    pub fn new(
        vcpu: Vcpu,
        events: mpsc::SyncSender<Event>,
        debug: Debug,
        step_exit: StepExit,
        expedited: ExpeditedSlot,
    ) -> Self {
        let index = vcpu.index();
        Self { vcpu, index, events, debug, step_exit, expedited }
    }

    /// The vCPU, for a register access while it is stopped.
    pub fn vcpu(&mut self) -> &mut Vcpu {
        &mut self.vcpu
    }

    /// Runs (with `step_exit` handling MMIO and system events) until a stop the host owns,
    /// delivering the guest's own debug exceptions to it on the way, and reports the stop;
    /// `step` when the debugger asked this vCPU for one instruction.
    pub fn resume(&mut self, step: bool) {
        let powered_off = step && self.vcpu.get_mp_state().is_ok_and(|s| s == MpState::STOPPED);
        // The PC of the debug exit that stops the run, which the backend read with it.
        let mut stop_pc = 0;
        let stop = loop {
            if powered_off {
                break Stop::PoweredOff;
            }
            match (self.step_exit)(&mut self.vcpu) {
                Ok(Step::Continue) => {}
                Ok(Step::Ended(outcome)) => break Stop::Exited(outcome),
                Ok(Step::Interrupted) => break Stop::Kicked,
                Ok(Step::Debug(exit)) => match self.debug.classify(self.index, &exit) {
                    DebugEvent::Guest => {
                        if let Err(e) = deliver_to_guest(&mut self.vcpu, &exit) {
                            break Stop::Failed(e);
                        }
                    }
                    event => {
                        stop_pc = exit.pc;
                        break Stop::Debug(event);
                    }
                },
                Err(e) => break Stop::Failed(e),
            }
        };
        if let Stop::Debug(_) = stop {
            // Read here, before the stop is reported, so the stop reply costs the session no
            // round trip to this thread. A vCPU stopped only because another did (kicked) is not
            // what gdb is told of; a failed read leaves the reply without them.
            let read = Expedited::read(&mut self.vcpu, stop_pc).ok();
            if let Ok(mut slot) = self.expedited.lock() {
                *slot = read;
            }
        }
        // A session that has ended no longer listens.
        let _ = self.events.send(Event::Vcpu(self.index, stop));
    }
}

/// The session's handle on one vCPU thread.
pub struct VcpuHandle {
    /// The vCPU's thread.
    pub thread: ThreadProxy<Runner>,
    /// Kicks the vCPU out of `run`.
    pub kicker: Kicker,
    /// The features it was created with.
    pub features: VcpuFeatures,
    /// The expedited registers of its last debug stop, until it is resumed or written.
    pub expedited: ExpeditedSlot,
}

impl Drop for VcpuHandle {
    /// A vCPU still in the guest is kicked out, so that its thread, joined as the proxy goes,
    /// ends.
    fn drop(&mut self) {
        self.kicker.kick();
    }
}
