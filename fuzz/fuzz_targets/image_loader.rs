//! Guest images, from the file's bytes to guest RAM: `Plan::new` (which tells a raw file with the
//! arm64 Image header from other images and lays out a Linux kernel, its initrd and the device
//! tree) and `Plan::load` (the ELF loader, the raw loader, the Linux loader and the device tree's
//! placement), without a backend. Images come as the fuzzer's bytes, or as ELF files and arm64
//! Images built from fuzzed headers and segments, so that the loaders are reached deep.
//!
//! Invariants, for any input:
//! - every image is accepted or refused with an error, never a panic;
//! - a Linux payload that `Plan::new` accepts also loads (the plan makes every check);
//! - an accepted image's pieces lie inside guest RAM: the kernel or image (every ELF segment,
//!   bss included, inside the extent reported), the initrd and the device tree, none of them
//!   overlapping another; the entry point is in RAM (a Linux kernel's at its first byte), x0
//!   names the device tree, and RAM holds what was loaded where the plan says: the device tree,
//!   the initrd, a raw image or a kernel file, and each ELF segment's file bytes and zeroed bss.
#![no_main]

use std::ops::Range;

use accel_api::Capabilities;
use accel_host::vmm::{
    boot::BootPlan,
    fdt::{Chosen, MachineDescription},
    ram::GuestRam,
    MachineConfig, Payload, Plan, PSTATE_EL1H_DAIF, RAM_BASE,
};
use arbitrary::{Arbitrary, Unstructured};
use goblin::elf::{program_header::PT_LOAD, Elf};
use libfuzzer_sys::fuzz_target;

const MIB: u64 = 1 << 20;

#[derive(Arbitrary, Debug)]
struct Segment {
    /// Where it loads, from the start of RAM.
    offset: u32,
    file_len: u16,
    mem_len: u32,
    /// Where its bytes are in the file, from the end of the program headers.
    file_offset: u16,
}

#[derive(Arbitrary, Debug)]
enum Shape {
    /// The bytes as an image file.
    Image,
    /// The bytes as a Linux kernel, with an initrd of this many bytes.
    Linux { initrd: Option<u16> },
    /// An ELF file built from these parts, the bytes its contents.
    Elf { aarch64: bool, entry: u32, segments: Vec<Segment> },
    /// An arm64 Image built from these header fields, the bytes the rest of the file.
    Arm64 { text_offset: u32, image_size: u32, flags: u8, initrd: Option<u16>, as_linux: bool },
}

#[derive(Arbitrary, Debug)]
struct Input {
    mem_mib: u8,
    shape: Shape,
    bytes: Vec<u8>,
}

/// A little-endian AArch64 (or x86-64) ELF64 executable with `segments`, followed by `data`.
fn elf(aarch64: bool, entry: u64, segments: &[Segment], data: &[u8]) -> Vec<u8> {
    let segments = &segments[..segments.len().min(8)];
    let data_start = 64 + 56 * segments.len() as u64;
    let mut out = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    out.extend(2u16.to_le_bytes());
    out.extend(if aarch64 { 183u16 } else { 62 }.to_le_bytes());
    out.extend(1u32.to_le_bytes());
    out.extend(entry.to_le_bytes());
    out.extend(64u64.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    out.extend(0u32.to_le_bytes());
    for half in [64u16, 56, segments.len() as u16, 64, 0, 0] {
        out.extend(half.to_le_bytes());
    }
    for s in segments {
        let addr = RAM_BASE + u64::from(s.offset);
        out.extend(PT_LOAD.to_le_bytes());
        out.extend(7u32.to_le_bytes());
        let (file, mem) = (u64::from(s.file_len), u64::from(s.mem_len));
        for v in [data_start + u64::from(s.file_offset), addr, addr, file, mem, 0x1000] {
            out.extend(v.to_le_bytes());
        }
    }
    out.extend(data);
    out
}

/// An arm64 Image: the 64-byte header with these fields, then `rest`.
fn arm64(text_offset: u64, image_size: u64, flags: u64, rest: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 64];
    out[0..4].copy_from_slice(&0x1400_0010u32.to_le_bytes());
    out[0x08..0x10].copy_from_slice(&text_offset.to_le_bytes());
    out[0x10..0x18].copy_from_slice(&image_size.to_le_bytes());
    out[0x18..0x20].copy_from_slice(&flags.to_le_bytes());
    out[0x38..0x3c].copy_from_slice(b"ARM\x64");
    out.extend(rest);
    out
}

fn initrd_of(len: Option<u16>) -> Option<Vec<u8>> {
    len.map(|n| (0..n).map(|i| (i as u8) ^ 0x5a).collect())
}

fn payload(shape: Shape, bytes: Vec<u8>, mem: u64) -> Payload {
    match shape {
        Shape::Image => Payload::Image(bytes),
        Shape::Linux { initrd } => Payload::Linux { kernel: bytes, initrd: initrd_of(initrd) },
        Shape::Elf { aarch64, entry, segments } => {
            let entry = RAM_BASE + u64::from(entry) % (mem + 0x1000);
            Payload::Image(elf(aarch64, entry, &segments, &bytes))
        }
        Shape::Arm64 { text_offset, image_size, flags, initrd, as_linux } => {
            let kernel = arm64(u64::from(text_offset), u64::from(image_size), u64::from(flags), &bytes);
            if as_linux {
                Payload::Linux { kernel, initrd: initrd_of(initrd) }
            } else {
                Payload::Image(kernel)
            }
        }
    }
}

