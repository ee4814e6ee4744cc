//! The error of a failed ioctl, which every file of the backend reports through.

use accel_api::AccelError;

/// Wraps a failed ioctl into the shared error type, naming the operation.
pub fn ioctl_error(op: impl std::fmt::Display, e: kvm_ioctls::Error) -> AccelError {
    AccelError::os(e.errno(), format!("{op} failed"))
}
