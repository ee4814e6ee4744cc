//! The demo guest: runs at EL1 with the MMU off on accel's machine, prints a line through the
//! PL011 UART and powers off with PSCI SYSTEM_OFF over HVC.

#![no_std]
#![no_main]

mod rt;

/// The guest's program.
#[no_mangle]
pub extern "C" fn main() -> ! {
    rt::puts("Hello from an accel guest\n");
    rt::psci(rt::PSCI_SYSTEM_OFF)
}
