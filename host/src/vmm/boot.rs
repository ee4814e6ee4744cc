//! Where a guest's kernel, initrd and device tree go in RAM, and what its boot vCPU starts with:
//! Linux's arm64 boot protocol (`Documentation/arch/arm64/booting.rst`) for an `Image`, and a
//! device tree high in RAM for a bare-metal ELF or raw image.
//!
//! # The Image header, and linux-loader
//! The kernel is copied into RAM by `linux-loader`'s arm64 loader (`linux_loader::loader::pe::PE`)
//! on aarch64 hosts, the only ones where a guest runs. That loader is compiled only when the
//! *build* target is aarch64 or riscv64, reports neither `image_size` nor the flags, and copies the
//! file without checking that `image_size` bytes fit. So the planning here, which every error must
//! come from before a backend is opened, and which is unit-tested on any build host, reads the
//! 64-byte header itself: the placement rules need `image_size`, since the kernel uses that much
//! memory from its load address (its bss is not in the file), and the initrd and the device tree
//! must start beyond it. Where linux-loader is not built, the file is copied directly.
//!
//! # Linux layout
//! With RAM at `base` (2 MiB aligned):
//!
//! - kernel: at `base + text_offset`, taking `max(image_size, file size)` bytes. Flags bit 3
//!   clear asks for a base as low in RAM as possible, bit 3 set accepts any: the base of RAM
//!   serves both.
//! - initrd: from the next 64 KiB boundary after the kernel (the largest arm64 page size, so the
//!   kernel frees whole pages of it).
//! - device tree: from the next 2 MiB boundary after the kernel or initrd, in a 2 MiB block of
//!   its own.
//!
//! The device tree's block satisfies every rule the boot document has had: 8-byte aligned, at
//! most 2 MiB (`MAX_FDT_SIZE`), never sharing a 2 MiB region with memory the kernel maps
//! differently, and (for kernels before 4.2) within 512 MiB of the kernel's start whenever the
//! kernel and initrd are smaller than that. It follows the initrd as QEMU's `virt` does; QEMU
//! puts the device tree at the base of RAM only for firmware, which is not loaded here. The
//! initrd and the kernel sit in one 1 GiB-aligned window of at most 32 GiB, as the document
//! requires.

use std::ops::Range;

use thiserror::Error;

use super::{fdt::MAX_FDT_SIZE, image::LoadedImage, ram::GuestRam};

/// PSTATE at entry: EL1h with D, A, I and F masked.
pub const PSTATE_EL1H_DAIF: u64 = 0x3c5;

/// The kernel's command line buffer, including the terminating NUL (arm64 `COMMAND_LINE_SIZE`).
pub const COMMAND_LINE_SIZE: usize = 2048;
/// The alignment of the base the kernel's `text_offset` counts from (`MIN_KIMG_ALIGN`).
pub const KERNEL_ALIGN: u64 = 2 << 20;
/// The alignment of an initrd: the largest arm64 translation granule.
const INITRD_ALIGN: u64 = 64 << 10;
/// The alignment, and the size of the block, of a Linux guest's device tree.
const DTB_BLOCK: u64 = MAX_FDT_SIZE as u64;
/// The alignment of a bare-metal guest's device tree: the largest arm64 translation granule, so
/// a guest maps it with pages that hold nothing else.
const BARE_METAL_DTB_ALIGN: u64 = 64 << 10;
/// The kernel and initrd must share a window this large ...
const INITRD_WINDOW: u64 = 32 << 30;
/// ... aligned to this.
const INITRD_WINDOW_ALIGN: u64 = 1 << 30;

/// The size of the arm64 Image header.
const HEADER_SIZE: usize = 64;
/// Where the header's magic sits, and its value: "ARM\x64" read as a little-endian u32.
const MAGIC_OFFSET: usize = 0x38;
const ARM64_MAGIC: u32 = 0x644d_5241;

