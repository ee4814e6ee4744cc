//! The machine's device tree blob, built with `vm-fdt` to the bindings QEMU's `virt` board uses
//! with a GICv3, so a kernel or bare-metal program written for `qemu -M virt` finds the same
//! nodes: memory, cpus, psci, the GIC and its ITS, the architected timer, the PMU, the PL011
//! with its clock, and `/chosen`.

use std::ops::Range;

use thiserror::Error;
use vm_fdt::FdtWriter;

use super::{layout, pl011::PL011_SIZE};

/// The largest device tree the arm64 boot protocol accepts (`MAX_FDT_SIZE`).
pub const MAX_FDT_SIZE: usize = 2 << 20;
/// The GIC's phandle: the root's `interrupt-parent`.
pub const PHANDLE_GIC: u32 = 1;
/// The ITS's phandle: what an MSI-capable device names in its `msi-parent`.
pub const PHANDLE_ITS: u32 = 2;
/// The fixed 24 MHz `apb-pclk` clock's phandle.
const PHANDLE_APB_PCLK: u32 = 3;
/// The clock the PL011 is told it runs from, as QEMU `virt` (the baud rate divisors assume it).
const APB_PCLK_HZ: u32 = 24_000_000;

/// First cell of a GIC `interrupts` specifier: an SPI (INTID 32 + n).
const GIC_SPI: u32 = 0;
/// First cell of a GIC `interrupts` specifier: a PPI (INTID 16 + n).
const GIC_PPI: u32 = 1;
/// Third cell of a GIC `interrupts` specifier: level-sensitive, active high.
const IRQ_LEVEL_HIGH: u32 = 4;

/// MPIDR_EL1's affinity fields: Aff3 (bits 39:32) and Aff2..Aff0 (bits 23:0). A cpu node's
/// `reg` holds these and nothing else (the U and MT bits and RES1 bit 31 stay out).
const MPIDR_AFFINITY: u64 = 0xff_00ff_ffff;

/// PSCI 0.2+ function ids (SMC Calling Convention, PSCI DEN0022), as QEMU `virt` lists them for
/// guests that read them from the node rather than from the standard.
const PSCI_CPU_SUSPEND_64: u32 = 0xc400_0001;
const PSCI_CPU_OFF: u32 = 0x8400_0002;
const PSCI_CPU_ON_64: u32 = 0xc400_0003;
const PSCI_MIGRATE_64: u32 = 0xc400_0005;

/// The most SPIs a GICv3 has: INTIDs 32..1019.
const GIC_MAX_SPIS: u32 = 988;

/// The node name of the UART, which `/chosen/stdout-path` names.
fn uart_node() -> String {
    format!("pl011@{:x}", layout::UART_BASE)
}

/// What the device tree describes: everything that varies from one machine to the next. The
/// addresses of the GIC and the UART are the machine's fixed memory map (`layout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineDescription {
    /// The guest physical address of RAM.
    pub ram_base: u64,
    /// The RAM size in bytes.
    pub ram_size: u64,
    /// Each vCPU's MPIDR_EL1, as the backend reports it, in vCPU index order.
    pub mpidrs: Vec<u64>,
    /// The backend created the in-kernel GICv3 ITS at `layout::GIC_ITS_BASE`.
    pub its: bool,
    /// The number of SPIs the GIC was created with.
    pub num_spis: u32,
    /// Describe the PMU (PMUv3 is on in every vCPU, its overflow interrupt on PPI 7).
    pub pmu: bool,
    /// `/chosen`.
    pub chosen: Chosen,
}

/// The `/chosen` node: what the loader tells the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chosen {
    /// `bootargs`, the kernel command line; left out when empty.
    pub bootargs: String,
    /// `linux,initrd-start` and `linux,initrd-end`, when there is an initrd.
    pub initrd: Option<Range<u64>>,
    /// `rng-seed`: entropy for the guest's random number generator; left out when empty.
    pub rng_seed: Vec<u8>,
    /// `kaslr-seed`: the seed of the kernel's address randomization.
    pub kaslr_seed: Option<u64>,
}

