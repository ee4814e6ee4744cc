//! The MMIO bus of the machine: guest accesses that exit to the monitor are routed to the device
//! at their address, and unmapped addresses read as zero and ignore writes, with one warning each.

use std::{collections::HashSet, io::Write, sync::Mutex};

use super::pl011::{self, Pl011};

/// The guest physical address of the PL011 UART.
pub const UART_BASE: u64 = 0x0900_0000;

/// The MMIO devices of the machine.
pub struct Bus {
    uart: Mutex<Pl011<Box<dyn Write + Send>>>,
    warned: Mutex<HashSet<u64>>,
}

impl Bus {
    /// A bus with the UART writing to `console`.
    pub fn new(console: Box<dyn Write + Send>) -> Self {
        Self { uart: Mutex::new(Pl011::new(console)), warned: Mutex::new(HashSet::new()) }
    }

    fn uart_offset(addr: u64) -> Option<u64> {
        addr.checked_sub(UART_BASE).filter(|o| *o < pl011::PL011_SIZE)
    }

    fn unmapped(&self, addr: u64, what: &str) {
        if self.warned.lock().is_ok_and(|mut w| w.insert(addr)) {
            log::warn!("guest {what} unmapped MMIO address {addr:#x}: reads as zero, writes ignored");
        }
    }

    /// A guest read of `addr`.
    pub fn read(&self, addr: u64) -> u64 {
        match Self::uart_offset(addr) {
            Some(offset) => self.uart.lock().map_or(0, |mut u| u64::from(u.read(offset))),
            None => {
                self.unmapped(addr, "read from");
                0
            }
        }
    }

    /// A guest write of `value` to `addr`.
    pub fn write(&self, addr: u64, value: u64) {
        match Self::uart_offset(addr) {
            Some(offset) => {
                if let Ok(mut u) = self.uart.lock() {
                    u.write(offset, value as u32);
                }
            }
            None => self.unmapped(addr, "write to"),
        }
    }

    /// Writes out what the console holds.
    pub fn flush_console(&self) {
        if let Ok(mut uart) = self.uart.lock() {
            let _ = uart.output().flush();
        }
    }
}
