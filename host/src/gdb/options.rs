//! How the host asks for gdb to be served.

/// How to serve gdb.
#[derive(Clone, Debug)]
pub struct GdbOptions {
    /// `HOST:PORT` to listen on, or the path of a character device to talk over.
    pub address: String,
    /// Start with every vCPU stopped, waiting for gdb.
    pub wait: bool,
    /// What `monitor info` says about the backend: its name, ABI and file.
    pub about: String,
}
