//! An Arm PrimeCell PL011 UART (PL011 TRM, DDI 0183): transmission straight to a host writer, a
//! receive FIFO the host fills, the flag register, and the interrupt registers with the receive,
//! receive timeout and transmit interrupts, enough for Linux's amba-pl011 driver to run on
//! interrupts.
//!
//! Time does not pass inside the model: a transmitted byte is gone at once, so the transmit FIFO
//! is always empty, and the receive timeout (no new data for 32 bit periods) has always expired
//! by the time the guest looks, so it is asserted whenever the receive FIFO holds data after the
//! host delivers input or the guest reads.
//!
//! The machine drives the UART's SPI from [`Pl011::irq_level`] after every access and every
//! [`Pl011::push_input`].

use std::{collections::VecDeque, io::Write};

/// UARTDR: data.
const DR: u64 = 0x000;
/// UARTRSR/UARTECR: receive status, error clear.
const RSR: u64 = 0x004;
/// UARTFR: flags.
const FR: u64 = 0x018;
/// UARTILPR: IrDA low-power counter.
const ILPR: u64 = 0x020;
/// UARTIBRD: integer baud rate divisor.
const IBRD: u64 = 0x024;
/// UARTFBRD: fractional baud rate divisor.
const FBRD: u64 = 0x028;
/// UARTLCR_H: line control.
const LCR_H: u64 = 0x02c;
/// UARTCR: control.
const CR: u64 = 0x030;
/// UARTIFLS: interrupt FIFO level select.
const IFLS: u64 = 0x034;
/// UARTIMSC: interrupt mask set/clear (1 enables).
const IMSC: u64 = 0x038;
/// UARTRIS: raw interrupt status.
const RIS: u64 = 0x03c;
/// UARTMIS: masked interrupt status.
const MIS: u64 = 0x040;
/// UARTICR: interrupt clear (write 1 to clear).
const ICR: u64 = 0x044;
/// UARTDMACR: DMA control.
const DMACR: u64 = 0x048;
/// UARTPeriphID0..3 and UARTPCellID0..3, at 0xFE0..0xFFC.
const ID_BASE: u64 = 0xfe0;
/// A PL011 of revision r1p0 (UARTPeriphID2 = 0x14), which has 16-entry FIFOs; Linux sizes its
/// FIFO handling from this revision.
const IDS: [u32; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];
/// The size of the register window.
pub const PL011_SIZE: u64 = 0x1000;

/// UARTFR.RXFE: receive FIFO (or holding register) empty.
const FR_RXFE: u32 = 1 << 4;
/// UARTFR.RXFF: receive FIFO (or holding register) full.
const FR_RXFF: u32 = 1 << 6;
/// UARTFR.TXFE: transmit FIFO empty.
const FR_TXFE: u32 = 1 << 7;

/// UARTLCR_H.FEN: FIFOs enabled; without, each direction holds one character.
const LCR_H_FEN: u32 = 1 << 4;
/// UARTCR.UARTEN: the UART is enabled.
const CR_UARTEN: u32 = 1 << 0;
/// UARTCR.TXE: transmit enabled.
const CR_TXE: u32 = 1 << 8;
/// UARTCR.RXE: receive enabled.
const CR_RXE: u32 = 1 << 9;

/// RXIS (UARTRIS bit 4): the receive FIFO reached its trigger level.
const INT_RX: u32 = 1 << 4;
/// TXIS (UARTRIS bit 5): the transmit FIFO is at or below its trigger level.
const INT_TX: u32 = 1 << 5;
/// RTIS (UARTRIS bit 6): receive timeout, data waits in the receive FIFO.
const INT_RT: u32 = 1 << 6;
/// The eleven interrupt bits of UARTIMSC, UARTRIS, UARTMIS and UARTICR.
const INT_ALL: u32 = 0x7ff;

/// The depth of each FIFO of the r1p0 PL011.
const FIFO_DEPTH: usize = 16;
/// How much host input waits for room in the receive FIFO, as a line with flow control would
/// hold it back; beyond this, [`Pl011::push_input`] takes less than it is given.
pub const INPUT_BACKLOG: usize = 4096;