/// Why a guest cannot be laid out or loaded. Each message is one line naming what and the sizes.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BootError {
    /// The file is too short to hold the header.
    #[error("the kernel is {len} bytes, shorter than the {HEADER_SIZE}-byte arm64 Image header")]
    TooShort {
        /// The file's length.
        len: usize,
    },
    /// A gzip file: arm64 leaves decompression to the boot loader.
    #[error("the kernel is gzip-compressed; decompress it (gunzip) to an arm64 Image first")]
    Gzip,
    /// An EFI zboot image: a compressed kernel that only an EFI firmware can start.
    #[error(
        "the kernel is an EFI zboot image (compressed, started by EFI firmware); give its uncompressed Image"
    )]
    EfiZboot,
    /// No arm64 magic.
    #[error(
        "the kernel is not an arm64 Linux Image: no \"ARM\\x64\" magic at offset {MAGIC_OFFSET:#x} \
         (found {found:#010x})"
    )]
    BadMagic {
        /// The little-endian word found there.
        found: u32,
    },
    /// `image_size` 0: a kernel older than Linux 3.17, whose memory footprint is unknown.
    #[error(
        "the arm64 Image header's image_size is 0 (a kernel older than Linux 3.17): its size in memory \
         is unknown"
    )]
    NoImageSize,
    /// The kernel does not fit in RAM.
    #[error(
        "the kernel needs {size:#x} bytes at {load:#x} (text_offset {text_offset:#x}), but RAM ends at \
         {ram_end:#x}"
    )]
    KernelTooLarge {
        /// Where it would load.
        load: u64,
        /// What it needs: `max(image_size, file size)`.
        size: u64,
        /// Its header's text_offset.
        text_offset: u64,
        /// The end of RAM.
        ram_end: u64,
    },
    /// An initrd of zero bytes.
    #[error("the initrd is empty")]
    EmptyInitrd,
    /// The initrd does not fit after the kernel.
    #[error(
        "the initrd ({size} bytes) does not fit in RAM after the kernel: it would take \
         {start:#x}..{end:#x}, and RAM ends at {ram_end:#x}"
    )]
    InitrdTooLarge {
        /// Its size.
        size: u64,
        /// Where it would start.
        start: u64,
        /// Where it would end (saturated on overflow).
        end: u64,
        /// The end of RAM.
        ram_end: u64,
    },
    /// Kernel and initrd span more than the window the boot document allows.
    #[error(
        "the kernel at {kernel:#x} and the initrd ending at {end:#x} do not fit in one 1 GiB-aligned \
         32 GiB window"
    )]
    InitrdWindow {
        /// The kernel's load address.
        kernel: u64,
        /// The initrd's end.
        end: u64,
    },
    /// No room for the device tree's block after the kernel and initrd.
    #[error(
        "no room for the device tree: its 2 MiB block at {start:#x} after the kernel and initrd ends \
         past the end of RAM at {ram_end:#x}"
    )]
    NoRoomForDtb {
        /// Where the block would start.
        start: u64,
        /// The end of RAM.
        ram_end: u64,
    },
    /// No room for a bare-metal image's device tree outside the image.
    #[error(
        "no room for the {len}-byte device tree in RAM {ram_start:#x}..{ram_end:#x} that does not \
         overlap the image at {image_start:#x}..{image_end:#x}"
    )]
    DtbOverlap {
        /// The device tree's size.
        len: u64,
        /// The image's first byte.
        image_start: u64,
        /// The image's end.
        image_end: u64,
        /// RAM's first byte.
        ram_start: u64,
        /// RAM's end.
        ram_end: u64,
    },
    /// A device tree larger than the boot protocol allows.
    #[error("the device tree is {len} bytes; the arm64 boot protocol accepts at most {MAX_FDT_SIZE}")]
    DtbTooLarge {
        /// Its size.
        len: usize,
    },
    /// A command line the kernel would cut short.
    #[error(
        "the kernel command line is {len} bytes; arm64 Linux takes at most {} (COMMAND_LINE_SIZE \
         {COMMAND_LINE_SIZE} with the NUL)",
        COMMAND_LINE_SIZE - 1
    )]
    CmdlineTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A command line holding a NUL, which would end it early.
    #[error("the kernel command line holds a NUL byte at offset {0}")]
    CmdlineNul(usize),
    /// The bytes given to `load_linux` are not the ones the layout was planned for.
    #[error("the {what} is {len} bytes, but the layout was planned for {planned}")]
    NotAsPlanned {
        /// "kernel" or "initrd".
        what: &'static str,
        /// Its length now.
        len: u64,
        /// Its length when planned.
        planned: u64,
    },
    /// Writing guest RAM failed.
    #[error("loading the {what}: {message}")]
    Ram {
        /// What was being written.
        what: &'static str,
        /// Why it failed.
        message: String,
    },
}

