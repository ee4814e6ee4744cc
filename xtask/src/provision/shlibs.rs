//! The shared libraries an aarch64 program needs: its `DT_NEEDED` entries followed recursively,
//! each soname resolved through a caller-supplied search.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use goblin::elf::{header::EM_AARCH64, Elf};

use crate::error::{Error, Result};

/// What the dynamic loader reads from one ELF file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElfDeps {
    /// Its `DT_NEEDED` sonames.
    pub needed: Vec<String>,
    /// Its `PT_INTERP` path (programs only).
    pub interpreter: Option<String>,
}

/// Reads the dependencies of an aarch64 ELF file.
pub fn elf_deps(path: &Path) -> Result<ElfDeps> {
    let data = std::fs::read(path).map_err(|e| Error(format!("reading {}: {e}", path.display())))?;
    let elf = Elf::parse(&data).map_err(|e| Error(format!("{} is not an ELF file: {e}", path.display())))?;
    if elf.header.e_machine != EM_AARCH64 {
        return Err(Error(format!("{} is not an aarch64 ELF file", path.display())));
    }
    Ok(ElfDeps {
        needed: elf.libraries.iter().map(|l| l.to_string()).collect(),
        interpreter: elf.interpreter.map(String::from),
    })
}

/// The libraries a set of programs needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Closure {
    /// Each needed soname and the file that provides it.
    pub libraries: BTreeMap<String, PathBuf>,
    /// The programs' dynamic loader (`PT_INTERP`), if any.
    pub interpreter: Option<String>,
    /// Each soname that `find` could not resolve, with the files that need it.
    pub missing: BTreeMap<String, BTreeSet<PathBuf>>,
}

/// Follows `DT_NEEDED` from `programs`: `find` maps a soname to a file, `deps` reads a file's
/// dependencies. Every file is read once, however many need it.
pub fn closure(
    programs: &[PathBuf],
    find: impl Fn(&str) -> Option<PathBuf>,
    deps: impl Fn(&Path) -> Result<ElfDeps>,
) -> Result<Closure> {
    let mut out = Closure::default();
    let mut queue: Vec<PathBuf> = programs.to_vec();
    let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
    while let Some(file) = queue.pop() {
        if !seen.insert(file.clone()) {
            continue;
        }
        let d = deps(&file)?;
        if out.interpreter.is_none() {
            out.interpreter = d.interpreter;
        }
        for soname in d.needed {
            if out.libraries.contains_key(&soname) {
                continue;
            }
            match find(&soname) {
                Some(lib) => {
                    out.libraries.insert(soname, lib.clone());
                    queue.push(lib);
                }
                None => {
                    out.missing.entry(soname).or_default().insert(file.clone());
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A synthetic system: file -> (needed sonames, interpreter).
    fn system() -> HashMap<PathBuf, ElfDeps> {
        let mut files = HashMap::new();
        let mut add = |path: &str, needed: &[&str], interp: Option<&str>| {
            files.insert(
                PathBuf::from(path),
                ElfDeps {
                    needed: needed.iter().map(|s| s.to_string()).collect(),
                    interpreter: interp.map(String::from),
                },
            );
        };
        add("/pkg/qemu/usr/bin/qemu", &["libglib-2.0.so.0", "libc.so.6"], Some("/lib/ld-linux-aarch64.so.1"));
        add("/pkg/glib/lib/libglib-2.0.so.0", &["libpcre2-8.so.0", "libc.so.6"], None);
        add("/pkg/pcre/lib/libpcre2-8.so.0", &["libc.so.6"], None);
        add("/cross/libc.so.6", &["ld-linux-aarch64.so.1"], None);
        add("/cross/ld-linux-aarch64.so.1", &[], None);
        add("/pkg/gnutls/lib/libgnutls.so.30", &["libnettle.so.8"], None);
        files
    }

    fn find_in(available: &'static [&'static str]) -> impl Fn(&str) -> Option<PathBuf> {
        move |soname| available.iter().find(|p| p.ends_with(&format!("/{soname}"))).map(PathBuf::from)
    }

    #[test]
    fn follows_needed_recursively() {
        let sys = system();
        let deps = |p: &Path| sys.get(p).cloned().ok_or_else(|| Error(format!("no {}", p.display())));
        let found = find_in(&[
            "/pkg/glib/lib/libglib-2.0.so.0",
            "/pkg/pcre/lib/libpcre2-8.so.0",
            "/cross/libc.so.6",
            "/cross/ld-linux-aarch64.so.1",
            "/pkg/gnutls/lib/libgnutls.so.30",
        ]);
        let c = closure(&[PathBuf::from("/pkg/qemu/usr/bin/qemu")], found, deps).expect("closure");
        assert!(c.missing.is_empty());
        assert_eq!(
            c.libraries.keys().collect::<Vec<_>>(),
            ["ld-linux-aarch64.so.1", "libc.so.6", "libglib-2.0.so.0", "libpcre2-8.so.0"]
        );
        assert_eq!(c.interpreter.as_deref(), Some("/lib/ld-linux-aarch64.so.1"));
    }

    #[test]
    fn reports_who_needs_a_missing_soname() {
        let sys = system();
        let deps = |p: &Path| sys.get(p).cloned().ok_or_else(|| Error(format!("no {}", p.display())));
        let found =
            find_in(&["/pkg/glib/lib/libglib-2.0.so.0", "/cross/libc.so.6", "/cross/ld-linux-aarch64.so.1"]);
        let c = closure(&[PathBuf::from("/pkg/qemu/usr/bin/qemu")], found, deps).expect("closure");
        assert_eq!(c.missing.len(), 1);
        assert_eq!(
            c.missing["libpcre2-8.so.0"].iter().collect::<Vec<_>>(),
            [Path::new("/pkg/glib/lib/libglib-2.0.so.0")]
        );
        assert!(!c.libraries.contains_key("libnettle.so.8"), "only what is reachable");
    }
}
