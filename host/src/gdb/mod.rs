//! The gdb remote stub of `accel-host`: all-stop debugging of every vCPU through the `gdbstub`
//! crate, over TCP or a character device.
//!
//! Each vCPU keeps its own thread. While the guest runs, the threads run their vCPUs and report
//! stops; while gdb has the machine stopped, they wait for commands, and register and memory
//! access runs on the owning thread. The first vCPU to stop makes the stub kick the others.

pub mod arch;
pub mod session;

pub use session::{serve, GdbOptions};