/// The fields of the arm64 Image header this machine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Where the image goes, from a 2 MiB-aligned base.
    pub text_offset: u64,
    /// How much memory the kernel uses from its load address, bss included.
    pub image_size: u64,
    /// Bit 0: big-endian kernel; bits 2:1: page size (1: 4K, 2: 16K, 3: 64K); bit 3: the base
    /// may be anywhere in RAM rather than as low as possible.
    pub flags: u64,
}

fn le64(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(word)
}

impl ImageHeader {
    /// Reads the header at the start of `kernel`, refusing anything that is not an arm64 Image
    /// with an `image_size`.
    pub fn parse(kernel: &[u8]) -> Result<Self, BootError> {
        if kernel.starts_with(&[0x1f, 0x8b]) {
            return Err(BootError::Gzip);
        }
        if kernel.starts_with(b"MZ") && kernel.get(4..8) == Some(b"zimg") {
            return Err(BootError::EfiZboot);
        }
        if kernel.len() < HEADER_SIZE {
            return Err(BootError::TooShort { len: kernel.len() });
        }
        let mut magic = [0; 4];
        magic.copy_from_slice(&kernel[MAGIC_OFFSET..MAGIC_OFFSET + 4]);
        let found = u32::from_le_bytes(magic);
        if found != ARM64_MAGIC {
            return Err(BootError::BadMagic { found });
        }
        let header = Self {
            text_offset: le64(kernel, 0x08),
            image_size: le64(kernel, 0x10),
            flags: le64(kernel, 0x18),
        };
        if header.image_size == 0 {
            return Err(BootError::NoImageSize);
        }
        Ok(header)
    }
}

/// Refuses a command line longer than the kernel accepts, or holding a NUL.
pub fn check_cmdline(cmdline: &str) -> Result<(), BootError> {
    if let Some(at) = cmdline.bytes().position(|b| b == 0) {
        return Err(BootError::CmdlineNul(at));
    }
    // Checked here rather than with linux-loader's `Cmdline`, which trims the text, splits it
    // at " -- " and refuses init arguments alone: `/chosen/bootargs` carries the user's text
    // as given, as QEMU passes it.
    if cmdline.len() >= COMMAND_LINE_SIZE {
        return Err(BootError::CmdlineTooLong { len: cmdline.len() });
    }
    Ok(())
}

/// Where a Linux guest's parts go, planned from the kernel's header and the sizes alone, so that
/// every error shows before a backend is opened. The device tree is built afterwards (it needs
/// the vCPUs' MPIDRs) and names `initrd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxLayout {
    /// The kernel's header.
    pub header: ImageHeader,
    /// The kernel: its load address (and entry point) to `max(image_size, file size)` beyond.
    pub kernel: Range<u64>,
    /// The initrd, if there is one.
    pub initrd: Option<Range<u64>>,
    /// The device tree's 2 MiB block; the tree itself starts at its start.
    pub dtb: Range<u64>,
    kernel_file_len: u64,
}

