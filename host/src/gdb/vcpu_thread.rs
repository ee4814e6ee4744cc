//! The vCPU threads under the debugger: each runs its vCPU when told, reports why it stopped, and
//! runs register accesses for the session while stopped, since a vCPU is driven from one thread.

use std::{collections::VecDeque, sync::mpsc};

use accel_api::{
    client::{Debug, Kicker, Vcpu},
    debug::DebugEvent,
    AccelError, MpState, Result, VcpuFeatures,
};

use crate::vmm::{guest_debug::deliver_to_guest, Outcome, Step};

/// A command for a vCPU thread.
pub enum Command {
    /// Run until the next stop; `step` when the debugger asked this vCPU for one instruction.
    Resume {
        /// A single step was asked for.
        step: bool,
    },
    /// Run a closure on the vCPU (only while stopped).
    Exec(Box<dyn FnOnce(&mut Vcpu) + Send>),
}

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
}

/// The session's handle on one vCPU thread.
pub struct VcpuHandle {
    /// Commands to the thread.
    pub commands: mpsc::Sender<Command>,
    /// Kicks the vCPU out of `run`.
    pub kicker: Kicker,
    /// The features it was created with.
    pub features: VcpuFeatures,
}

/// Runs one vCPU under the debugger's control: waits for commands, and on `Resume` runs (with
/// `step_exit` handling MMIO and system events) until a stop the host owns, delivering the
/// guest's own debug exceptions to it on the way.
pub fn vcpu_thread(
    mut vcpu: Vcpu,
    commands: mpsc::Receiver<Command>,
    events: mpsc::SyncSender<Event>,
    debug: Debug,
    mut step_exit: impl FnMut(&mut Vcpu) -> Result<Step>,
) {
    let index = vcpu.index();
    for command in commands {
        match command {
            Command::Exec(f) => f(&mut vcpu),
            Command::Resume { step } => {
                let powered_off = step && vcpu.get_mp_state().is_ok_and(|s| s == MpState::STOPPED);
                let stop = loop {
                    if powered_off {
                        break Stop::PoweredOff;
                    }
                    match step_exit(&mut vcpu) {
                        Ok(Step::Continue) => {}
                        Ok(Step::Ended(outcome)) => break Stop::Exited(outcome),
                        Ok(Step::Interrupted) => break Stop::Kicked,
                        Ok(Step::Debug(exit)) => match debug.classify(index, &exit) {
                            DebugEvent::Guest => {
                                if let Err(e) = deliver_to_guest(&mut vcpu, &exit) {
                                    break Stop::Failed(e);
                                }
                            }
                            event => break Stop::Debug(event),
                        },
                        Err(e) => break Stop::Failed(e),
                    }
                };
                if events.send(Event::Vcpu(index, stop)).is_err() {
                    return;
                }
            }
        }
    }
}