/// Why a device tree cannot be built.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FdtError {
    /// No vCPU.
    #[error("the machine needs at least one vCPU")]
    NoVcpus,
    /// More vCPUs than the redistributor window holds.
    #[error(
        "{count} vCPUs need {need:#x} bytes of GICv3 redistributors at {base:#x}, but the window ends \
         at {end:#x}: at most {max} vCPUs",
        base = layout::GIC_REDIST_BASE,
        end = layout::GIC_REDIST_END,
        max = layout::MAX_VCPUS
    )]
    TooManyVcpus {
        /// vCPUs asked for.
        count: usize,
        /// Bytes of redistributor frames they need.
        need: u64,
    },
    /// Two vCPUs share an affinity, so a cpu node's `reg` would not identify one.
    #[error("vCPUs {first} and {second} have the same MPIDR affinity {affinity:#x}")]
    DuplicateMpidr {
        /// The lower vCPU index.
        first: usize,
        /// The higher vCPU index.
        second: usize,
        /// The shared affinity.
        affinity: u64,
    },
    /// RAM is empty or runs past the end of the address space.
    #[error("RAM of {size:#x} bytes at {base:#x} is empty or runs past the end of the address space")]
    BadRam {
        /// Its base.
        base: u64,
        /// Its size.
        size: u64,
    },
    /// The GIC has too few SPIs for the UART, or more than a GICv3 can have.
    #[error(
        "a GIC with {num_spis} SPIs cannot serve the PL011 on SPI {uart} (a GICv3 has 1 to {GIC_MAX_SPIS} \
         SPIs)",
        uart = layout::UART_SPI
    )]
    BadSpiCount {
        /// The SPI count given.
        num_spis: u32,
    },
    /// The initrd range is empty or not inside RAM.
    #[error("the initrd {start:#x}..{end:#x} is empty or not inside RAM {ram_start:#x}..{ram_end:#x}")]
    BadInitrd {
        /// Its first byte.
        start: u64,
        /// Its end.
        end: u64,
        /// RAM's first byte.
        ram_start: u64,
        /// RAM's end.
        ram_end: u64,
    },
    /// The command line holds a NUL byte, which would end the property early.
    #[error("the kernel command line holds a NUL byte at offset {0}")]
    NulInBootargs(usize),
    /// The blob is larger than the boot protocol accepts.
    #[error("the device tree is {size} bytes; the arm64 boot protocol accepts at most {MAX_FDT_SIZE}")]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// The writer refused a node or property.
    #[error("writing the device tree: {0}")]
    Writer(#[from] vm_fdt::Error),
}

impl MachineDescription {
    /// Checks what the writer cannot: the vCPU count against the redistributor window, unique
    /// affinities, RAM, the SPI count, the initrd range and the command line.
    fn validate(&self) -> Result<(), FdtError> {
        let count = self.mpidrs.len();
        if count == 0 {
            return Err(FdtError::NoVcpus);
        }
        if count > layout::MAX_VCPUS as usize {
            return Err(FdtError::TooManyVcpus {
                count,
                need: (count as u64).saturating_mul(layout::GIC_REDIST_STRIDE),
            });
        }
        for (second, mpidr) in self.mpidrs.iter().enumerate() {
            let affinity = mpidr & MPIDR_AFFINITY;
            if let Some(first) = self.mpidrs[..second].iter().position(|m| m & MPIDR_AFFINITY == affinity) {
                return Err(FdtError::DuplicateMpidr { first, second, affinity });
            }
        }
        let ram_end = self.ram_base.checked_add(self.ram_size).filter(|_| self.ram_size > 0);
        let ram_end = ram_end.ok_or(FdtError::BadRam { base: self.ram_base, size: self.ram_size })?;
        if self.num_spis <= layout::UART_SPI || self.num_spis > GIC_MAX_SPIS {
            return Err(FdtError::BadSpiCount { num_spis: self.num_spis });
        }
        if let Some(initrd) = &self.chosen.initrd {
            if initrd.is_empty() || initrd.start < self.ram_base || initrd.end > ram_end {
                return Err(FdtError::BadInitrd {
                    start: initrd.start,
                    end: initrd.end,
                    ram_start: self.ram_base,
                    ram_end,
                });
            }
        }
        if let Some(at) = self.chosen.bootargs.bytes().position(|b| b == 0) {
            return Err(FdtError::NulInBootargs(at));
        }
        Ok(())
    }
}