/// A PL011 whose transmitted bytes go to `out` and whose received bytes come from
/// [`Pl011::push_input`].
pub struct Pl011<W: Write> {
    out: W,
    /// The receive FIFO (one entry when UARTLCR_H.FEN is clear).
    rx: VecDeque<u8>,
    /// Host input not yet received.
    backlog: VecDeque<u8>,
    /// The latched RXIS and RTIS bits.
    rx_status: u32,
    /// The guest cleared TXIS and has not transmitted since.
    tx_cleared: bool,
    imsc: u32,
    ilpr: u32,
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    dmacr: u32,
}

impl<W: Write> Pl011<W> {
    /// A UART writing to `out`, with the TRM's reset values: UARTCR has TXE and RXE set but the
    /// UART disabled, and both FIFO trigger levels are at half.
    pub fn new(out: W) -> Self {
        Self {
            out,
            rx: VecDeque::with_capacity(FIFO_DEPTH),
            backlog: VecDeque::new(),
            rx_status: 0,
            tx_cleared: false,
            imsc: 0,
            ilpr: 0,
            ibrd: 0,
            fbrd: 0,
            lcr_h: 0,
            cr: CR_TXE | CR_RXE,
            ifls: 0x12,
            dmacr: 0,
        }
    }

    /// A guest read at `offset` within the register window.
    pub fn read(&mut self, offset: u64) -> u32 {
        match offset {
            DR => {
                let byte = self.rx.pop_front().map_or(0, u32::from);
                self.receive();
                byte
            }
            FR => self.flags(),
            ILPR => self.ilpr,
            IBRD => self.ibrd,
            FBRD => self.fbrd,
            LCR_H => self.lcr_h,
            CR => self.cr,
            IFLS => self.ifls,
            IMSC => self.imsc,
            RIS => self.raw_status(),
            MIS => self.raw_status() & self.imsc,
            DMACR => self.dmacr,
            // No framing, parity, break or overrun error is ever recorded.
            RSR => 0,
            o if (ID_BASE..ID_BASE + 32).contains(&o) => IDS[((o - ID_BASE) / 4) as usize],
            _ => 0,
        }
    }

    /// A guest write at `offset` within the register window.
    pub fn write(&mut self, offset: u64, value: u32) {
        match offset {
            // Transmitted even while UARTCR disables the transmitter, as QEMU does, so a
            // bare-metal program that never sets the UART up still prints.
            DR => self.transmit(value as u8),
            ILPR => self.ilpr = value & 0xff,
            IBRD => self.ibrd = value & 0xffff,
            FBRD => self.fbrd = value & 0x3f,
            LCR_H => {
                self.lcr_h = value & 0xff;
                self.receive();
            }
            CR => {
                self.cr = value & 0xffff;
                self.receive();
            }
            IFLS => {
                self.ifls = value & 0x3f;
                self.receive();
            }
            IMSC => self.imsc = value & INT_ALL,
            ICR => {
                self.rx_status &= !value;
                if value & INT_TX != 0 {
                    self.tx_cleared = true;
                }
            }
            DMACR => self.dmacr = value & 0x7,
            // UARTECR: there are no errors to clear. FR, RIS, MIS and the IDs are read-only.
            _ => {}
        }
    }

    /// Host input for the guest: takes as much of `bytes` as the receive FIFO and the backlog
    /// behind it ([`INPUT_BACKLOG`]) hold, and returns how many it took. The rest is for the
    /// caller to offer again once the guest has read.
    pub fn push_input(&mut self, bytes: &[u8]) -> usize {
        let taken = bytes.len().min(INPUT_BACKLOG - self.backlog.len());
        self.backlog.extend(&bytes[..taken]);
        self.receive();
        taken
    }

    /// The level of the UART's interrupt line (UARTINTR): some unmasked interrupt is raised.
    pub fn irq_level(&self) -> bool {
        self.raw_status() & self.imsc != 0
    }

    /// The output sink.
    pub fn output(&mut self) -> &mut W {
        &mut self.out
    }

    fn transmit(&mut self, byte: u8) {
        // Console output is best effort: a closed stdout must not stop the guest. Each byte is
        // flushed: a shell's prompt ends without a newline, and an exit per byte already costs
        // far more than the write.
        let _ = self.out.write_all(&[byte]);
        let _ = self.out.flush();
        // The byte left the FIFO at once: it drained through its trigger level again.
        self.tx_cleared = false;
    }