fn read(ram: &GuestRam, range: &Range<u64>) -> Vec<u8> {
    let mut buf = vec![0u8; (range.end - range.start) as usize];
    ram.read(range.start, &mut buf).expect("a range the loader reported is in RAM");
    buf
}

fn disjoint(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.end <= b.start || b.end <= a.start
}

fn check_elf(ram: &GuestRam, file: &[u8], boot: &BootPlan) {
    let elf = Elf::parse(file).expect("an ELF the loader accepted parses");
    let segments: Vec<_> =
        elf.program_headers.iter().filter(|ph| ph.p_type == PT_LOAD && ph.p_memsz > 0).collect();
    let ranges: Vec<Range<u64>> = segments.iter().map(|ph| ph.p_paddr..ph.p_paddr + ph.p_memsz).collect();
    for r in &ranges {
        assert!(
            boot.kernel.start <= r.start && r.end <= boot.kernel.end,
            "segment {r:x?} outside the extent"
        );
    }
    assert!(
        ranges.iter().any(|r| r.start == boot.kernel.start)
            && ranges.iter().any(|r| r.end == boot.kernel.end)
    );
    let overlapping = ranges.iter().enumerate().any(|(i, a)| ranges[i + 1..].iter().any(|b| !disjoint(a, b)));
    if overlapping {
        return;
    }
    for (ph, r) in segments.iter().zip(&ranges) {
        let held = read(ram, r);
        let (off, len) = (ph.p_offset as usize, ph.p_filesz as usize);
        assert_eq!(held[..len], file[off..off + len], "segment {r:x?} holds its file bytes");
        assert!(held[len..].iter().all(|b| *b == 0), "segment {r:x?} has its bss zeroed");
    }
}

fn check_loaded(ram: &GuestRam, payload: &Payload, linux: bool, dtb: &[u8], boot: &BootPlan) {
    let ram_range = ram.base()..ram.base() + ram.size();
    let inside = |r: &Range<u64>| ram_range.start <= r.start && r.start <= r.end && r.end <= ram_range.end;
    assert!(
        inside(&boot.kernel) && boot.kernel.start < boot.kernel.end,
        "the image {:x?} is in RAM",
        boot.kernel
    );
    assert!(
        inside(&boot.dtb) && boot.dtb.end - boot.dtb.start == dtb.len() as u64,
        "the device tree is in RAM"
    );
    assert!(disjoint(&boot.kernel, &boot.dtb), "the device tree does not overlap the image");
    if let Some(initrd) = &boot.initrd {
        assert!(inside(initrd), "the initrd is in RAM");
        assert!(disjoint(initrd, &boot.kernel) && disjoint(initrd, &boot.dtb), "the initrd overlaps nothing");
    }
    assert!(ram_range.contains(&boot.entry), "the entry point {:#x} is in RAM", boot.entry);
    assert_eq!((boot.x0, boot.pstate), (boot.dtb.start, PSTATE_EL1H_DAIF));
    assert_eq!(read(ram, &boot.dtb), dtb, "RAM holds the device tree");
    match payload {
        Payload::Linux { kernel, initrd } => {
            assert!(linux);
            assert_eq!(boot.entry, boot.kernel.start, "a kernel starts at its first byte");
            let file = boot.kernel.start..boot.kernel.start + kernel.len() as u64;
            assert_eq!(read(ram, &file), *kernel, "RAM holds the kernel file");
            let held = boot.initrd.as_ref().map(|r| read(ram, r));
            assert_eq!(held.as_ref(), initrd.as_ref(), "RAM holds the initrd");
        }
        Payload::Image(bytes) if linux => {
            let file = boot.kernel.start..boot.kernel.start + bytes.len() as u64;
            assert_eq!(read(ram, &file), *bytes, "RAM holds the kernel file");
        }
        Payload::Image(bytes) if bytes.starts_with(b"\x7fELF") => check_elf(ram, bytes, boot),
        Payload::Image(bytes) => {
            assert_eq!(
                boot.kernel,
                RAM_BASE..RAM_BASE + bytes.len() as u64,
                "a raw image at the start of RAM"
            );
            assert_eq!(read(ram, &boot.kernel), *bytes, "RAM holds the raw image");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else { return };
    let mem = u64::from(input.mem_mib % 6 + 1) * MIB;
    let payload = payload(input.shape, input.bytes, mem);
    let config =
        MachineConfig { cpus: 1, mem_size: mem, features: Default::default(), cmdline: String::new() };
    let caps = Capabilities { max_vcpus: 8, ipa_bits: 40, ..Capabilities::default() };
    let Ok(plan) = Plan::new(config, payload.clone(), &caps) else { return };
    let ram = GuestRam::new(RAM_BASE, mem).expect("allocating guest RAM");
    let mut description = MachineDescription {
        ram_base: RAM_BASE,
        ram_size: mem,
        mpidrs: vec![0x8000_0000],
        its: false,
        num_spis: 64,
        pmu: false,
        chosen: Chosen { bootargs: String::new(), initrd: None, rng_seed: vec![7; 32], kaslr_seed: Some(7) },
    };
    match plan.load(&ram, &mut description) {
        Ok((dtb, boot)) => check_loaded(&ram, &payload, plan.is_linux(), &dtb, &boot),
        Err(e) => assert!(!plan.is_linux(), "a planned Linux guest failed to load: {e}"),
    }
});
