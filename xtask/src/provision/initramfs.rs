//! Initramfs images: the newc cpio writer every VM image of xtask goes through, with parent
//! directories listed before their children, as the kernel's unpacker needs.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::Path,
};

use cpio::newc::{trailer, Builder};

use crate::error::{Error, Result};

/// A file to put into the initramfs.
pub struct VmFile {
    /// Its absolute path inside the VM.
    pub path: String,
    /// Its contents.
    pub data: Vec<u8>,
    /// Permission bits.
    pub perm: u32,
}

impl VmFile {
    /// A file read from the host.
    pub fn from_host(path: &str, host: &Path, perm: u32) -> Result<Self> {
        let data = std::fs::read(host).map_err(|e| Error(format!("reading {}: {e}", host.display())))?;
        Ok(Self { path: path.into(), data, perm })
    }
}

/// The file-type bits of a directory, a regular file and a symbolic link in a cpio mode.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

enum Node {
    File { data: Vec<u8>, perm: u32 },
    Symlink(String),
}

/// An initramfs being assembled in memory.
#[derive(Default)]
pub struct Initramfs {
    dirs: BTreeSet<String>,
    nodes: BTreeMap<String, Node>,
}

impl Initramfs {
    /// An image with these (absolute) directories, empty.
    pub fn with_dirs(dirs: &[&str]) -> Self {
        let mut image = Self::default();
        for dir in dirs {
            image.add_dir_and_parents(Some(Path::new(dir)));
        }
        image
    }

    fn add_dir_and_parents(&mut self, dir: Option<&Path>) {
        let mut p = dir;
        while let Some(dir) = p.filter(|d| d != &Path::new("/") && d != &Path::new("")) {
            self.dirs.insert(dir.to_string_lossy().into_owned());
            p = dir.parent();
        }
    }

    fn add_node(&mut self, path: &str, node: Node) -> Result<()> {
        if !path.starts_with('/') || path.ends_with('/') {
            return Err(Error(format!("{path:?} is not an absolute file path for the initramfs")));
        }
        if self.dirs.contains(path) {
            return Err(Error(format!("{path} is both a directory and a file in the initramfs")));
        }
        self.add_dir_and_parents(Path::new(path).parent());
        match (self.nodes.get(path), &node) {
            (None, _) => {}
            (Some(Node::File { data: a, perm: pa }), Node::File { data: b, perm: pb })
                if a == b && pa == pb => {}
            (Some(Node::Symlink(a)), Node::Symlink(b)) if a == b => {}
            (Some(_), _) => return Err(Error(format!("two different files for {path} in the initramfs"))),
        }
        self.nodes.insert(path.to_string(), node);
        Ok(())
    }

    /// Adds a regular file. The same file twice is kept once; two different ones at one path are
    /// an error.
    pub fn add(&mut self, file: VmFile) -> Result<()> {
        self.add_node(&file.path.clone(), Node::File { data: file.data, perm: file.perm })
    }

    /// Adds every file of `files`.
    pub fn add_all(&mut self, files: impl IntoIterator<Item = VmFile>) -> Result<()> {
        files.into_iter().try_for_each(|f| self.add(f))
    }

    /// Adds a symbolic link at `path` pointing to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.add_node(path, Node::Symlink(target.to_string()))
    }

    /// The archive's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        if let Some(path) = self.nodes.keys().find(|p| self.dirs.contains(*p)) {
            return Err(Error(format!("{path} is both a directory and a file in the initramfs")));
        }
        let io = |e: std::io::Error| Error(format!("building the initramfs: {e}"));
        let mut archive = Vec::new();
        // BTreeSet order puts every parent directory before its children.
        let entries = self.dirs.iter().map(|d| (d.as_str(), S_IFDIR | 0o755, &[][..])).chain(
            self.nodes.iter().map(|(path, node)| match node {
                Node::File { data, perm } => (path.as_str(), S_IFREG | perm, &data[..]),
                Node::Symlink(target) => (path.as_str(), S_IFLNK | 0o777, target.as_bytes()),
            }),
        );
        for (ino, (path, mode, data)) in entries.enumerate() {
            let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
            let size =
                u32::try_from(data.len()).map_err(|_| Error(format!("{path} is too large for cpio")))?;
            let ino = u32::try_from(ino + 1).map_err(|_| Error("too many files for cpio".into()))?;
            let mut writer = Builder::new(path.trim_start_matches('/'))
                .ino(ino)
                .mode(mode)
                .nlink(nlink)
                .write(&mut archive, size);
            writer.write_all(data).map_err(io)?;
            writer.finish().map_err(io)?;
        }
        trailer(&mut archive).map_err(io)?;
        Ok(archive)
    }

    /// Writes the archive to `out` and returns its size in bytes.
    pub fn write(&self, out: &Path) -> Result<u64> {
        let archive = self.to_bytes()?;
        std::fs::write(out, &archive).map_err(|e| Error(format!("writing {}: {e}", out.display())))?;
        Ok(archive.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn entries(archive: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = archive;
        loop {
            let mut reader = cpio::newc::Reader::new(rest).expect("a cpio entry");
            if reader.entry().is_trailer() {
                return out;
            }
            let (name, mode) = (reader.entry().name().to_string(), reader.entry().mode());
            let mut data = Vec::new();
            reader.read_to_end(&mut data).expect("entry data");
            out.push((name, mode, data));
            rest = reader.finish().expect("next entry");
        }
    }

    #[test]
    fn parents_come_first_and_links_hold_their_target() {
        let mut image = Initramfs::with_dirs(&["/proc", "/usr/bin"]);
        image.add(VmFile { path: "/bin/busybox".into(), data: b"elf".to_vec(), perm: 0o755 }).expect("add");
        image.symlink("/bin/sh", "busybox").expect("symlink");
        let list = entries(&image.to_bytes().expect("archive"));
        let names: Vec<&str> = list.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["bin", "proc", "usr", "usr/bin", "bin/busybox", "bin/sh"]);
        assert_eq!(list[4].1, S_IFREG | 0o755);
        assert_eq!(list[5], ("bin/sh".to_string(), S_IFLNK | 0o777, b"busybox".to_vec()));
    }

    #[test]
    fn the_same_file_twice_is_kept_once_and_a_conflict_is_refused() {
        let file = |data: &[u8]| VmFile { path: "/lib/libc.so.6".into(), data: data.to_vec(), perm: 0o755 };
        let mut image = Initramfs::default();
        image.add(file(b"one")).expect("first");
        image.add(file(b"one")).expect("identical");
        assert!(image.add(file(b"two")).is_err());
        assert!(image.add(VmFile { path: "/lib".into(), data: Vec::new(), perm: 0o644 }).is_err());
        assert_eq!(entries(&image.to_bytes().expect("archive")).len(), 2);
    }
}
