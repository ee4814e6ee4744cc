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
        Ok(LoadedImage {
            entry: ram.base(),
            extent: (ram.base(), ram.base() + bytes.len() as u64),
        })
    }
}

fn load_elf(ram: &GuestRam, bytes: &[u8]) -> Result<LoadedImage> {
    let elf = Elf::parse(bytes).map_err(|e| image_error(format!("malformed ELF image: {e}")))?;
    if elf.header.e_machine != EM_AARCH64 || !elf.is_64 || !elf.little_endian {
        return Err(image_error(
            "the ELF image is not a little-endian AArch64 executable",
        ));
    }
    let mut extent = (u64::MAX, 0u64);
    for ph in elf
        .program_headers
        .iter()
        .filter(|ph| ph.p_type == PT_LOAD && ph.p_memsz > 0)
    {
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
            .ok_or_else(|| {
                image_error(format!("ELF segment at {addr:#x} points outside the file"))
            })?;
        ram.write(addr, file_range)?;
        let zeros = vec![
            0u8;
            usize::try_from(memsz - filesz)
                .map_err(|_| image_error("ELF segment too large"))?
        ];
        ram.write(addr + filesz, &zeros)?;
        extent = (extent.0.min(addr), extent.1.max(addr + memsz));
    }
    if extent.1 == 0 {
        return Err(image_error("the ELF image has no loadable segment"));
    }
    if !ram.contains(elf.entry, 4) {
        return Err(image_error(format!(
            "the ELF entry point {:#x} is outside guest RAM",
            elf.entry
        )));
    }
    Ok(LoadedImage {
        entry: elf.entry,
        extent,
    })
}
