//! The one error type that crosses the plugin boundary: a kind, an optional errno and a message.

use std::fmt;

use abi_stable::{std_types::RString, StableAbi};

/// What went wrong, in categories a caller can act on.
///
/// A newtype over `u32` rather than an enum, so that a later API version can add kinds without
/// breaking the layout check of plugins built against an earlier one. Unknown values print as
/// `kind N`.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorKind(pub u32);

impl ErrorKind {
    /// The backend cannot run on this host (wrong OS or architecture, no device, no permission).
    pub const UNAVAILABLE: Self = Self(1);
    /// The host, the kernel or the backend does not support the requested feature or operation.
    pub const UNSUPPORTED: Self = Self(2);
    /// An argument is malformed or out of range.
    pub const INVALID_ARGUMENT: Self = Self(3);
    /// A bounded resource is exhausted (memory slots, vCPUs, debug registers).
    pub const NO_RESOURCE: Self = Self(4);
    /// The named object does not exist.
    pub const NOT_FOUND: Self = Self(5);
    /// The object is not in a state that allows the operation (for example, not initialised yet).
    pub const BAD_STATE: Self = Self(6);
    /// A system call failed; `errno` says how.
    pub const OS: Self = Self(7);
    /// A plugin could not be loaded: not a plugin, wrong ABI version or incompatible layout.
    pub const PLUGIN_LOAD: Self = Self(8);
    /// Code inside a plugin panicked; the panic was caught at the boundary.
    pub const PANIC: Self = Self(9);
    /// The guest did something the monitor cannot continue from.
    pub const GUEST: Self = Self(10);
    /// Reading or writing a file failed.
    pub const IO: Self = Self(11);

    /// A short lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::UNAVAILABLE => "unavailable",
            Self::UNSUPPORTED => "unsupported",
            Self::INVALID_ARGUMENT => "invalid argument",
            Self::NO_RESOURCE => "no resource",
            Self::NOT_FOUND => "not found",
            Self::BAD_STATE => "bad state",
            Self::OS => "os error",
            Self::PLUGIN_LOAD => "plugin load",
            Self::PANIC => "panic",
            Self::GUEST => "guest",
            Self::IO => "i/o",
            _ => "unknown",
        }
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