    fn fifo_enabled(&self) -> bool {
        self.lcr_h & LCR_H_FEN != 0
    }

    fn rx_capacity(&self) -> usize {
        if self.fifo_enabled() {
            FIFO_DEPTH
        } else {
            1
        }
    }

    /// The fill level at which RXIS is raised: UARTIFLS.RXIFLSEL (bits 5:3) picks 1/8, 1/4, 1/2,
    /// 3/4 or 7/8 of the FIFO; the reserved values act as 1/2. Without FIFOs, one character.
    fn rx_trigger(&self) -> usize {
        if !self.fifo_enabled() {
            return 1;
        }
        let eighths = match (self.ifls >> 3) & 0x7 {
            0 => 1,
            1 => 2,
            3 => 6,
            4 => 7,
            _ => 4,
        };
        FIFO_DEPTH * eighths / 8
    }

    /// Moves host input into the receive FIFO while the receiver is enabled and the FIFO has
    /// room, then updates RXIS and RTIS. RXIS rises when the fill level climbs to the trigger
    /// level and falls once reads take it below; RTIS stands while data waits.
    fn receive(&mut self) {
        if self.cr & CR_UARTEN != 0 && self.cr & CR_RXE != 0 {
            let trigger = self.rx_trigger();
            while self.rx.len() < self.rx_capacity() {
                let Some(byte) = self.backlog.pop_front() else { break };
                self.rx.push_back(byte);
                if self.rx.len() == trigger {
                    self.rx_status |= INT_RX;
                }
            }
        }
        if self.rx.len() < self.rx_trigger() {
            self.rx_status &= !INT_RX;
        }
        if self.rx.is_empty() {
            self.rx_status &= !INT_RT;
        } else {
            self.rx_status |= INT_RT;
        }
    }

    /// UARTRIS: RXIS and RTIS as latched, and TXIS while the transmitter is enabled, since its
    /// FIFO is always empty, unless the guest cleared it and has not transmitted since.
    fn raw_status(&self) -> u32 {
        let tx_enabled = self.cr & CR_UARTEN != 0 && self.cr & CR_TXE != 0;
        let tx = if tx_enabled && !self.tx_cleared { INT_TX } else { 0 };
        self.rx_status | tx
    }