fn align_up(value: u64, align: u64) -> Option<u64> {
    value.checked_next_multiple_of(align)
}

fn align_down(value: u64, align: u64) -> u64 {
    value - value % align
}

impl LinuxLayout {
    /// Plans a kernel (the Image file's bytes) and an initrd of `initrd_len` bytes in RAM of
    /// `ram_size` bytes at `ram_base`.
    pub fn plan(
        ram_base: u64,
        ram_size: u64,
        kernel: &[u8],
        initrd_len: Option<u64>,
    ) -> Result<Self, BootError> {
        let header = ImageHeader::parse(kernel)?;
        let ram_end = ram_base.saturating_add(ram_size);
        let kernel_file_len = kernel.len() as u64;
        let size = header.image_size.max(kernel_file_len);
        let too_large =
            |load| BootError::KernelTooLarge { load, size, text_offset: header.text_offset, ram_end };
        let load = align_up(ram_base, KERNEL_ALIGN)
            .and_then(|base| base.checked_add(header.text_offset))
            .ok_or(too_large(u64::MAX))?;
        let kernel_end = load.checked_add(size).filter(|end| *end <= ram_end).ok_or(too_large(load))?;

        let mut used_end = kernel_end;
        let initrd = match initrd_len {
            None => None,
            Some(0) => return Err(BootError::EmptyInitrd),
            Some(len) => {
                let start = align_up(kernel_end, INITRD_ALIGN).unwrap_or(u64::MAX);
                let end = start.checked_add(len).filter(|end| *end <= ram_end);
                let end = end.ok_or(BootError::InitrdTooLarge {
                    size: len,
                    start,
                    end: start.saturating_add(len),
                    ram_end,
                })?;
                if end - align_down(load, INITRD_WINDOW_ALIGN) > INITRD_WINDOW {
                    return Err(BootError::InitrdWindow { kernel: load, end });
                }
                used_end = end;
                Some(start..end)
            }
        };

        let dtb_start = align_up(used_end, DTB_BLOCK).unwrap_or(u64::MAX);
        let dtb_end = dtb_start.checked_add(DTB_BLOCK).filter(|end| *end <= ram_end);
        let dtb_end = dtb_end.ok_or(BootError::NoRoomForDtb { start: dtb_start, ram_end })?;
        Ok(Self { header, kernel: load..kernel_end, initrd, dtb: dtb_start..dtb_end, kernel_file_len })
    }
}

/// What the boot vCPU starts with, and where everything was put. The machine applies it:
/// PC = `entry`, x0 = `x0` (the device tree), x1 to x3 = 0, PSTATE = `pstate` (EL1h, DAIF
/// masked); the MMU is off after a vCPU reset. The other vCPUs stay off until PSCI CPU_ON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan {
    /// The first instruction's guest physical address.
    pub entry: u64,
    /// x0: the device tree's guest physical address.
    pub x0: u64,
    /// PSTATE at entry.
    pub pstate: u64,
    /// The kernel or image, as far as it uses memory (bss included).
    pub kernel: Range<u64>,
    /// The initrd, if any.
    pub initrd: Option<Range<u64>>,
    /// The device tree as written.
    pub dtb: Range<u64>,
}

impl BootPlan {
    /// x0 to x3 at entry: the device tree's address, then three zeros (reserved by the protocol).
    pub fn x0_to_x3(&self) -> [u64; 4] {
        [self.x0, 0, 0, 0]
    }
}

fn write(ram: &GuestRam, addr: u64, bytes: &[u8], what: &'static str) -> Result<(), BootError> {
    ram.write(addr, bytes).map_err(|e| BootError::Ram { what, message: e.message.to_string() })
}

fn check_dtb_len(dtb: &[u8]) -> Result<(), BootError> {
    if dtb.len() > MAX_FDT_SIZE {
        return Err(BootError::DtbTooLarge { len: dtb.len() });
    }
    Ok(())
}

