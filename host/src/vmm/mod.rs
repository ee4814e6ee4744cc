//! A small VMM on top of any backend: guest RAM, an image loader, a PL011 console, PSCI through
//! the backend, and one thread per vCPU.
//!
//! The machine's memory map follows QEMU's `virt` board where it overlaps:
//!
//! | range | device |
//! | --- | --- |
//! | `0x0900_0000 .. +0x1000` | PL011 UART |
//! | `0x4000_0000 .. +mem` | RAM; images load here |

pub mod boot;
pub mod bus;
pub mod console;
pub mod exits;
pub mod fdt;
pub mod guest_debug;
pub mod host_mapping;
pub mod image;
pub mod layout;
pub mod machine;
pub mod memory_error;
pub mod pl011;
pub mod ram;
pub mod run;

pub use boot::PSTATE_EL1H_DAIF;
pub use bus::Bus;
pub use exits::{step, Step};
pub use layout::{RAM_BASE, UART_BASE};
pub use machine::{vcpu_features, Machine, MachineConfig, Outcome, Payload, Plan, MIN_RAM};
pub use run::run;