/// Builds the device tree blob of the machine `desc` describes.
pub fn build(desc: &MachineDescription) -> Result<Vec<u8>, FdtError> {
    desc.validate()?;
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", "linux,dummy-virt")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_u32("interrupt-parent", PHANDLE_GIC)?;

    chosen(&mut fdt, &desc.chosen)?;
    memory(&mut fdt, desc.ram_base, desc.ram_size)?;
    cpus(&mut fdt, &desc.mpidrs)?;
    psci(&mut fdt)?;
    gic(&mut fdt, desc.mpidrs.len() as u32, desc.its)?;
    timer(&mut fdt)?;
    if desc.pmu {
        pmu(&mut fdt)?;
    }
    apb_pclk(&mut fdt)?;
    uart(&mut fdt)?;

    fdt.end_node(root)?;
    let blob = fdt.finish()?;
    if blob.len() > MAX_FDT_SIZE {
        return Err(FdtError::TooLarge { size: blob.len() });
    }
    Ok(blob)
}

/// `/chosen`: command line, console, initrd and seeds.
fn chosen(fdt: &mut FdtWriter, chosen: &Chosen) -> Result<(), FdtError> {
    let node = fdt.begin_node("chosen")?;
    if !chosen.bootargs.is_empty() {
        fdt.property_string("bootargs", &chosen.bootargs)?;
    }
    fdt.property_string("stdout-path", &format!("/{}", uart_node()))?;
    if let Some(initrd) = &chosen.initrd {
        fdt.property_u64("linux,initrd-start", initrd.start)?;
        fdt.property_u64("linux,initrd-end", initrd.end)?;
    }
    if !chosen.rng_seed.is_empty() {
        fdt.property("rng-seed", &chosen.rng_seed)?;
    }
    if let Some(seed) = chosen.kaslr_seed {
        fdt.property_u64("kaslr-seed", seed)?;
    }
    Ok(fdt.end_node(node)?)
}

/// `/memory@<base>`: the one RAM block.
fn memory(fdt: &mut FdtWriter, base: u64, size: u64) -> Result<(), FdtError> {
    let node = fdt.begin_node(&format!("memory@{base:x}"))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &[base, size])?;
    Ok(fdt.end_node(node)?)
}

