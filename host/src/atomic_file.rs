//! Writing a file atomically: readers see the old file or the whole new one, never a part, and a
//! crash leaves one of the two on disk.
//!
//! The bytes go to a temporary file in the destination's directory, created with
//! `O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC` (so it is always a new file of this process's own),
//! given its mode with `fchmod` (so the umask cannot change it), and `fsync`ed; it is then renamed
//! over the destination and the directory is `fsync`ed so that the rename is durable. On any
//! error the temporary file is removed and the destination is left as it was.
//!
//! A symlink at the destination is not followed: `rename` replaces the link itself with the new
//! file, and the file the link pointed to is left untouched.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

/// The mode of a written file unless the caller asks for another: owner read and write only.
pub const DEFAULT_MODE: u32 = 0o600;

/// Writes `bytes` to `path` atomically with permission bits `mode` (for example
/// [`DEFAULT_MODE`]). A symlink at `path` is replaced, not followed.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_checked(path, bytes, mode, || Ok(()))
}

/// [`write`], with `before_rename` run once the temporary file is complete and synced: its error
/// aborts the write as a crash at that point would, which is how the tests inject one.
fn write_checked(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    before_rename: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the destination has no file name"))?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (temp_path, mut file) = create_temp(&dir, file_name)?;
    let mut temp = Temp { path: temp_path, renamed: false };
    file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    before_rename()?;
    std::fs::rename(&temp.path, path)?;
    temp.renamed = true;
    OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC).open(&dir)?.sync_all()
}

/// A temporary file, removed when dropped unless it was renamed into place.
struct Temp {
    path: PathBuf,
    renamed: bool,
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Creates a new temporary file `.NAME.tmp-PID-N` in `dir`, trying the next `N` while a name is
/// taken.
fn create_temp(dir: &Path, file_name: &std::ffi::OsStr) -> io::Result<(PathBuf, File)> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let mut last = None;
    for _ in 0..64 {
        let mut name = std::ffi::OsString::from(".");
        name.push(file_name);
        name.push(format!(".tmp-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        let candidate = dir.join(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&candidate)
        {
            Ok(file) => return Ok((candidate, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory for one test.
    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("accel-atomic-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_file_is_written_with_its_mode_and_no_temporary_is_left() {
        let dir = dir("mode");
        let path = dir.join("out.dtb");
        write(&path, b"first", DEFAULT_MODE).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o600);
        write(&path, b"second", 0o644).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o644);
        assert_eq!(names(&dir), ["out.dtb"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failure_before_the_rename_leaves_the_old_file_and_no_temporary() {
        let dir = dir("crash");
        let path = dir.join("out.dtb");
        std::fs::write(&path, b"old").unwrap();
        let error = write_checked(&path, b"new contents", DEFAULT_MODE, || Err(io::Error::other("injected")))
            .expect_err("the injected failure");
        assert_eq!(error.to_string(), "injected");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names(&dir), ["out.dtb"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_symlink_at_the_destination_is_replaced_and_its_target_untouched() {
        let dir = dir("symlink");
        let target = dir.join("precious");
        std::fs::write(&target, b"keep me").unwrap();
        let link = dir.join("out.dtb");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write(&link, b"tree", DEFAULT_MODE).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        let meta = std::fs::symlink_metadata(&link).unwrap();
        assert!(meta.file_type().is_file(), "the link was replaced by a regular file");
        assert_eq!(std::fs::read(&link).unwrap(), b"tree");
        assert_eq!(names(&dir), ["out.dtb", "precious"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_destination_that_cannot_be_replaced_leaves_no_temporary() {
        let dir = dir("isdir");
        let path = dir.join("sub");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"x").unwrap();
        assert!(write(&path, b"tree", DEFAULT_MODE).is_err());
        assert!(path.is_dir());
        assert_eq!(names(&dir), ["sub"]);
        let missing = dir.join("no-such-dir").join("out.dtb");
        assert_eq!(write(&missing, b"tree", DEFAULT_MODE).unwrap_err().kind(), io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
