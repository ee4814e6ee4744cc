//! Where things are: the workspace root, the aarch64 build outputs, xtask's own work directory
//! and the download cache.

use std::path::{Path, PathBuf};

/// The target of everything that runs inside the nested VM.
pub const CROSS_TARGET: &str = "aarch64-unknown-linux-gnu";

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A release build output for [`CROSS_TARGET`], such as `accel-host` or `libaccel_kvm.so`.
pub fn cross_out(name: &str) -> PathBuf {
    root().join("target").join(CROSS_TARGET).join("release").join(name)
}

/// Where xtask keeps build products of its own.
pub fn work_dir() -> PathBuf {
    root().join("target").join("xtask")
}

/// The cache directory: `ACCEL_CACHE_DIR`, else `$XDG_CACHE_HOME/accel`, else `~/.cache/accel`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ACCEL_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("accel")
}
