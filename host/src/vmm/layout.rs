//! The machine's memory map and interrupt numbers, QEMU `virt`'s where they overlap, so a guest
//! built for `qemu -M virt` (GICv3) finds its devices at the same addresses here.
//!
//! | range | device |
//! | --- | --- |
//! | `0x0800_0000 .. +0x1_0000` | GICv3 distributor (GICD) |
//! | `0x0808_0000 .. +0x2_0000` | GICv3 ITS, when the backend has one |
//! | `0x080A_0000 .. +0x2_0000 × vCPUs` | GICv3 redistributors (GICR): RD_base and SGI_base frames |
//! | `0x0900_0000 .. +0x1000` | PL011 UART, SPI 1 |
//! | `0x4000_0000 .. +mem` | RAM |

/// The guest physical address of RAM.
pub const RAM_BASE: u64 = 0x4000_0000;
/// The guest physical address of the PL011 UART.
pub const UART_BASE: u64 = 0x0900_0000;

/// GICD: the distributor's base and size.
pub const GIC_DIST_BASE: u64 = 0x0800_0000;
/// GICD: the size of the distributor's frame.
pub const GIC_DIST_SIZE: u64 = 0x1_0000;
/// The GICv3 ITS's base: its control frame and its translation frame (GITS_TRANSLATER).
pub const GIC_ITS_BASE: u64 = 0x0808_0000;
/// The size of the ITS's two 64 KiB frames.
pub const GIC_ITS_SIZE: u64 = 0x2_0000;
/// The first vCPU's redistributor; each next vCPU's follows it.
pub const GIC_REDIST_BASE: u64 = 0x080A_0000;
/// One vCPU's redistributor: the RD_base and SGI_base frames, 64 KiB each.
pub const GIC_REDIST_STRIDE: u64 = 0x2_0000;
/// The end of the redistributor window: QEMU `virt` puts the UART here, so the window is
/// `0x080A_0000 .. 0x0900_0000` (QEMU's `VIRT_GIC_REDIST`, 0xF6_0000 bytes).
pub const GIC_REDIST_END: u64 = UART_BASE;
/// The most vCPUs whose redistributors fit in the window: 0xF6_0000 / 0x2_0000 = 123. QEMU goes
/// beyond it with a second redistributor region high in the address space; this machine does
/// not.
pub const MAX_VCPUS: u32 = ((GIC_REDIST_END - GIC_REDIST_BASE) / GIC_REDIST_STRIDE) as u32;

/// RAM sizes are whole multiples of this: 1 MiB.
pub const RAM_GRANULE: u64 = 1 << 20;
/// The largest guest physical address size the architecture has: 52 bits (FEAT_LPA). RAM must
/// end within it, whatever the backend offers (which [`super::Plan::new`] checks later).
pub const MAX_IPA_BITS: u32 = 52;
/// The largest RAM size: from `RAM_BASE` to the end of the 52-bit guest physical address space.
pub const MAX_RAM: u64 = (1 << MAX_IPA_BITS) - RAM_BASE;

/// Checks a RAM size against the machine's rules: a non-zero multiple of 1 MiB, ending within
/// the 52-bit guest physical address space. The message states the rule.
pub fn check_ram_size(size: u64) -> Result<(), String> {
    if size == 0 || size % RAM_GRANULE != 0 || size > MAX_RAM {
        return Err(format!(
            "{size} bytes of RAM: the size must be a non-zero multiple of 1 MiB, at most {} MiB",
            MAX_RAM / RAM_GRANULE
        ));
    }
    Ok(())
}

/// The number of SPIs (INTIDs 32 and up) the machine's GIC offers, as QEMU `virt` (`NUM_IRQS`).
pub const NUM_SPIS: u32 = 256;
/// The PL011's SPI (INTID 33).
pub const UART_SPI: u32 = 1;

/// PPIs (INTID = 16 + PPI), as QEMU `virt` wires them.
pub mod ppi {
    /// The PMU overflow interrupt (PMUv3), INTID 23.
    pub const PMU: u32 = 7;
    /// The GIC virtual CPU interface maintenance interrupt, INTID 25.
    pub const GIC_MAINTENANCE: u32 = 9;
    /// The EL2 physical timer (CNTHP), INTID 26.
    pub const TIMER_HYP: u32 = 10;
    /// The EL1 virtual timer (CNTV), INTID 27.
    pub const TIMER_VIRT: u32 = 11;
    /// The secure EL1 physical timer (CNTPS), INTID 29.
    pub const TIMER_SECURE_PHYS: u32 = 13;
    /// The non-secure EL1 physical timer (CNTP), INTID 30.
    pub const TIMER_PHYS: u32 = 14;
}

/// The GIC INTID of PPI `ppi`.
pub const fn ppi_intid(ppi: u32) -> u32 {
    16 + ppi
}

/// The GIC INTID of SPI `spi`.
pub const fn spi_intid(spi: u32) -> u32 {
    32 + spi
}

/// The size of the redistributor region of `vcpus` vCPUs.
pub const fn gic_redist_size(vcpus: u32) -> u64 {
    vcpus as u64 * GIC_REDIST_STRIDE
}

// The regions follow one another without overlapping.
const _: () = assert!(GIC_DIST_BASE + GIC_DIST_SIZE <= GIC_ITS_BASE);
const _: () = assert!(GIC_ITS_BASE + GIC_ITS_SIZE <= GIC_REDIST_BASE);
const _: () = assert!(UART_BASE + super::pl011::PL011_SIZE <= RAM_BASE);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redistributor_window_holds_123_vcpus_and_ends_at_the_uart() {
        assert_eq!(MAX_VCPUS, 123);
        assert!(GIC_REDIST_BASE + gic_redist_size(MAX_VCPUS) <= UART_BASE);
        assert!(GIC_REDIST_BASE + gic_redist_size(MAX_VCPUS + 1) > UART_BASE);
    }

    #[test]
    fn ram_sizes_are_non_zero_whole_mebibytes_within_52_bits() {
        assert_eq!(check_ram_size(RAM_GRANULE), Ok(()));
        assert_eq!(check_ram_size(MAX_RAM), Ok(()));
        for bad in [0, 1000 << 10, RAM_GRANULE + 4096, MAX_RAM + RAM_GRANULE, u64::MAX] {
            let message = check_ram_size(bad).expect_err("refused");
            assert!(message.contains("must be a non-zero multiple of 1 MiB"), "{message}");
        }
        assert_eq!(RAM_BASE + MAX_RAM, 1 << 52);
    }

    #[test]
    fn intids_follow_the_gic_numbering() {
        assert_eq!(ppi_intid(ppi::TIMER_VIRT), 27);
        assert_eq!(ppi_intid(ppi::PMU), 23);
        assert_eq!(spi_intid(UART_SPI), 33);
    }
}