    /// UARTFR: the transmit FIFO empty, so BUSY and TXFF clear; the receive FIFO as it is.
    fn flags(&self) -> u32 {
        let mut flags = FR_TXFE;
        if self.rx.is_empty() {
            flags |= FR_RXFE;
        }
        if self.rx.len() >= self.rx_capacity() {
            flags |= FR_RXFF;
        }
        flags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// UARTFR.BUSY: transmitting.
    const FR_BUSY: u32 = 1 << 3;
    /// UARTFR.TXFF: transmit FIFO full.
    const FR_TXFF: u32 = 1 << 5;
    /// UARTCR with the UART, its transmitter and its receiver enabled.
    const ENABLED: u32 = CR_UARTEN | CR_TXE | CR_RXE;

    /// A UART set up as Linux's driver leaves it: enabled, FIFOs on, default trigger levels.
    fn linux_uart() -> Pl011<Vec<u8>> {
        let mut uart = Pl011::new(Vec::new());
        uart.write(LCR_H, LCR_H_FEN | 0x60); // 8 bits, FIFOs on
        uart.write(CR, ENABLED);
        uart
    }

    fn read_all(uart: &mut Pl011<Vec<u8>>) -> Vec<u8> {
        let mut bytes = Vec::new();
        while uart.read(FR) & FR_RXFE == 0 {
            bytes.push(uart.read(DR) as u8);
        }
        bytes
    }

    #[test]
    fn transmits_bytes_and_is_never_busy() {
        let mut uart = Pl011::new(Vec::new());
        for b in b"hi\n" {
            uart.write(DR, u32::from(*b));
        }
        assert_eq!(uart.output().as_slice(), b"hi\n");
        assert_eq!(uart.read(FR), FR_TXFE | FR_RXFE, "TXFE and RXFE; not BUSY, TXFF or RXFF");
        assert_eq!(uart.read(FR) & (FR_BUSY | FR_TXFF), 0);
    }

    #[test]
    fn identifies_as_a_pl011_r1p0_and_keeps_control_registers() {
        let mut uart = Pl011::new(Vec::new());
        assert_eq!(uart.read(0xfe0), 0x11);
        assert_eq!(uart.read(0xfe8), 0x14);
        assert_eq!(uart.read(0xffc), 0xb1);
        assert_eq!(uart.read(CR), CR_TXE | CR_RXE, "reset value");
        assert_eq!(uart.read(IFLS), 0x12, "reset value");
        for (reg, written, kept) in [
            (ILPR, 0x1ff, 0xff),
            (IBRD, 0x1_0001, 0x1),
            (FBRD, 0xff, 0x3f),
            (LCR_H, 0x170, 0x70),
            (CR, 0x1_0301, 0x301),
            (IFLS, 0xff, 0x3f),
            (IMSC, 0xffff, INT_ALL),
            (DMACR, 0xf, 0x7),
        ] {
            uart.write(reg, written);
            assert_eq!(uart.read(reg), kept, "register {reg:#x}");
        }
        for reg in [0xfe0, FR, RIS, MIS] {
            let before = uart.read(reg);
            uart.write(reg, 0x55);
            assert_eq!(uart.read(reg), before, "register {reg:#x} is read-only");
        }
        assert_eq!(uart.read(RSR), 0, "no receive errors");
        assert_eq!(uart.read(0x800), 0, "unassigned offsets read as zero");
    }

    #[test]
    fn host_input_is_received_in_order() {
        let mut uart = linux_uart();
        assert_eq!(uart.push_input(b"ls\r"), 3);
        assert_eq!(uart.read(FR) & (FR_RXFE | FR_RXFF), 0);
        assert_eq!(read_all(&mut uart), b"ls\r");
        assert_eq!(uart.read(DR), 0, "an empty FIFO reads as zero");
    }

    #[test]
    fn input_waits_while_the_receiver_is_disabled() {
        let mut uart = Pl011::new(Vec::new());
        uart.write(LCR_H, LCR_H_FEN);
        assert_eq!(uart.push_input(b"ab"), 2);
        assert_ne!(uart.read(FR) & FR_RXFE, 0, "UARTEN is clear after reset");
        uart.write(CR, CR_UARTEN | CR_TXE);
        assert_ne!(uart.read(FR) & FR_RXFE, 0, "RXE is clear");
        uart.write(CR, ENABLED);
        assert_eq!(read_all(&mut uart), b"ab");
    }

    #[test]
    fn the_fifo_holds_16_and_refills_from_the_backlog() {
        let mut uart = linux_uart();
        let input: Vec<u8> = (0..40).collect();
        assert_eq!(uart.push_input(&input), 40);
        assert_ne!(uart.read(FR) & FR_RXFF, 0, "16 entries fill the FIFO");
        assert_eq!(uart.read(DR), 0);
        assert_ne!(uart.read(FR) & FR_RXFF, 0, "a read lets the next byte in");
        assert_eq!(read_all(&mut uart), (1..40).collect::<Vec<u8>>());
    }

    #[test]
    fn without_fifos_one_character_is_held() {
        let mut uart = Pl011::new(Vec::new());
        uart.write(CR, ENABLED);
        uart.write(IMSC, INT_RX);
        uart.push_input(b"xy");
        assert_eq!(uart.read(FR) & (FR_RXFF | FR_RXFE), FR_RXFF);
        assert!(uart.irq_level(), "RXIS with each character");
        assert_eq!(uart.read(DR), u32::from(b'x'));
        assert!(uart.irq_level(), "the next character is in");
        assert_eq!(uart.read(DR), u32::from(b'y'));
        assert!(!uart.irq_level());
        assert_eq!(uart.read(FR) & (FR_RXFF | FR_RXFE), FR_RXFE);
    }

    #[test]
    fn the_backlog_is_bounded() {
        let mut uart = Pl011::new(Vec::new());
        assert_eq!(uart.push_input(&vec![b'a'; INPUT_BACKLOG + 10]), INPUT_BACKLOG);
        assert_eq!(uart.push_input(b"b"), 0, "nothing was received yet");
        uart.write(CR, ENABLED);
        assert_eq!(uart.push_input(b"bc"), 1, "one byte moved to the holding register");
        uart.read(DR);
        assert_eq!(uart.push_input(b"c"), 1, "and the next one after a read");
    }

    #[test]
    fn rxis_rises_at_the_trigger_level_and_falls_below_it() {
        let mut uart = linux_uart();
        uart.push_input(&[b'a'; 7]);
        assert_eq!(uart.read(RIS) & INT_RX, 0, "7 of 16 is below half");
        uart.push_input(b"a");
        assert_ne!(uart.read(RIS) & INT_RX, 0, "8 of 16 reaches half");
        uart.read(DR);
        assert_eq!(uart.read(RIS) & INT_RX, 0, "reads take it below the trigger level");

        uart.write(IFLS, 0); // RXIFLSEL 1/8: 2 entries
        for _ in 0..6 {
            uart.read(DR);
        }
        assert_eq!(uart.read(RIS) & INT_RX, 0, "one entry left");
        uart.push_input(b"b");
        assert_ne!(uart.read(RIS) & INT_RX, 0, "two entries reach 1/8");
        uart.write(ICR, INT_RX);
        assert_eq!(uart.read(RIS) & INT_RX, 0, "UARTICR clears RXIS");

        uart.write(IFLS, 4 << 3); // RXIFLSEL 7/8: 14 entries
        assert_eq!(uart.rx_trigger(), 14);
        uart.write(IFLS, 3 << 3);
        assert_eq!(uart.rx_trigger(), 12);
        uart.write(IFLS, 1 << 3);
        assert_eq!(uart.rx_trigger(), 4);
    }

    #[test]
    fn rtis_stands_while_data_waits() {
        let mut uart = linux_uart();
        assert_eq!(uart.read(RIS) & INT_RT, 0);
        uart.push_input(b"abc");
        assert_ne!(uart.read(RIS) & INT_RT, 0, "a character below the trigger level times out");
        uart.write(ICR, INT_RT);
        assert_eq!(uart.read(RIS) & INT_RT, 0, "UARTICR clears RTIS");
        uart.read(DR);
        assert_ne!(uart.read(RIS) & INT_RT, 0, "data still waits after the read");
        uart.read(DR);
        uart.read(DR);
        assert_eq!(uart.read(RIS) & INT_RT, 0, "an empty FIFO ends the timeout");
    }

    #[test]
    fn txis_stands_while_transmitting_is_enabled_until_cleared() {
        let mut uart = Pl011::new(Vec::new());
        assert_eq!(uart.read(RIS) & INT_TX, 0, "the UART is disabled after reset");
        uart.write(CR, ENABLED);
        assert_ne!(uart.read(RIS) & INT_TX, 0, "the transmit FIFO is empty");
        uart.write(ICR, INT_TX);
        assert_eq!(uart.read(RIS) & INT_TX, 0);
        uart.write(DR, u32::from(b'x'));
        assert_ne!(uart.read(RIS) & INT_TX, 0, "the FIFO drained through its trigger level again");
        uart.write(CR, CR_UARTEN | CR_RXE);
        assert_eq!(uart.read(RIS) & INT_TX, 0, "TXE is clear");
    }

    #[test]
    fn the_line_follows_the_masked_status() {
        let mut uart = linux_uart();
        assert!(!uart.irq_level(), "everything is masked after reset");
        uart.write(IMSC, INT_RX | INT_RT);
        assert!(!uart.irq_level());
        uart.push_input(b"a");
        assert_eq!(uart.read(MIS), INT_RT);
        assert!(uart.irq_level());
        uart.write(IMSC, INT_RX);
        assert_eq!(uart.read(MIS), 0);
        assert!(!uart.irq_level(), "RTIS is masked");
        uart.write(IMSC, INT_RX | INT_RT | INT_TX);
        assert_eq!(uart.read(MIS), INT_RT | INT_TX);
        uart.read(DR);
        uart.write(ICR, INT_TX);
        assert_eq!(uart.read(MIS), 0);
        assert!(!uart.irq_level());
        uart.write(DR, u32::from(b'x'));
        assert!(uart.irq_level(), "TXIS is back");
    }
}
