//! The arm64 Linux kernels that the nested VM and its guests boot: Debian's 6.12 (the default)
//! and bookworm's 6.1, each resolved through its metapackage and cached on its own, or the image
//! that `ACCEL_KERNEL` names.

use std::{fmt, path::PathBuf};

use crate::{
    error::{Error, Result},
    provision::debian::{self, Control, Extract},
};

/// A Debian kernel series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KernelVersion {
    /// Debian bookworm's own kernel (`linux-image-arm64`).
    V6_1,
    /// `linux-image-6.12-arm64`, from bookworm-security (or `linux-image-arm64` where 6.12 is the
    /// release's own kernel).
    #[default]
    V6_12,
}

impl KernelVersion {
    /// Every series, the default first.
    pub const ALL: [KernelVersion; 2] = [KernelVersion::V6_12, KernelVersion::V6_1];

    /// Metapackages to try, in order.
    fn metapackages(self) -> &'static [&'static str] {
        match self {
            Self::V6_1 => &["linux-image-arm64"],
            Self::V6_12 => &["linux-image-6.12-arm64", "linux-image-arm64"],
        }
    }

    /// The start of the concrete package's name, such as `linux-image-6.1.0-56-arm64`.
    fn package_prefix(self) -> &'static str {
        match self {
            Self::V6_1 => "linux-image-6.1.",
            Self::V6_12 => "linux-image-6.12.",
        }
    }
}

impl std::str::FromStr for KernelVersion {
    type Err = String;

    /// `6.1` or `6.12`, as `--kernel` takes them.
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|v| v.to_string() == s).ok_or_else(|| {
            let known: Vec<String> = Self::ALL.iter().map(ToString::to_string).collect();
            format!("unknown kernel series {s:?}; known: {}", known.join(", "))
        })
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V6_1 => "6.1",
            Self::V6_12 => "6.12",
        })
    }
}

/// The members of a kernel image package that xtask keeps: the image and its configuration.
/// (Its `/boot/System.map-*` is a one-line placeholder.)
const IMAGE_MEMBERS: &[&str] = &["./boot/vmlinuz-*", "./boot/config-*"];

/// Where a kernel came from.
#[derive(Debug)]
enum Source {
    Debian(Control),
    Given,
}

/// An arm64 kernel ready to boot.
#[derive(Debug)]
pub struct Kernel {
    /// The uncompressed arm64 `Image` (Debian calls it `vmlinuz`).
    pub image: PathBuf,
    /// Its release (`uname -r`), such as `6.1.0-56-arm64`.
    pub release: String,
    source: Source,
}

/// The kernel of series `version`: the image `ACCEL_KERNEL` names if set (whatever the series),
/// else the cached Debian kernel, fetched on first use.
pub fn kernel(version: KernelVersion) -> Result<Kernel> {
    if let Some(path) = std::env::var_os("ACCEL_KERNEL") {
        let image = PathBuf::from(path);
        let data = std::fs::read(&image)
            .map_err(|e| Error(format!("ACCEL_KERNEL={} cannot be read: {e}", image.display())))?;
        return Ok(Kernel {
            release: banner_release(&data).unwrap_or_else(|| "unknown".into()),
            image,
            source: Source::Given,
        });
    }
    let hint =
        |Error(e)| Error(format!("{e}; or set ACCEL_KERNEL to an arm64 Linux Image with KVM built in"));
    let (metas, prefix) = (version.metapackages(), version.package_prefix());
    let package = match metas.iter().find_map(|meta| debian::cached_via_metapackage(meta, prefix)) {
        Some(package) => package,
        None => {
            eprintln!(
                "xtask: fetching the arm64 Debian kernel {version} (once; cached in {})",
                crate::layout::cache_dir().display()
            );
            let mut found = None;
            for meta in metas {
                found = debian::fetch_via_metapackage(meta, prefix, Extract::Members(IMAGE_MEMBERS))
                    .map_err(hint)?;
                if found.is_some() {
                    break;
                }
            }
            found.ok_or_else(|| {
                hint(Error(format!(
                    "none of {} resolves to a Linux {version} kernel package",
                    metas.join(", ")
                )))
            })?
        }
    };
    let boot = package.root.join("boot");
    let release = std::fs::read_dir(&boot)
        .map_err(|e| Error(format!("reading {}: {e}", boot.display())))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("vmlinuz-").map(String::from))
        .next()
        .ok_or_else(|| Error(format!("{} holds no vmlinuz", boot.display())))?;
    let image = boot.join(format!("vmlinuz-{release}"));
    let mut header = [0u8; 64];
    std::fs::File::open(&image)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header))
        .map_err(|e| Error(format!("reading {}: {e}", image.display())))?;
    if !is_arm64_image(&header) {
        return Err(Error(format!("{} is not an uncompressed arm64 Linux Image", image.display())));
    }
    Ok(Kernel { image, release, source: Source::Debian(package.control) })
}

impl Kernel {
    /// The Debian package the kernel came from, as `name version`, if it did.
    pub fn package(&self) -> Option<String> {
        match &self.source {
            Source::Debian(c) => Some(format!("{} {}", c.package, c.version)),
            Source::Given => None,
        }
    }
}

/// An arm64 Linux `Image` header: the magic `ARM\x64` at offset 0x38 (Documentation/arch/arm64/booting.rst).
fn is_arm64_image(header: &[u8]) -> bool {
    header.get(0x38..0x3c) == Some(b"ARM\x64")
}

/// The release in an uncompressed kernel's `Linux version … ` banner.
fn banner_release(image: &[u8]) -> Option<String> {
    const BANNER: &[u8] = b"Linux version ";
    let at = image.windows(BANNER.len()).position(|w| w == BANNER)? + BANNER.len();
    let release: Vec<u8> =
        image[at..].iter().take(64).take_while(|b| b.is_ascii_graphic()).copied().collect();
    (!release.is_empty()).then(|| String::from_utf8_lossy(&release).into_owned())
}

/// The arm64 kernel image of the default series: `ACCEL_KERNEL` if set, else the cached Debian
/// kernel, fetched on first use through a private apt root (see [`crate::provision::debian`]).
pub fn default_image() -> Result<PathBuf> {
    kernel(KernelVersion::default()).map(|k| k.image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_come_from_the_banner() {
        let image = b"\0\0junkLinux version 6.12.117+deb12-arm64 (debian-kernel@lists.debian.org) #1 SMP";
        assert_eq!(banner_release(image).as_deref(), Some("6.12.117+deb12-arm64"));
        assert_eq!(banner_release(b"gzip-compressed data"), None);
    }

    #[test]
    fn image_magic() {
        let mut header = [0u8; 64];
        assert!(!is_arm64_image(&header));
        header[0x38..0x3c].copy_from_slice(b"ARM\x64");
        assert!(is_arm64_image(&header));
    }

    #[test]
    fn series_pick_their_own_packages() {
        assert!("linux-image-6.1.0-56-arm64".starts_with(KernelVersion::V6_1.package_prefix()));
        assert!(!"linux-image-6.12.117+deb12-arm64".starts_with(KernelVersion::V6_1.package_prefix()));
        assert!("linux-image-6.12.117+deb12-arm64".starts_with(KernelVersion::V6_12.package_prefix()));
        assert_eq!(KernelVersion::default(), KernelVersion::V6_12);
    }

    #[test]
    fn series_parse_as_they_print() {
        for version in KernelVersion::ALL {
            assert_eq!(version.to_string().parse::<KernelVersion>(), Ok(version));
        }
        assert!("6.2".parse::<KernelVersion>().is_err());
    }
}
