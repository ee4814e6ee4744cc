//! A plugin file opened for loading: opened once without following a last symbolic link,
//! checked to be a regular file, read and checked as an ELF shared object for this machine that
//! exports abi_stable's root module, all before the dynamic loader runs any of its code. The
//! loader then loads that same open file through `/proc/self/fd/N`, so the file checked is the
//! file loaded.

use std::{
    fs::{File, Metadata},
    io::Read,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use goblin::elf::{header, program_header::ProgramHeader, Elf};

/// The largest plugin file read: far above any real plugin, it only bounds what is read.
pub const MAX_PLUGIN_SIZE: u64 = 1 << 30;

/// A plugin file, open and checked; it stays open until it is loaded.
pub struct PluginFile {
    file: File,
    /// The path it was opened by.
    pub path: PathBuf,
    /// Its metadata, from the open descriptor.
    pub meta: Metadata,
}

/// Why a file could not be opened as a plugin.
pub enum OpenError {
    /// There is no file at the path.
    NotFound,
    /// The last component is a symbolic link, and links are not followed.
    Symlink,
    /// Anything else, as one line.
    Other(String),
}

/// The ELF machine of this host, which a plugin must be built for.
#[cfg(target_arch = "x86_64")]
const HOST_MACHINE: Option<u16> = Some(header::EM_X86_64);
#[cfg(target_arch = "aarch64")]
const HOST_MACHINE: Option<u16> = Some(header::EM_AARCH64);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const HOST_MACHINE: Option<u16> = None;

impl PluginFile {
    /// Opens `path` read-only, close-on-exec and non-blocking (so a FIFO or a device cannot block
    /// the open or a read), without following a last symbolic link unless `follow_links`, and
    /// refuses anything but a regular file. The file is stat'ed before the open and again through
    /// the descriptor, and both must be the same file.
    pub fn open(path: &Path, follow_links: bool) -> Result<PluginFile, OpenError> {
        let before = match path.symlink_metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(OpenError::NotFound),
            Err(e) => return Err(OpenError::Other(format!("cannot read its metadata: {e}"))),
        };
        if before.file_type().is_symlink() && !follow_links {
            return Err(OpenError::Symlink);
        }
        let before = if before.file_type().is_symlink() {
            path.metadata().map_err(|e| OpenError::Other(format!("cannot follow the symbolic link: {e}")))?
        } else {
            before
        };
        if !before.file_type().is_file() {
            return Err(OpenError::Other(format!(
                "not a regular file ({})",
                crate::file_kind::describe(before.file_type())
            )));
        }
        let mut flags = libc::O_NONBLOCK;
        if !follow_links {
            flags |= libc::O_NOFOLLOW;
        }
        let file = match std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(OpenError::Symlink),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(OpenError::NotFound),
            Err(e) => return Err(OpenError::Other(format!("cannot open it: {e}"))),
        };
        let meta =
            file.metadata().map_err(|e| OpenError::Other(format!("cannot stat the open file: {e}")))?;
        if !meta.file_type().is_file() {
            return Err(OpenError::Other(format!(
                "not a regular file ({})",
                crate::file_kind::describe(meta.file_type())
            )));
        }
        if (meta.dev(), meta.ino()) != (before.dev(), before.ino()) {
            return Err(OpenError::Other("the file was replaced while it was being opened".into()));
        }
        clear_nonblocking(&file).map_err(OpenError::Other)?;
        Ok(PluginFile { file, path: path.to_path_buf(), meta })
    }

    /// Reads the whole file and checks it is a plugin for this machine (see [`check_elf`]). Only
    /// on Linux, whose plugins are ELF; elsewhere the dynamic loader's own checks apply.
    pub fn check(&mut self) -> Result<(), String> {
        if !cfg!(target_os = "linux") {
            return Ok(());
        }
        if self.meta.len() > MAX_PLUGIN_SIZE {
            return Err(format!("{} bytes is larger than any plugin", self.meta.len()));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(self.meta.len()).unwrap_or(0));
        (&self.file)
            .take(MAX_PLUGIN_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("reading it: {e}"))?;
        check_elf(&bytes)
    }

    /// Keeps the descriptor open for the life of the process, once the dynamic loader has loaded
    /// the library through [`PluginFile::load_path`]: the loader knows a library by the name it
    /// was opened by, and would hand back this one for a later `/proc/self/fd/N` of the same
    /// number.
    pub fn keep_open(self) {
        use std::os::fd::IntoRawFd;
        let _ = self.file.into_raw_fd();
    }

    /// The path the dynamic loader opens to load this very file: the open descriptor's
    /// `/proc/self/fd/N` on Linux (valid while `self` lives), the path elsewhere.
    pub fn load_path(&self) -> PathBuf {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
        }
        #[cfg(not(target_os = "linux"))]
        {
            self.path.clone()
        }
    }
}

