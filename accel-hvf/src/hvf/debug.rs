//! The VM's guest-debug pool on HVF: the kit's [`PoolDebug`] over the kit's [`GuestText`]. Each
//! vCPU applies the pool's set-up on its own thread before it next enters the guest (the debug
//! traps, the hardware registers, MDSCR_EL1).

use accel_kit::{guest_text::GuestText, pool_debug::PoolDebug};

/// A VM's debug pool, planting software breakpoints in guest memory through the VM's memory map.
pub type HvfDebug = PoolDebug<GuestText>;
