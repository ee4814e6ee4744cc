//! Loading a guest image into RAM: an AArch64 ELF executable by its program headers, or a raw
//! binary at the start of RAM; and reading image files no larger than RAM.

use std::{fs::File, io::Read, path::Path};

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

/// Reads the regular file at `path` (a kernel, an initrd, an image: `what` names it in errors),
/// refusing one larger than `limit` bytes, the size of guest RAM, before any of it is read.
///
/// Anything but a regular file (a FIFO, a directory, a device, a socket) is refused from `stat`
/// before it is opened, so nothing blocks: opening a FIFO for reading waits for a writer. The
/// file is then opened with `O_NONBLOCK` (and `O_CLOEXEC`), and `fstat` of the descriptor must
/// show the same regular file, so a file swapped for a FIFO between the two is refused too. At
/// most one byte past the limit is read, in case the file grew in between.
pub fn read_capped(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let shown = path.display();
    // One message: the OS error is given once, by the errno (AccelError's Display adds it).
    let io_error = |doing: &str, e: std::io::Error| match e.raw_os_error() {
        Some(errno) => {
            AccelError { errno, ..AccelError::new(ErrorKind::IO, format!("{doing} {what} {shown}")) }
        }
        None => AccelError::new(ErrorKind::IO, format!("{doing} {what} {shown}: {e}")),
    };
    let not_regular = |file_type| {
        image_error(format!(
            "{what} {shown} is {}, not a regular file",
            crate::file_kind::describe(file_type)
        ))
    };
    let too_large =
        |size: String| image_error(format!("{what} {shown} is {size} than the {limit} bytes of guest RAM"));
    let before = std::fs::metadata(path).map_err(|e| io_error("cannot read", e))?;
    if !before.is_file() {
        return Err(not_regular(before.file_type()));
    }
    if before.len() > limit {
        return Err(too_large(format!("{} bytes, more", before.len())));
    }
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_error("cannot open", e))?;
    let after = file.metadata().map_err(|e| io_error("cannot read", e))?;
    if !after.is_file() {
        return Err(not_regular(after.file_type()));
    }
    if (after.dev(), after.ino()) != (before.dev(), before.ino()) {
        return Err(image_error(format!("{what} {shown} was replaced while it was being opened")));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(after.len().min(limit)).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| io_error("cannot read", e))?;
    if bytes.len() as u64 > limit {
        return Err(too_large("larger".into()));
    }
    Ok(bytes)
}

/// Zeroes `len` bytes of guest RAM at `addr` in place, a chunk at a time: a segment's bss can be
/// as large as RAM, and the host must not allocate a buffer of that size. Chunks that already
/// read as zero are left alone, so the untouched pages of fresh RAM stay uncommitted.
fn zero(ram: &GuestRam, addr: u64, len: u64) -> Result<()> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut chunk = vec![0u8; ZEROS.len()];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(ZEROS.len() as u64) as usize;
        ram.read(addr + done, &mut chunk[..n])?;
        if chunk[..n].iter().any(|b| *b != 0) {
            ram.write(addr + done, &ZEROS[..n])?;
        }
        done += n as u64;
    }
    Ok(())
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
        zero(ram, addr + filesz, memsz - filesz)?;
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

    /// The resident set of this process in bytes.
    #[cfg(target_os = "linux")]
    fn resident_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("reading /proc/self/statm");
        let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("statm");
        pages * 4096
    }

    #[test]
    fn a_bss_as_large_as_ram_is_zeroed_in_place() {
        // 1 GiB of RAM and a segment whose bss fills all of it: the loader must neither allocate
        // a buffer of that size nor write (and so commit) pages that are zero already.
        let ram = GuestRam::new(BASE, 1 << 30).expect("allocating test RAM");
        ram.write(BASE + (1 << 29), &[0xff; 8]).unwrap();
        #[cfg(target_os = "linux")]
        let before = resident_bytes();
        let image = elf(EM_AARCH64, BASE, &[(BASE, &[1, 2, 3, 4], 1 << 30)]);
        let loaded = load(&ram, &image).expect("loading");
        #[cfg(target_os = "linux")]
        {
            let grown = resident_bytes().saturating_sub(before);
            assert!(grown < 256 << 20, "loading committed {grown} bytes");
        }
        assert_eq!(loaded.extent, (BASE, BASE + (1 << 30)));
        let mut dirty = [0xaau8; 8];
        ram.read(BASE + (1 << 29), &mut dirty).unwrap();
        assert_eq!(dirty, [0; 8], "a dirty bss chunk is zeroed");
        let huge = elf(EM_AARCH64, BASE, &[(BASE, &[1, 2, 3, 4], u64::MAX - BASE)]);
        let message = load(&ram, &huge).expect_err("a bss beyond RAM").message.to_string();
        assert!(message.contains("does not fit in guest RAM"), "{message}");
    }

    #[test]
    fn image_files_are_read_up_to_the_size_of_ram() {
        let dir = std::env::temp_dir().join(format!("accel-image-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("image.bin");
        std::fs::write(&file, [7u8; 4096]).unwrap();
        assert_eq!(read_capped(&file, 4096, "image").expect("reading"), vec![7u8; 4096]);
        let message = read_capped(&file, 4095, "kernel").expect_err("too large").message.to_string();
        assert_eq!(
            message,
            format!("kernel {} is 4096 bytes, more than the 4095 bytes of guest RAM", file.display())
        );
        let missing = read_capped(&dir.join("missing"), 1, "initrd").expect_err("missing");
        assert_eq!(missing.kind, ErrorKind::IO);
        assert_eq!(missing.errno(), Some(libc::ENOENT));
        assert_eq!(
            missing.to_string(),
            format!(
                "cannot read initrd {} ({})",
                dir.join("missing").display(),
                std::io::Error::from_raw_os_error(libc::ENOENT)
            )
        );

        // Nothing but a regular file is opened: a FIFO would block the open until a writer came.
        let fifo = dir.join("fifo");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c_path` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
        let message = read_capped(&fifo, 1 << 20, "kernel").expect_err("a FIFO").message.to_string();
        assert_eq!(message, format!("kernel {} is a FIFO, not a regular file", fifo.display()));
        let message = read_capped(&dir, 1 << 20, "image").expect_err("a directory").message.to_string();
        assert_eq!(message, format!("image {} is a directory, not a regular file", dir.display()));
        std::fs::remove_dir_all(&dir).unwrap();

        // A device, even one that never ends, is refused without being read.
        let zero = Path::new("/dev/zero");
        let message = read_capped(zero, 1 << 20, "image").expect_err("a device").message.to_string();
        assert_eq!(message, "image /dev/zero is a character device, not a regular file");
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
