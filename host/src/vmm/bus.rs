//! The MMIO bus of the machine: guest accesses that exit to the monitor are routed to the device
//! at their address, and unmapped addresses read as zero and ignore writes, with one warning each.
//! The PL011's interrupt line is driven on the GIC whenever its level changes.

use std::{
    collections::HashSet,
    io::Write,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

use accel_api::{client::Gic, IrqLine};

use super::{
    layout::{UART_BASE, UART_SPI},
    pl011::{self, Pl011},
};

/// Counts of the exits the machine handled, by kind.
#[derive(Debug, Default)]
pub struct ExitStats {
    /// MMIO reads and writes of the UART.
    pub uart: AtomicU64,
    /// MMIO accesses of unmapped addresses.
    pub unmapped: AtomicU64,
    /// System events (PSCI off, reset, suspend, crash).
    pub system_events: AtomicU64,
    /// Interrupted runs (kicks, signals).
    pub interrupted: AtomicU64,
    /// Debug exits.
    pub debug: AtomicU64,
    /// Anything else.
    pub other: AtomicU64,
}

impl ExitStats {
    /// Counts one exit.
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A one-line summary.
    pub fn summary(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (uart, unmapped) = (get(&self.uart), get(&self.unmapped));
        format!(
            "exits: {} MMIO (UART {uart}, unmapped {unmapped}), {} system events, {} interrupted, {} debug, {} other",
            uart + unmapped,
            get(&self.system_events),
            get(&self.interrupted),
            get(&self.debug),
            get(&self.other),
        )
    }
}

/// The UART and the level its interrupt line was last driven to.
struct Uart {
    device: Pl011<Box<dyn Write + Send>>,
    line: bool,
}

/// The MMIO devices of the machine.
pub struct Bus {
    uart: Mutex<Uart>,
    gic: Option<Gic>,
    warned: Mutex<HashSet<u64>>,
    stats: ExitStats,
}

impl Bus {
    /// A bus with the UART writing to `console`, its interrupt driven on `gic` (SPI 1) if given.
    pub fn new(console: Box<dyn Write + Send>, gic: Option<Gic>) -> Self {
        Self {
            uart: Mutex::new(Uart { device: Pl011::new(console), line: false }),
            gic,
            warned: Mutex::new(HashSet::new()),
            stats: ExitStats::default(),
        }
    }

    /// The exits counted so far.
    pub fn stats(&self) -> &ExitStats {
        &self.stats
    }

    fn uart_offset(addr: u64) -> Option<u64> {
        addr.checked_sub(UART_BASE).filter(|o| *o < pl011::PL011_SIZE)
    }

    fn unmapped(&self, addr: u64, what: &str) {
        ExitStats::count(&self.stats.unmapped);
        if self.warned.lock().is_ok_and(|mut w| w.insert(addr)) {
            log::warn!("guest {what} unmapped MMIO address {addr:#x}: reads as zero, writes ignored");
        }
    }

    /// Runs `f` on the UART and then drives its interrupt line if the level changed.
    fn with_uart<T>(&self, f: impl FnOnce(&mut Pl011<Box<dyn Write + Send>>) -> T) -> Option<T> {
        let mut uart = self.uart.lock().ok()?;
        let result = f(&mut uart.device);
        let level = uart.device.irq_level();
        if level != uart.line {
            uart.line = level;
            if let Some(gic) = &self.gic {
                if let Err(e) = gic.set_irq(IrqLine::spi(UART_SPI), level) {
                    log::warn!("driving the UART's interrupt line: {e}");
                }
            }
        }
        Some(result)
    }

    /// A guest read of `addr`.
    pub fn read(&self, addr: u64) -> u64 {
        match Self::uart_offset(addr) {
            Some(offset) => {
                ExitStats::count(&self.stats.uart);
                self.with_uart(|u| u64::from(u.read(offset))).unwrap_or(0)
            }
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
                ExitStats::count(&self.stats.uart);
                self.with_uart(|u| u.write(offset, value as u32));
            }
            None => self.unmapped(addr, "write to"),
        }
    }

    /// Offers console input to the UART; returns how many bytes it took (it holds a bounded
    /// backlog; offer the rest again later).
    pub fn push_input(&self, bytes: &[u8]) -> usize {
        self.with_uart(|u| u.push_input(bytes)).unwrap_or(0)
    }

    /// Writes out what the console holds.
    pub fn flush_console(&self) {
        let _ = self.with_uart(|u| u.output().flush());
    }
}