/// `/cpus`: one node per vCPU, named and addressed by its MPIDR affinity, started through PSCI.
fn cpus(fdt: &mut FdtWriter, mpidrs: &[u64]) -> Result<(), FdtError> {
    let node = fdt.begin_node("cpus")?;
    // Two cells: an affinity with Aff3 set does not fit in one (the arm cpus binding).
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 0)?;
    for mpidr in mpidrs {
        let affinity = mpidr & MPIDR_AFFINITY;
        let cpu = fdt.begin_node(&format!("cpu@{affinity:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "arm,armv8")?;
        fdt.property_string("enable-method", "psci")?;
        fdt.property_u64("reg", affinity)?;
        fdt.end_node(cpu)?;
    }
    Ok(fdt.end_node(node)?)
}

/// `/psci`: PSCI 1.0 through HVC, which the backend implements.
fn psci(fdt: &mut FdtWriter) -> Result<(), FdtError> {
    let node = fdt.begin_node("psci")?;
    fdt.property_string_list(
        "compatible",
        vec!["arm,psci-1.0".into(), "arm,psci-0.2".into(), "arm,psci".into()],
    )?;
    fdt.property_string("method", "hvc")?;
    fdt.property_u32("cpu_suspend", PSCI_CPU_SUSPEND_64)?;
    fdt.property_u32("cpu_off", PSCI_CPU_OFF)?;
    fdt.property_u32("cpu_on", PSCI_CPU_ON_64)?;
    fdt.property_u32("migrate", PSCI_MIGRATE_64)?;
    Ok(fdt.end_node(node)?)
}

/// `/intc@<GICD>`: the GICv3 with one redistributor region sized for `vcpus`, and its ITS.
fn gic(fdt: &mut FdtWriter, vcpus: u32, its: bool) -> Result<(), FdtError> {
    let node = fdt.begin_node(&format!("intc@{:x}", layout::GIC_DIST_BASE))?;
    fdt.property_string("compatible", "arm,gic-v3")?;
    fdt.property_u32("#interrupt-cells", 3)?;
    fdt.property_null("interrupt-controller")?;
    // The ITS child's `reg` is in the parent's address space, mapped one to one.
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_null("ranges")?;
    fdt.property_u32("#redistributor-regions", 1)?;
    fdt.property_array_u64(
        "reg",
        &[
            layout::GIC_DIST_BASE,
            layout::GIC_DIST_SIZE,
            layout::GIC_REDIST_BASE,
            layout::gic_redist_size(vcpus),
        ],
    )?;
    fdt.property_array_u32("interrupts", &[GIC_PPI, layout::ppi::GIC_MAINTENANCE, IRQ_LEVEL_HIGH])?;
    fdt.property_phandle(PHANDLE_GIC)?;
    if its {
        let its = fdt.begin_node(&format!("its@{:x}", layout::GIC_ITS_BASE))?;
        fdt.property_string("compatible", "arm,gic-v3-its")?;
        fdt.property_null("msi-controller")?;
        fdt.property_u32("#msi-cells", 1)?;
        fdt.property_array_u64("reg", &[layout::GIC_ITS_BASE, layout::GIC_ITS_SIZE])?;
        fdt.property_phandle(PHANDLE_ITS)?;
        fdt.end_node(its)?;
    }
    Ok(fdt.end_node(node)?)
}

/// `/timer`: the architected timer's four PPIs, level-sensitive, in the binding's order
/// (secure physical, non-secure physical, virtual, hypervisor physical).
fn timer(fdt: &mut FdtWriter) -> Result<(), FdtError> {
    let node = fdt.begin_node("timer")?;
    fdt.property_string_list("compatible", vec!["arm,armv8-timer".into(), "arm,armv7-timer".into()])?;
    let mut cells = Vec::new();
    for ppi in [
        layout::ppi::TIMER_SECURE_PHYS,
        layout::ppi::TIMER_PHYS,
        layout::ppi::TIMER_VIRT,
        layout::ppi::TIMER_HYP,
    ] {
        cells.extend([GIC_PPI, ppi, IRQ_LEVEL_HIGH]);
    }
    fdt.property_array_u32("interrupts", &cells)?;
    // The timer keeps counting in every power state the guest can enter.
    fdt.property_null("always-on")?;
    Ok(fdt.end_node(node)?)
}

/// `/pmu`: PMUv3 with its overflow interrupt on a PPI.
fn pmu(fdt: &mut FdtWriter) -> Result<(), FdtError> {
    let node = fdt.begin_node("pmu")?;
    fdt.property_string("compatible", "arm,armv8-pmuv3")?;
    fdt.property_array_u32("interrupts", &[GIC_PPI, layout::ppi::PMU, IRQ_LEVEL_HIGH])?;
    Ok(fdt.end_node(node)?)
}

/// `/apb-pclk`: the fixed clock the PL011 names; Linux's amba bus does not probe the UART
/// without it.
fn apb_pclk(fdt: &mut FdtWriter) -> Result<(), FdtError> {
    let node = fdt.begin_node("apb-pclk")?;
    fdt.property_string("compatible", "fixed-clock")?;
    fdt.property_u32("#clock-cells", 0)?;
    fdt.property_u32("clock-frequency", APB_PCLK_HZ)?;
    fdt.property_string("clock-output-names", "clk24mhz")?;
    fdt.property_phandle(PHANDLE_APB_PCLK)?;
    Ok(fdt.end_node(node)?)
}

/// `/pl011@<base>`: the console UART on its SPI, clocked by `apb-pclk` for both its clocks.
fn uart(fdt: &mut FdtWriter) -> Result<(), FdtError> {
    let node = fdt.begin_node(&uart_node())?;
    fdt.property_string_list("compatible", vec!["arm,pl011".into(), "arm,primecell".into()])?;
    fdt.property_array_u64("reg", &[layout::UART_BASE, PL011_SIZE])?;
    fdt.property_array_u32("interrupts", &[GIC_SPI, layout::UART_SPI, IRQ_LEVEL_HIGH])?;
    fdt.property_array_u32("clocks", &[PHANDLE_APB_PCLK, PHANDLE_APB_PCLK])?;
    fdt.property_string_list("clock-names", vec!["uartclk".into(), "apb_pclk".into()])?;
    Ok(fdt.end_node(node)?)
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        process::{Command, Stdio},
    };

    use super::*;

    /// MPIDR_EL1 as KVM reports vCPU `i`'s: RES1 bit 31, Aff0 = i % 16, Aff1 = i / 16.
    fn kvm_mpidr(i: u64) -> u64 {
        (1 << 31) | ((i / 16) << 8) | (i % 16)
    }

    fn description(cpus: u64) -> MachineDescription {
        MachineDescription {
            ram_base: 0x4000_0000,
            ram_size: 0x800_0000,
            mpidrs: (0..cpus).map(kvm_mpidr).collect(),
            its: true,
            num_spis: layout::NUM_SPIS,
            pmu: true,
            chosen: Chosen {
                bootargs: "console=ttyAMA0 earlycon".into(),
                initrd: Some(0x4300_0000..0x4310_0000),
                rng_seed: (0..32).collect(),
                kaslr_seed: Some(0x0123_4567_89ab_cdef),
            },
        }
    }

    /// Decompiles `blob` with dtc, which must be installed (Debian's `device-tree-compiler`):
    /// a machine without it fails this test rather than skipping it. dtc's own checks must pass
    /// without a warning.
    fn decompile(blob: &[u8]) -> String {
        let found = Command::new("sh").args(["-c", "command -v dtc"]).output().expect("running sh");
        assert!(found.status.success(), "dtc is not installed (Debian package device-tree-compiler)");
        let mut child = Command::new("dtc")
            .args(["-I", "dtb", "-O", "dts", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting dtc");
        child.stdin.take().expect("dtc's stdin").write_all(blob).expect("writing to dtc");
        let out = child.wait_with_output().expect("waiting for dtc");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "dtc refused the blob: {stderr}");
        assert!(stderr.trim().is_empty(), "dtc warned: {stderr}");
        String::from_utf8(out.stdout).expect("dtc prints text")
    }

    /// The lines of node `name` in dtc's output that are its own (its properties, not its
    /// children's), without indentation.
    fn node<'a>(dts: &'a str, name: &str) -> Vec<&'a str> {
        let tabs = |line: &str| line.len() - line.trim_start_matches('\t').len();
        let mut lines = dts.lines().skip_while(|line| line.trim_start() != format!("{name} {{"));
        let depth = lines.next().map(tabs).unwrap_or_else(|| panic!("no node {name} in:\n{dts}"));
        lines
            .take_while(|line| tabs(line) > depth)
            .filter(|line| tabs(line) == depth + 1)
            .map(str::trim_start)
            .collect()
    }

    fn has(dts: &str, name: &str, line: &str) {
        let lines = node(dts, name);
        assert!(lines.contains(&line), "node {name} lacks `{line}`: {lines:#?}");
    }

    #[test]
    fn dtc_reads_the_tree_with_every_node_qemu_virt_has() {
        let dts = decompile(&build(&description(2)).expect("building"));
        assert!(dts.contains("\tcompatible = \"linux,dummy-virt\";\n"), "{dts}");
        assert!(dts.contains("\t#address-cells = <0x02>;\n\t#size-cells = <0x02>;\n"), "{dts}");
        assert!(dts.contains("\tinterrupt-parent = <0x01>;\n"), "{dts}");

        has(&dts, "memory@40000000", "device_type = \"memory\";");
        has(&dts, "memory@40000000", "reg = <0x00 0x40000000 0x00 0x8000000>;");

        has(&dts, "cpus", "#address-cells = <0x02>;");
        has(&dts, "cpus", "#size-cells = <0x00>;");
        for (name, reg) in [("cpu@0", "<0x00 0x00>"), ("cpu@1", "<0x00 0x01>")] {
            has(&dts, name, "device_type = \"cpu\";");
            has(&dts, name, "compatible = \"arm,armv8\";");
            has(&dts, name, "enable-method = \"psci\";");
            has(&dts, name, &format!("reg = {reg};"));
        }

        has(&dts, "psci", "compatible = \"arm,psci-1.0\\0arm,psci-0.2\\0arm,psci\";");
        has(&dts, "psci", "method = \"hvc\";");
        has(&dts, "psci", "cpu_on = <0xc4000003>;");
        has(&dts, "psci", "cpu_off = <0x84000002>;");
        has(&dts, "psci", "cpu_suspend = <0xc4000001>;");
        has(&dts, "psci", "migrate = <0xc4000005>;");

        let gic = "intc@8000000";
        has(&dts, gic, "compatible = \"arm,gic-v3\";");
        has(&dts, gic, "#interrupt-cells = <0x03>;");
        has(&dts, gic, "interrupt-controller;");
        has(&dts, gic, "ranges;");
        has(&dts, gic, "#redistributor-regions = <0x01>;");
        has(&dts, gic, "reg = <0x00 0x8000000 0x00 0x10000 0x00 0x80a0000 0x00 0x40000>;");
        has(&dts, gic, "interrupts = <0x01 0x09 0x04>;");
        has(&dts, gic, "phandle = <0x01>;");
        has(&dts, "its@8080000", "compatible = \"arm,gic-v3-its\";");
        has(&dts, "its@8080000", "msi-controller;");
        has(&dts, "its@8080000", "#msi-cells = <0x01>;");
        has(&dts, "its@8080000", "reg = <0x00 0x8080000 0x00 0x20000>;");
        has(&dts, "its@8080000", "phandle = <0x02>;");

        has(&dts, "timer", "compatible = \"arm,armv8-timer\\0arm,armv7-timer\";");
        has(&dts, "timer", "interrupts = <0x01 0x0d 0x04 0x01 0x0e 0x04 0x01 0x0b 0x04 0x01 0x0a 0x04>;");
        has(&dts, "timer", "always-on;");
        has(&dts, "pmu", "compatible = \"arm,armv8-pmuv3\";");
        has(&dts, "pmu", "interrupts = <0x01 0x07 0x04>;");

        has(&dts, "apb-pclk", "compatible = \"fixed-clock\";");
        has(&dts, "apb-pclk", "#clock-cells = <0x00>;");
        has(&dts, "apb-pclk", "clock-frequency = <0x16e3600>;");
        has(&dts, "apb-pclk", "phandle = <0x03>;");
        let uart = "pl011@9000000";
        has(&dts, uart, "compatible = \"arm,pl011\\0arm,primecell\";");
        has(&dts, uart, "reg = <0x00 0x9000000 0x00 0x1000>;");
        has(&dts, uart, "interrupts = <0x00 0x01 0x04>;");
        has(&dts, uart, "clocks = <0x03 0x03>;");
        has(&dts, uart, "clock-names = \"uartclk\\0apb_pclk\";");

        has(&dts, "chosen", "bootargs = \"console=ttyAMA0 earlycon\";");
        has(&dts, "chosen", "stdout-path = \"/pl011@9000000\";");
        has(&dts, "chosen", "linux,initrd-start = <0x00 0x43000000>;");
        has(&dts, "chosen", "linux,initrd-end = <0x00 0x43100000>;");
        has(&dts, "chosen", "kaslr-seed = <0x1234567 0x89abcdef>;");
        // dtc prints a byte string whose length is a multiple of 4 as big-endian cells.
        has(
            &dts,
            "chosen",
            "rng-seed = <0x10203 0x4050607 0x8090a0b 0xc0d0e0f 0x10111213 0x14151617 0x18191a1b 0x1c1d1e1f>;",
        );
    }

    #[test]
    fn optional_nodes_and_properties_are_left_out() {
        let mut desc = description(1);
        desc.its = false;
        desc.pmu = false;
        desc.chosen = Chosen::default();
        let dts = decompile(&build(&desc).expect("building"));
        assert!(!dts.contains("its@"), "{dts}");
        assert!(!dts.contains("pmu"), "{dts}");
        for absent in ["bootargs", "linux,initrd", "rng-seed", "kaslr-seed"] {
            assert!(!dts.contains(absent), "{absent} should be absent:\n{dts}");
        }
        has(&dts, "chosen", "stdout-path = \"/pl011@9000000\";");
        has(&dts, "intc@8000000", "reg = <0x00 0x8000000 0x00 0x10000 0x00 0x80a0000 0x00 0x20000>;");
    }

    #[test]
    fn cpu_nodes_carry_only_the_affinity_bits() {
        let mut desc = description(1);
        // Aff3 = 1, Aff2 = 2, Aff1 = 3, Aff0 = 4, with RES1 bit 31, U (bit 30) and MT (bit 24).
        desc.mpidrs = vec![(1 << 32) | (1 << 31) | (1 << 30) | (1 << 24) | 0x02_0304];
        let dts = decompile(&build(&desc).expect("building"));
        has(&dts, "cpu@100020304", "reg = <0x01 0x20304>;");
    }

    #[test]
    fn the_largest_machine_fits_well_inside_the_boot_protocol_limit() {
        let mut desc = description(u64::from(layout::MAX_VCPUS));
        desc.chosen.bootargs = "x".repeat(2047);
        let blob = build(&desc).expect("building");
        assert!(blob.len() < 32 << 10, "{} bytes", blob.len());
        let dts = decompile(&blob);
        assert_eq!(dts.matches("enable-method = \"psci\";").count(), layout::MAX_VCPUS as usize);
        // vCPU 122: Aff1 = 7, Aff0 = 10.
        has(&dts, "cpu@70a", "reg = <0x00 0x70a>;");
    }

    #[test]
    fn impossible_machines_are_refused_with_reasons() {
        let err = |desc: MachineDescription| build(&desc).expect_err("should fail");
        assert_eq!(err(description(0)), FdtError::NoVcpus);
        let too_many = err(description(u64::from(layout::MAX_VCPUS) + 1));
        assert_eq!(
            too_many.to_string(),
            "124 vCPUs need 0xf80000 bytes of GICv3 redistributors at 0x80a0000, but the window ends at \
             0x9000000: at most 123 vCPUs"
        );

        let mut twins = description(2);
        twins.mpidrs[1] = twins.mpidrs[0] | (1 << 30);
        assert_eq!(err(twins), FdtError::DuplicateMpidr { first: 0, second: 1, affinity: 0 });

        let mut ram = description(1);
        ram.ram_size = 0;
        assert!(matches!(err(ram), FdtError::BadRam { .. }));
        let mut ram = description(1);
        ram.ram_base = u64::MAX - 10;
        assert!(matches!(err(ram), FdtError::BadRam { .. }));

        for num_spis in [0, 1, 989] {
            let mut spis = description(1);
            spis.num_spis = num_spis;
            assert_eq!(err(spis), FdtError::BadSpiCount { num_spis });
        }

        for initrd in [0x4300_0000..0x4300_0000, 0x3000_0000..0x4000_1000, 0x47ff_f000..0x4800_1000] {
            let mut bad = description(1);
            bad.chosen.initrd = Some(initrd);
            assert!(err(bad).to_string().contains("not inside RAM 0x40000000..0x48000000"));
        }

        let mut nul = description(1);
        nul.chosen.bootargs = "console=ttyAMA0\0rest".into();
        assert_eq!(err(nul), FdtError::NulInBootargs(15));

        let mut huge = description(1);
        huge.chosen.rng_seed = vec![0; MAX_FDT_SIZE];
        assert!(matches!(err(huge), FdtError::TooLarge { .. }));
    }
}