/// Copies the kernel to where `layout` planned it, with linux-loader's arm64 loader, and checks
/// that it put the kernel there.
#[cfg(target_arch = "aarch64")]
fn load_kernel(ram: &GuestRam, layout: &LinuxLayout, kernel: &[u8]) -> Result<(), BootError> {
    use linux_loader::loader::{pe::PE, KernelLoader};
    use vm_memory::GuestAddress;
    let base = layout.kernel.start - layout.header.text_offset;
    let loaded = PE::load(ram.memory(), Some(GuestAddress(base)), &mut std::io::Cursor::new(kernel), None)
        .map_err(|e| BootError::Ram { what: "kernel", message: format!("linux-loader: {e}") })?;
    if loaded.kernel_load.0 != layout.kernel.start {
        return Err(BootError::Ram {
            what: "kernel",
            message: format!(
                "linux-loader put it at {:#x}, not at the planned {:#x}",
                loaded.kernel_load.0, layout.kernel.start
            ),
        });
    }
    Ok(())
}

/// Copies the kernel to where `layout` planned it (linux-loader's arm64 loader is not built for
/// this host).
#[cfg(not(target_arch = "aarch64"))]
fn load_kernel(ram: &GuestRam, layout: &LinuxLayout, kernel: &[u8]) -> Result<(), BootError> {
    write(ram, layout.kernel.start, kernel, "kernel")
}

/// Loads a Linux guest as `layout` planned: the kernel, the initrd and the device tree (which
/// must name `layout.initrd`).
pub fn load_linux(
    ram: &GuestRam,
    layout: &LinuxLayout,
    kernel: &[u8],
    initrd: Option<&[u8]>,
    dtb: &[u8],
) -> Result<BootPlan, BootError> {
    let not_as_planned =
        |what, len: usize, planned| BootError::NotAsPlanned { what, len: len as u64, planned };
    if kernel.len() as u64 != layout.kernel_file_len {
        return Err(not_as_planned("kernel", kernel.len(), layout.kernel_file_len));
    }
    let planned_initrd = layout.initrd.as_ref().map_or(0, |r| r.end - r.start);
    if initrd.map_or(0, <[u8]>::len) as u64 != planned_initrd {
        return Err(not_as_planned("initrd", initrd.map_or(0, <[u8]>::len), planned_initrd));
    }
    check_dtb_len(dtb)?;
    load_kernel(ram, layout, kernel)?;
    if let (Some(range), Some(bytes)) = (&layout.initrd, initrd) {
        write(ram, range.start, bytes, "initrd")?;
    }
    write(ram, layout.dtb.start, dtb, "device tree")?;
    Ok(BootPlan {
        entry: layout.kernel.start,
        x0: layout.dtb.start,
        pstate: PSTATE_EL1H_DAIF,
        kernel: layout.kernel.clone(),
        initrd: layout.initrd.clone(),
        dtb: layout.dtb.start..layout.dtb.start + dtb.len() as u64,
    })
}

/// Where a bare-metal image's device tree of `len` bytes goes: as high in RAM as it fits,
/// 64 KiB aligned, so that a program's bss and stack, which follow its code upwards, reach it
/// last. If that would overlap the image (one loaded at the top of RAM), the highest place below
/// the image; failing both, an error.
pub fn place_dtb_high(ram_base: u64, ram_size: u64, image: &Range<u64>, len: u64) -> Result<u64, BootError> {
    let ram_end = ram_base.saturating_add(ram_size);
    let highest_below = |limit: u64| {
        let start = align_down(limit.checked_sub(len)?, BARE_METAL_DTB_ALIGN);
        (start >= ram_base).then_some(start)
    };
    let disjoint = |start: u64| start + len <= image.start || start >= image.end;
    highest_below(ram_end)
        .filter(|start| disjoint(*start))
        .or_else(|| highest_below(image.start.min(ram_end)))
        .ok_or(BootError::DtbOverlap {
            len,
            image_start: image.start,
            image_end: image.end,
            ram_start: ram_base,
            ram_end,
        })
}

