//! QEMU as a reference inside the nested VM: the arm64 build of Debian's `qemu-system-arm` (from
//! the release this host's apt sources name) and every shared library it needs, as files for
//! the VM's initramfs.

use std::path::{Path, PathBuf};

use crate::{
    error::{Error, Result},
    provision::{
        debian::{self, Package},
        host::CROSS_LIB,
        initramfs::VmFile,
        shlibs::{self, Closure},
    },
};

/// The Debian package that holds `qemu-system-aarch64`.
pub const QEMU_PACKAGE: &str = "qemu-system-arm";
/// Where the program goes in the VM.
pub const QEMU_PATH: &str = "/usr/bin/qemu-system-aarch64";
/// Options under which these files suffice: `-nic none` spares the default NIC's option ROM
/// (`efi-virtio.rom`), the one data file `-M virt` otherwise asks for. Add `-m`, `-smp`,
/// `-kernel`, `-initrd` and `-append`.
pub const QEMU_ARGS: &[&str] = &[
    "-M",
    "virt,gic-version=3",
    "-accel",
    "kvm",
    "-cpu",
    "host",
    "-nographic",
    "-nic",
    "none",
    "-no-reboot",
];
/// Where the libraries go in the VM: a directory the dynamic loader searches by default.
const VM_LIB_DIR: &str = "/lib/aarch64-linux-gnu";
/// Library directories inside an unpacked package.
const PACKAGE_LIB_DIRS: &[&str] = &["lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu", "lib", "usr/lib"];
/// Packages whose libraries the cross toolchain's runtime in [`CROSS_LIB`] provides, so that
/// QEMU shares the C library the VM's other programs use.
const CROSS_PROVIDED: &[&str] = &["libc6", "libgcc-s1"];

/// QEMU and its libraries, ready for the initramfs.
pub struct GuestQemu {
    /// The program at [`QEMU_PATH`], its dynamic loader and its libraries.
    pub files: Vec<VmFile>,
    /// The Debian packages the files came from, as `name version`.
    pub packages: Vec<String>,
}

impl GuestQemu {
    /// The files' total size in bytes.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.data.len() as u64).sum()
    }
}

/// Whether a package's name says it may hold shared libraries: Debian names a library package
/// after its soname (Debian Policy 8.1), and zlib's predates that rule.
fn may_hold_libraries(name: &str) -> bool {
    name.starts_with("lib") || name == "zlib1g"
}

/// The packages to fetch next: the library dependencies of the packages whose files miss a
/// soname. dpkg-shlibdeps puts the provider of every library a binary links against into its
/// package's `Depends`, so the provider of a missing soname is among them.
fn next_packages(missing: &Closure, packages: &[Package]) -> Vec<String> {
    let mut next: Vec<String> = Vec::new();
    for package in packages {
        let needs = missing.missing.values().flatten().any(|file| file.starts_with(&package.root));
        if !needs {
            continue;
        }
        for dep in &package.control.depends {
            let known = packages.iter().any(|p| &p.control.package == dep) || next.contains(dep);
            if may_hold_libraries(dep) && !CROSS_PROVIDED.contains(&dep.as_str()) && !known {
                next.push(dep.clone());
            }
        }
    }
    next
}

/// The first file named `soname` in the cross runtime, then in the packages' library directories.
fn find_library(soname: &str, packages: &[Package]) -> Option<PathBuf> {
    std::iter::once(PathBuf::from(CROSS_LIB).join(soname))
        .chain(packages.iter().flat_map(|p| PACKAGE_LIB_DIRS.iter().map(|d| p.root.join(d).join(soname))))
        .find(|path| path.is_file())
}

/// Fetches QEMU and, round by round, the packages that provide the libraries it needs, until
/// every soname resolves.
pub fn guest_qemu() -> Result<GuestQemu> {
    let mut packages = debian::fetch(&[QEMU_PACKAGE])?;
    let qemu_root =
        packages.first().ok_or_else(|| Error(format!("{QEMU_PACKAGE} was not fetched")))?.root.clone();
    let program = qemu_root.join(QEMU_PATH.trim_start_matches('/'));
    let closure = loop {
        let closure = shlibs::closure(
            std::slice::from_ref(&program),
            |soname| find_library(soname, &packages),
            shlibs::elf_deps,
        )?;
        if closure.missing.is_empty() {
            break closure;
        }
        let next = next_packages(&closure, &packages);
        if next.is_empty() {
            let missing: Vec<String> = closure
                .missing
                .iter()
                .map(|(soname, by)| {
                    let by: Vec<String> = by.iter().map(|p| p.display().to_string()).collect();
                    format!("{soname} (needed by {})", by.join(", "))
                })
                .collect();
            return Err(Error(format!(
                "no fetched package and nothing in {CROSS_LIB} provides {}",
                missing.join("; ")
            )));
        }
        let names: Vec<&str> = next.iter().map(String::as_str).collect();
        packages.extend(debian::fetch(&names)?);
    };
    let mut files = vec![VmFile::from_host(QEMU_PATH, &program, 0o755)?];
    let loader = closure.interpreter.as_deref();
    for (soname, host) in &closure.libraries {
        let path = match loader {
            Some(interp) if Path::new(interp).file_name().is_some_and(|n| n == soname.as_str()) => {
                interp.to_string()
            }
            _ => format!("{VM_LIB_DIR}/{soname}"),
        };
        files.push(VmFile::from_host(&path, host, 0o755)?);
    }
    let used: Vec<String> = packages
        .iter()
        .filter(|p| p.root == qemu_root || closure.libraries.values().any(|l| l.starts_with(&p.root)))
        .map(|p| format!("{} {}", p.control.package, p.control.version))
        .collect();
    Ok(GuestQemu { files, packages: used })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::provision::debian::Control;

    fn package(name: &str, depends: &[&str]) -> Package {
        Package {
            control: Control {
                package: name.into(),
                depends: depends.iter().map(|d| d.to_string()).collect(),
                ..Control::default()
            },
            root: PathBuf::from(format!("/cache/{name}/root")),
        }
    }

    #[test]
    fn next_packages_are_the_library_dependencies_of_the_needers() {
        let packages = [
            package("qemu-system-arm", &["libc6", "libglib2.0-0", "zlib1g", "qemu-system-data", "libgcc-s1"]),
            package("libglib2.0-0", &["libc6", "libpcre2-8-0", "libffi8"]),
            package("libpixman-1-0", &["libc6", "libunneeded0"]),
        ];
        let mut missing = Closure { missing: BTreeMap::new(), ..Closure::default() };
        missing
            .missing
            .entry("libpcre2-8.so.0".into())
            .or_default()
            .insert(PathBuf::from("/cache/libglib2.0-0/root/usr/lib/aarch64-linux-gnu/libglib-2.0.so.0"));
        assert_eq!(next_packages(&missing, &packages), ["libpcre2-8-0", "libffi8"]);
        missing
            .missing
            .entry("libz.so.1".into())
            .or_default()
            .insert(PathBuf::from("/cache/qemu-system-arm/root/usr/bin/qemu-system-aarch64"));
        assert_eq!(
            next_packages(&missing, &packages),
            ["zlib1g", "libpcre2-8-0", "libffi8"],
            "glib is known"
        );
        let only_qemu = [package("qemu-system-arm", &["libc6", "zlib1g", "qemu-system-data"])];
        assert_eq!(next_packages(&missing, &only_qemu), ["zlib1g"]);
    }
}
