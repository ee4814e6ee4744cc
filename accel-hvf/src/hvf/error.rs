//! The errors of failed Hypervisor.framework calls, which every file of the backend reports
//! through.

use std::fmt::Display;

use accel_api::{AccelError, Result};
use applevisor::error::HypervisorError;
use applevisor_sys::hv_return_t;

/// The HVF error of a failed call, as an OS error with the nearest errno and the operation's
/// name; `HV_UNSUPPORTED` is an unsupported error.
pub fn hv_error(op: impl Display, e: HypervisorError) -> AccelError {
    let errno = match e {
        HypervisorError::BadArgument | HypervisorError::IllegalState => libc::EINVAL,
        HypervisorError::Busy => libc::EBUSY,
        HypervisorError::Denied => libc::EPERM,
        HypervisorError::Fault => libc::EFAULT,
        HypervisorError::NoDevice => libc::ENODEV,
        HypervisorError::NoResources => libc::ENOMEM,
        HypervisorError::Unsupported => {
            return AccelError::unsupported(format!("{op}: Hypervisor.framework does not support it"))
        }
        HypervisorError::Error | HypervisorError::Unknown(_) => libc::EIO,
    };
    AccelError::os(errno, format!("{op} failed ({e:?})"))
}

/// Checks the return code of a raw `applevisor-sys` call.
pub fn hv_check(op: impl Display, ret: hv_return_t) -> Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(hv_error(op, HypervisorError::from(ret)))
    }
}