/// Writes a bare-metal image's device tree high in RAM (`place_dtb_high`) and plans its entry.
pub fn load_bare_metal(ram: &GuestRam, image: &LoadedImage, dtb: &[u8]) -> Result<BootPlan, BootError> {
    check_dtb_len(dtb)?;
    let extent = image.extent.0..image.extent.1;
    let at = place_dtb_high(ram.base(), ram.size(), &extent, dtb.len() as u64)?;
    write(ram, at, dtb, "device tree")?;
    Ok(BootPlan {
        entry: image.entry,
        x0: at,
        pstate: PSTATE_EL1H_DAIF,
        kernel: extent,
        initrd: None,
        dtb: at..at + dtb.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x4000_0000;
    const MIB: u64 = 1 << 20;

    /// An arm64 Image of `file_len` bytes with the given header fields.
    fn image(text_offset: u64, image_size: u64, flags: u64, file_len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; file_len.max(HEADER_SIZE)];
        bytes[0..4].copy_from_slice(&0x1400_0010u32.to_le_bytes()); // code0: b #0x40
        bytes[0x08..0x10].copy_from_slice(&text_offset.to_le_bytes());
        bytes[0x10..0x18].copy_from_slice(&image_size.to_le_bytes());
        bytes[0x18..0x20].copy_from_slice(&flags.to_le_bytes());
        bytes[MAGIC_OFFSET..MAGIC_OFFSET + 4].copy_from_slice(b"ARM\x64");
        bytes
    }

    #[test]
    fn the_header_is_read_and_non_images_are_named() {
        let header = ImageHeader::parse(&image(0x8_0000, 0x2b3_0000, 0xa, 4096)).expect("parsing");
        assert_eq!(header, ImageHeader { text_offset: 0x8_0000, image_size: 0x2b3_0000, flags: 0xa });

        assert_eq!(ImageHeader::parse(&[0x1f, 0x8b, 8, 0]), Err(BootError::Gzip));
        let mut zboot = b"MZ\0\0zimg".to_vec();
        zboot.resize(4096, 0);
        assert_eq!(ImageHeader::parse(&zboot), Err(BootError::EfiZboot));
        assert_eq!(ImageHeader::parse(&[0; 63]), Err(BootError::TooShort { len: 63 }));
        let elf = b"\x7fELF".iter().copied().chain([0; 60]).collect::<Vec<_>>();
        let message = ImageHeader::parse(&elf).expect_err("not an Image").to_string();
        assert_eq!(
            message,
            "the kernel is not an arm64 Linux Image: no \"ARM\\x64\" magic at offset 0x38 (found 0x00000000)"
        );
        assert_eq!(ImageHeader::parse(&image(0x8_0000, 0, 0, 4096)), Err(BootError::NoImageSize));
    }

    #[test]
    fn kernel_initrd_and_device_tree_follow_one_another() {
        // A Debian kernel's numbers: a 44 MB file using 45 MB in memory, text_offset 0.
        let kernel = image(0, 0x2b3_0000, 0xa, 0x2a2_b8c0);
        let layout = LinuxLayout::plan(BASE, 256 * MIB, &kernel, Some(5_000_000)).expect("planning");
        assert_eq!(layout.kernel, BASE..BASE + 0x2b3_0000);
        assert_eq!(layout.initrd, Some(BASE + 0x2b3_0000..BASE + 0x2b3_0000 + 5_000_000));
        let initrd_end = BASE + 0x2b3_0000 + 5_000_000;
        assert_eq!(layout.dtb.start, initrd_end.next_multiple_of(2 * MIB));
        assert_eq!(layout.dtb.end - layout.dtb.start, 2 * MIB);

        // An older kernel: text_offset 0x80000 from the 2 MiB-aligned base; a file longer than
        // image_size (a signature appended) counts in full.
        let layout = LinuxLayout::plan(BASE, 64 * MIB, &image(0x8_0000, 0x10_0000, 0, 0x10_1000), None)
            .expect("planning");
        assert_eq!(layout.kernel, BASE + 0x8_0000..BASE + 0x18_1000);
        assert_eq!(layout.initrd, None);
        assert_eq!(layout.dtb, BASE + 2 * MIB..BASE + 4 * MIB);
    }

    #[test]
    fn an_initrd_starts_on_a_64k_boundary() {
        let layout =
            LinuxLayout::plan(BASE, 64 * MIB, &image(0, 0x10_0123, 0, 4096), Some(10)).expect("planning");
        assert_eq!(layout.initrd, Some(BASE + 0x11_0000..BASE + 0x11_000a));
        assert_eq!(layout.dtb.start, BASE + 2 * MIB);
    }

    #[test]
    fn what_does_not_fit_is_refused_with_sizes() {
        let err = |ram: u64, kernel: &[u8], initrd| {
            LinuxLayout::plan(BASE, ram, kernel, initrd).expect_err("should not fit").to_string()
        };
        let kernel = image(0, 40 * MIB, 0, 4096);
        assert_eq!(
            err(32 * MIB, &kernel, None),
            "the kernel needs 0x2800000 bytes at 0x40000000 (text_offset 0x0), but RAM ends at 0x42000000"
        );
        let absurd = image(u64::MAX - 4, 1, 0, 4096);
        assert!(
            err(32 * MIB, &absurd, None).starts_with("the kernel needs 0x1000 bytes at 0xffffffffffffffff")
        );
        let absurd = image(0, u64::MAX, 0, 4096);
        assert!(err(32 * MIB, &absurd, None).starts_with("the kernel needs 0xffffffffffffffff bytes"));
        assert_eq!(
            err(48 * MIB, &kernel, Some(10 * MIB)),
            "the initrd (10485760 bytes) does not fit in RAM after the kernel: it would take \
             0x42800000..0x43200000, and RAM ends at 0x43000000"
        );
        assert_eq!(err(64 * MIB, &kernel, Some(0)), "the initrd is empty");
        assert_eq!(
            err(42 * MIB, &kernel, Some(MIB)),
            "no room for the device tree: its 2 MiB block at 0x42a00000 after the kernel and initrd ends \
             past the end of RAM at 0x42a00000"
        );
        let big = LinuxLayout::plan(BASE, 40 << 30, &image(0, 1 << 30, 0, 4096), Some(32 << 30));
        assert_eq!(big, Err(BootError::InitrdWindow { kernel: BASE, end: BASE + (33 << 30) }));
    }

    #[test]
    fn command_lines_up_to_2047_bytes_pass() {
        assert_eq!(check_cmdline(&"x".repeat(2047)), Ok(()));
        assert_eq!(check_cmdline(""), Ok(()));
        assert_eq!(
            check_cmdline(&"x".repeat(2048)).expect_err("too long").to_string(),
            "the kernel command line is 2048 bytes; arm64 Linux takes at most 2047 (COMMAND_LINE_SIZE \
             2048 with the NUL)"
        );
        assert_eq!(check_cmdline("a\0b"), Err(BootError::CmdlineNul(1)));
    }

    #[test]
    fn a_linux_guest_is_loaded_as_planned() {
        let ram = GuestRam::new(BASE, 16 * MIB).expect("allocating test RAM");
        let kernel = image(0, 3 * MIB, 0, 8192);
        let layout = LinuxLayout::plan(BASE, 16 * MIB, &kernel, Some(3)).expect("planning");
        let plan = load_linux(&ram, &layout, &kernel, Some(b"abc"), b"\xd0\x0d\xfe\xed").expect("loading");
        assert_eq!(plan.entry, BASE);
        assert_eq!(plan.x0, BASE + 4 * MIB);
        assert_eq!(plan.x0_to_x3(), [BASE + 4 * MIB, 0, 0, 0]);
        assert_eq!(plan.pstate, PSTATE_EL1H_DAIF);
        assert_eq!(plan.kernel, BASE..BASE + 3 * MIB);
        assert_eq!(plan.initrd, Some(BASE + 3 * MIB..BASE + 3 * MIB + 3));
        assert_eq!(plan.dtb, BASE + 4 * MIB..BASE + 4 * MIB + 4);
        let mut buf = [0u8; 4];
        ram.read(BASE + MAGIC_OFFSET as u64, &mut buf).unwrap();
        assert_eq!(&buf, b"ARM\x64");
        ram.read(BASE + 3 * MIB, &mut buf[..3]).unwrap();
        assert_eq!(&buf[..3], b"abc");
        ram.read(plan.x0, &mut buf).unwrap();
        assert_eq!(buf, [0xd0, 0x0d, 0xfe, 0xed]);

        let other = image(0, 3 * MIB, 0, 4096);
        assert_eq!(
            load_linux(&ram, &layout, &other, Some(b"abc"), &[]).expect_err("other kernel").to_string(),
            "the kernel is 4096 bytes, but the layout was planned for 8192"
        );
        assert!(matches!(load_linux(&ram, &layout, &kernel, None, &[]), Err(BootError::NotAsPlanned { .. })));
        let huge = vec![0; MAX_FDT_SIZE + 1];
        assert!(matches!(
            load_linux(&ram, &layout, &kernel, Some(b"abc"), &huge),
            Err(BootError::DtbTooLarge { .. })
        ));
    }

    #[test]
    fn a_bare_metal_device_tree_goes_high_and_never_over_the_image() {
        // At the top of RAM, 64 KiB aligned.
        assert_eq!(
            place_dtb_high(BASE, 128 * MIB, &(BASE..BASE + MIB), 5000),
            Ok(BASE + 128 * MIB - 0x1_0000)
        );
        assert_eq!(
            place_dtb_high(BASE, 128 * MIB, &(BASE..BASE + MIB), 0x1_0000),
            Ok(BASE + 128 * MIB - 0x1_0000)
        );
        // An image at the top of RAM: below it.
        let top = BASE + 127 * MIB..BASE + 128 * MIB;
        assert_eq!(place_dtb_high(BASE, 128 * MIB, &top, 5000), Ok(BASE + 127 * MIB - 0x1_0000));
        // An image filling RAM: nowhere.
        let message = place_dtb_high(BASE, MIB, &(BASE..BASE + MIB), 5000).expect_err("no room").to_string();
        assert_eq!(
            message,
            "no room for the 5000-byte device tree in RAM 0x40000000..0x40100000 that does not overlap the \
             image at 0x40000000..0x40100000"
        );
        assert!(place_dtb_high(BASE, MIB, &(BASE..BASE + 4), 2 * MIB).is_err());

        let ram = GuestRam::new(BASE, 2 * MIB).expect("allocating test RAM");
        let image = LoadedImage { entry: BASE + 0x100, extent: (BASE, BASE + 0x1000) };
        let plan = load_bare_metal(&ram, &image, b"\xd0\x0d\xfe\xed").expect("loading");
        assert_eq!(plan.entry, BASE + 0x100);
        assert_eq!(plan.x0, BASE + 2 * MIB - 0x1_0000);
        assert_eq!(plan.dtb, plan.x0..plan.x0 + 4);
        assert_eq!(plan.kernel, BASE..BASE + 0x1000);
        let mut buf = [0u8; 4];
        ram.read(plan.x0, &mut buf).unwrap();
        assert_eq!(buf, [0xd0, 0x0d, 0xfe, 0xed]);
    }
}
