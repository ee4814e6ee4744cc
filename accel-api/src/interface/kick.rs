//! The kicker: makes a vCPU's `run` return from another thread.

use accel_api_macros::interface;

/// Kicks a vCPU out of `run`.
#[interface(abi = KickOps, boxed = KickerBox, client = Kicker, bounds(Send + Sync), holds = Box<dyn Kick>)]
pub trait Kick: Send + Sync + 'static {
    /// Requests that the vCPU's current or next `run` return
    /// [`VcpuExit::Interrupted`](crate::VcpuExit::Interrupted).
    #[abi(last)]
    fn kick(&self);
}

/// The kicker of a vCPU whose backend failed to make one: kicking does nothing.
pub struct NoKick;

impl Kick for NoKick {
    fn kick(&self) {}
}
