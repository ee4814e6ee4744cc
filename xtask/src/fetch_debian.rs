//! `cargo xtask fetch-debian`: fetches every Debian arm64 piece the tests use (both kernels with
//! their System.map), and prints where everything is, how large, and how long each step took.

use std::{path::Path, time::Instant};

use crate::{
    debian::human,
    kernel::{self, KernelVersion},
    system_map::SystemMap,
    Result,
};

/// Kernel symbols whose addresses are printed, as a check that the System.map is real.
const SYMBOLS: &[&str] = &["do_idle", "jiffies"];

fn size_of(path: &Path) -> String {
    std::fs::metadata(path).map(|m| human(m.len())).unwrap_or_else(|e| format!("unreadable: {e}"))
}

fn took(start: Instant) -> String {
    format!("{:.1} s", start.elapsed().as_secs_f64())
}

/// Fetches everything and reports it.
pub fn fetch_debian() -> Result<()> {
    for version in KernelVersion::ALL {
        let start = Instant::now();
        let k = kernel::kernel(version)?;
        println!(
            "kernel {version}: {} ({}), release {}, from {} [{}]",
            k.image.display(),
            size_of(&k.image),
            k.release,
            k.package().unwrap_or_else(|| "ACCEL_KERNEL".into()),
            took(start)
        );
        let start = Instant::now();
        let path = k.system_map()?;
        let map = SystemMap::load(&path)?;
        let addresses: Vec<String> =
            SYMBOLS.iter().map(|s| map.address(s).map(|a| format!("{s} {a:#x}"))).collect::<Result<_>>()?;
        println!(
            "  System.map: {} ({}, {} symbols; {}) [{}]",
            path.display(),
            size_of(&path),
            map.len(),
            addresses.join(", "),
            took(start)
        );
    }
    Ok(())
}
