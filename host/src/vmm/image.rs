//! Loading a guest image into RAM: an AArch64 ELF executable by its program headers, or a raw
//! binary at the start of RAM.

use accel_api::{AccelError, ErrorKind, Result};
use goblin::elf::{header::EM_AARCH64, program_header::PT_LOAD, Elf};

use super::ram::GuestRam;

/// Where a loaded image starts executing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedImage {
    /// The entry point (guest physical address).
    pub entry: u64,
    /// The lowest and highest+1 guest addresses written.
    pub extent: (u64, u64),
}

fn image_error(message: impl Into<String>) -> AccelError {
    AccelError::new(ErrorKind::INVALID_ARGUMENT, message)
}

/// Loads `bytes` into `ram`: as an ELF if it starts with the ELF magic, otherwise raw at the
/// start of RAM.
pub fn load(ram: &GuestRam, bytes: &[u8]) -> Result<LoadedImage> {
    if bytes.starts_with(b"\x7fELF") {
        load_elf(ram, bytes)
    } else {
        if bytes.is_empty() {
            return Err(image_error("the image is empty"));
        }
        ram.write(ram.base(), bytes).map_err(|_| {
            image_error(format!(
                "the raw image ({} bytes) does not fit in guest RAM ({} bytes)",
                bytes.len(),
                ram.size()
            ))
        })?;
        Ok(LoadedImage { entry: ram.base(), extent: (ram.base(), ram.base() + bytes.len() as u64) })
    }
}

fn load_elf(ram: &GuestRam, bytes: &[u8]) -> Result<LoadedImage> {
    let elf = Elf::parse(bytes).map_err(|e| image_error(format!("malformed ELF image: {e}")))?;
    if elf.header.e_machine != EM_AARCH64 || !elf.is_64 || !elf.little_endian {
        return Err(image_error("the ELF image is not a little-endian AArch64 executable"));
    }
    let mut extent = (u64::MAX, 0u64);
    for ph in elf.program_headers.iter().filter(|ph| ph.p_type == PT_LOAD && ph.p_memsz > 0) {
        let (addr, filesz, memsz) = (ph.p_paddr, ph.p_filesz, ph.p_memsz);
        if filesz > memsz || !ram.contains(addr, memsz) {
            return Err(image_error(format!(
                "ELF segment at {addr:#x} (size {memsz:#x}) does not fit in guest RAM {:#x}..{:#x}",
                ram.base(),
                ram.base() + ram.size()
            )));
        }
        let file_range = usize::try_from(ph.p_offset)
            .ok()
            .zip(usize::try_from(filesz).ok())
            .and_then(|(off, len)| bytes.get(off..off.checked_add(len)?))
            .ok_or_else(|| image_error(format!("ELF segment at {addr:#x} points outside the file")))?;
        ram.write(addr, file_range)?;
        let zeros =
            vec![0u8; usize::try_from(memsz - filesz).map_err(|_| image_error("ELF segment too large"))?];
        ram.write(addr + filesz, &zeros)?;
        extent = (extent.0.min(addr), extent.1.max(addr + memsz));
    }
    if extent.1 == 0 {
        return Err(image_error("the ELF image has no loadable segment"));
    }
    if !ram.contains(elf.entry, 4) {
        return Err(image_error(format!("the ELF entry point {:#x} is outside guest RAM", elf.entry)));
    }
    Ok(LoadedImage { entry: elf.entry, extent })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x4000_0000;

    /// A minimal ELF64 executable: header, program headers, then each segment's bytes.
    fn elf(machine: u16, entry: u64, segments: &[(u64, &[u8], u64)]) -> Vec<u8> {
        let phoff = 64u64;
        let data_start = phoff + 56 * segments.len() as u64;
        let mut out = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        out.extend(2u16.to_le_bytes()); // e_type: EXEC
        out.extend(machine.to_le_bytes());
        out.extend(1u32.to_le_bytes());
        out.extend(entry.to_le_bytes());
        out.extend(phoff.to_le_bytes());
        out.extend(0u64.to_le_bytes()); // e_shoff
        out.extend(0u32.to_le_bytes()); // e_flags
        for half in [64u16, 56, segments.len() as u16, 64, 0, 0] {
            out.extend(half.to_le_bytes());
        }
        let mut offset = data_start;
        for (addr, bytes, memsz) in segments {
            out.extend(PT_LOAD.to_le_bytes());
            out.extend(5u32.to_le_bytes());
            for v in [offset, *addr, *addr, bytes.len() as u64, *memsz, 0x1000] {
                out.extend(v.to_le_bytes());
            }
            offset += bytes.len() as u64;
        }
        for (_, bytes, _) in segments {
            out.extend_from_slice(bytes);
        }
        out
    }

    fn ram() -> GuestRam {
        GuestRam::new(BASE, 1 << 20).expect("allocating test RAM")
    }

    #[test]
    fn elf_segments_load_and_bss_is_zeroed() {
        let ram = ram();
        ram.write(BASE + 0x2000, &[0xff; 16]).unwrap();
        let image =
            elf(EM_AARCH64, BASE + 0x1000, &[(BASE + 0x1000, &[1, 2, 3, 4], 4), (BASE + 0x2000, &[9], 16)]);
        let loaded = load(&ram, &image).expect("loading");
        assert_eq!(loaded.entry, BASE + 0x1000);
        assert_eq!(loaded.extent, (BASE + 0x1000, BASE + 0x2010));
        let mut buf = [0u8; 4];
        ram.read(BASE + 0x1000, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4]);
        let mut bss = [0xaau8; 16];
        ram.read(BASE + 0x2000, &mut bss).unwrap();
        assert_eq!(bss[0], 9);
        assert!(bss[1..].iter().all(|b| *b == 0), "bss not zeroed: {bss:?}");
    }

    #[test]
    fn raw_images_load_at_the_start_of_ram() {
        let ram = ram();
        let loaded = load(&ram, &[0x1f, 0x20, 0x03, 0xd5]).expect("loading");
        assert_eq!(loaded, LoadedImage { entry: BASE, extent: (BASE, BASE + 4) });
        assert!(load(&ram, &[]).is_err());
    }

    #[test]
    fn bad_images_are_refused_with_reasons() {
        let ram = ram();
        let message = |bytes: &[u8]| load(&ram, bytes).expect_err("should fail").message.to_string();
        assert!(message(&elf(62, BASE, &[(BASE, &[0; 4], 4)])).contains("not a little-endian AArch64"));
        assert!(
            message(&elf(EM_AARCH64, BASE, &[(0x1000, &[0; 4], 4)])).contains("does not fit in guest RAM")
        );
        assert!(message(&elf(EM_AARCH64, 0x10, &[(BASE, &[0; 4], 4)])).contains("entry point"));
        assert!(message(&elf(EM_AARCH64, BASE, &[])).contains("no loadable segment"));
        let good = elf(EM_AARCH64, BASE, &[(BASE, &[0; 64], 64)]);
        let truncated = &good[..good.len() - 32];
        assert!(message(truncated).contains("outside the file") || message(truncated).contains("malformed"));
        assert!(message(&good[..40]).contains("malformed"));
        assert!(message(&vec![0u8; (2 << 20) as usize]).contains("does not fit"));
    }
}
