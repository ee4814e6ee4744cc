//! Interrupts: the in-kernel interrupt controller's configuration and interrupt lines.

use abi_stable::StableAbi;

/// Where a GICv3 lives in the guest physical address space, and how many SPIs it has. It crosses
/// the boundary as a [`GicConfigRecord`](crate::abi::GicConfigRecord).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GicConfig {
    /// The distributor (GICD), 64 KiB.
    pub dist_base: u64,
    /// The redistributors (GICR), 128 KiB per vCPU, one after another.
    pub redist_base: u64,
    /// The number of shared peripheral interrupts (INTIDs 32 ..), a multiple of 32.
    pub spis: u32,
    /// The Interrupt Translation Service (GITS), 128 KiB, if the GIC has one (ABI 2.1).
    pub its_base: Option<u64>,
}

impl GicConfig {
    /// QEMU `virt`'s layout: GICD at 0x0800_0000 and GICR at 0x080a_0000, with `spis` SPIs.
    pub fn virt(spis: u32) -> Self {
        Self { dist_base: 0x0800_0000, redist_base: 0x080a_0000, spis, its_base: None }
    }

    /// QEMU `virt`'s layout with its ITS at 0x0808_0000.
    pub fn virt_with_its(spis: u32) -> Self {
        Self { its_base: Some(0x0808_0000), ..Self::virt(spis) }
    }
}

/// An interrupt line of the GIC.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IrqLine {
    /// [`IrqLine::SPI`] or [`IrqLine::PPI`].
    pub kind: u32,
    /// The SPI number (INTID - 32), or the PPI's INTID (16..=31).
    pub number: u32,
    /// For a PPI, the vCPU it belongs to.
    pub vcpu: u32,
}

impl IrqLine {
    /// A shared peripheral interrupt.
    pub const SPI: u32 = 1;
    /// A private peripheral interrupt.
    pub const PPI: u32 = 2;

    /// SPI `n` (INTID `32 + n`).
    pub fn spi(n: u32) -> Self {
        Self { kind: Self::SPI, number: n, vcpu: 0 }
    }

    /// PPI with INTID `intid` (16..=31) of vCPU `vcpu`.
    pub fn ppi(vcpu: u32, intid: u32) -> Self {
        Self { kind: Self::PPI, number: intid, vcpu }
    }

    /// The GIC INTID.
    pub fn intid(self) -> u32 {
        if self.kind == Self::SPI {
            self.number + 32
        } else {
            self.number
        }
    }
}