/// Clears `O_NONBLOCK` on the open file, so reads wait as for any regular file.
fn clear_nonblocking(file: &File) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL on a descriptor this function borrows open; it reads no memory of ours.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(format!("reading its file flags: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: F_SETFL with an integer argument on the same open descriptor.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(format!("setting its file flags: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Checks that `bytes` are an ELF shared object of this host's class, byte order and machine,
/// whose program headers all lie inside the file (a truncated file is refused here rather than
/// faulting when mapped), and which exports abi_stable's root module in its dynamic symbol table.
pub fn check_elf(bytes: &[u8]) -> Result<(), String> {
    if bytes.get(..4) != Some(&header::ELFMAG[..]) {
        return Err("not a loadable shared library (not an ELF file)".into());
    }
    let head = Elf::parse_header(bytes)
        .map_err(|e| format!("not a loadable shared library (a malformed ELF header: {e})"))?;
    let host_class = if cfg!(target_pointer_width = "64") { header::ELFCLASS64 } else { header::ELFCLASS32 };
    if head.e_ident[header::EI_CLASS] != host_class {
        return Err(format!(
            "not a loadable shared library (ELF class {}, this host is {}-bit)",
            head.e_ident[header::EI_CLASS],
            usize::BITS
        ));
    }
    let host_data = if cfg!(target_endian = "little") { header::ELFDATA2LSB } else { header::ELFDATA2MSB };
    if head.e_ident[header::EI_DATA] != host_data {
        return Err("not a loadable shared library (ELF of the other byte order than this host)".into());
    }
    match HOST_MACHINE {
        Some(machine) if head.e_machine != machine => {
            return Err(format!(
                "not a loadable shared library (built for ELF machine {}, this host is {})",
                header::machine_to_str(head.e_machine),
                header::machine_to_str(machine)
            ))
        }
        _ => {}
    }
    if head.e_type != header::ET_DYN {
        return Err(format!(
            "not a loadable shared library (ELF type {}, not a shared object)",
            header::et_to_str(head.e_type)
        ));
    }
    let ctx = goblin::container::Ctx::new(
        head.container().map_err(|e| format!("not a loadable shared library ({e})"))?,
        head.endianness().map_err(|e| format!("not a loadable shared library ({e})"))?,
    );
    let offset = usize::try_from(head.e_phoff).map_err(|_| "its program header offset is out of range")?;
    let phdrs = ProgramHeader::parse(bytes, offset, usize::from(head.e_phnum), ctx)
        .map_err(|_| format!("truncated: its program headers lie past its end ({} bytes)", bytes.len()))?;
    for ph in &phdrs {
        let end = ph.p_offset.checked_add(ph.p_filesz);
        if end.is_none_or(|end| end > bytes.len() as u64) {
            return Err(format!(
                "truncated: a program header covers bytes {:#x}+{:#x}, past its end ({} bytes)",
                ph.p_offset,
                ph.p_filesz,
                bytes.len()
            ));
        }
    }
    let elf = Elf::parse(bytes).map_err(|e| format!("not a loadable shared library (malformed ELF: {e})"))?;
    let name = abi_stable::library::ROOT_MODULE_LOADER_NAME;
    let exported =
        elf.dynsyms.iter().any(|sym| sym.st_shndx != 0 && elf.dynstrtab.get_at(sym.st_name) == Some(name));
    if !exported {
        return Err("not an accel plugin: it exports no abi_stable root module".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_elf;

    #[test]
    fn this_test_binary_is_refused_as_a_plugin_and_text_is_not_elf() {
        let exe = std::fs::read(std::env::current_exe().expect("own path")).expect("reading own executable");
        let err = check_elf(&exe).expect_err("a test executable is not a plugin");
        assert!(err.contains("not a shared object") || err.contains("root module"), "{err}");
        let err = check_elf(b"this is not a shared library\n").expect_err("text is not ELF");
        assert!(err.contains("not an ELF file"), "{err}");
    }

    #[test]
    fn a_truncated_elf_is_refused() {
        let exe = std::fs::read(std::env::current_exe().expect("own path")).expect("reading own executable");
        let err = check_elf(&exe[..4096]).expect_err("a truncated file");
        assert!(err.contains("truncated") || err.contains("not a shared object"), "{err}");
    }
}
