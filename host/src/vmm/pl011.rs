//! An Arm PrimeCell PL011 UART, enough for console output: data, flag and ID registers, with
//! the control registers stored and read back (PL011 TRM, DDI 0183).

use std::io::Write;

/// UARTDR: data.
const DR: u64 = 0x000;
/// UARTFR: flags.
const FR: u64 = 0x018;
/// UARTFR.RXFE: receive FIFO empty.
const FR_RXFE: u32 = 1 << 4;
/// UARTFR.TXFE: transmit FIFO empty.
const FR_TXFE: u32 = 1 << 7;
/// UARTPeriphID0..3 and UARTPCellID0..3, at 0xFE0..0xFFC.
const ID_BASE: u64 = 0xfe0;
const IDS: [u32; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];
/// The size of the register window.
pub const PL011_SIZE: u64 = 0x1000;

/// A PL011 whose transmitted bytes go to `out`.
pub struct Pl011<W: Write> {
    out: W,
    regs: [u32; 0x40],
}

impl<W: Write> Pl011<W> {
    /// A UART writing to `out`.
    pub fn new(out: W) -> Self {
        Self { out, regs: [0; 0x40] }
    }

    /// A guest read at `offset` within the register window.
    pub fn read(&mut self, offset: u64) -> u32 {
        match offset {
            DR => 0,
            FR => FR_RXFE | FR_TXFE,
            o if (ID_BASE..ID_BASE + 32).contains(&o) => IDS[((o - ID_BASE) / 4) as usize],
            o => self.regs.get((o / 4) as usize).copied().unwrap_or(0),
        }
    }

    /// A guest write at `offset` within the register window.
    pub fn write(&mut self, offset: u64, value: u32) {
        match offset {
            DR => {
                let byte = [value as u8];
                // Console output is best effort: a closed stdout must not stop the guest.
                let _ = self.out.write_all(&byte);
                if byte[0] == b'\n' {
                    let _ = self.out.flush();
                }
            }
            o if o < ID_BASE => {
                if let Some(slot) = self.regs.get_mut((o / 4) as usize) {
                    *slot = value;
                }
            }
            _ => {}
        }
    }

    /// The output sink.
    pub fn output(&mut self) -> &mut W {
        &mut self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmits_bytes_and_reports_an_idle_fifo() {
        let mut uart = Pl011::new(Vec::new());
        for b in b"hi\n" {
            uart.write(DR, u32::from(*b));
        }
        assert_eq!(uart.output().as_slice(), b"hi\n");
        assert_eq!(uart.read(FR) & (FR_TXFE | FR_RXFE), FR_TXFE | FR_RXFE);
    }

    #[test]
    fn identifies_as_a_pl011_and_keeps_control_registers() {
        let mut uart = Pl011::new(Vec::new());
        assert_eq!(uart.read(0xfe0), 0x11);
        assert_eq!(uart.read(0xffc), 0xb1);
        uart.write(0x030, 0x301); // UARTCR
        assert_eq!(uart.read(0x030), 0x301);
        uart.write(0xfe0, 0);
        assert_eq!(uart.read(0xfe0), 0x11, "ID registers are read-only");
    }
}
