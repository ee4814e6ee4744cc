//! The vCPU threads under the debugger: each runs its vCPU when told, reports why it stopped, and
//! runs register accesses for the session while stopped, since a vCPU is driven from one thread.

use std::sync::mpsc;

use accel_api::{
    client::{Debug, Kicker, Vcpu},
    debug::DebugEvent,
    AccelError, Result, VcpuFeatures,
};

use crate::vmm::{guest_debug::deliver_to_guest, Outcome, Step};

/// A command for a vCPU thread.
pub enum Command {
    /// Run until the next stop.
    Resume,
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
    /// The guest ended the machine.
    Exited(Outcome),
    /// Running failed.
    Failed(AccelError),
}

/// What the session waits for.
pub enum Event {
    /// A byte from gdb.
    Byte(u8),
    /// The user quit from the console.
    Quit,
    /// The connection closed.
    Closed,
    /// vCPU `index` stopped.
    Vcpu(u32, Stop),
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
    events: mpsc::Sender<Event>,
    debug: Debug,
    mut step_exit: impl FnMut(&mut Vcpu) -> Result<Step>,
) {
    let index = vcpu.index();
    for command in commands {
        match command {
            Command::Exec(f) => f(&mut vcpu),
            Command::Resume => {
                let stop = loop {
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
