//! The error of every xtask step: one message, printed as `xtask: error: MESSAGE`.

/// An xtask failure, printed as one message.
#[derive(Debug)]
pub struct Error(pub String);

/// The result type of xtask steps.
pub type Result<T, E = Error> = std::result::Result<T, E>;
