//! The one error type that crosses the plugin boundary: a kind, an optional errno and a message.

use std::fmt;

use abi_stable::{std_types::RString, StableAbi};

crate::numbered! {
    /// What went wrong, in categories a caller can act on.
    ///
    /// A newtype over `u32` rather than an enum, so that a later API version can add kinds without
    /// breaking the layout check of plugins built against an earlier one. Unknown values print as
    /// `kind N`.
    #[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct ErrorKind(u32) {
        /// The backend cannot run on this host (wrong OS or architecture, no device, no permission).
        UNAVAILABLE = 1 => "unavailable",
        /// The host, the kernel or the backend does not support the requested feature or operation.
        UNSUPPORTED = 2 => "unsupported",
        /// An argument is malformed or out of range.
        INVALID_ARGUMENT = 3 => "invalid argument",
        /// A bounded resource is exhausted (memory slots, vCPUs, debug registers).
        NO_RESOURCE = 4 => "no resource",
        /// The named object does not exist.
        NOT_FOUND = 5 => "not found",
        /// The object is not in a state that allows the operation (for example, not initialised yet).
        BAD_STATE = 6 => "bad state",
        /// A system call failed; `errno` says how.
        OS = 7 => "os error",
        /// A plugin could not be loaded: not a plugin, wrong ABI version or incompatible layout.
        PLUGIN_LOAD = 8 => "plugin load",
        /// Code inside a plugin panicked; the panic was caught at the boundary.
        PANIC = 9 => "panic",
        /// The guest did something the monitor cannot continue from.
        GUEST = 10 => "guest",
        /// Reading or writing a file failed.
        IO = 11 => "i/o",
    }
}

impl fmt::Debug for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            "unknown" => write!(f, "kind {}", self.0),
            name => f.write_str(name),
        }
    }
}

/// An error as it crosses the plugin boundary.
///
/// `errno` is 0 when no system call is involved. The message is a complete sentence fragment that
/// names the object concerned (the register, the feature, the file), so that it can be shown to a
/// user on one line.
#[repr(C)]
#[derive(StableAbi, Clone, PartialEq, Eq)]
pub struct AccelError {
    /// The category.
    pub kind: ErrorKind,
    /// The OS error number, or 0.
    pub errno: i32,
    /// What failed, for a human.
    pub message: RString,
}

impl AccelError {
    /// An error with no errno.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, errno: 0, message: RString::from(message.into()) }
    }

    /// An error carrying the errno of a failed system call.
    pub fn os(errno: i32, message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::OS, errno, message: RString::from(message.into()) }
    }

    /// Shorthand for [`ErrorKind::UNSUPPORTED`].
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UNSUPPORTED, message)
    }

    /// Shorthand for [`ErrorKind::INVALID_ARGUMENT`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::INVALID_ARGUMENT, message)
    }

    /// Shorthand for [`ErrorKind::BAD_STATE`].
    pub fn bad_state(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BAD_STATE, message)
    }

    /// The errno, if a system call was involved.
    pub fn errno(&self) -> Option<i32> {
        (self.errno != 0).then_some(self.errno)
    }

    /// Prefixes the message with context, keeping kind and errno.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = RString::from(format!("{what}: {}", self.message));
        self
    }
}

impl fmt::Display for AccelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(errno) = self.errno() {
            write!(f, " ({})", std::io::Error::from_raw_os_error(errno))?;
        }
        Ok(())
    }
}

impl fmt::Debug for AccelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AccelError {{ kind: {:?}, errno: {}, message: {:?} }}",
            self.kind,
            self.errno,
            self.message.as_str()
        )
    }
}

impl std::error::Error for AccelError {}

impl From<std::io::Error> for AccelError {
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(errno) => Self::os(errno, e.to_string()),
            None => Self::new(ErrorKind::IO, e.to_string()),
        }
    }
}

/// The result type of every fallible call in the API.
pub type Result<T, E = AccelError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_includes_errno_text() {
        let e = AccelError::os(1, "KVM_SET_ONE_REG of ID_AA64PFR0_EL1 failed");
        let s = e.to_string();
        assert!(s.starts_with("KVM_SET_ONE_REG of ID_AA64PFR0_EL1 failed ("), "{s}");
        assert!(s.contains("os error 1"), "{s}");
        assert_eq!(e.errno(), Some(1));
    }

    #[test]
    fn context_keeps_kind_and_errno() {
        let e = AccelError::os(22, "bad").context("vCPU 3");
        assert_eq!(e.kind, ErrorKind::OS);
        assert_eq!(e.errno, 22);
        assert_eq!(e.message.as_str(), "vCPU 3: bad");
    }

    #[test]
    fn unknown_kind_prints_its_number() {
        assert_eq!(ErrorKind(999).to_string(), "kind 999");
        assert_eq!(ErrorKind::PANIC.to_string(), "panic");
    }
}
