//! The error of a failed ioctl, which every file of the plugin reports through.

use accel_api::AccelError;

/// Turns a failed ioctl into the shared error type: kind `OS`, the errno, and what failed.
pub(crate) fn os_error(what: impl std::fmt::Display, e: kvm_ioctls::Error) -> AccelError {
    AccelError::os(e.errno(), format!("{what} failed"))
}
