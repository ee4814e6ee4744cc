//! A writer of `newc` cpio archives, the format the Linux kernel unpacks as an initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst).

/// An archive being built in memory.
#[derive(Default)]
pub struct Cpio {
    data: Vec<u8>,
    ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;

impl Cpio {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, name: &str, mode: u32, body: &[u8]) {
        self.ino += 1;
        let name_len = name.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0, // uid
            0, // gid
            if mode & S_IFDIR != 0 { 2 } else { 1 },
            0, // mtime
            body.len(),
            0, // devmajor
            0, // devminor
            0, // rdevmajor
            0, // rdevminor
            name_len,
            0, // check
        );
        self.data.extend_from_slice(header.as_bytes());
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad4();
        self.data.extend_from_slice(body);
        self.pad4();
    }

    fn pad4(&mut self) {
        while self.data.len() % 4 != 0 {
            self.data.push(0);
        }
    }

    /// Adds a directory (mode 0755). Parents must be added first.
    pub fn dir(&mut self, path: &str) {
        self.entry(path.trim_start_matches('/'), S_IFDIR | 0o755, &[]);
    }

    /// Adds a regular file with permission bits `perm`. Parents must be added first.
    pub fn file(&mut self, path: &str, perm: u32, body: &[u8]) {
        self.entry(path.trim_start_matches('/'), S_IFREG | perm, body);
    }

    /// Ends the archive and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        while self.data.len() % 512 != 0 {
            self.data.push(0);
        }
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut c = Cpio::new();
        c.dir("/bin");
        c.file("/bin/x", 0o755, b"abc");
        let data = c.finish();
        assert_eq!(&data[..6], b"070701");
        // Header (110 bytes) + "bin\0" = 114, padded to 116.
        assert_eq!(&data[110..114], b"bin\0");
        let second = 116;
        assert_eq!(&data[second..second + 6], b"070701");
        // The file's size field is the 7th (offset 6 + 6*8).
        assert_eq!(&data[second + 54..second + 62], b"00000003");
        // Mode field: regular file 0755.
        assert_eq!(&data[second + 14..second + 22], b"000081ed");
        let text = String::from_utf8_lossy(&data);
        assert!(text.contains("TRAILER!!!"));
        assert_eq!(data.len() % 512, 0);
    }
}
